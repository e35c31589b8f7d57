// libFuzzer target: idx (see fuzz/drivers.h for the input layout).
#define BNLAB_FUZZ_DRIVER bnlab::fuzz::run_idx
#include "fuzz/fuzz_main.h"

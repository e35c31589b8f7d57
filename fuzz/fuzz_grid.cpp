// libFuzzer target: grid (see fuzz/drivers.h for the input layout).
#define BNLAB_FUZZ_DRIVER bnlab::fuzz::run_grid
#include "fuzz/fuzz_main.h"

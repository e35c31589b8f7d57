// libFuzzer target: safetensors (see fuzz/drivers.h for the input layout).
#define BNLAB_FUZZ_DRIVER bnlab::fuzz::run_safetensors
#include "fuzz/fuzz_main.h"

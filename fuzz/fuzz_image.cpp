// libFuzzer target: image (see fuzz/drivers.h for the input layout).
#define BNLAB_FUZZ_DRIVER bnlab::fuzz::run_image
#include "fuzz/fuzz_main.h"

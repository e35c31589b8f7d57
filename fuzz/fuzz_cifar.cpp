// libFuzzer target: cifar (see fuzz/drivers.h for the input layout).
#define BNLAB_FUZZ_DRIVER bnlab::fuzz::run_cifar
#include "fuzz/fuzz_main.h"

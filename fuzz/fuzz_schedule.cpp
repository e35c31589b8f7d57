// libFuzzer target: schedule (see fuzz/drivers.h for the input layout).
#define BNLAB_FUZZ_DRIVER bnlab::fuzz::run_schedule
#include "fuzz/fuzz_main.h"

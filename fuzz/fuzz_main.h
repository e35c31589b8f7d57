// The body of every libFuzzer target: run one driver (drivers.h) and turn a contract violation or
// any exception other than bnlab::Error into an abort, which libFuzzer reports as a finding with
// the input saved. Each fuzz_<name>.cpp defines BNLAB_FUZZ_DRIVER and includes this.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string_view>
#include <typeinfo>

#include "fuzz/drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    BNLAB_FUZZ_DRIVER(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const bnlab::fuzz::ContractViolation& e) {
    std::fprintf(stderr, "bnlab fuzz: contract violated: %s\n", e.what());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bnlab fuzz: unexpected %s (not bnlab::Error): %s\n", typeid(e).name(),
                 e.what());
    std::abort();
  }
  return 0;
}

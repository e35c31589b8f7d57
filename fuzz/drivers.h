// Fuzz drivers: one function per fuzzed parser, shared by the libFuzzer targets (fuzz/fuzz_*.cpp,
// built with clang by fuzz/CMakeLists.txt) and by the regression replay in the normal test suite
// (tests/fuzz/test_fuzz_regressions.cpp), so a kept crash input is replayed through exactly the
// code that found it.
//
// The contract every driver checks: an input either parses into a result whose invariants hold,
// or the parser throws a bnlab::Error whose message names the input (its file name, or for the
// spec parsers the parser's prefix). A driver returns the outcome; a broken invariant or message
// contract throws ContractViolation, and anything else the parser throws (std::bad_alloc,
// std::length_error, a JSON library exception, ...) escapes as it is. The libFuzzer targets abort
// on both; the tests fail on both. Crashes, hangs, leaks and UB are the sanitizers' and libFuzzer's
// to catch.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bnlab::fuzz {

struct ContractViolation : std::logic_error {
  using std::logic_error::logic_error;
};

struct Outcome {
  bool ok = false;
  std::string error;  // the bnlab::Error's message when !ok
};

// IDX images or labels. Byte 0 picks the mode: bit 0 labels (else images); bit 1 gzip-compresses
// the rest first (so mutations of the plain bytes reach the gzip path as valid streams). The rest
// is the file; data that already starts with the gzip magic is gunzipped by the reader itself.
Outcome run_idx(std::string_view input);
// A CIFAR batch: byte 0 % 3 picks CIFAR-10, CIFAR-100 fine or coarse; bit 2 gzip-compresses the
// rest first. The rest is the file.
Outcome run_cifar(std::string_view input);
// A safetensors file (the whole input); a file that loads is re-encoded and decoded again, and must
// come back with the same names, shapes and bytes.
Outcome run_safetensors(std::string_view input);
// One image-folder image: byte 0 picks 1 or 3 channels (bit 0) and a resize (bit 1) to
// (byte 1 % 32 + 1) x (byte 2 % 32 + 1); with a resize the image follows byte 2, else byte 0.
Outcome run_image(std::string_view input);
// The ablation grid spec: one line per --vary NAME=V1,V2,... flag, or "preset NAME" lines, then
// expand_arms over a default configuration. Arm names and run directories must come out unique.
Outcome run_grid(std::string_view input);
// A learning-rate schedule spec: the first line is total_steps (a decimal, else 1000), the second
// the spec; a schedule that parses is evaluated at a few steps and must give a rate >= 0, never
// NaN, and a finite float at every step of the run before the one first_step_above names (+inf
// past it, or past the run's end, for a growing schedule); that step's rate must be past the
// float range, and the one before it not.
Outcome run_schedule(std::string_view input);

using Driver = Outcome (*)(std::string_view);
// The targets by name (the fuzz_<name> binaries, tests/fuzz/{corpus,regressions}/<name>/).
const std::vector<std::pair<std::string, Driver>>& drivers();

}  // namespace bnlab::fuzz

// Guards against what the compiler did to our code here, each a case that fails if the protection
// is lost:
// - a miscompilation: GCC 12.2 with -march=native on an AVX-512 CPU filled a 16-float initializer
//   list {1 x12, 0 x4} with sixteen 1s (one vpbroadcastd). The build adds
//   -mprefer-vector-width=256, which avoids it.
// - a deleted optimization: GCC 12 at -O3 removed every call to a helper made of nothing but
//   __builtin_prefetch when it was not inlined (core/ops/prefetch.h). The kernels that rely on
//   their prefetch hints must still hold prefetch instructions in the built CLI.
#include <doctest/doctest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "apps/apps_test_util.h"

namespace {
__attribute__((noinline)) float sum_of(const std::vector<float>& v) {
  float s = 0;
  for (float f : v) s += f;
  return s;
}
}  // namespace

TEST_CASE("toolchain: 16-element constant initializer lists keep their values") {
  CHECK(sum_of({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}) == 12.0f);
  CHECK(sum_of({2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0}) == 16.0f);
}

// The CLI links the whole library statically, so its disassembly holds every kernel. Functions are
// matched by a part of their demangled name that survives inlining at -O1 (the sanitizer build) and
// -O3: the kernel's own name, or the OpenMP outlined body named after it.
TEST_CASE("toolchain: the kernels' software prefetch hints survive the optimizer") {
  using apps_test::CliResult, apps_test::run_shell, apps_test::shell_quote;
  const CliResult r = run_shell("objdump -d --no-show-raw-insn -C " + shell_quote(BNLAB_CLI_PATH) +
                                " | awk '/^[0-9a-f]+ <.*>:$/ {fn = $0} /\\tprefetch/ {n[fn]++} END "
                                "{for (f in n) print n[f], f}'");
  INFO("objdump (binutils) | awk printed: ", r.output);
  REQUIRE(r.exit_code == 0);
  std::map<std::string, int> hints_in;  // name part -> prefetch instructions in matching functions
  const std::vector<std::string> kernels{"fourier_conv2d_forward", "fourier_conv2d_backward",
                                         "batch_norm", "input_transform"};
  std::istringstream lines(r.output);
  int count = 0;
  std::string function;
  while (lines >> count && std::getline(lines, function))
    for (const auto& k : kernels)
      if (function.find(k) != std::string::npos) hints_in[k] += count;
  for (const auto& k : kernels) {
    INFO("functions named *", k, "* in ", BNLAB_CLI_PATH);
    CHECK(hints_in[k] > 0);
  }
}

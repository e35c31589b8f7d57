// scripts/fuzz.sh's own arguments: what it refuses, before it builds or runs anything. (What the
// targets find is the fuzzers' business; tests/fuzz/test_fuzz_regressions.cpp replays their
// inputs.)
#include <doctest/doctest.h>

#include <string>

#include "tests/apps/apps_test_util.h"

namespace {

using apps_test::run_shell;
using apps_test::shell_quote;

// Runs fuzz.sh with `env` in front. CXX_FUZZ points nowhere, so a check that let a bad value
// through would stop at the compiler check with another message instead of starting a build.
apps_test::CliResult run_fuzz_script(const std::string& env, const std::string& args) {
  const std::string script = std::string(BNLAB_SOURCE_DIR) + "/scripts/fuzz.sh";
  return run_shell("env CXX_FUZZ=/nonexistent/clang++ " + env + " bash " + shell_quote(script) +
                   " " + args);
}

}  // namespace

TEST_CASE("fuzz.sh: a bad FUZZ_JOBS exits 2 naming the variable and the value") {
  for (const std::string bad : {"0", "00", "-1", "1.5", "x"}) {
    CAPTURE(bad);
    const auto r = run_fuzz_script("FUZZ_JOBS=" + shell_quote(bad), "--ci grid");
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("FUZZ_JOBS must be a positive whole number, got '" + bad + "'") !=
          std::string::npos);
  }
  // A good value passes this check and reaches the next one: the missing compiler.
  const auto ok = run_fuzz_script("FUZZ_JOBS=3", "--ci grid");
  INFO(ok.output);
  CHECK(ok.exit_code == 2);
  CHECK(ok.output.find("/nonexistent/clang++ not found") != std::string::npos);
  CHECK(ok.output.find("FUZZ_JOBS") == std::string::npos);
}

TEST_CASE("fuzz.sh: an unknown target exits 2 naming it and the targets") {
  const auto r = run_fuzz_script("", "--ci grid nosuch");
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("unknown target 'nosuch' (targets: idx cifar safetensors image grid "
                      "schedule)") != std::string::npos);
}

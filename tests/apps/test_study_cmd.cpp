// bnlab study's command line: the claim list, and bad flags refused with exit 2 before any run.
#include <doctest/doctest.h>

#include "apps_test_util.h"

using namespace apps_test;

TEST_CASE("apps.study: --list names every claim, and bad flags exit 2 with a short message") {
  CliResult list = run_cli("study --list");
  CAPTURE(list.output);
  CHECK(list.exit_code == 0);
  CHECK(contains(list.output, "higher-lr (lr): BN allows much higher learning rates"));
  CHECK(contains(list.output, "batch-renorm (inference)"));

  TempDir dir;
  for (const std::string& bad :
       {std::string("study --budget huge"), std::string("study --claims higher-lr,nope"),
        std::string("study --seeds 0"), std::string("study --out ''")}) {
    CliResult r = run_cli(bad + " --data-dir " + shell_quote(dir.file("none")));
    CAPTURE(bad);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.size() < 600);  // a line and the hint, not the --help text
  }
  CHECK(contains(run_cli("study --claims nope").output, "unknown claim 'nope'"));
}

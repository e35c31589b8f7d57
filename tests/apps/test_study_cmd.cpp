// bnlab study's command line: the claim list, and bad flags refused with exit 2 before any run.
#include <doctest/doctest.h>

#include "apps_test_util.h"
#include "train/run_dir.h"

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

  // A last seed past 2^64 - 1 was refused only inside the study, by run_ablation: exit 1.
  CliResult wrap =
      run_cli("study --seed 18446744073709551615 --seeds 2 --out " +
              shell_quote(dir.file("study")) + " --data-dir " + shell_quote(dir.file("none")));
  CAPTURE(wrap.output);
  CHECK(wrap.exit_code == 2);
  CHECK(contains(wrap.output,
                 "error: --seed 18446744073709551615 with 2 seeds per arm needs seeds past "
                 "18446744073709551615, the largest; use a --seed of at most "
                 "18446744073709551614"));
  CHECK_FALSE(fs::exists(dir.file("study")));
  // The largest --seed that fits passes this check and stops at the next (the missing data).
  CliResult fits =
      run_cli("study --seed 18446744073709551614 --seeds 2 --out " +
              shell_quote(dir.file("study")) + " --data-dir " + shell_quote(dir.file("none")));
  CAPTURE(fits.output);
  CHECK(fits.exit_code == 2);
  CHECK(contains(fits.output, "--data-dir: "));
  CHECK_FALSE(contains(fits.output, "needs seeds past"));
}

// `study --data-dir /nonexistent` exited 0 with every claim "not run" and an empty report.
TEST_CASE("apps.study: a missing --data-dir exits 2 and a study where nothing could run fails") {
  TempDir dir;
  CliResult typo =
      run_cli("study --claims faster-shared-lr --out " + shell_quote(dir.file("study")) +
              " --data-dir " + shell_quote(dir.file("nonexistent")));
  CAPTURE(typo.output);
  CHECK(typo.exit_code == 2);
  CHECK(contains(typo.output, "--data-dir: " + dir.file("nonexistent") + " does not exist"));
  CHECK_FALSE(fs::exists(dir.file("study")));

  // A directory that exists but holds none of the datasets the claims need.
  fs::create_directories(dir.file("empty"));
  CliResult none =
      run_cli("study --claims faster-shared-lr,cifar10 --out " + shell_quote(dir.file("study")) +
              " --data-dir " + shell_quote(dir.file("empty")));
  CAPTURE(none.output);
  CHECK(none.exit_code == 1);
  CHECK(contains(none.output,
                 "error: study: no experiment could run: the datasets they need are missing"));
  CHECK(contains(none.output, "\n  cifar10: "));
  CHECK(contains(none.output, "\n  mnist: "));
  CHECK_FALSE(fs::exists(dir.file("study/report.md")));
}

// A study stopped by SIGTERM exited 130, the code of SIGINT, and did not name the signal: a
// supervisor could not tell its own TERM from a user's Ctrl-C. The child blocks on its full output
// pipe once it has announced its first experiment (CliProcess), so it is signalled before it can
// have finished, on any machine.
TEST_CASE("apps.study: SIGINT and SIGTERM stop a study with 128 + the signal, named") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  for (const auto& [sig, name] : {std::pair{SIGINT, "SIGINT"}, std::pair{SIGTERM, "SIGTERM"}}) {
    CAPTURE(name);
    CliProcess child({"study", "--claims", "cost", "--seeds", "1", "-j", "1", "--data-dir",
                      dir.file("data"), "--out", dir.file(std::string("study-") + name)},
                     /*block_output=*/true);
    REQUIRE(child.release_writes_until("== study: experiment fig1"));
    REQUIRE(child.wait_until_blocked_in_write());
    child.signal(sig);
    CliResult r = child.finish();
    CAPTURE(r.output);
    CHECK(r.exit_code == 128 + sig);
    CHECK(contains(r.output, std::string("interrupted by ") + name +
                                 ": the running runs saved a checkpoint; resume with: "));
    CHECK_FALSE(fs::exists(dir.file(std::string("study-") + name + "/report.md")));
  }
}

// The study locked only OUT, so `bnlab ablate --out OUT/fig1` passed ablate's own lock and ran
// beside it, both writing OUT/fig1's results.csv, summary.md and plots. Each experiment's directory
// is now locked as ablate locks its --out. The test holds OUT/fig1's lock itself, as a running
// ablate would: deterministic, no race to win.
TEST_CASE("apps.study: an experiment directory locked by another process is refused") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  const std::string out = dir.file("study");
  bnlab::RunDirLock held(out + "/fig1");
  CliResult r = run_cli("study --claims cost --seeds 1 -j 1 --data-dir " +
                        shell_quote(dir.file("data")) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "error: run directory " + out +
                               "/fig1 is in use by another bnlab process (pid " +
                               std::to_string(::getpid()) + ")"));
  CHECK_FALSE(fs::exists(out + "/fig1/runs"));
  CHECK_FALSE(fs::exists(out + "/report.md"));
}

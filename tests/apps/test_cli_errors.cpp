// apps CLI errors: bad flags and values exit 2 with the problem named and the usage, an unknown
// ablation factor and a missing dataset exit 1 with a message that says what to do.
#include <doctest/doctest.h>

#include "apps_test_util.h"

using namespace apps_test;

namespace {

// Common train flags pointing at `dir`'s data, with a valid output directory.
std::string train_flags(const TempDir& dir) {
  return "train --threads 1 --data-dir " + shell_quote(dir.file("data")) + " --out " +
         shell_quote(dir.file("out"));
}

}  // namespace

TEST_CASE("apps.cli: an unknown flag exits 2 naming the flag and printing the usage") {
  TempDir dir;
  CliResult r = run_cli(train_flags(dir) + " --no-such-flag 3");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.output, "--no-such-flag"));
  CHECK(contains(r.output, "Usage"));
  CHECK_FALSE(fs::exists(dir.file("out")));

  // An unknown subcommand: CLI11 reports the missing subcommand (not the word) and the usage.
  CliResult sub = run_cli("no-such-command");
  CHECK(sub.exit_code == 2);
  CHECK(contains(sub.output, "Usage"));
}

TEST_CASE("apps.cli: bad flag values exit 2 naming the flag and the value") {
  TempDir dir;
  struct Case {
    std::string flags, expect_flag, expect_value;
  };
  const std::vector<Case> cases = {
      {"--lr -1", "--lr", "-1"},         {"--lr nan", "--lr", "nan"},
      {"--lr 0", "--lr", "0"},           {"--batch-size 0", "--batch-size", "0"},
      {"--model foo", "--model", "foo"}, {"--norm foo", "--norm", "foo"},
      {"--steps abc", "--steps", "abc"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.flags);
    CliResult r = run_cli(train_flags(dir) + " " + c.flags);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, c.expect_flag));
    CHECK(contains(r.output, c.expect_value));
    CHECK(contains(r.output, "Usage"));
  }
  CHECK_FALSE(fs::exists(dir.file("out")));
}

TEST_CASE("apps.cli: ablate with an unknown factor exits 1 listing the known factors") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  CliResult r = run_cli("ablate --threads 1 --steps 2 --data-dir " + shell_quote(dir.file("data")) +
                        " --out " + shell_quote(dir.file("abl")) + " --vary bogus=1");
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "unknown factor"));
  CHECK(contains(r.output, "bogus"));
  CHECK(contains(r.output, "lr-mult"));  // the known factors are listed

  CliResult bad_value =
      run_cli("ablate --threads 1 --steps 2 --data-dir " + shell_quote(dir.file("data")) +
              " --out " + shell_quote(dir.file("abl")) + " --vary norm=none,sideways");
  CAPTURE(bad_value.output);
  CHECK(bad_value.exit_code == 1);
  CHECK(contains(bad_value.output, "sideways"));
}

TEST_CASE("apps.cli: a missing dataset exits 1 naming the file and the fetch command") {
  TempDir dir;
  fs::create_directories(dir.file("data"));  // exists, but holds no mnist/
  CliResult r = run_cli(train_flags(dir) + " --model mlp --steps 2");
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "error:"));
  CHECK(contains(r.output, "train-images-idx3-ubyte"));
  CHECK(contains(r.output, "scripts/fetch_data.sh"));
  CHECK(contains(r.output, "mnist"));

  CliResult eval = run_cli("eval --checkpoint " + shell_quote(dir.file("no-such-run")) +
                           " --data-dir " + shell_quote(dir.file("data")));
  CAPTURE(eval.output);
  CHECK(eval.exit_code == 1);
  CHECK(contains(eval.output, "config.json"));

  CliResult data = run_cli("data info --dataset mnist --data-dir " + shell_quote(dir.file("data")));
  CAPTURE(data.output);
  CHECK(data.exit_code == 1);
  CHECK(contains(data.output, "scripts/fetch_data.sh"));
}

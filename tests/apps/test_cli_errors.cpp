// apps CLI errors: bad flags and values (unknown flags, NaN/inf/negative learning rates, zero or
// negative batch sizes, negative steps/epochs, bad --on-nan) exit 2 with the problem named and the
// usage; an unknown ablation factor, a missing dataset, zero length and an output directory that
// cannot be created exit 1 with a message that says what to do. docs/robustness.md lists them.
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
      {"--lr -1", "--lr", "-1"},
      {"--lr nan", "--lr", "nan"},
      {"--lr 0", "--lr", "0"},
      {"--batch-size 0", "--batch-size", "0"},
      {"--model foo", "--model", "foo"},
      {"--norm foo", "--norm", "foo"},
      {"--steps abc", "--steps", "abc"},
      {"--lr inf", "--lr", "inf"},
      {"--lr -inf", "--lr", "-inf"},
      {"--batch-size -4", "--batch-size", "-4"},
      {"--steps -1", "--steps", "-1"},
      {"--epochs -2", "--epochs", "-2"},
      {"--on-nan maybe", "--on-nan", "maybe"},
      {"--weight-decay nan", "--weight-decay", "nan"},
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

TEST_CASE("apps.cli: ablate flag values out of range exit 2 naming the flag") {
  TempDir dir;
  for (const std::string& flags : {std::string("--seeds 0"), std::string("--jobs -1"),
                                   std::string("--batch-size 0"), std::string("--lr nan")}) {
    CAPTURE(flags);
    CliResult r = run_cli("ablate --threads 1 --out " + shell_quote(dir.file("abl")) + " " + flags);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, flags.substr(0, flags.find(' '))));
    CHECK(contains(r.output, "Usage"));
  }
  CHECK_FALSE(fs::exists(dir.file("abl")));
}

TEST_CASE("apps.cli: zero steps and zero epochs exit 1 saying what is needed") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 40, 20);
  CliResult r = run_cli(train_flags(dir) + " --model mlp --steps 0 --epochs 0");
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "need --steps or --epochs > 0"));
}

TEST_CASE("apps.cli: an output directory that cannot be created exits 1 naming it") {
  // Tests run as root, which writes into read-only directories; a path whose parent is a regular
  // file fails for everyone.
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 40, 20);
  write_bytes(dir.file("file"), {'x'});
  const std::string under_file = dir.file("file") + "/run";
  CliResult train = run_cli("train --threads 1 --model mlp --steps 1 --batch-size 8 --data-dir " +
                            shell_quote(dir.file("data")) + " --out " + shell_quote(under_file));
  CAPTURE(train.output);
  CHECK(train.exit_code == 1);
  CHECK(contains(train.output, "error: ensure_directory: cannot create directory " + under_file));
  CHECK(contains(train.output, "Not a directory"));

  CliResult onto_file = run_cli(
      "train --threads 1 --model mlp --steps 1 --batch-size 8 "
      "--data-dir " +
      shell_quote(dir.file("data")) + " --out " + shell_quote(dir.file("file")));
  CAPTURE(onto_file.output);
  CHECK(onto_file.exit_code == 1);
  CHECK(contains(onto_file.output, dir.file("file") + " exists and is not a directory"));

  CliResult ablate = run_cli("ablate --threads 1 --model mlp --steps 1 --batch-size 8 --data-dir " +
                             shell_quote(dir.file("data")) + " --out " + shell_quote(under_file));
  CAPTURE(ablate.output);
  CHECK(ablate.exit_code == 1);
  CHECK(contains(ablate.output, "cannot create directory " + under_file));
  CHECK(read_text(dir.file("file")) == "x");
}

TEST_CASE("apps.errors: messages carry no source location unless --debug asks for it") {
  TempDir dir;
  fs::create_directories(dir.file("data"));
  CliResult plain = run_cli(train_flags(dir));
  CAPTURE(plain.output);
  CHECK(plain.exit_code == 1);
  CHECK(contains(plain.output, "error: mnist: "));
  CHECK_FALSE(contains(plain.output, ".cpp:"));

  CliResult debug = run_cli(train_flags(dir) + " --debug");
  CAPTURE(debug.output);
  CHECK(debug.exit_code == 1);
  CHECK(contains(debug.output, "(at "));
  CHECK(contains(debug.output, ".cpp:"));
}

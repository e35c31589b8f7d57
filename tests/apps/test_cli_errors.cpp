// apps CLI errors: bad flags and values (unknown flags, NaN/inf/negative learning rates, zero or
// negative batch sizes, negative steps/epochs, bad --on-nan, out-of-range numbers, bad ablation
// factors, zero length) exit 2 with the problem named and where the flags are listed, before any
// data is read; a missing dataset and an output directory that cannot be created exit 1 with a
// message that says what to do, and so does output that cannot be written to stdout.
// docs/robustness.md lists them.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cmath>

#include "apps_test_util.h"
#include "core/serialize.h"

using json = nlohmann::json;

using namespace apps_test;

namespace {

// Common train flags pointing at `dir`'s data, with a valid output directory.
std::string train_flags(const TempDir& dir) {
  return "train --threads 1 --data-dir " + shell_quote(dir.file("data")) + " --out " +
         shell_quote(dir.file("out"));
}

}  // namespace

TEST_CASE("apps.cli: an unknown flag exits 2 naming the flag and pointing at --help") {
  TempDir dir;
  CliResult r = run_cli(train_flags(dir) + " --no-such-flag 3");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.output, "--no-such-flag"));
  CHECK(contains(r.output, "Run 'bnlab train --help' for the flags."));
  CHECK_FALSE(contains(r.output, "Options:"));  // a short message, not the whole --help
  CHECK_FALSE(fs::exists(dir.file("out")));

  // A near miss gets a suggestion.
  CliResult typo = run_cli(train_flags(dir) + " --epoch 2 --lr=0.1 --nesterv");
  CAPTURE(typo.output);
  CHECK(typo.exit_code == 2);
  CHECK(contains(typo.output, "--epoch: did you mean --epochs?"));
  CHECK(contains(typo.output, "--nesterv: did you mean --nesterov?"));
  CHECK_FALSE(contains(r.output, "did you mean"));  // --no-such-flag is close to nothing

  // Listed in the order given.
  CHECK(contains(r.output, "error: The following arguments were not expected: --no-such-flag 3\n"));
}

// CLI11 checks required flags and subcommands before it looks at the words it did not know: a
// misspelled command was "A subcommand is required" and a misspelled required flag "--checkpoint
// is required", neither naming the typo.
TEST_CASE("apps.cli: an unknown command or flag is named first, with the closest known one") {
  struct Case {
    std::string args, expect, help;
  };
  const std::vector<Case> cases = {
      {"traing", "error: unknown command 'traing'; did you mean 'train'?\n",
       "bnlab --help' for the commands"},
      {"traing --epochs 2", "error: unknown command 'traing'; did you mean 'train'?\n",
       "bnlab --help' for the commands"},
      {"Eval", "error: unknown command 'Eval'; did you mean 'eval'?\n",
       "bnlab --help' for the commands"},
      {"bogus", "error: unknown command 'bogus'\n", "bnlab --help' for the commands"},
      {"data shwo", "error: unknown command 'shwo'; did you mean 'show'?\n",
       "bnlab data --help' for the commands"},
      {"eval --checkpont x",
       "error: The following arguments were not expected: --checkpont x\n--checkpont: did you "
       "mean --checkpoint?\n",
       "bnlab eval --help' for the flags"},
      {"--bogus", "error: The following argument was not expected: --bogus\n",
       "bnlab --help' for the flags"},
      // Nothing unknown: CLI11's own message.
      {"eval", "error: --checkpoint is required\n", "bnlab eval --help' for the flags"},
      {"", "error: A subcommand is required\n", "bnlab --help' for the flags"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args);
    CliResult r = run_cli(c.args);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, c.expect));
    CHECK(contains(r.output, "Run '" + c.help + ".\n"));
    CHECK_FALSE(contains(r.output, "Options:"));
  }
  CHECK_FALSE(contains(run_cli("bogus").output, "did you mean"));
  CHECK_FALSE(contains(run_cli("eval --checkpont x").output, "is required"));
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
      // Numbers that do not fit are refused, not clamped or wrapped.
      {"--steps 99999999999999999999", "--steps", "99999999999999999999"},
      {"--seed -1", "--seed", "-1"},
      {"--seed 18446744073709551616", "--seed", "18446744073709551616"},
      {"--lr 1e39", "--lr", "1e39"},
      {"--dropout -0.5", "--dropout", "-0.5"},
      {"--dropout 1", "--dropout", "1"},
      {"--threads 100000", "--threads", "100000"},
      {"--momentum 7", "--momentum", "7"},
      {"--batch-size 2.5", "--batch-size", "2.5"},
      {"--schedule bogus", "--schedule", "bogus"},
      {"--init normal:-1", "--init", "normal:-1"},
      {"--dataset nosuch", "--dataset", "nosuch"},
      // Rules between flags, also before any data is read (the data directory is empty).
      {"--probe-unit 1000", "--probe-unit", "1000"},
      {"--steps 0 --epochs 0", "--steps or --epochs", "both are 0"},
      {"--steps 10 --schedule warmup:5+cosine:0 --schedule warmup:20+cosine", "--schedule",
       "warmup:20+cosine"},
      {"--out ''", "--out", "''"},
      // A switch takes true or false (and 1, 0, on, off), nothing else; CLI11 passed "maybe" to
      // std::stoll, whose exception aborted the process.
      {"--nesterov=maybe", "--nesterov", "maybe"},
      {"--augment=sometimes", "--augment", "sometimes"},
      // Positive numbers that are 0 as the float they are stored in, and a rate below 1 that
      // rounds to 1: written to config.json, they were refused when the run was read back.
      {"--lr 1e-50", "--lr", "1e-50"},
      {"--bn-momentum 1e-50", "--bn-momentum", "1e-50"},
      {"--bn-eps 1e-50", "--bn-eps", "1e-50"},
      {"--mechanism-etas 1,1e-50", "--mechanism-etas", "1,1e-50"},
      {"--dropout 0.9999999999", "--dropout", "0.9999999999"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.flags);
    CliResult r = run_cli(train_flags(dir) + " " + c.flags);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, c.expect_flag));
    CHECK(contains(r.output, c.expect_value));
    CHECK(contains(r.output, "--help"));
  }
  CHECK_FALSE(fs::exists(dir.file("out")));
}

// A schedule whose rate overflows float used to stop the run at that step (exit 1, "sgd: invalid
// learning rate inf", naming no flag) and leave a run whose resume failed the same way.
TEST_CASE(
    "apps.cli: a schedule whose learning rate overflows is refused naming --schedule and the "
    "step") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 600, 100);
  // 0.01 * 1e30^2 = 1e58 at the third step.
  for (const std::string& flags :
       {std::string("--model mlp --steps 8 -b 16 --schedule step:1:1e30"),
        std::string("--model mlp --steps 8 -b 16 --optimizer adam --schedule exp:1e30"),
        std::string("--model mlp --steps 400 -b 16 --lr 0.01 --schedule warmup:100+exp:1.5")}) {
    CAPTURE(flags);
    CliResult r = run_cli(train_flags(dir) + " " + flags);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, "--schedule"));
    CHECK(contains(r.output, "past the largest float"));
    CHECK_FALSE(fs::exists(dir.file("out")));
  }
  CHECK(contains(
      run_cli(train_flags(dir) + " --model mlp --steps 8 -b 16 --schedule step:1:1e30").output,
      "--schedule step:1:1e30 does not fit --steps 8 at --lr 0.01: the learning rate of "
      "step 3 is 1e+58"));
  // With --epochs the length is known once the data is: 600 images at batch 16 are 37 steps. The
  // same flag error as with --steps, so the same exit code (it was 1).
  CliResult epochs =
      run_cli(train_flags(dir) + " --model mlp --epochs 1 -b 16 --schedule step:1:1e30");
  CAPTURE(epochs.output);
  CHECK(epochs.exit_code == 2);
  CHECK(contains(epochs.output,
                 "--schedule step:1:1e30 does not fit a run of 37 steps (--epochs 1) at --lr 0.01: "
                 "the learning rate of step 3"));
  CHECK_FALSE(fs::exists(dir.file("out/config.json")));  // nothing to resume
  // An ablation arm whose lr-mult makes the rate overflow: 0.5 * 1e10 * 1.5^t passes 3.4e38 at
  // t = 164, within the 200 steps; the base rate alone stays finite.
  CliResult arm = run_cli("ablate --threads 1 --steps 200 --lr 0.5 --schedule exp:1.5 --data-dir " +
                          shell_quote(dir.file("data")) + " --out " + shell_quote(dir.file("abl")) +
                          " --vary lr-mult=1,1e10");
  CAPTURE(arm.output);
  CHECK(arm.exit_code == 2);
  CHECK(contains(arm.output, "--schedule exp:1.5 does not fit --steps 200 at --lr 5e+09"));
  CHECK_FALSE(fs::exists(dir.file("abl")));
}

// add_flag_function set a switch on whatever value it was given: --nesterov=false was Nesterov.
TEST_CASE("apps.cli: a switch given false is off and given nothing is on") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  auto nesterov = [&](const std::string& flag, const std::string& out) {
    CliResult r = run_cli("train --threads 1 --model mlp --steps 1 -b 16 --data-dir " +
                          shell_quote(dir.file("data")) + " --out " + shell_quote(dir.file(out)) +
                          " " + flag);
    CAPTURE(r.output);
    REQUIRE(r.exit_code == 0);
    return json::parse(read_text(dir.file(out) + "/config.json"))["nesterov"].get<bool>();
  };
  CHECK(nesterov("--nesterov", "on"));
  CHECK(nesterov("--nesterov=true", "true"));
  CHECK_FALSE(nesterov("--nesterov=false", "false"));
  CHECK_FALSE(nesterov("--nesterov=0", "zero"));
  CHECK_FALSE(nesterov("--nesterov --nesterov=off", "last"));  // the last one given counts
}

TEST_CASE("apps.cli: ablate with an unknown factor exits 2 listing the known factors") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  CliResult r = run_cli("ablate --threads 1 --steps 2 --data-dir " + shell_quote(dir.file("data")) +
                        " --out " + shell_quote(dir.file("abl")) + " --vary bogus=1");
  CAPTURE(r.output);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.output, "unknown factor"));
  CHECK(contains(r.output, "bogus"));
  CHECK(contains(r.output, "lr-mult"));  // the known factors are listed

  // Factor values obey the flag's own rule (train/knobs.h).
  for (const std::string& vary :
       {std::string("norm=none,sideways"), std::string("dropout=0,-0.5")}) {
    CAPTURE(vary);
    CliResult bad =
        run_cli("ablate --threads 1 --steps 2 --data-dir " + shell_quote(dir.file("data")) +
                " --out " + shell_quote(dir.file("abl")) + " --vary " + vary);
    CAPTURE(bad.output);
    CHECK(bad.exit_code == 2);
    CHECK(contains(bad.output, vary.substr(vary.rfind(',') + 1)));
  }
  // An empty value is refused wherever it stands: a trailing one ("none,") passed as one arm.
  for (const std::string& vary : {std::string("norm=,none"), std::string("norm=none,"),
                                  std::string("norm=none,,batch"), std::string("norm=,")}) {
    CAPTURE(vary);
    CliResult bad =
        run_cli("ablate --threads 1 --steps 2 --data-dir " + shell_quote(dir.file("data")) +
                " --out " + shell_quote(dir.file("abl")) + " --vary " + vary);
    CAPTURE(bad.output);
    CHECK(bad.exit_code == 2);
    CHECK(contains(bad.output, "error: ablate: empty value in factor '" + vary + "'"));
  }
  CHECK_FALSE(fs::exists(dir.file("abl")));
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

TEST_CASE(
    "apps.cli: eval and data refuse a bad --dataset or --split with exit 2, reading no data") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 40, 10);
  const std::string run = shell_quote(dir.file("run"));
  REQUIRE(run_cli("train --model mlp --steps 1 --batch-size 8 --threads 1 --data-dir " +
                  shell_quote(dir.file("data")) + " --out " + run)
              .exit_code == 0);
  // An empty data directory: reading data first would fail with "not found" and exit 1.
  fs::create_directories(dir.file("empty"));
  const std::string no_data = " --data-dir " + shell_quote(dir.file("empty"));
  struct Case {
    std::string args, flag, value;
  };
  const std::vector<Case> cases = {
      // No run directory at all: --dataset is refused before config.json is read.
      {"eval --checkpoint " + shell_quote(dir.file("nothing")) + " --dataset bogus", "--dataset",
       "bogus"},
      {"eval --checkpoint " + run + " --split bogus", "--split", "bogus"},
      {"eval --checkpoint " + run + " --dataset cifar10 --split bogus", "--split", "bogus"},
      {"data info --dataset bogus", "--dataset", "bogus"},
      {"data info --split bogus", "--split", "bogus"},
      {"data info --dataset mnist --split trainval", "--split", "trainval"},
      {"data show --dataset bogus --out " + shell_quote(dir.file("g.png")), "--dataset", "bogus"},
      {"data show --split bogus --out " + shell_quote(dir.file("g.png")), "--split", "bogus"},
  };
  for (const Case& c : cases) {
    CliResult r = run_cli(c.args + no_data);
    CAPTURE(c.args);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, "error: " + c.flag + ": must be"));
    CHECK(contains(r.output, "'" + c.value + "'"));
  }
  CHECK_FALSE(fs::exists(dir.file("g.png")));
}

TEST_CASE("apps.cli: ablate flag values out of range exit 2 naming the flag") {
  TempDir dir;
  for (const std::string& flags :
       {std::string("--seeds 0"), std::string("--jobs -1"), std::string("--batch-size 0"),
        std::string("--lr nan"), std::string("--seeds 99999999999999999999"),
        std::string("--jobs 1.5"), std::string("--out ''"),
        // Two identical "steps to 50%" columns were written (no data: nothing may train).
        "--thresholds 0.5,0.5 --data-dir " + shell_quote(dir.file("none")),
        "--thresholds 0.9,0.95,0.90 --data-dir " + shell_quote(dir.file("none"))}) {
    CAPTURE(flags);
    CliResult r = run_cli("ablate --threads 1 --out " + shell_quote(dir.file("abl")) + " " + flags);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, flags.substr(0, flags.find(' '))));
    CHECK(contains(r.output, "--help"));
  }
  // The seeds after --seed wrapped past 2^64 - 1 to 0 (runs seed-18446744073709551615, seed-0).
  CliResult wrap =
      run_cli("ablate --threads 1 --out " + shell_quote(dir.file("abl")) +
              " --seed 18446744073709551615 --seeds 2 --data-dir " + shell_quote(dir.file("none")));
  CAPTURE(wrap.output);
  CHECK(wrap.exit_code == 2);
  CHECK(contains(wrap.output,
                 "error: ablate: --seeds 2 from --seed 18446744073709551615 needs seeds past "
                 "18446744073709551615, the largest; use a --seed of at most "
                 "18446744073709551614"));
  CHECK_FALSE(contains(wrap.output, "arm:"));
  CliResult fits =
      run_cli("ablate --threads 1 --out " + shell_quote(dir.file("abl")) +
              " --seed 18446744073709551614 --seeds 2 --data-dir " + shell_quote(dir.file("none")));
  CAPTURE(fits.output);
  CHECK(contains(fits.output, "arm:"));  // accepted: it stops at the missing data
  fs::remove_all(dir.file("abl"));
  CHECK(contains(run_cli("ablate --threads 1 --out " + shell_quote(dir.file("abl")) +
                         " --thresholds 0.9,0.95,0.90 --data-dir " + shell_quote(dir.file("none")))
                     .output,
                 "--thresholds: 0.9 is given twice; each threshold makes one 'steps to' column"));
  CHECK_FALSE(fs::exists(dir.file("abl")));
  // A multiplier, or the rate it makes, that is 0 as a float: the arm stopped at its first step
  // with "learning rate must be a positive number; got 0".
  for (const auto& [flags, expect] :
       {std::pair<std::string, std::string>{"--vary lr-mult=1,1e-50",
                                            "lr-mult=1e-50: must be a finite number > 0"},
        {"--lr 1e-30 --vary lr-mult=1,1e-30",
         "lr-mult 1e-30 times the base lr 1e-30 is not a finite float > 0"}}) {
    CAPTURE(flags);
    CliResult r = run_cli("ablate --threads 1 --out " + shell_quote(dir.file("abl")) + " " + flags);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, expect));
  }
  CHECK_FALSE(fs::exists(dir.file("abl")));
}

// Arms named by a factor that had no effect: lr-mult=5 after an lr factor trained at 1x, and
// lr=0.1,0.10 were two arms of one run (no data: nothing may train).
TEST_CASE("apps.cli: ablate refuses factors and values that give arms one setting") {
  TempDir dir;
  const std::string flags = "ablate --threads 1 --out " + shell_quote(dir.file("abl")) +
                            " --data-dir " + shell_quote(dir.file("none")) + " ";
  for (const auto& [vary, expect] :
       {std::pair<std::string, std::string>{
            "--vary lr-mult=1,5 --vary lr=0.1,0.2",
            "error: ablate: factors 'lr' and 'lr-mult' both set the learning rate, so one of "
            "them would not change what the arms train; vary one of them"},
        {"--vary lr=0.1,0.2 --vary lr-mult=1,5", "factors 'lr' and 'lr-mult' both set"},
        {"--vary lr=0.1,0.10,1e-1",
         "error: ablate: lr=0.1 and lr=0.10 give the same setting, so two arms would train one "
         "run; list each setting once"},
        {"--vary lr-mult=1,1.0", "lr-mult=1 and lr-mult=1.0 give the same setting"},
        {"--vary norm=none,batch --vary dropout=0.5,0.50",
         "dropout=0.5 and dropout=0.50 give the same setting (in arm norm=none)"}}) {
    CAPTURE(vary);
    CliResult r = run_cli(flags + vary);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, expect));
    CHECK_FALSE(contains(r.output, "arm:"));
  }
  CHECK_FALSE(fs::exists(dir.file("abl")));
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

// coreutils' rule: output that did not reach stdout (a full disk; here /dev/full, whose every
// write fails with ENOSPC) is an error, not a silent exit 0. Only ever opened for writing.
TEST_CASE("apps.cli: output lost to a full stdout is an error naming the cause") {
  struct stat st {};
  if (::stat("/dev/full", &st) != 0 || !S_ISCHR(st.st_mode)) {
    MESSAGE("skipped: /dev/full is not a character device here");
    return;
  }
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 40, 10);
  const std::string data = " --data-dir " + shell_quote(dir.file("data"));
  const std::string run = shell_quote(dir.file("run"));
  REQUIRE(run_cli("train --model mlp --steps 1 --batch-size 8 --threads 1 --out " + run + data)
              .exit_code == 0);
  // The braces keep stderr on the captured pipe: only stdout goes to /dev/full.
  auto to_full = [](const std::string& args) {
    return run_shell("{ " + shell_quote(BNLAB_CLI_PATH) + " " + args + " >/dev/full; }");
  };
  const std::vector<std::string> commands = {
      "eval --checkpoint " + run + data,
      "data info" + data,
      "info",
      "study --list",
      "--help",
      "train --help",
      "train --model mlp --steps 1 --batch-size 8 --threads 1 --out " +
          shell_quote(dir.file("run2")) + data,
  };
  for (const std::string& args : commands) {
    CAPTURE(args);
    CliResult r = to_full(args);
    CAPTURE(r.output);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, "bnlab: error writing standard output: No space left on device\n"));
  }
  // A command that failed on its own keeps its exit code: 3 for weights that went NaN.
  const std::string model = dir.file("run") + "/model.safetensors";
  bnlab::SafetensorsFile saved = bnlab::load_safetensors(model);
  saved.tensors[0].tensor = saved.tensors[0].tensor.clone();
  saved.tensors[0].tensor.data()[0] = NAN;
  bnlab::save_safetensors(model, saved.tensors, saved.metadata);
  CliResult nan = to_full("eval --checkpoint " + run + data);
  CAPTURE(nan.output);
  CHECK(nan.exit_code == 3);
  CHECK(contains(nan.output, "bnlab: error writing standard output"));
  // A usage error writes nothing to stdout, and stays a usage error.
  CliResult usage = to_full("bench --workloads W9");
  CHECK(usage.exit_code == 2);
  CHECK_FALSE(contains(usage.output, "error writing standard output"));
}

// The help texts said less than the tool accepts: --resume named four of the seven flags a resume
// may change (its refusal listed all seven), and --split left out cifar10's trainval.
TEST_CASE("apps.cli: the help lists what --resume may change and every cifar10 split") {
  auto help_line = [](const std::string& args, const std::string& flag) {
    const std::string help = run_cli(args + " --help").output;
    const size_t at = help.find("  " + flag + " ");
    REQUIRE(at != std::string::npos);
    return help.substr(at, help.find('\n', at) - at);
  };
  const std::string resume = help_line("train", "--resume");
  for (const char* flag : {"--data-dir", "--epochs", "--steps", "--threads", "--log-every",
                           "--collapse-after", "--collapse-margin"}) {
    CAPTURE(flag);
    CHECK(contains(resume, flag));
  }
  for (const char* command : {"eval", "data info", "data show"}) {
    CAPTURE(command);
    const std::string split = help_line(command, "--split");
    for (const char* name : {"val", "trainval", "test_first1000"}) CHECK(contains(split, name));
  }
}

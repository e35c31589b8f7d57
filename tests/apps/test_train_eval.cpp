// apps train and eval end to end on a tiny learnable MNIST-shaped dataset: every output file of a
// run (config.json, metrics.csv, checkpoints, summary.json), learning above chance, eval's accuracy
// and confusion matrix agreeing with the run's summary, the other models and norms, and divergence.
#include <doctest/doctest.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "apps_test_util.h"
#include "core/serialize.h"
#include "core/version.h"
#include "data/datasets.h"
#include "train/plot.h"
#include "train/trainer.h"

using namespace apps_test;
using json = nlohmann::json;

namespace {

const std::vector<std::string> kMetricsColumns = {
    "step", "epoch",     "train_loss", "train_acc", "test_loss", "test_acc",
    "lr",   "elapsed_s", "probe_p15",  "probe_p50", "probe_p85"};

std::string common_flags(const TempDir& dir) {
  return "--threads 1 --data-dir " + shell_quote(dir.file("data"));
}

double num(const std::string& cell) {
  return cell == "nan" || cell == "-nan" ? NAN : std::stod(cell);
}

}  // namespace

TEST_CASE("apps.train: an mlp with batch norm writes every output file and learns the data") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  const std::string out = dir.file("run");
  CliResult r = run_cli(
      "train --model mlp --norm batch --steps 40 --batch-size 32 --eval-every 20 "
      "--lr 0.1 --momentum 0.9 " +
      common_flags(dir) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "mnist/train 600 images"));
  CHECK(contains(r.output, "final: step 40"));
  for (const char* f : {"config.json", "metrics.csv", "model.safetensors",
                        "train_state.safetensors", "summary.json"}) {
    CAPTURE(f);
    CHECK(fs::exists(fs::path(out) / f));
  }

  // config.json records the settings the run used.
  json cfg = json::parse(read_text(out + "/config.json"));
  CHECK(cfg["model"]["name"] == "mlp");
  CHECK(cfg["model"]["norm"] == "batch");
  CHECK(cfg["steps"] == 40);
  CHECK(cfg["batch_size"] == 32);
  CHECK(cfg["lr"].get<double>() == doctest::Approx(0.1));
  CHECK(cfg["threads"] == 1);
  // ... and what produced it: the version, the commit, and where the data came from (resolved).
  CHECK(cfg["provenance"]["bnlab_version"] == bnlab::version());
  CHECK(cfg["provenance"]["git_commit"] == bnlab::git_commit());
  CHECK(fs::path(cfg["provenance"]["data_dir"].get<std::string>()) ==
        fs::absolute(dir.file("data")).lexically_normal());

  // metrics.csv: the header, then rows at steps 0 (untrained), 20 and 40.
  auto rows = parse_csv(read_text(out + "/metrics.csv"));
  REQUIRE(rows.size() == 4);
  CHECK(rows[0] == kMetricsColumns);
  std::vector<std::string> steps;
  for (size_t i = 1; i < rows.size(); ++i) {
    REQUIRE(rows[i].size() == kMetricsColumns.size());
    steps.push_back(rows[i][0]);
  }
  CHECK(steps == std::vector<std::string>{"0", "20", "40"});
  CHECK(std::isnan(num(rows[1][2])));  // no training loss before the first step
  CHECK(num(rows[3][1]) == doctest::Approx(40.0 / 18.0).epsilon(1e-4));  // 18 full batches/epoch
  for (size_t i = 2; i < rows.size(); ++i) {
    CHECK(std::isfinite(num(rows[i][2])));
    CHECK(num(rows[i][6]) == doctest::Approx(0.1));
    CHECK(num(rows[i][7]) >= num(rows[i - 1][7]));  // elapsed time only grows
  }
  const double final_acc = num(rows[3][5]);
  CHECK(final_acc > 0.5);  // chance is 0.1
  CHECK(num(rows[3][4]) < num(rows[1][4]));

  // summary.json agrees with the last metrics row.
  json summary = json::parse(read_text(out + "/summary.json"));
  CHECK(summary["steps"] == 40);
  CHECK(summary["diverged"] == false);
  CHECK(summary["model"] == "mlp");
  CHECK(summary["final_test_acc"].get<double>() == doctest::Approx(final_acc));
  // It learned: not collapsed; chance is the test split's commonest class.
  CHECK(summary["collapsed"] == false);
  CHECK(summary["collapse_reason"] == "");
  CHECK(summary["chance_acc"].get<double>() > 0.1);
  CHECK(summary["chance_acc"].get<double>() < 0.3);

  // The weights are a PyTorch-style state dict, BatchNorm buffers included.
  bnlab::SafetensorsFile model = bnlab::load_safetensors(out + "/model.safetensors");
  bool has_running_mean = false;
  for (const auto& t : model.tensors) has_running_mean |= contains(t.name, "running_mean");
  CHECK(has_running_mean);
  CHECK(model.metadata["model"] == "mlp");

  // bnlab eval reproduces the run's final accuracy and prints the confusion matrix.
  CliResult ev = run_cli("eval --checkpoint " + shell_quote(out) + " --json --data-dir " +
                         shell_quote(dir.file("data")));
  CAPTURE(ev.output);
  REQUIRE(ev.exit_code == 0);
  CHECK(contains(ev.output, "accuracy"));
  CHECK(contains(ev.output, "confusion matrix"));
  json report = json::parse(read_text(out + "/eval_mnist_test.json"));
  CHECK(report["images"] == 200);
  CHECK(report["accuracy"].get<double>() == doctest::Approx(final_acc).epsilon(1e-6));
  int64_t total = 0, diagonal = 0;
  REQUIRE(report["confusion"].size() == 10);
  for (size_t t = 0; t < 10; ++t) {
    for (size_t p = 0; p < 10; ++p) total += report["confusion"][t][p].get<int64_t>();
    diagonal += report["confusion"][t][t].get<int64_t>();
  }
  CHECK(total == 200);
  CHECK(static_cast<double>(diagonal) / 200.0 == doctest::Approx(final_acc));
}

TEST_CASE("apps.train: lenet with group norm and paper-mlp with layer norm train a few steps") {
  TempDir dir;
  // LeNet is the slow one: a smaller dataset keeps its evaluations cheap.
  write_tiny_mnist(dir.file("data"), 96, 40);
  struct Case {
    std::string flags, out, expect;
  };
  const std::vector<Case> cases = {
      {"--model lenet --norm group --steps 2 --eval-every 2 --batch-size 16 --summary", "lenet",
       "GroupNorm"},
      {"--model paper-mlp --norm layer --steps 6 --eval-every 3 --batch-size 16 --lr 0.5", "paper",
       "final: step 6"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.flags);
    const std::string out = dir.file(c.out);
    CliResult r =
        run_cli("train " + c.flags + " " + common_flags(dir) + " --out " + shell_quote(out));
    CAPTURE(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.output, c.expect));
    auto rows = parse_csv(read_text(out + "/metrics.csv"));
    REQUIRE(rows.size() >= 3);
    CHECK(rows.front() == kMetricsColumns);
    for (size_t i = 2; i < rows.size(); ++i) {
      CHECK(std::isfinite(num(rows[i][2])));
      CHECK(std::isfinite(num(rows[i][4])));
    }
    CHECK(fs::exists(out + "/model.safetensors"));
    CHECK(json::parse(read_text(out + "/summary.json"))["diverged"] == false);
  }
}

TEST_CASE("apps.train: lenet with instance norm trains a few steps - an mlp refuses it") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  const std::string out = dir.file("lenet");
  CliResult r = run_cli(
      "train --model lenet --norm instance --steps 2 --eval-every 2 --batch-size 16 --summary " +
      common_flags(dir) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "InstanceNorm2d"));
  auto rows = parse_csv(read_text(out + "/metrics.csv"));
  REQUIRE(rows.size() == 3);
  CHECK(std::isfinite(num(rows[2][2])));
  CHECK(std::isfinite(num(rows[2][4])));
  // InstanceNorm2d(affine) after each conv (children 1 and 5: weight and bias, no running
  // statistics); the dense layer after the convs stays unnormalized (child 10 is its ReLU).
  std::vector<std::string> names;
  for (const bnlab::NamedTensor& t : bnlab::load_safetensors(out + "/model.safetensors").tensors)
    names.push_back(t.name);
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"0.bias", "0.weight", "1.bias", "1.weight", "12.bias",
                                          "12.weight", "4.bias", "4.weight", "5.bias", "5.weight",
                                          "9.bias", "9.weight"});

  // A dense-only model has no positions to normalize over: a short message before any data is
  // read (exit 2, no run directory), not a crash; also with the probe off, and from ablate.
  const std::string mlp_out = dir.file("mlp");
  CliResult mlp = run_cli("train --model mlp --norm instance --steps 2 --probe-unit -1 " +
                          common_flags(dir) + " --out " + shell_quote(mlp_out));
  CAPTURE(mlp.output);
  CHECK(mlp.exit_code == 2);
  CHECK(contains(mlp.output,
                 "error: instance normalization needs spatial positions; --norm instance applies "
                 "to conv models (lenet, cifar-cnn)"));
  CHECK(!fs::exists(mlp_out));
  CliResult sweep = run_cli("ablate --model paper-mlp --vary norm=none,instance --steps 2 " +
                            common_flags(dir) + " --out " + shell_quote(dir.file("sweep")));
  CAPTURE(sweep.output);
  CHECK(sweep.exit_code == 2);
  CHECK(contains(sweep.output, "--norm instance applies to conv models (lenet, cifar-cnn)"));
}

namespace {
// Each (flag, message): `train --norm <norm>` with the flag exits 2 naming the flag and the rule,
// before any data is read or the run directory made.
void check_refused_settings(const TempDir& dir, const std::string& norm,
                            const std::vector<std::pair<std::string, std::string>>& cases) {
  for (const auto& [flag, message] : cases) {
    CAPTURE(flag);
    CliResult bad = run_cli("train --model mlp --norm " + norm + " --steps 2 " + flag + " " +
                            common_flags(dir) + " --out " + shell_quote(dir.file("bad")));
    CAPTURE(bad.output);
    CHECK(bad.exit_code == 2);
    CHECK(contains(bad.output, message));
    CHECK(!fs::exists(dir.file("bad")));
  }
}
}  // namespace

TEST_CASE(
    "apps.train: --norm batch-renorm trains, its settings reach config.json, bad ones exit 2") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  const std::string out = dir.file("lenet");
  // Warm-up 1 and ramp 2: steps 3 and 4 run with r and d active.
  CliResult r = run_cli(
      "train --model lenet --norm batch-renorm --renorm-warmup 1 --renorm-ramp 2 --steps 4 "
      "--eval-every 2 --batch-size 16 --summary " +
      common_flags(dir) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "renorm r_max 3 d_max 5 warm-up 1 ramp 2"));
  CHECK(contains(r.output, "BatchRenorm2d"));
  CHECK(contains(r.output, "BatchRenorm1d"));  // after lenet's dense layer
  auto rows = parse_csv(read_text(out + "/metrics.csv"));
  REQUIRE(rows.size() == 4);  // header, steps 0, 2 and 4
  CHECK(std::isfinite(num(rows[3][2])));
  CHECK(std::isfinite(num(rows[3][4])));
  // BatchNorm's state_dict: each norm layer counted its 4 batches.
  int layers = 0;
  for (const bnlab::NamedTensor& t : bnlab::load_safetensors(out + "/model.safetensors").tensors) {
    if (t.name.find("num_batches_tracked") == std::string::npos) continue;
    ++layers;
    CHECK(t.tensor.item() == 4.0f);
  }
  CHECK(layers == 3);
  const json config = json::parse(read_text(out + "/config.json"));
  CHECK(config["model"]["norm"] == "batch-renorm");
  CHECK(config["model"]["renorm_warmup"] == 1);
  CHECK(config["model"]["renorm_ramp"] == 2);
  CHECK(config["model"]["renorm_rmax"] == 3.0);
  CHECK(config["model"]["renorm_dmax"] == 5.0);
  // eval uses the running statistics, as for batch norm, and folds the three BatchRenorm layers
  // into the convs and the dense layer before them: the run's last evaluation (unfolded, in the
  // trainer) is reproduced.
  CliResult ev = run_cli("eval --checkpoint " + shell_quote(out) + " --json --data-dir " +
                         shell_quote(dir.file("data")));
  CAPTURE(ev.output);
  CHECK(ev.exit_code == 0);
  const json report = json::parse(read_text(out + "/eval_mnist_test.json"));
  CHECK(report["accuracy"].get<double>() == doctest::Approx(num(rows[3][5])).epsilon(1e-6));
  CHECK(report["loss"].get<double>() == doctest::Approx(num(rows[3][4])).epsilon(1e-4));
  // The schedule is part of the run: a resume that changes it is refused.
  CliResult conflict = run_cli("train --resume " + shell_quote(out) + " --renorm-rmax 2");
  CAPTURE(conflict.output);
  CHECK(conflict.exit_code == 2);
  CHECK(contains(conflict.output, "has model.renorm_rmax = 3"));
  check_refused_settings(
      dir, "batch-renorm",
      {{"--renorm-rmax 0.5", "--renorm-rmax: must be a finite number >= 1, got '0.5'"},
       {"--renorm-dmax -1", "--renorm-dmax: must be a finite number >= 0, got '-1'"},
       {"--renorm-warmup -3", "--renorm-warmup: must be a whole number from 0"},
       {"--renorm-ramp 1.5", "--renorm-ramp: must be a whole number from 0"}});
}

TEST_CASE("apps.train: --norm noisy-batch trains, its ranges reach config.json, bad ones exit 2") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  const std::string out = dir.file("noisy");
  CliResult r = run_cli(
      "train --model paper-mlp --norm noisy-batch --bn-noise-mean 0.25 --bn-noise-var 2 --steps 4 "
      "--eval-every 2 --batch-size 16 --summary " +
      common_flags(dir) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "noise mean U(-0.25, 0.25) var U(1, 2)"));
  CHECK(contains(r.output, "noise mean_range 0.25"));  // the model summary's BatchNorm1d
  const json config = json::parse(read_text(out + "/config.json"));
  CHECK(config["model"]["norm"] == "noisy-batch");
  CHECK(config["model"]["bn_noise_mean"] == 0.25);
  CHECK(config["model"]["bn_noise_var"] == 2.0);
  CliResult conflict = run_cli("train --resume " + shell_quote(out) + " --bn-noise-var 3");
  CAPTURE(conflict.output);
  CHECK(conflict.exit_code == 2);
  CHECK(contains(conflict.output, "has model.bn_noise_var = 2"));
  check_refused_settings(
      dir, "noisy-batch",
      {{"--bn-noise-mean -0.5", "--bn-noise-mean: must be a finite number >= 0, got '-0.5'"},
       {"--bn-noise-var 0.5", "--bn-noise-var: must be a finite number >= 1, got '0.5'"}});
}

TEST_CASE("apps.train: a diverging run stops, says so and exits 3") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  const std::string out = dir.file("run");
  CliResult r = run_cli(
      "train --model mlp --norm none --lr 1000 --steps 20 --eval-every 10 "
      "--batch-size 16 " +
      common_flags(dir) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  CHECK(r.exit_code == 3);
  CHECK(contains(r.output, "DIVERGED"));
  json summary = json::parse(read_text(out + "/summary.json"));
  CHECK(summary["diverged"] == true);
  CHECK(summary["diverged_step"].get<int64_t>() > 0);
  CHECK(summary["steps"].get<int64_t>() < 20);
}

// eval of a run whose summary.json says it diverged scored the last checkpoint before the
// divergence with no word and exit 0, and with no checkpoint said only "cannot open
// model.safetensors". Both runs diverge for real (plain ReLU mlp, rates far too high).
TEST_CASE("apps.eval: a diverged run's earlier checkpoint is named as such, and no checkpoint is") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  const std::string late = dir.file("late");
  CliResult trained =
      run_cli("train --model mlp --norm none --lr 5 --steps 60 --eval-every 10 " +
              std::string("--batch-size 16 ") + common_flags(dir) + " --out " + shell_quote(late));
  CAPTURE(trained.output);
  REQUIRE(trained.exit_code == 3);
  const int64_t diverged = json::parse(read_text(late + "/summary.json"))["diverged_step"];
  const std::string step = split_safetensors(late + "/model.safetensors")
                               .header["__metadata__"]["step"]
                               .get<std::string>();
  REQUIRE(std::stoll(step) > 0);  // a checkpoint from before the divergence, as the case needs
  REQUIRE(std::stoll(step) < diverged);
  CliResult r = run_cli("eval --checkpoint " + shell_quote(late));
  CAPTURE(r.output);
  CHECK(contains(r.output, "warning: " + late + " diverged at step " + std::to_string(diverged) +
                               " (its summary.json); model.safetensors holds the weights of step " +
                               step + ", its last checkpoint before that"));
  // Finite weights and outputs: real figures of a real model (exit 3 is for non-finite ones).
  REQUIRE_FALSE(contains(r.output, "not finite"));
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "accuracy"));

  const std::string early = dir.file("early");
  trained =
      run_cli("train --model mlp --norm none --lr 1e6 --steps 20 --eval-every 10 " +
              std::string("--batch-size 16 ") + common_flags(dir) + " --out " + shell_quote(early));
  CAPTURE(trained.output);
  REQUIRE(trained.exit_code == 3);
  REQUIRE_FALSE(fs::exists(early + "/model.safetensors"));
  const int64_t early_step = json::parse(read_text(early + "/summary.json"))["diverged_step"];
  r = run_cli("eval --checkpoint " + shell_quote(early));
  CAPTURE(r.output);
  CHECK(r.exit_code == 3);
  CHECK(contains(r.output, "error: " + early + " diverged at step " + std::to_string(early_step) +
                               " (its summary.json), before its first checkpoint: there is no "
                               "model.safetensors to evaluate"));
  CHECK_FALSE(contains(r.output, "cannot open"));
}

// train's default rate, 0.01, is an SGD rate: Adam and AdamW took it too, ten times PyTorch's
// default for them.
TEST_CASE("apps.train: without --lr adam and adamw train at 1e-3, PyTorch's default") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  int runs = 0;
  auto lr_of = [&](const std::string& flags) {
    const std::string out = dir.file("run" + std::to_string(++runs));
    CliResult r = run_cli("train --model mlp --steps 1 --batch-size 16 " + flags + " " +
                          common_flags(dir) + " --out " + shell_quote(out));
    CAPTURE(r.output);
    REQUIRE(r.exit_code == 0);
    return json::parse(read_text(out + "/config.json"))["lr"].get<double>();
  };
  CHECK(lr_of("--optimizer adam") == doctest::Approx(1e-3));
  CHECK(lr_of("--optimizer adamw") == doctest::Approx(1e-3));
  CHECK(lr_of("--optimizer rmsprop") == doctest::Approx(1e-2));
  CHECK(lr_of("--optimizer sgd") == doctest::Approx(0.01));
  CHECK(lr_of("--optimizer adam --lr 0.01") == doctest::Approx(0.01));  // a given rate is kept
  CHECK(contains(run_cli("train --help").output, "with adam or adamw 1e-3 and rmsprop 1e-2"));
}

// train's default momentum, 0.9, is an SGD setting: RMSprop took it too, where PyTorch's default
// is 0.
TEST_CASE("apps.train: without --momentum rmsprop runs without momentum, PyTorch's default") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  int runs = 0;
  auto momentum_of = [&](const std::string& flags) {
    const std::string out = dir.file("run" + std::to_string(++runs));
    CliResult r = run_cli("train --model mlp --steps 1 --batch-size 16 " + flags + " " +
                          common_flags(dir) + " --out " + shell_quote(out));
    CAPTURE(r.output);
    REQUIRE(r.exit_code == 0);
    return json::parse(read_text(out + "/config.json"))["momentum"].get<double>();
  };
  CHECK(momentum_of("--optimizer rmsprop") == 0.0);
  CHECK(momentum_of("--optimizer rmsprop --momentum 0.5") == doctest::Approx(0.5));  // kept
  CHECK(momentum_of("--optimizer sgd") == doctest::Approx(0.9));
  CHECK(contains(run_cli("train --help").output, "0 with rmsprop, PyTorch's default"));
}

TEST_CASE("apps.train: --bn-momentum and --bn-eps reach BatchNorm and config.json") {
  // After one step from running_mean = 0, running_mean = momentum * batch mean: the same batch
  // under momentum 0.5 and 0.1 gives running means in the ratio 5.
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  const std::string flags =
      "train --threads 1 --model mlp --norm batch --batch-size 16 --steps 1 "
      "--data-dir " +
      shell_quote(dir.file("data"));
  REQUIRE(run_cli(flags + " --out " + shell_quote(dir.file("m01"))).exit_code == 0);
  CliResult r =
      run_cli(flags + " --bn-momentum 0.5 --bn-eps 0.001 --out " + shell_quote(dir.file("m05")));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "BN momentum 0.5 eps 0.001"));
  auto running_mean = [&](const std::string& run) {
    for (const bnlab::NamedTensor& t : bnlab::load_safetensors(run + "/model.safetensors").tensors)
      if (t.name.find("running_mean") != std::string::npos) return t.tensor.clone();
    FAIL("no running_mean in " << run);
    return bnlab::Tensor();
  };
  bnlab::Tensor a = running_mean(dir.file("m01")), b = running_mean(dir.file("m05"));
  REQUIRE(a.numel() == b.numel());
  for (int64_t i = 0; i < a.numel(); ++i)
    CHECK(b.data()[i] == doctest::Approx(5.0 * a.data()[i]).epsilon(1e-4));
  // config.json holds the shortest decimals, and reads back as the same floats.
  const std::string config = read_text(dir.file("m05") + "/config.json");
  CHECK(contains(config, "\"bn_momentum\": 0.5"));
  CHECK(contains(config, "\"bn_eps\": 0.001"));
  CHECK(contains(config, "\"lr\": 0.01"));
  CliResult conflict =
      run_cli("train --resume " + shell_quote(dir.file("m05")) + " --bn-eps 0.00001");
  CHECK(conflict.exit_code == 2);
  CHECK(contains(conflict.output, "has model.bn_eps = 0.001"));
}

TEST_CASE("apps.train: --log-every sets the progress lines of a log, curves.png is drawn") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 200, 50);
  const std::string out = dir.file("run");
  CliResult r = run_cli(
      "train --model mlp --steps 30 --batch-size 20 --eval-every 15 "
      "--log-every 10 " +
      common_flags(dir) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  // Not a terminal: a plain line at steps 10, 20, 30 and at no other step.
  for (const char* step : {"step 10/30", "step 20/30", "step 30/30"})
    CHECK(contains(r.output, step));
  for (const char* step : {"step 5/30", "step 15/30", "step 1/30 "})
    CHECK_FALSE(contains(r.output, step));
  CHECK(json::parse(read_text(out + "/config.json"))["log_every"] == 10);
  if (bnlab::gnuplot_available()) {
    CHECK(fs::file_size(out + "/curves.png") > 1000);
  } else {
    CHECK(fs::exists(out + "/curves.gp"));
  }
  // --log-every is output only: a resume may change it.
  CliResult resumed = run_cli("train --resume " + shell_quote(out) + " --steps 40 --log-every 5");
  CAPTURE(resumed.output);
  CHECK(resumed.exit_code == 0);
  CHECK(contains(resumed.output, "step 35/40"));
}

// gnuplot exits 0 after it failed to write the image (a full disk); the stand-in does the same. The
// run succeeds, as without gnuplot, but curves.png is reported as not written and not listed.
TEST_CASE("apps.train: a curves.png cut short is a warning, not in the list of files written") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 200, 50);
  fs::create_directories(dir.path / "bin");
  bnlab::testing::write_fake_gnuplot(dir.file("bin"), bnlab::testing::kPngSignatureEscaped);
  const std::string out = dir.file("run");
  CliResult r = run_shell("PATH=" + shell_quote(dir.file("bin")) + ":\"$PATH\" " +
                          shell_quote(BNLAB_CLI_PATH) + " train --model mlp --steps 4 " +
                          "--batch-size 20 " + common_flags(dir) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "warning: plot " + out + "/curves.png not written: "));
  CHECK(contains(r.output, "incomplete PNG"));
  CHECK(contains(r.output, "wrote: " + out + "/{config.json"));
  CHECK_FALSE(contains(r.output, ", curves.png}"));
  CHECK_FALSE(fs::exists(out + "/curves.png"));
  CHECK_FALSE(fs::exists(out + "/.curves.png.tmp"));
  CHECK(fs::exists(out + "/summary.json"));
}

TEST_CASE(
    "apps.train: --val-split evaluates on held-out training images, selects and stops on them") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 400, 100);
  const std::string flags =
      "train --model mlp --norm batch --batch-size 30 --eval-every 10 "
      "--val-split 100 --early-stop 2 " +
      common_flags(dir);
  const std::string out = dir.file("run");
  CliResult r = run_cli(flags + " --steps 300 --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "mnist/train-train 300 images, evaluating on mnist/train-val 100"));
  CHECK(contains(r.output, "testing once on mnist/test 100"));
  // Columns and keys say which split they measured.
  auto rows = parse_csv(read_text(out + "/metrics.csv"));
  REQUIRE(rows.size() >= 3);
  CHECK(rows[0][4] == "val_loss");
  CHECK(rows[0][5] == "val_acc");
  json summary = json::parse(read_text(out + "/summary.json"));
  CHECK(summary["eval_split"] == "train-val");
  CHECK(summary.contains("final_test_acc"));  // the test split, measured once at the end
  CHECK_FALSE(summary.contains("best_test_acc"));
  // best_step is the first evaluation with the highest val_acc, and best.safetensors its weights.
  double best = -1;
  int64_t best_step = -1, last_step = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    last_step = std::stoll(rows[i][0]);
    if (num(rows[i][5]) > best) {
      best = num(rows[i][5]);
      best_step = last_step;
    }
  }
  CHECK(summary["best_step"] == best_step);
  CHECK(summary["best_val_acc"].get<double>() == doctest::Approx(best));
  CHECK(summary["final_val_acc"].get<double>() == doctest::Approx(num(rows.back()[5])));
  auto best_file = bnlab::load_safetensors(out + "/best.safetensors");
  CHECK(best_file.metadata.at("step") == std::to_string(best_step));
  CHECK(summary.contains("best_model_test_acc"));
  // Early stopping: two evaluations without improvement after the best one, well before 300.
  CHECK(summary["steps"] == last_step);
  if (last_step < 300) {
    CHECK(last_step == best_step + 20);
    CHECK(contains(r.output, "stopped early at step " + std::to_string(last_step)));
  }

  // A run interrupted early (here: shorter) and resumed ends exactly where the straight run did:
  // the best and the patience count are rebuilt from metrics.csv.
  const std::string part = dir.file("part");
  REQUIRE(run_cli(flags + " --steps 20 --out " + shell_quote(part)).exit_code == 0);
  CliResult resumed = run_cli("train --resume " + shell_quote(part) + " --steps 300");
  CAPTURE(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  json again = json::parse(read_text(part + "/summary.json"));
  CHECK(again["steps"] == summary["steps"]);
  CHECK(again["best_step"] == summary["best_step"]);
  CHECK(read_text(part + "/best.safetensors") == read_text(out + "/best.safetensors"));
}

TEST_CASE("apps.train: --early-stop without a validation split and --val-split on cifar10 exit 2") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 100, 20);
  CliResult r = run_cli("train --steps 5 --early-stop 3 " + common_flags(dir));
  CHECK(r.exit_code == 2);
  CHECK(contains(r.output, "--early-stop selects on validation data: add --val-split N"));
  r = run_cli("train --steps 5 --dataset cifar10 --val-split 100 " + common_flags(dir));
  CHECK(r.exit_code == 2);
  CHECK(contains(r.output, "cifar10 validates on its batch 5 already"));
  r = run_cli("train --steps 5 --val-split 100 " + common_flags(dir) + " --out " +
              shell_quote(dir.file("r")));
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "--val-split 100 leaves no training images"));
}

TEST_CASE("apps.train: --grad-stats records each weight's gradient norm at every evaluation") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 200, 50);
  const std::string flags =
      "train --model deep-mlp --norm none --batch-size 20 --eval-every 10 "
      "--grad-stats " +
      common_flags(dir);
  const std::string out = dir.file("run");
  CliResult r = run_cli(flags + " --steps 30 --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  auto rows = parse_csv(read_text(out + "/grad_norms.csv"));
  REQUIRE(rows.size() == 1 + 3 * 13);  // header + 3 evaluations x 13 weights (12 hidden + output)
  CHECK(rows[0] == std::vector<std::string>{"step", "param", "grad_norm", "weight_norm"});
  CHECK(rows[1][0] == "10");
  CHECK(rows[1][1] == "1.weight");  // the first Dense (after Flatten)
  CHECK(rows.back()[0] == "30");
  // Twelve sigmoid layers without normalization: the first layer's gradient is far smaller than
  // the last layer's (sigmoid' <= 1/4 per layer).
  CHECK(std::stod(rows[1][2]) < 1e-3 * std::stod(rows[13][2]));
  if (bnlab::gnuplot_available()) CHECK(fs::exists(out + "/grad_norms.png"));
  // A run continued from its checkpoint records the same rows as one that ran straight through.
  const std::string part = dir.file("part");
  REQUIRE(run_cli(flags + " --steps 10 --out " + shell_quote(part)).exit_code == 0);
  REQUIRE(run_cli("train --resume " + shell_quote(part) + " --steps 30").exit_code == 0);
  CHECK(read_text(part + "/grad_norms.csv") == read_text(out + "/grad_norms.csv"));
}

TEST_CASE("apps.train: --mechanism-every writes ics.csv, smoothness.csv, mechanism.csv") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 200, 50);
  const std::string flags =
      "train --model mlp --norm batch --batch-size 20 --eval-every 5 --steps 10 " +
      common_flags(dir);
  const std::string out = dir.file("run");
  CliResult r =
      run_cli(flags + " --mechanism-every 5 --mechanism-etas 1,2 --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  auto ics = parse_csv(read_text(out + "/ics.csv"));
  REQUIRE(ics.size() == 1 + 2 * 3);  // header + 2 measured steps x 3 weights (two hidden, output)
  CHECK(ics[0] == std::vector<std::string>{"step", "layer", "param", "grad_norm", "grad_norm_after",
                                           "l2_diff", "cosine"});
  CHECK(ics[1][0] == "5");
  CHECK(ics[1][5] == "0");  // the first weight: nothing before it moved
  CHECK(ics[1][6] == "1");
  auto smooth = parse_csv(read_text(out + "/smoothness.csv"));
  CHECK(smooth.size() == 1 + 2 * 2);
  auto mech = parse_csv(read_text(out + "/mechanism.csv"));
  REQUIRE(mech.size() == 3);
  CHECK(mech[0].size() == 13);
  CHECK(mech[2][0] == "10");
  if (bnlab::gnuplot_available()) {
    CHECK(fs::exists(out + "/ics.png"));
    CHECK(fs::exists(out + "/smoothness.png"));
  }
  CHECK(contains(read_text(out + "/config.json"), "\"mechanism_etas\": \"1,2\""));
  for (const char* bad : {"--mechanism-etas 0,1", "--mechanism-etas 1,x", "--mechanism-every -2"}) {
    CAPTURE(bad);
    CliResult b = run_cli(flags + " " + bad + " --out " + shell_quote(dir.file("bad")));
    CHECK(b.exit_code == 2);
    CHECK(contains(b.output, std::string(bad).substr(0, std::string(bad).find(' '))));
  }
}

namespace {

// Writes root/<split>/<class>/<i>.png for `classes`: `per_class` RGB size x size images of
// seeded noise, class b brighter. Returns each channel's pixel values, for statistics computed
// here.
std::vector<std::vector<double>> write_png_folder_split(
    const fs::path& root, const std::string& split, int per_class, uint32_t seed,
    const std::vector<std::string>& classes = {"a", "b"}, int size = 6) {
  const int kH = size, kW = size, kC = 3;
  std::vector<std::vector<double>> channels(kC);
  uint32_t s = seed;
  for (const std::string& cls : classes) {
    fs::create_directories(root / split / cls);
    for (int i = 0; i < per_class; ++i) {
      std::vector<uint8_t> hwc(kH * kW * kC);
      for (size_t p = 0; p < hwc.size(); ++p) {
        s = s * 1664525u + 1013904223u;
        hwc[p] = static_cast<uint8_t>((s >> 24) % 128 + (cls[0] == 'b' ? 100 : 0) + 20 * (p % kC));
        channels[p % kC].push_back(hwc[p]);
      }
      const std::string path = (root / split / cls / (std::to_string(i) + ".png")).string();
      REQUIRE(stbi_write_png(path.c_str(), kW, kH, kC, hwc.data(), kW * kC) != 0);
    }
  }
  return channels;
}

}  // namespace

TEST_CASE("apps.train: a folder dataset trains and evaluates, normalized by its training images") {
  TempDir dir;
  const fs::path root = dir.path / "pics";
  const auto train_pixels = write_png_folder_split(root, "train", 8, 7);
  write_png_folder_split(root, "test", 4, 11);
  const std::string dataset = shell_quote("folder:" + root.string());
  const std::string out = dir.file("run");
  CliResult r = run_cli("train --model mlp --dataset " + dataset +
                        " --steps 3 --batch-size 4 --threads 1 --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);

  // config.json records the per-channel mean/std of the training images (pixel / 255).
  json cfg = json::parse(read_text(out + "/config.json"));
  REQUIRE(cfg["normalization"]["mean"].size() == 3);
  for (size_t c = 0; c < 3; ++c) {
    double sum = 0, sum_sq = 0;
    for (double v : train_pixels[c]) {
      sum += v / 255.0;
      sum_sq += (v / 255.0) * (v / 255.0);
    }
    const double n = static_cast<double>(train_pixels[c].size());
    const double mean = sum / n;
    CHECK(cfg["normalization"]["mean"][c].get<double>() == doctest::Approx(mean).epsilon(1e-5));
    CHECK(cfg["normalization"]["std"][c].get<double>() ==
          doctest::Approx(std::sqrt(sum_sq / n - mean * mean)).epsilon(1e-4));
  }

  // eval measures what training measured at its end: the same images, normalized the same way.
  const std::string eval_args = "eval --checkpoint " + shell_quote(out) + " --json";
  CliResult ev = run_cli(eval_args);
  CAPTURE(ev.output);
  REQUIRE(ev.exit_code == 0);
  // One file in the run directory, whatever characters the dataset's path holds.
  std::string report_path;
  for (const auto& f : fs::directory_iterator(out))
    if (f.path().filename().string().rfind("eval_", 0) == 0) report_path = f.path().string();
  REQUIRE(contains(report_path, "_test.json"));
  json report = json::parse(read_text(report_path));
  json summary = json::parse(read_text(out + "/summary.json"));
  CHECK(report["images"] == 8);
  CHECK(report["accuracy"].get<double>() ==
        doctest::Approx(summary["final_test_acc"].get<double>()));
  CHECK(report["loss"].get<double>() ==
        doctest::Approx(summary["final_test_loss"].get<double>()).epsilon(1e-5));
  const double loss = report["loss"].get<double>();

  // The recorded statistics are the ones eval uses ...
  json changed = cfg;
  changed["normalization"]["std"] = {0.01, 0.01, 0.01};
  std::ofstream(out + "/config.json") << changed.dump();
  REQUIRE(run_cli(eval_args).exit_code == 0);
  CHECK(json::parse(read_text(report_path))["loss"].get<double>() !=
        doctest::Approx(loss).epsilon(1e-3));
  // A value edited into the file that cannot normalize is reported as the file's.
  changed["normalization"]["std"] = {0.2, 0.0, 0.2};
  std::ofstream(out + "/config.json") << changed.dump();
  CliResult bad = run_cli(eval_args);
  CHECK(bad.exit_code == 1);
  CHECK(contains(bad.output, "error: " + out +
                                 "/config.json: key 'normalization': normalize: std for channel 1 "
                                 "is 0; must be positive and finite"));
  changed["normalization"]["mean"] = {0.5, 0.5};
  changed["normalization"]["std"] = {0.2, 0.2};
  std::ofstream(out + "/config.json") << changed.dump();
  bad = run_cli(eval_args);
  CHECK(bad.exit_code == 1);
  CHECK(contains(bad.output, "error: " + out +
                                 "/config.json: key 'normalization': normalize: 2 mean/std values "
                                 "for images with 3 channels; expected 1 or 3"));
  // ... and without them, eval recomputes the same ones from the training images.
  cfg.erase("normalization");
  std::ofstream(out + "/config.json") << cfg.dump();
  REQUIRE(run_cli(eval_args).exit_code == 0);
  CHECK(json::parse(read_text(report_path))["loss"].get<double>() ==
        doctest::Approx(loss).epsilon(1e-6));
}

TEST_CASE("apps.train: a folder whose test split has other classes or another size is refused") {
  TempDir dir;
  const fs::path root = dir.path / "pics";
  write_png_folder_split(root, "train", 4, 7);
  const std::string train_args = "train --model mlp --dataset " +
                                 shell_quote("folder:" + root.string()) +
                                 " --steps 2 --batch-size 4 --threads 1 --out ";

  // test/ without class b: its class c would be read as label 1, which is b in training.
  write_png_folder_split(root, "test", 2, 11, {"a", "c"});
  CliResult classes = run_cli(train_args + shell_quote(dir.file("classes")));
  CAPTURE(classes.output);
  CHECK(classes.exit_code == 1);
  CHECK(contains(classes.output,
                 "the test split's classes (a, c) are not the training split's (a, b)"));

  fs::remove_all(root / "test");
  write_png_folder_split(root, "test", 2, 11, {"a", "b"}, 4);
  CliResult size = run_cli(train_args + shell_quote(dir.file("size")));
  CAPTURE(size.output);
  CHECK(size.exit_code == 1);
  CHECK(contains(size.output,
                 "the test split's images are 3x4x4 but the training split's are "
                 "3x6x6; every split needs one image size"));

  // eval checks too: a run trained on matching splits, then test/ loses a class.
  fs::remove_all(root / "test");
  write_png_folder_split(root, "test", 2, 11);
  const std::string out = dir.file("run");
  REQUIRE(run_cli(train_args + shell_quote(out)).exit_code == 0);
  fs::remove_all(root / "test" / "b");
  CliResult ev = run_cli("eval --checkpoint " + shell_quote(out));
  CAPTURE(ev.output);
  CHECK(ev.exit_code == 1);
  CHECK(contains(ev.output, "the test split's classes (a) are not the training split's (a, b)"));
}

// The test split fell back to the folder itself: train/ was read as a class folder and reported
// as holding no images, with a hint to a C++ option a CLI user cannot set.
TEST_CASE("apps.train: a folder with train/ but no test/ names the missing split") {
  TempDir dir;
  const fs::path root = dir.path / "pics";
  write_png_folder_split(root, "train", 4, 7);
  CliResult r =
      run_cli("train --model mlp --dataset " + shell_quote("folder:" + root.string()) +
              " --steps 2 --batch-size 4 --threads 1 --out " + shell_quote(dir.file("run")));
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "error: dataset folder:" + root.string() + ": " +
                               (root / "test").string() + "/ is missing: " + root.string() +
                               " is divided into splits (it has train/)"));
  CHECK_FALSE(contains(r.output, "ImageFolderOptions"));
  CHECK_FALSE(contains(r.output, "holds no"));

  // An empty class folder: what to do with it, in terms a CLI user can act on.
  write_png_folder_split(root, "test", 2, 11);
  fs::create_directories(root / "train" / "c");
  CliResult empty = run_cli("data info --dataset " + shell_quote("folder:" + root.string()));
  CAPTURE(empty.output);
  CHECK(empty.exit_code == 1);
  CHECK(contains(empty.output, "class folder " + (root / "train" / "c").string() +
                                   " holds no .png/.jpg/.jpeg/.bmp images; every class "
                                   "sub-directory needs at least one (add images to it, or remove "
                                   "it)"));
  CHECK_FALSE(contains(empty.output, "ImageFolderOptions"));
}

TEST_CASE("apps.eval: a folder run's training split is loaded once, for the check and statistics") {
  // Found by the API attack of 2026-12-06: evaluating a folder run whose config.json predates its
  // recorded normalization loaded the training split for the split's check, then again (with the
  // test split) for the statistics. load_run_split now hands the first load back.
  using namespace bnlab;
  TempDir dir;
  const fs::path root = dir.path / "pics";
  write_png_folder_split(root, "train", 8, 7);
  write_png_folder_split(root, "test", 4, 11);
  const std::string out = dir.file("run");
  REQUIRE(run_cli("train --model mlp --dataset " + shell_quote("folder:" + root.string()) +
                  " --steps 2 --batch-size 4 --threads 1 --val-split 4 --train-subset 10 --out " +
                  shell_quote(out))
              .exit_code == 0);
  json config = json::parse(read_text(out + "/config.json"));
  config.erase("normalization");  // as a run directory written before it was recorded
  std::ofstream(out + "/config.json") << config.dump();
  const TrainConfig cfg = config_from_json(config.dump(), "config.json");
  const RunData run = load_run_data(cfg);

  // The test split hands back the run's training split: held out and subset as training did.
  std::optional<ImageDataset> run_train;
  const ImageDataset test = load_run_split(cfg, "test", &run_train);
  CHECK(test.size() == 8);
  REQUIRE(run_train.has_value());
  CHECK(run_train->size() == 10);
  CHECK(run_train->pixels == run.train.pixels);
  CHECK(run_train->labels == run.train.labels);
  CHECK(run_train->split == run.train.split);
  // --split val too; --split train is the training split itself and hands back nothing.
  std::optional<ImageDataset> from_val;
  CHECK(load_run_split(cfg, "val", &from_val).pixels == run.eval.pixels);
  REQUIRE(from_val.has_value());
  CHECK(from_val->pixels == run.train.pixels);
  std::optional<ImageDataset> from_train;
  CHECK(load_run_split(cfg, "train", &from_train).pixels == run.train.pixels);
  CHECK_FALSE(from_train.has_value());

  // Given it, run_normalization reads no image: it works with the training folder gone, where it
  // would otherwise have to load it again.
  const NormalizeOptions expected = training_normalization(cfg.dataset, run.train);
  fs::remove_all(root / "train");
  const NormalizeOptions got = run_normalization(out, cfg, &*run_train);
  CHECK(got.mean == expected.mean);
  CHECK(got.std == expected.std);
  CHECK_THROWS_AS(run_normalization(out, cfg), Error);
}

TEST_CASE("apps.eval: --split val is the images --val-split held out, --split train the rest") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 200, 40);
  const std::string out = dir.file("run");
  CliResult r = run_cli("train --model mlp --steps 6 --batch-size 16 --val-split 50 --eval-train " +
                        common_flags(dir) + " --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  json summary = json::parse(read_text(out + "/summary.json"));
  const std::string eval_args = "eval --json --checkpoint " + shell_quote(out) + " --data-dir " +
                                shell_quote(dir.file("data"));

  // Evaluates `split` and compares it with what training measured on the same images.
  auto check_split = [&](const std::string& split, const std::string& says, int64_t images,
                         const std::string& summary_acc, const std::string& summary_loss) {
    CliResult ev = run_cli(eval_args + " --split " + split);
    CAPTURE(ev.output);
    REQUIRE(ev.exit_code == 0);
    CHECK(contains(ev.output, says));
    json report = json::parse(read_text(out + "/eval_mnist_" + split + ".json"));
    CHECK(report["images"] == images);
    CHECK(report["accuracy"].get<double>() == doctest::Approx(summary[summary_acc].get<double>()));
    CHECK(report["loss"].get<double>() ==
          doctest::Approx(summary[summary_loss].get<double>()).epsilon(1e-5));
  };
  // The validation images: what training's last evaluation measured.
  check_split("val", "(50 images: the training images --val-split held out", 50, "final_val_acc",
              "final_val_loss");
  // The training images without them: what --eval-train measured.
  check_split("train", "(150 images: the images the run trained on, without the 50", 150,
              "final_train_acc_eval_mode", "final_train_loss_eval_mode");

  // A run without --val-split has no validation split to measure.
  const std::string plain = dir.file("plain");
  REQUIRE(run_cli("train --model mlp --steps 2 --batch-size 16 " + common_flags(dir) + " --out " +
                  shell_quote(plain))
              .exit_code == 0);
  CliResult none = run_cli("eval --checkpoint " + shell_quote(plain) + " --split val --data-dir " +
                           shell_quote(dir.file("data")));
  CAPTURE(none.output);
  CHECK(none.exit_code == 2);
  CHECK(contains(none.output, plain + " has no validation split"));
}

// eval without --data-dir used the default lookup ($BNLAB_DATA, ./data, ...), not the directory
// the run was trained from: from another working directory, or with $BNLAB_DATA set, it read
// other files (or found none). The run's directory is recorded absolute in config.json.
TEST_CASE(
    "apps.eval: without --data-dir, the run's own data directory, or the lookup if it is gone") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);   // the run's: 40 test images
  write_tiny_mnist(dir.file("other"), 120, 30);  // $BNLAB_DATA's: 30
  const std::string out = dir.file("run");
  CliResult r = run_cli("train --model mlp --steps 2 --batch-size 16 " + common_flags(dir) +
                        " --out " + shell_quote(out));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string with_other = "BNLAB_DATA=" + shell_quote(dir.file("other")) + " " +
                                 shell_quote(BNLAB_CLI_PATH) + " eval --checkpoint " +
                                 shell_quote(out);

  CliResult own = run_shell(with_other);
  CAPTURE(own.output);
  REQUIRE(own.exit_code == 0);
  CHECK(contains(own.output,
                 "data dir:  " + fs::absolute(dir.file("data")).lexically_normal().string() +
                     " (the run's, from its config.json)\n"));
  CHECK(contains(own.output, "on mnist/test (40 images)"));

  CliResult flag = run_shell(with_other + " --data-dir " + shell_quote(dir.file("other")));
  CAPTURE(flag.output);
  REQUIRE(flag.exit_code == 0);
  CHECK(contains(flag.output, "(from --data-dir)"));
  CHECK(contains(flag.output, "on mnist/test (30 images)"));

  // The data moved: the lookup, as before, and it says so.
  fs::rename(dir.file("data"), dir.file("moved"));
  CliResult moved = run_shell(with_other);
  CAPTURE(moved.output);
  REQUIRE(moved.exit_code == 0);
  CHECK(contains(moved.output, "(from $BNLAB_DATA)"));
  CHECK(contains(moved.output, "on mnist/test (30 images)"));
}

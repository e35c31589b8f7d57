// The measurements behind the regularization and inference presets: a fixed training subset,
// train accuracy in eval mode, and evaluation with batch statistics that leaves the model as it
// was; then both presets end to end on a tiny MNIST, through the library.
#include <doctest/doctest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/apps_test_util.h"
#include "core/io.h"
#include "train/ablation.h"
#include "train/trainer.h"

using namespace bnlab;
using apps_test::TempDir;
namespace fs = std::filesystem;

namespace {

TrainConfig tiny_config(const std::string& data_dir) {
  TrainConfig cfg;
  cfg.model.name = "mlp";
  cfg.dataset = "mnist";
  cfg.data_dir = data_dir;
  cfg.steps = 30;
  cfg.batch_size = 20;
  cfg.lr = 0.1f;
  cfg.eval_every = 10;
  cfg.eval_batch_size = 50;
  cfg.threads = 1;
  cfg.quiet = true;
  return cfg;
}

std::string buffers_of(const Model& m) {
  std::string out;
  for (const auto& [name, t] : m.net->named_buffers())
    out.append(reinterpret_cast<const char*>(t.data()), static_cast<size_t>(t.numel()) * 4);
  return out;
}

}  // namespace

TEST_CASE("train.controls: --train-subset keeps a fixed subset, the same for every call") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 300, 50);
  RunData all = load_run_data("mnist", dir.file("data"));
  RunData a = load_run_data("mnist", dir.file("data"), 0, 120);
  RunData b = load_run_data("mnist", dir.file("data"), 0, 120);
  REQUIRE(a.train.size() == 120);
  CHECK(a.train.labels == b.train.labels);
  CHECK(a.train.pixels == b.train.pixels);
  CHECK(a.train.split == all.train.split);
  CHECK(a.eval.size() == all.eval.size());  // the evaluation split is untouched
  // After a validation split: drawn from what is left, never from the held-out images.
  RunData v = load_run_data("mnist", dir.file("data"), 100, 50);
  CHECK(v.train.size() == 50);
  CHECK(v.eval.size() == 100);
  CHECK_THROWS_WITH(load_run_data("mnist", dir.file("data"), 0, 301),
                    doctest::Contains("--train-subset 301"));
  // A Trainer given the whole set for a subset config says how to load it.
  TrainConfig cfg = tiny_config(dir.file("data"));
  cfg.train_subset = 120;
  CHECK_THROWS_WITH(Trainer(cfg, all), doctest::Contains("load_run_data(cfg)"));
}

TEST_CASE("train.controls: --eval-train measures the final model on its training images") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 300, 50);
  TrainConfig cfg = tiny_config(dir.file("data"));
  cfg.model.dropout = 0.5f;  // train mode would count dropout's noise; eval mode must not
  cfg.train_subset = 100;
  cfg.eval_train = true;
  cfg.out_dir = dir.file("run");
  RunData data = load_run_data(cfg);
  Trainer trainer(cfg, data);
  TrainResult r = trainer.fit();
  REQUIRE(std::isfinite(r.train_eval_acc));
  const EvalResult direct = evaluate(trainer.model(), data.train, "mnist", 50, -1);
  CHECK(r.train_eval_acc == direct.accuracy);
  CHECK(r.train_eval_loss == doctest::Approx(direct.loss));
  auto summary = nlohmann::json::parse(read_file(dir.file("run/summary.json")));
  CHECK(summary.at("final_train_acc_eval_mode").get<double>() == r.train_eval_acc);

  cfg.eval_train = false;
  cfg.out_dir.clear();
  CHECK(std::isnan(train(cfg, data).train_eval_acc));
}

TEST_CASE("train.controls: evaluation with batch statistics leaves the model as it was") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 300, 60);
  TrainConfig cfg = tiny_config(dir.file("data"));
  cfg.model.norm = "batch";
  cfg.model.dropout = 0.5f;
  RunData data = load_run_data(cfg);
  Trainer trainer(cfg, data);
  trainer.fit();
  Model& m = trainer.model();
  m.net->eval();
  const std::string before = buffers_of(m);
  EvalResult running = evaluate(m, data.eval, "mnist", 20, -1);
  EvalResult batch20 = evaluate(m, data.eval, "mnist", 20, -1, NormStatistics::kBatch);
  CHECK(buffers_of(m) == before);  // running statistics restored
  CHECK_FALSE(m.net->is_training());
  // The same evaluation twice gives the same answer: no dropout, no state carried over.
  EvalResult again = evaluate(m, data.eval, "mnist", 20, -1, NormStatistics::kBatch);
  CHECK(again.predictions == batch20.predictions);
  CHECK(again.loss == batch20.loss);
  // 30 steps leave running averages far from the batch statistics (momentum 0.1): the two modes
  // must not coincide, or kBatch did not switch BatchNorm to train mode.
  CHECK(batch20.loss != running.loss);

  // Without normalization there is nothing to switch: dropout stays off, so the modes agree.
  cfg.model.norm = "none";
  Trainer plain(cfg, data);
  plain.fit();
  EvalResult p_running = evaluate(plain.model(), data.eval, "mnist", 20, -1);
  EvalResult p_batch = evaluate(plain.model(), data.eval, "mnist", 20, -1, NormStatistics::kBatch);
  CHECK(p_batch.predictions == p_running.predictions);
  CHECK(p_batch.loss == p_running.loss);
}

// Found by the API attack: kBatch switched every module but Dropout to train mode, so a
// noisy-batch model's evaluation carried its training noise, and a batch-renorm model's applied r
// and d, which (unclipped) give back the running-statistics normalization: its kBatch result was
// its kRunning one. Both must now equal their plain-BatchNorm twin's (the same state_dict).
TEST_CASE("train.controls: batch statistics are plain batch norm for noisy and renorm layers") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 300, 60);
  for (const std::string norm : {"noisy-batch", "batch-renorm"}) {
    CAPTURE(norm);
    TrainConfig cfg = tiny_config(dir.file("data"));
    cfg.model.norm = norm;
    cfg.model.bn_noise_mean = 2.0f;
    cfg.model.bn_noise_var = 4.0f;
    cfg.model.renorm_warmup = 0;  // past the warm-up: r and d in use
    cfg.model.renorm_ramp = 1;
    RunData data = load_run_data(cfg);
    Trainer trainer(cfg, data);
    trainer.fit();
    Model& m = trainer.model();
    ModelSpec spec = m.spec;
    spec.norm = "batch";
    Rng rng(cfg.seed);
    Model twin = build_model(spec, rng);
    twin.net->load_state_dict(m.net->state_dict());
    const std::string before = buffers_of(m);
    const EvalResult batch = evaluate(m, data.eval, "mnist", 20, -1, NormStatistics::kBatch);
    CHECK(buffers_of(m) == before);  // bit for bit, num_batches_tracked included
    const EvalResult plain = evaluate(twin, data.eval, "mnist", 20, -1, NormStatistics::kBatch);
    CHECK(batch.loss == plain.loss);
    CHECK(batch.predictions == plain.predictions);
    CHECK(batch.loss != evaluate(m, data.eval, "mnist", 20, -1).loss);
  }
}

// Found by the API attack: evaluate() restored only the root's mode, and Module::train() recurses,
// so BatchNorm layers a user had frozen (eval mode in a training model, the fine-tuning idiom)
// came back in training mode and would update their running statistics again.
TEST_CASE("train.controls: evaluation restores each module's own train/eval mode") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 100, 30);
  TrainConfig cfg = tiny_config(dir.file("data"));
  cfg.model.norm = "batch";
  cfg.model.dropout = 0.5f;
  RunData data = load_run_data(cfg);
  Trainer trainer(cfg, data);
  Model& m = trainer.model();
  auto modes = [&] {
    std::string out;
    for (const auto& [name, child] : m.net->children()) out += child->is_training() ? "T" : "e";
    return out;
  };
  m.net->train();
  int64_t frozen = 0;
  for (const auto& [name, child] : m.net->children()) {
    if (dynamic_cast<BatchNorm*>(child.get())) {
      child->eval();
      ++frozen;
    }
  }
  REQUIRE(frozen > 0);
  const std::string before = modes();
  for (NormStatistics statistics : {NormStatistics::kRunning, NormStatistics::kBatch}) {
    evaluate(m, data.eval, "mnist", 10, -1, statistics);
    CHECK(m.net->is_training());
    CHECK(modes() == before);
  }
}

// Found by the API attack: kBatch with 61 images at batch 20 evaluated three batches and then
// failed on the fourth, of one image ("BatchNorm1d: expected more than 1 value per channel when
// training"). That image now joins the batch before it.
TEST_CASE(
    "train.controls: batch statistics with a last batch of one image fold it into the one before") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 100, 61);
  TrainConfig cfg = tiny_config(dir.file("data"));
  cfg.model.norm = "batch";
  RunData data = load_run_data(cfg);
  Trainer trainer(cfg, data);
  Model& m = trainer.model();
  const ImageDataset& all = data.eval;
  REQUIRE(all.size() == 61);
  auto part = [&](int64_t from, int64_t to) {  // images [from, to) of the split
    ImageDataset d = all;
    const auto bytes = static_cast<std::ptrdiff_t>(all.image_bytes());
    d.labels.assign(all.labels.begin() + from, all.labels.begin() + to);
    d.pixels.assign(all.pixels.begin() + from * bytes, all.pixels.begin() + to * bytes);
    return d;
  };
  const EvalResult r = evaluate(m, all, "mnist", 20, -1, NormStatistics::kBatch);
  REQUIRE(r.predictions.size() == 61);
  // Batches [0, 20), [20, 40) and [40, 61).
  const EvalResult head = evaluate(m, part(0, 40), "mnist", 20, -1, NormStatistics::kBatch);
  const EvalResult tail = evaluate(m, part(40, 61), "mnist", 21, -1, NormStatistics::kBatch);
  std::vector<int64_t> joined = head.predictions;
  joined.insert(joined.end(), tail.predictions.begin(), tail.predictions.end());
  CHECK(r.predictions == joined);
  CHECK(r.loss == doctest::Approx((head.loss * 40 + tail.loss * 21) / 61).epsilon(1e-12));
  // A remainder of 2 or more is a batch of its own; kRunning never merges (no batch statistics).
  CHECK(evaluate(m, part(0, 42), "mnist", 20, -1, NormStatistics::kBatch).predictions.size() == 42);
  CHECK(evaluate(m, all, "mnist", 20, -1).predictions.size() == 61);
}

// Found by the API attack: Trainer(cfg, data) checked the training split only, so an evaluation
// split with more classes or another image size failed at the first evaluation inside fit(), with
// cross_entropy's or Dense's message naming neither split.
TEST_CASE("train.controls: the Trainer refuses evaluation splits unlike the training split") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 100, 30);
  TrainConfig cfg = tiny_config(dir.file("data"));
  const RunData good = load_run_data(cfg);
  {
    RunData data = good;
    data.eval.class_names.push_back("extra");
    CHECK_THROWS_WITH_AS(Trainer(cfg, data),
                         "train: the evaluation split (mnist/test) has 1x28x28 images and 11 "
                         "classes, but the model is built for the training split (mnist/train): "
                         "1x28x28 images and 10 classes",
                         Error);
  }
  {
    RunData data = good;
    data.eval.height = data.eval.width = 14;
    data.eval.pixels.resize(static_cast<size_t>(data.eval.size() * 14 * 14));
    CHECK_THROWS_WITH_AS(Trainer(cfg, data),
                         doctest::Contains("evaluation split (mnist/test) has 1x14x14 images"),
                         Error);
  }
  {
    RunData data = good;
    data.test = good.eval;
    data.test->channels = 3;
    data.test->pixels.resize(data.test->pixels.size() * 3);
    CHECK_THROWS_WITH_AS(Trainer(cfg, data),
                         doctest::Contains("train: the test split (mnist/test) has 3x28x28"),
                         Error);
  }
  Trainer ok(cfg, good);  // the same geometry passes
}

TEST_CASE("train.controls: final_accuracy averages the runs that did not fail, as the table") {
  // It averaged every run's last row: a diverged run's is from before it diverged, and an
  // arm whose runs all failed got a number a --min-accuracy gate could pass.
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 300, 60);
  AblationSpec spec;
  spec.base = tiny_config(dir.file("data"));
  spec.base.steps = 12;
  spec.base.eval_every = 4;
  spec.out_dir = dir.file("abl");
  spec.jobs = 1;
  spec.factors = {{"lr", {"0.1", "100000"}}};
  AblationReport report = run_ablation(spec);
  CAPTURE(report.table);
  REQUIRE(report.final_accuracy.size() == 2);
  const TrainResult& failing = report.outcomes[1][0].result;
  REQUIRE((failing.diverged || failing.collapsed));
  CHECK(std::isfinite(report.final_accuracy[0].second));
  CHECK(std::isnan(report.final_accuracy[1].second));
}

TEST_CASE("train.controls: the regularization and inference presets report their tables") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 300, 60);
  {
    AblationSpec spec;
    spec.base = tiny_config(dir.file("data"));
    spec.out_dir = dir.file("reg");
    spec.jobs = 1;
    apply_preset(spec, "regularization");
    CHECK(spec.base.train_subset == 2000);
    CHECK(spec.base.eval_train);
    spec.base.train_subset = 100;  // the tiny set has 300
    AblationReport report = run_ablation(spec);
    CAPTURE(report.table);
    REQUIRE(report.arms.size() == 4);
    CHECK(report.table.find("| arm | train acc (eval mode) | test acc | gap (train − test) |") !=
          std::string::npos);
    for (size_t a = 0; a < report.arms.size(); ++a) {
      REQUIRE(report.outcomes[a].size() == 1);
      const TrainResult& r = report.outcomes[a][0].result;
      CHECK(std::isfinite(r.train_eval_acc));
      CHECK(report.table.find("\n| " + report.arms[a].name + " | ") != std::string::npos);
    }
  }
  {
    AblationSpec spec;
    spec.base = tiny_config(dir.file("data"));
    spec.base.steps = 12;
    spec.base.eval_every = 6;
    spec.out_dir = dir.file("inf");
    spec.jobs = 1;
    apply_preset(spec, "inference");
    CHECK(spec.equal_samples);
    spec.inference_batches = {4, 30};
    AblationReport report = run_ablation(spec);
    CAPTURE(report.table);
    CHECK(report.table.find("| arm | running averages | batch statistics, batch 4 | batch "
                            "statistics, batch 30 |") != std::string::npos);
    for (const auto& runs : report.outcomes)
      for (const RunOutcome& o : runs) CHECK(o.inference_acc.size() == 3);
    // A second run reuses the finished runs and measures the same accuracies.
    AblationReport again = run_ablation(spec);
    for (size_t a = 0; a < report.outcomes.size(); ++a) {
      CHECK(again.outcomes[a][0].reused);
      CHECK(again.outcomes[a][0].inference_acc == report.outcomes[a][0].inference_acc);
    }
  }
}

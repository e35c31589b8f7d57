// The train/ layer as a library user sees it: a model of one's own registered by name, trained by
// Trainer with hooks, resumed, reloaded; no CLI involved.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "apps/apps_test_util.h"
#include "core/autograd.h"
#include "core/serialize.h"
#include "optim/optim.h"
#include "train/models.h"
#include "train/trainer.h"

using namespace bnlab;
using apps_test::TempDir;
namespace fs = std::filesystem;

namespace {

// Not a Sequential: flatten -> dense -> (BatchNorm1d when spec.norm is "batch") -> relu -> dense.
class TwoLayerNet : public Module {
 public:
  TwoLayerNet(const ModelSpec& spec, Rng& rng) {
    int64_t in = spec.channels * spec.height * spec.width;
    fc1_ = register_module("fc1", std::make_shared<Dense>(DenseOptions{in, 32}, rng));
    if (spec.norm == "batch")
      bn_ = register_module("bn", std::make_shared<BatchNorm1d>(BatchNormOptions{
                                      .num_features = 32, .momentum = spec.bn_momentum}));
    act_ = register_module("act", std::make_shared<ReLU>());
    fc2_ = register_module("fc2", std::make_shared<Dense>(DenseOptions{32, spec.num_classes}, rng));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = (*fc1_)(flatten(x));
    if (bn_) h = (*bn_)(h);
    return (*fc2_)((*act_)(h));
  }
  std::string type_name() const override { return "TwoLayerNet"; }
  Module* activation() { return act_.get(); }

 private:
  std::shared_ptr<Dense> fc1_, fc2_;
  std::shared_ptr<BatchNorm1d> bn_;
  std::shared_ptr<ReLU> act_;
};

// Registration is process-wide and test cases run in any order: register once.
void register_test_model() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_model("test-two-layer", [](Model& model, Rng& rng) {
      auto net = std::make_shared<TwoLayerNet>(model.spec, rng);
      model.probe = net->activation();
      model.probe_width = 32;
      model.net = net;
    });
  });
}

TrainConfig small_config(const std::string& norm) {
  TrainConfig cfg;
  cfg.model.name = "test-two-layer";
  cfg.model.norm = norm;
  cfg.steps = 40;
  cfg.batch_size = 20;
  cfg.lr = 0.1f;
  cfg.eval_every = 10;
  cfg.eval_batch_size = 100;
  cfg.threads = 1;
  cfg.quiet = true;
  return cfg;
}

std::string weights_of(const Model& m) { return encode_safetensors(m.net->state_dict()); }

}  // namespace

TEST_CASE("train.registry: a registered model is built by name, names are checked") {
  register_test_model();
  auto names = model_names();
  CHECK(names.front() == "paper-mlp");
  CHECK(std::find(names.begin(), names.end(), "test-two-layer") != names.end());
  ModelSpec spec;
  spec.name = "test-two-layer";
  spec.norm = "batch";
  Rng a(7), b(7);
  Model m1 = build_model(spec, a), m2 = build_model(spec, b);
  CHECK(m1.net->type_name() == "TwoLayerNet");
  CHECK(m1.dropout_rng != nullptr);
  CHECK(weights_of(m1) == weights_of(m2));       // the seed fixes the weights
  CHECK(default_lr("test-two-layer") == 0.01f);  // register_model's default
  CHECK(default_lr("paper-mlp") == 0.5f);
  CHECK(default_lr("cifar-cnn") == 0.05f);
  CHECK_THROWS_WITH(default_lr("no-such-net"), doctest::Contains("unknown model"));
  CHECK(m1.net->named_buffers().size() == 3);  // bn.running_mean, running_var, num_batches_tracked

  CHECK_THROWS_WITH(register_model("test-two-layer", [](Model&, Rng&) {}),
                    doctest::Contains("registered already"));
  CHECK_THROWS_WITH(register_model("paper-mlp", [](Model&, Rng&) {}),
                    doctest::Contains("registered already"));
  CHECK_THROWS_WITH(register_model("a=b", [](Model&, Rng&) {}),
                    doctest::Contains("bad model name"));
  spec.name = "no-such-net";
  CHECK_THROWS_WITH(build_model(spec, a), doctest::Contains("test-two-layer"));
  static std::once_flag once;
  std::call_once(once, [] { register_model("test-sets-nothing", [](Model&, Rng&) {}); });
  spec.name = "test-sets-nothing";
  CHECK_THROWS_WITH(build_model(spec, a), doctest::Contains("set no model.net"));
}

// lenet on 3x3 images failed inside a layer ("Dense: features must be positive; got 0 -> 128"),
// naming neither the model nor the size it needs, where cifar-cnn said both.
TEST_CASE("train.registry: lenet and cifar-cnn name the smallest input they take") {
  for (const auto& [name, smallest] :
       {std::pair<std::string, int64_t>{"lenet", 4}, {"cifar-cnn", 8}}) {
    CAPTURE(name);
    ModelSpec spec;
    spec.name = name;
    spec.norm = "batch";
    spec.height = spec.width = smallest - 1;
    Rng rng(1);
    const std::string expected = "model: " + name + " needs inputs of at least " +
                                 std::to_string(smallest) + "x" + std::to_string(smallest) +
                                 "; got " + std::to_string(smallest - 1) + "x" +
                                 std::to_string(smallest - 1);
    CHECK_THROWS_WITH_AS(build_model(spec, rng), expected.c_str(), Error);
    spec.height = smallest + 1;  // one side too small is enough
    CHECK_THROWS_WITH_AS(build_model(spec, rng), doctest::Contains("needs inputs of at least"),
                         Error);
    spec.height = spec.width = smallest;
    Model m = build_model(spec, rng);
    m.net->eval();
    CHECK(m.net->forward(Tensor::zeros({2, 1, smallest, smallest})).shape() == Shape{2, 10});
  }
}

TEST_CASE("train.trainer: set_optimizer keeps each group's rate for the schedule to scale") {
  // The schedule used to set every group to schedule(cfg.lr): a user's Sgd with groups at 0.1
  // and 0.001 trained both at cfg.lr. PyTorch's schedulers scale each group's initial_lr.
  register_test_model();
  TempDir tmp;
  apps_test::write_tiny_mnist(tmp.path.string(), 200, 100);
  RunData data = load_run_data("mnist", tmp.path.string());
  TrainConfig cfg = small_config("none");
  cfg.lr = 0.05f;
  cfg.schedule = "step:10:0.5";
  Trainer trainer(cfg, data);
  const std::vector<Tensor> params = trainer.model().net->parameters();
  REQUIRE(params.size() >= 2);
  std::vector<ParamGroup> groups(2);
  groups[0].lr = 0.1f;
  groups[1].lr = 0.001f;
  for (size_t i = 0; i < params.size(); ++i) groups[i % 2].params.push_back(params[i]);
  trainer.set_optimizer(std::make_unique<Sgd>(groups));
  std::vector<std::pair<float, float>> used;  // group rates after each step
  trainer.hooks.on_step = [&](Trainer& t, const StepInfo&) {
    used.emplace_back(t.optimizer().param_groups()[0].lr, t.optimizer().param_groups()[1].lr);
  };
  trainer.fit();
  REQUIRE(used.size() == 40);
  CHECK(used[0] == std::make_pair(0.1f, 0.001f));
  CHECK(used[10] == std::make_pair(0.05f, 0.0005f));
  CHECK(used[39] == std::make_pair(0.0125f, 0.000125f));

  // An optimizer over another model's parameters would leave this one untouched: refused.
  Trainer other(cfg, data);
  Rng rng(3);
  Tensor stranger = Tensor::normal({4, 3}, rng);
  stranger.set_requires_grad();
  CHECK_THROWS_WITH_AS(other.set_optimizer(std::make_unique<Sgd>(std::vector<Tensor>{stranger})),
                       "Trainer::set_optimizer: sgd's parameter 0 of group 0 [4, 3] is not a "
                       "parameter of the model being trained (test-two-layer); build the "
                       "optimizer from trainer.model().net",
                       Error);
}

TEST_CASE("train.trainer: trains a registered model, calls the hooks, stops early on request") {
  register_test_model();
  TempDir tmp;
  apps_test::write_tiny_mnist(tmp.path.string(), 400, 200);
  RunData data = load_run_data("mnist", tmp.path.string());

  TrainConfig cfg = small_config("batch");
  Trainer trainer(cfg, data);
  CHECK(trainer.total_steps() == 40);
  CHECK(trainer.steps_per_epoch() == 20);
  std::vector<int64_t> steps;
  std::vector<int64_t> evals;
  trainer.hooks.on_step = [&](Trainer&, const StepInfo& s) {
    steps.push_back(s.step);
    CHECK(s.batch_size == 20);
    CHECK(s.lr == doctest::Approx(0.1));
  };
  trainer.hooks.on_eval = [&](Trainer&, const MetricsRow& row) {
    evals.push_back(row.step);
    return true;
  };
  TrainResult r = trainer.fit();
  CHECK(r.steps_done == 40);
  CHECK_FALSE(r.stopped_early);
  REQUIRE(steps.size() == 40);
  CHECK(steps.front() == 1);
  CHECK(steps.back() == 40);
  CHECK(evals == std::vector<int64_t>{0, 10, 20, 30, 40});  // row 0 too
  REQUIRE(r.rows.size() == 5);                              // row 0 (untrained) + 4 evaluations
  CHECK(r.rows.back().eval_acc > 0.5);                      // learns: chance is 0.1
  CHECK(std::isfinite(r.rows.back().p50));                  // the factory's probe is recorded
  CHECK_THROWS_WITH(trainer.fit(), doctest::Contains("runs once"));

  // Early stopping: the hook ends the run at its second evaluation; the run still finishes.
  cfg.out_dir = (tmp.path / "early").string();
  Trainer early(cfg, data);
  early.hooks.on_eval = [](Trainer&, const MetricsRow& row) { return row.step < 20; };
  TrainResult e = early.fit();
  CHECK(e.stopped_early);
  CHECK(e.steps_done == 20);
  CHECK(fs::exists(fs::path(cfg.out_dir) / "summary.json"));
  CHECK(nlohmann::json::parse(apps_test::read_text(cfg.out_dir + "/summary.json"))["steps"] == 20);

  // The attack found on_eval skipped for row 0 although the doc promised every evaluation:
  // returning false there ends the run before its first step, with row 0 as its only row.
  cfg.out_dir = (tmp.path / "at-zero").string();
  Trainer at_zero(cfg, data);
  int64_t steps_taken = 0;
  at_zero.hooks.on_step = [&](Trainer&, const StepInfo&) { ++steps_taken; };
  at_zero.hooks.on_eval = [](Trainer&, const MetricsRow& row) {
    CHECK(row.step == 0);
    CHECK(std::isnan(row.train_loss));
    return false;
  };
  TrainResult z = at_zero.fit();
  CHECK(z.stopped_early);
  CHECK(z.steps_done == 0);
  CHECK(steps_taken == 0);
  REQUIRE(z.rows.size() == 1);
  CHECK(z.rows[0].step == 0);
  CHECK(nlohmann::json::parse(apps_test::read_text(cfg.out_dir + "/summary.json"))["steps"] == 0);

  // --early-stop ending the run: the hook still sees the evaluation it ends at (it was skipped).
  RunData with_val = load_run_data("mnist", tmp.path.string(), /*val_split=*/100);
  TrainConfig patient = small_config("none");
  patient.early_stop = 1;
  patient.lr = 1e-30f;  // no update moves a weight, so no evaluation improves on the first
  Trainer stops(patient, with_val);
  std::vector<int64_t> seen;
  stops.hooks.on_eval = [&](Trainer&, const MetricsRow& row) {
    seen.push_back(row.step);
    return true;
  };
  TrainResult s = stops.fit();
  CHECK(s.stopped_early);
  REQUIRE(s.rows.size() == 2);
  CHECK(seen == std::vector<int64_t>{s.rows[0].step, s.rows[1].step});
}

// Found by the API attack: evaluate() (with a probe) and fit() (probe_unit >= 0, and the mechanism
// measurement) removed their probe hook with clear_forward_hooks(), which took every hook of the
// user's on the probe module with it.
TEST_CASE("train.trainer: fit and evaluate remove their own probe hook, not the user's") {
  register_test_model();
  TempDir tmp;
  apps_test::write_tiny_mnist(tmp.path.string(), 400, 200);
  RunData data = load_run_data("mnist", tmp.path.string());
  TrainConfig cfg = small_config("batch");
  cfg.steps = 20;
  cfg.mechanism_every = 10;  // hooks the probe around measured steps too
  Trainer trainer(cfg, data);
  Module& probe = *trainer.model().probe;
  int64_t images = 0;
  probe.register_forward_hook(
      [&](const Module&, const Tensor& x, const Tensor&) { images += x.size(0); });
  TrainResult r = trainer.fit();
  REQUIRE(r.steps_done == 20);
  CHECK(probe.has_forward_hooks());
  CHECK(images >= 20 * 20 + 3 * 200);  // every training step and the 3 evaluations
  images = 0;
  EvalResult e = evaluate(trainer.model(), data.eval, trainer.normalization(), 100, 0);
  CHECK(e.probe_values.size() == 200);
  CHECK(images == 200);
  CHECK(probe.has_forward_hooks());
  images = 0;
  (*trainer.model().net)(Tensor::zeros({3, 1, 28, 28}));
  CHECK(images == 3);
}

TEST_CASE("train.trainer: a registered model resumes bit for bit and reloads from its directory") {
  register_test_model();
  TempDir tmp;
  apps_test::write_tiny_mnist(tmp.path.string(), 400, 200);
  RunData data = load_run_data("mnist", tmp.path.string());

  TrainConfig cfg = small_config("batch");
  cfg.out_dir = (tmp.path / "straight").string();
  Trainer straight(cfg, data);
  straight.fit();

  TrainConfig half = cfg;
  half.out_dir = (tmp.path / "resumed").string();
  half.steps = 20;
  half.schedule = "constant";
  Trainer first(half, data);
  first.fit();
  TrainConfig rest = half;
  rest.steps = 40;
  Trainer second(rest, data);
  TrainResult r = second.fit(/*resume=*/true);
  CHECK(r.steps_done == 40);
  CHECK(weights_of(second.model()) == weights_of(straight.model()));

  TrainConfig loaded_cfg;
  Model reloaded = load_trained_model(cfg.out_dir, data.train, &loaded_cfg);
  CHECK(loaded_cfg.model.name == "test-two-layer");
  CHECK(weights_of(reloaded) == weights_of(straight.model()));
}

TEST_CASE("train.trainer: a resumed run normalizes with config.json's statistics, not its data's") {
  // A folder's normalization is computed from its training images, which may change between the
  // run and its resume; the resume keeps the statistics the run recorded (and eval uses). The
  // recorded ones are edited here to stand for such a change, on MNIST, whose own are constants.
  register_test_model();
  TempDir tmp;
  apps_test::write_tiny_mnist(tmp.path.string(), 400, 200);
  RunData data = load_run_data("mnist", tmp.path.string());
  TrainConfig half = small_config("batch");
  half.steps = 20;
  half.schedule = "constant";
  half.out_dir = (tmp.path / "as_recorded").string();
  Trainer(half, data).fit();
  fs::copy(half.out_dir, tmp.path / "edited", fs::copy_options::recursive);
  const std::string edited_config = (tmp.path / "edited" / "config.json").string();
  nlohmann::json config = nlohmann::json::parse(apps_test::read_text(edited_config));
  config["normalization"] = {{"mean", {0.25}}, {"std", {0.5}}};
  std::ofstream(edited_config) << config.dump();

  TrainConfig rest = half;
  rest.steps = 40;
  Trainer as_recorded(rest, data);
  as_recorded.fit(/*resume=*/true);
  CHECK(as_recorded.normalization().mean == std::vector<float>{0.1307f});
  rest.out_dir = (tmp.path / "edited").string();
  Trainer edited(rest, data);
  edited.fit(/*resume=*/true);
  CHECK(edited.normalization().mean == std::vector<float>{0.25f});
  CHECK(edited.normalization().std == std::vector<float>{0.5f});
  // The batches were normalized with them: the last 20 steps trained differently.
  CHECK(weights_of(edited.model()) != weights_of(as_recorded.model()));
}

TEST_CASE("train.registry: zoo models with batch-renorm fold for inference as with batch") {
  // What bnlab eval and bench do to a trained model: eval(), then fold_batch_norm. Each zoo model
  // built with batch-renorm has its norm layers in the same places as with batch, so as many pairs
  // fold, and the folded model computes what the unfolded one did.
  for (const std::string name : {"paper-mlp", "lenet"}) {
    CAPTURE(name);
    int64_t folded[2] = {0, 0};
    for (int arm = 0; arm < 2; ++arm) {
      ModelSpec spec;
      spec.name = name;
      spec.norm = arm == 0 ? "batch" : "batch-renorm";
      spec.renorm_warmup = 0;  // r and d active from the first batch
      spec.renorm_ramp = 0;
      Rng rng(31);
      Model m = build_model(spec, rng);
      Rng data(32);
      {
        NoGradGuard no_grad;  // train-mode batches: running statistics that are not 0 and 1
        for (int i = 0; i < 3; ++i) (*m.net)(Tensor::normal({6, 1, 28, 28}, data, 0.5f, 1.5f));
      }
      m.net->eval();
      Tensor x = Tensor::normal({4, 1, 28, 28}, data);
      NoGradGuard no_grad;
      const std::vector<float> unfolded = (*m.net)(x).to_vector();
      folded[arm] = fold_batch_norm(*m.net);
      const std::vector<float> y = (*m.net)(x).to_vector();
      REQUIRE(y.size() == unfolded.size());
      for (size_t i = 0; i < y.size(); ++i)
        CHECK(y[i] == doctest::Approx(unfolded[i]).epsilon(1e-5).scale(1.0));
    }
    CHECK(folded[0] == 3);
    CHECK(folded[1] == folded[0]);
  }
}

// The recurrent question (issue 15): the row-rnn zoo model (MNIST read a row per time step by
// layers/rnn.h) with each normalization it takes, its refusals, a few training steps on a tiny
// MNIST, and the recurrent preset's arms.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "apps/apps_test_util.h"
#include "train/ablation.h"
#include "train/knobs.h"
#include "train/models.h"
#include "train/trainer.h"

using namespace bnlab;
using apps_test::TempDir;

namespace {

bool has_key(const Module& m, const std::string& key) {
  for (const NamedTensor& t : m.state_dict())
    if (t.name == key) return true;
  return false;
}

}  // namespace

TEST_CASE("train.recurrent: row-rnn reads 28 rows of 28 pixels with each normalization") {
  for (const char* norm : {"none", "layer", "batch"}) {
    CAPTURE(norm);
    ModelSpec spec;
    spec.name = "row-rnn";
    spec.norm = norm;
    Rng rng(1);
    Model m = build_model(spec, rng);
    CHECK(has_key(*m.net, "rnn.weight_ih_l0"));
    CHECK(has_key(*m.net, "rnn.weight_hh_l0"));
    CHECK(has_key(*m.net, "fc.weight"));
    CHECK(has_key(*m.net, "rnn.norm.weight") == (std::string(norm) == "layer"));
    // batch: one BatchNorm1d per row, the last one for row 27.
    CHECK(has_key(*m.net, "rnn.norm.27.running_mean") == (std::string(norm) == "batch"));
    CHECK_FALSE(has_key(*m.net, "rnn.norm.28.running_mean"));
    Rng data_rng(2);
    Tensor y = (*m.net)(Tensor::uniform({5, 1, 28, 28}, data_rng, 0.0f, 1.0f));
    CHECK(y.shape() == Shape{5, 10});
    // Matched arms: the RNN and classifier weights are the same draws with every norm.
    ModelSpec plain = spec;
    plain.norm = "none";
    Rng rng2(1);
    Model p = build_model(plain, rng2);
    for (const char* key : {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "fc.weight"}) {
      std::vector<float> a, b;
      for (const NamedTensor& t : m.net->state_dict())
        if (t.name == key) a = t.tensor.to_vector();
      for (const NamedTensor& t : p.net->state_dict())
        if (t.name == key) b = t.tensor.to_vector();
      CHECK(a == b);
    }
  }
}

TEST_CASE("train.recurrent: row-rnn refuses the norms and placement it cannot take") {
  ModelSpec spec;
  spec.name = "row-rnn";
  Rng rng(1);
  for (const char* norm : {"group", "instance"}) {
    spec.norm = norm;
    CHECK_THROWS_WITH(build_model(spec, rng),
                      doctest::Contains("row-rnn supports --norm none, layer or batch"));
  }
  spec.norm = "layer";
  spec.placement = "after";
  CHECK_THROWS_WITH(build_model(spec, rng), doctest::Contains("--placement after"));
  // Refused with the flags, before any data is read.
  TrainConfig cfg;
  cfg.steps = 10;
  cfg.model.name = "row-rnn";
  cfg.model.norm = "group";
  CHECK_THROWS_WITH(check_config(cfg), doctest::Contains("row-rnn supports"));
  cfg.model.norm = "batch";
  CHECK_NOTHROW(check_config(cfg));  // no probe layer: --probe-unit's default is fine
}

TEST_CASE("train.recurrent: row-rnn trains on a tiny MNIST with each normalization") {
  TempDir dir;
  apps_test::write_tiny_mnist(dir.file("data"), 300, 60);
  RunData data = load_run_data("mnist", dir.file("data"));
  for (const char* norm : {"none", "layer", "batch"}) {
    CAPTURE(norm);
    TrainConfig cfg;
    cfg.model.name = "row-rnn";
    cfg.model.norm = norm;
    cfg.dataset = "mnist";
    cfg.data_dir = dir.file("data");
    cfg.steps = 40;
    cfg.batch_size = 20;
    cfg.lr = default_lr("row-rnn");
    cfg.eval_every = 40;
    cfg.eval_batch_size = 60;
    cfg.threads = 1;
    cfg.quiet = true;
    TrainResult r = train(cfg, data);
    REQUIRE(r.rows.size() == 2);
    CHECK(r.steps_done == 40);
    CHECK_FALSE(r.diverged);
    CHECK(std::isfinite(r.rows.back().train_loss));
    // It learns: the evaluation loss falls from the untrained model's.
    CHECK(r.rows.back().eval_loss < r.rows.front().eval_loss);
  }
}

TEST_CASE("train.recurrent: the recurrent preset's arms") {
  AblationSpec spec;
  spec.base.batch_size = 60;
  spec.base.steps = 1000;
  spec.base.model.name = "paper-mlp";
  spec.lr_from_model = true;
  apply_preset(spec, "recurrent");
  CHECK(spec.equal_samples);
  CHECK(std::find(preset_names().begin(), preset_names().end(), "recurrent") !=
        preset_names().end());
  std::vector<Arm> arms = expand_arms(spec);
  REQUIRE(arms.size() == 6);
  const float lr = default_lr("row-rnn");
  for (size_t i = 0; i < arms.size(); ++i) {
    const Arm& a = arms[i];
    CAPTURE(a.name);
    CHECK(a.config.model.name == "row-rnn");
    CHECK(a.config.model.norm == std::vector<std::string>{"none", "layer", "batch"}[i / 2]);
    const bool small = i % 2 == 0;
    CHECK(a.config.batch_size == (small ? 4 : 60));
    // Equal samples (15x the steps at batch 4) and the linear rule (lr x 4 / 60).
    CHECK(a.config.steps == (small ? 15000 : 1000));
    CHECK(a.config.lr == doctest::Approx(small ? lr * 4.0f / 60.0f : lr));
  }
  CHECK(arms[0].name == "model=row-rnn,norm=none,batch-size=4,lr-scaling=linear");
}

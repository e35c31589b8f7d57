// TrainConfig::mechanism_every (train/mechanism.h): ICS per layer and the loss landscape along the
// gradient, measured without changing the run; each measure recomputed here by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <mutex>

#include "apps/apps_test_util.h"
#include "core/ops.h"
#include "core/serialize.h"
#include "data/data_loader.h"
#include "data/datasets.h"
#include "optim/optim.h"
#include "train/knobs.h"
#include "train/mechanism.h"
#include "train/models.h"
#include "train/trainer.h"

using namespace bnlab;
using apps_test::TempDir;
namespace fs = std::filesystem;

namespace {

// flatten -> dense 32 -> (BatchNorm1d with norm "batch") -> relu -> dropout (spec.dropout, when
// > 0) -> dense 16 -> relu -> dense: three weights, BN buffers and a dropout stream.
class MechNet : public Module {
 public:
  MechNet(const ModelSpec& spec, Rng& rng, Rng& dropout_rng) {
    int64_t in = spec.channels * spec.height * spec.width;
    fc1_ = register_module("fc1", std::make_shared<Dense>(DenseOptions{in, 32}, rng));
    if (spec.norm == "batch")
      bn_ = register_module("bn", std::make_shared<BatchNorm1d>(BatchNormOptions{
                                      .num_features = 32, .momentum = spec.bn_momentum}));
    act_ = register_module("act", std::make_shared<ReLU>());
    if (spec.dropout > 0)
      drop_ = register_module("drop", std::make_shared<Dropout>(spec.dropout, dropout_rng));
    fc2_ = register_module("fc2", std::make_shared<Dense>(DenseOptions{32, 16}, rng));
    act2_ = register_module("act2", std::make_shared<ReLU>());
    fc3_ = register_module("fc3", std::make_shared<Dense>(DenseOptions{16, spec.num_classes}, rng));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = (*fc1_)(flatten(x));
    if (bn_) h = (*bn_)(h);
    h = (*act_)(h);
    if (drop_) h = (*drop_)(h);
    return (*fc3_)((*act2_)((*fc2_)(h)));
  }
  std::string type_name() const override { return "MechNet"; }
  Module* activation() { return act2_.get(); }

 private:
  std::shared_ptr<Dense> fc1_, fc2_, fc3_;
  std::shared_ptr<BatchNorm1d> bn_;
  std::shared_ptr<ReLU> act_, act2_;
  std::shared_ptr<Dropout> drop_;
};

void register_mech_net() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_model("test-mech-net", [](Model& model, Rng& rng) {
      auto net = std::make_shared<MechNet>(model.spec, rng, *model.dropout_rng);
      model.probe = net->activation();
      model.probe_width = 16;
      model.net = net;
    });
  });
}

// Generated MNIST-format data in `tmp`, loaded; registers the test model too.
RunData tiny_mnist(const TempDir& tmp, uint32_t train, uint32_t test) {
  register_mech_net();
  apps_test::write_tiny_mnist(tmp.path.string(), train, test);
  return load_run_data("mnist", tmp.path.string());
}

TrainConfig mech_config(const std::string& norm, float dropout) {
  TrainConfig cfg;
  cfg.model.name = "test-mech-net";
  cfg.model.norm = norm;
  cfg.model.dropout = dropout;
  cfg.steps = 20;
  cfg.batch_size = 20;
  cfg.lr = 0.1f;
  cfg.momentum = 0.9f;
  cfg.eval_every = 10;
  cfg.eval_batch_size = 100;
  cfg.threads = 1;
  cfg.quiet = true;
  return cfg;
}

std::string weights_of(const Model& m) { return encode_safetensors(m.net->state_dict()); }

// Bit-for-bit equality of the metrics rows' training and evaluation columns (not elapsed).
void check_same_metrics(const std::vector<MetricsRow>& a, const std::vector<MetricsRow>& b) {
  REQUIRE(a.size() == b.size());
  auto same = [](double x, double y) { return (std::isnan(x) && std::isnan(y)) || x == y; };
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].step);
    CHECK(a[i].step == b[i].step);
    CHECK(same(a[i].train_loss, b[i].train_loss));
    CHECK(same(a[i].train_acc, b[i].train_acc));
    CHECK(same(a[i].eval_loss, b[i].eval_loss));
    CHECK(same(a[i].eval_acc, b[i].eval_acc));
    CHECK(same(a[i].lr, b[i].lr));
    CHECK(same(a[i].p50, b[i].p50));
  }
}

// A schedule whose rate is 0 at every step: no parameter moves.
class ZeroSchedule : public LrSchedule {
 protected:
  double compute(double, int64_t) const override { return 0.0; }
};

double l2(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

}  // namespace

TEST_CASE("train.mechanism: measuring leaves the run bit for bit unchanged (BN, dropout)") {
  TempDir tmp;
  RunData data = tiny_mnist(tmp, 400, 200);
  struct Arm {
    const char* norm;
    float dropout;
  };
  for (Arm arm : {Arm{"batch", 0.0f}, Arm{"none", 0.3f}, Arm{"batch", 0.3f}}) {
    CAPTURE(arm.norm);
    CAPTURE(arm.dropout);
    TrainConfig cfg = mech_config(arm.norm, arm.dropout);
    Trainer plain(cfg, data);
    TrainResult p = plain.fit();
    cfg.mechanism_every = 3;
    Trainer measured(cfg, data);
    TrainResult m = measured.fit();
    check_same_metrics(p.rows, m.rows);
    CHECK(weights_of(plain.model()) == weights_of(measured.model()));
    CHECK(p.ics_rows.empty());
    // Steps 3, 6, .., 18 and the last, 20; three weights each; four step sizes.
    REQUIRE(m.mechanism_rows.size() == 7);
    CHECK(m.mechanism_rows.front().step == 3);
    CHECK(m.mechanism_rows.back().step == 20);
    REQUIRE(m.ics_rows.size() == 7 * 3);
    CHECK(m.smoothness_rows.size() == 7 * 4);
    for (const IcsRow& r : m.ics_rows) {
      CAPTURE(r.step);
      CAPTURE(r.param);
      if (r.layer == 0) {  // nothing precedes the first weight: the replay must give G exactly
        CHECK(r.param == "fc1.weight");
        CHECK(r.l2_diff == 0.0);
        CHECK(r.cosine == 1.0);
      } else {
        CHECK(r.l2_diff > 0.0);
        CHECK(r.cosine < 1.0);
      }
      CHECK(r.grad_norm > 0.0);
    }
    CHECK(m.ics_rows[1].param == "fc2.weight");
    CHECK(m.ics_rows[2].param == "fc3.weight");
    for (const MechanismRow& r : m.mechanism_rows) {
      CHECK(r.loss_min <= r.loss);
      CHECK(r.loss <= r.loss_max);
      CHECK(r.grad_diff_min <= r.grad_diff_max);
      CHECK(r.beta_smoothness > 0.0);
      CHECK(std::isfinite(r.probe_p50));
      CHECK(r.probe_p15 <= r.probe_p85);
      CHECK(r.probe_std >= 0.0);
    }
    CHECK(m.mechanism_seconds > 0.0);
  }
}

TEST_CASE("train.mechanism: with nothing updated, ICS is 0 everywhere") {
  TempDir tmp;
  RunData data = tiny_mnist(tmp, 400, 200);
  TrainConfig cfg = mech_config("batch", 0.3f);
  cfg.steps = 4;
  cfg.mechanism_every = 2;
  Trainer trainer(cfg, data);
  trainer.set_schedule(std::make_unique<ZeroSchedule>());
  TrainResult r = trainer.fit();
  REQUIRE(r.ics_rows.size() == 2 * 3);
  for (const IcsRow& row : r.ics_rows) {
    CHECK(row.l2_diff == 0.0);
    CHECK(row.cosine == 1.0);
  }
  // A rate of 0 makes every step size 0 too: the landscape is the step's own point.
  for (const SmoothnessRow& row : r.smoothness_rows) {
    CHECK(row.eta == 0.0);
    CHECK(row.grad_diff_l2 == 0.0);
  }
  for (const MechanismRow& row : r.mechanism_rows) {
    CHECK(row.loss_min == row.loss);
    CHECK(row.loss_max == row.loss);
    CHECK(std::isnan(row.beta_smoothness));  // no step length to divide by
  }
}

TEST_CASE("train.mechanism: ICS and the landscape agree with a recomputation by hand") {
  TempDir tmp;
  RunData data = tiny_mnist(tmp, 200, 50);
  ModelSpec spec = with_geometry_of(mech_config("batch", 0.3f).model, data.train);
  Rng init(7);
  Model model = build_model(spec, init);
  Rng init2(7);
  Model twin = build_model(spec, init2);  // the recomputation's model, set by hand
  model.net->train();
  twin.net->train();
  Sgd opt(model.net->parameters(), SgdOptions{.lr = 0.2f, .momentum = 0.9f});
  DataLoader loader(
      data.train,
      {.batch_size = 25, .shuffle = true, .seed = 3, .normalize = standard_normalization("mnist")});
  loader.start_epoch(0);
  Batch batch;
  auto step = [&](MechanismMeter* meter) {
    REQUIRE(loader.next(batch));
    if (meter) meter->before_forward();
    Tensor loss = cross_entropy((*model.net)(batch.images), batch.labels);
    loss.backward();
    if (meter) meter->after_backward(batch.images, batch.labels, loss.item(), opt.lr());
    return loss.item();
  };
  for (int i = 0; i < 3; ++i) {  // momentum and BN running statistics away from their start
    step(nullptr);
    opt.step();
    opt.zero_grad();
  }
  // The state the measured step starts from.
  Module::NamedTensors params = model.net->named_parameters();
  std::vector<Tensor> w0, b0;
  for (const auto& [name, p] : params) w0.push_back(p.clone());
  for (const auto& [name, b] : model.net->named_buffers()) b0.push_back(b.clone());
  const Rng::State rng0 = model.dropout_rng->state();

  MechanismMeter meter(model, {0.0f, 1.0f, 3.0f}, 0.0f, 0);
  const float loss = step(&meter);
  std::vector<Tensor> g;
  for (const auto& [name, p] : params) g.push_back(p.grad().clone());  // after_backward kept them
  opt.step();
  std::vector<Tensor> w1;
  for (const auto& [name, p] : params) w1.push_back(p.clone());
  std::vector<IcsRow> ics;
  std::vector<SmoothnessRow> smooth;
  std::vector<MechanismRow> summary;
  meter.after_update(4, ics, smooth, summary);
  for (size_t i = 0; i < params.size(); ++i)  // the measurement put W^{t+1} back
    CHECK(encode_safetensors({{"w", params[i].second}}) == encode_safetensors({{"w", w1[i]}}));
  opt.zero_grad();

  // The twin at given weights, from the step's starting buffers and dropout state: its gradients.
  Module::NamedTensors twin_params = twin.net->named_parameters();
  Module::NamedTensors twin_buffers = twin.net->named_buffers();
  auto replay = [&](auto weight_of) {
    for (size_t i = 0; i < twin_params.size(); ++i) {
      twin_params[i].second.copy_(weight_of(i));
      twin_params[i].second.zero_grad();
    }
    for (size_t i = 0; i < twin_buffers.size(); ++i) twin_buffers[i].second.copy_(b0[i]);
    twin.dropout_rng->set_state(rng0);
    Tensor l = cross_entropy((*twin.net)(batch.images), batch.labels);
    l.backward();
    return l.item();
  };
  auto diff = [](const Tensor& a, const Tensor& b) {
    std::vector<double> d(static_cast<size_t>(a.numel()));
    for (int64_t i = 0; i < a.numel(); ++i)
      d[static_cast<size_t>(i)] = static_cast<double>(a.data()[i]) - b.data()[i];
    return d;
  };

  // ICS of fc2.weight (parameter 4: fc1.weight, fc1.bias, bn.weight, bn.bias before it).
  REQUIRE(ics.size() == 3);
  const IcsRow& row = ics[1];
  REQUIRE(row.param == "fc2.weight");
  REQUIRE(twin_params[4].first == "fc2.weight");
  replay([&](size_t i) { return i < 4 ? w1[i] : w0[i]; });
  Tensor g_after = twin_params[4].second.grad();
  std::vector<double> d = diff(g_after, g[4]);
  CHECK(row.l2_diff == doctest::Approx(l2(d)).epsilon(1e-9));
  CHECK(row.l2_diff > 1e-6);  // the update of fc1 and bn moved fc2's gradient
  double dot = 0, na = 0, nb = 0;
  for (int64_t i = 0; i < g_after.numel(); ++i) {
    dot += static_cast<double>(g_after.data()[i]) * g[4].data()[i];
    na += static_cast<double>(g_after.data()[i]) * g_after.data()[i];
    nb += static_cast<double>(g[4].data()[i]) * g[4].data()[i];
  }
  CHECK(row.grad_norm_after == doctest::Approx(std::sqrt(na)).epsilon(1e-9));
  CHECK(row.grad_norm == doctest::Approx(std::sqrt(nb)).epsilon(1e-9));
  CHECK(row.cosine == doctest::Approx(dot / std::sqrt(na * nb)).epsilon(1e-9));

  // The landscape at eta = 3 x lr: L(W^t - eta g) and ||grad - g|| over all parameters.
  REQUIRE(smooth.size() == 3);
  CHECK(smooth[0].eta == 0.0);
  CHECK(smooth[0].loss == static_cast<double>(loss));  // the step's own point, replayed
  CHECK(smooth[0].grad_diff_l2 == 0.0);
  const float eta = 3.0f * 0.2f;
  CHECK(smooth[2].eta == doctest::Approx(eta));
  const float l_eta = replay([&](size_t i) {
    Tensor w = w0[i].clone();
    for (int64_t j = 0; j < w.numel(); ++j) w.data()[j] = w0[i].data()[j] - eta * g[i].data()[j];
    return w;
  });
  CHECK(smooth[2].loss == doctest::Approx(l_eta).epsilon(1e-7));
  CHECK(smooth[2].loss != doctest::Approx(loss).epsilon(1e-4));  // it did move
  std::vector<double> all;
  for (size_t i = 0; i < twin_params.size(); ++i)
    for (double x : diff(twin_params[i].second.grad(), g[i])) all.push_back(x);
  CHECK(smooth[2].grad_diff_l2 == doctest::Approx(l2(all)).epsilon(1e-9));
  // The summary: ranges over the step sizes, beta over the non-zero ones.
  REQUIRE(summary.size() == 1);
  CHECK(summary[0].step == 4);
  CHECK(summary[0].loss_min == std::min({smooth[0].loss, smooth[1].loss, smooth[2].loss}));
  CHECK(summary[0].grad_diff_max == std::max(smooth[1].grad_diff_l2, smooth[2].grad_diff_l2));
  double gnorm = 0;
  for (const Tensor& t : g)
    for (int64_t i = 0; i < t.numel(); ++i) gnorm += static_cast<double>(t.data()[i]) * t.data()[i];
  gnorm = std::sqrt(gnorm);
  CHECK(summary[0].grad_norm == doctest::Approx(gnorm).epsilon(1e-9));
  const double beta = std::max(smooth[1].grad_diff_l2 / (smooth[1].eta * summary[0].grad_norm),
                               smooth[2].grad_diff_l2 / (smooth[2].eta * summary[0].grad_norm));
  CHECK(summary[0].beta_smoothness == doctest::Approx(beta).epsilon(1e-12));
}

TEST_CASE(
    "train.mechanism: a resumed run keeps the earlier rows, config.json round-trips the settings") {
  TempDir tmp;
  RunData data = tiny_mnist(tmp, 400, 200);
  TrainConfig cfg = mech_config("batch", 0.3f);
  cfg.mechanism_every = 5;
  cfg.mechanism_etas = {0.25f, 3.0f};
  cfg.out_dir = (tmp.path / "straight").string();
  TrainResult straight = Trainer(cfg, data).fit();

  TrainConfig half = cfg;
  half.out_dir = (tmp.path / "resumed").string();
  half.steps = 10;
  TrainResult first = Trainer(half, data).fit();
  CHECK(first.mechanism_rows.size() == 2);
  TrainConfig rest = config_from_json(apps_test::read_text(half.out_dir + "/config.json"), "test");
  CHECK(rest.mechanism_every == 5);
  CHECK(rest.mechanism_etas == std::vector<float>{0.25f, 3.0f});
  rest.steps = 20;
  rest.quiet = true;
  rest.out_dir = half.out_dir;
  TrainResult resumed = Trainer(rest, data).fit(/*resume=*/true);
  CHECK(resumed.mechanism_rows.size() == 4);
  CHECK(resumed.mechanism_rows[1].beta_smoothness ==
        doctest::Approx(first.mechanism_rows[1].beta_smoothness));  // read back from the file
  CHECK(resumed.ics_rows.size() == straight.ics_rows.size());
  for (const char* file : {"ics.csv", "smoothness.csv", "mechanism.csv"}) {
    CAPTURE(file);
    CHECK(apps_test::read_text(half.out_dir + "/" + file) ==
          apps_test::read_text(cfg.out_dir + "/" + file));
  }
  // Read back as written.
  std::vector<MechanismRow> back = read_mechanism_csv(cfg.out_dir + "/mechanism.csv");
  REQUIRE(back.size() == 4);
  CHECK(back[3].step == 20);
  CHECK(back[3].beta_smoothness == doctest::Approx(straight.mechanism_rows[3].beta_smoothness));
  std::vector<IcsRow> ics = read_ics_csv(cfg.out_dir + "/ics.csv");
  REQUIRE(ics.size() == 12);
  CHECK(ics[4].param == "fc2.weight");
  CHECK(read_smoothness_csv(cfg.out_dir + "/smoothness.csv").size() == 8);
}

TEST_CASE("train.mechanism: bad settings are refused") {
  const Knob* etas = find_knob_by_flag("--mechanism-etas");
  const Knob* every = find_knob_by_flag("--mechanism-every");
  REQUIRE(etas != nullptr);
  REQUIRE(every != nullptr);
  TrainConfig c;
  etas->set(c, "0.1,2.5");
  CHECK(c.mechanism_etas == std::vector<float>{0.1f, 2.5f});
  CHECK(etas->get(c) == "0.1,2.5");
  for (const char* bad : {"0", "1,-2", "", "1,,2", "a", "1e39", "nan"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH(etas->set(c, bad), doctest::Contains("comma-separated list of numbers > 0"));
  }
  CHECK_THROWS_WITH(every->set(c, "-1"), doctest::Contains("must be a whole number"));
}

// BatchRenorm1d/2d and batch_renorm_train (Ioffe 2017): with r_max = 1, d_max = 0 (and during the
// warm-up) bit-identical to BatchNorm in outputs, running statistics and gradients; gradient checks
// with r and d clipped (then locally constant in x) and, unclipped, against the same function
// with r and d held fixed built from checked ops; r, d, y and the parameter gradients by hand; the
// schedule at its boundaries and through the layer's num_batches_tracked, across a checkpoint
// too; eval with the running statistics; state_dict names; option and shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/serialize.h"
#include "gradcheck.h"
#include "layers/layers.h"
#include "test_util.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;

// Bit-for-bit equality (so -0 and +0 differ, and NaN equals the same NaN).
bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// A copy of t without the graph: the running statistics as they were before a step.
Tensor snapshot(const Tensor& t) { return t.detach().clone(); }

// Trains `bn` and `brn` side by side on the same batches and upstream gradients, checking after
// each step that their outputs, input and parameter gradients and buffers are bit-identical.
void check_same_as_batch_norm(BatchNorm& bn, BatchNorm& brn, const Shape& shape) {
  const int64_t C = shape[1];
  Rng rng(7);
  Tensor gamma = Tensor::uniform({C}, rng, 0.5f, 1.5f);
  Tensor beta = Tensor::uniform({C}, rng, -1.0f, 1.0f);
  for (BatchNorm* m : {&bn, &brn}) {
    m->weight().copy_(gamma);
    m->bias().copy_(beta);
  }
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    // Shifted and scaled away from the running statistics, so a real r and d would not be 1, 0.
    Tensor x = Tensor::normal(shape, rng, 1.5f, 2.0f);
    Tensor seed = Tensor::normal(shape, rng);
    Tensor xa = x.clone(), xb = x.clone();
    xa.set_requires_grad();
    xb.set_requires_grad();
    Tensor ya = bn(xa), yb = brn(xb);
    CHECK(same_bits(ya, yb));
    ya.backward(seed);
    yb.backward(seed);
    CHECK(same_bits(xa.grad(), xb.grad()));
    CHECK(same_bits(bn.weight().grad(), brn.weight().grad()));
    CHECK(same_bits(bn.bias().grad(), brn.bias().grad()));
    CHECK(same_bits(bn.running_mean(), brn.running_mean()));
    CHECK(same_bits(bn.running_var(), brn.running_var()));
    CHECK(bn.num_batches_tracked() == brn.num_batches_tracked());
  }
  CHECK(brn.num_batches_tracked() == 3);
}

// A per-channel [C] tensor shaped to broadcast against x [N, C] or [N, C, H, W].
Tensor per_channel(const Tensor& t, int64_t x_dim) {
  return x_dim == 2 ? t : reshape(t, {t.numel(), 1, 1});
}

}  // namespace

TEST_CASE("layers.batch_renorm: r_max = 1, d_max = 0 is BatchNorm, bit for bit") {
  const BatchRenormOptions off{.r_max = 1.0f, .d_max = 0.0f, .warmup = 0, .ramp = 0};
  SUBCASE("[N, C], two channel blocks") {
    BatchNorm1d bn({.num_features = 70});
    BatchRenorm1d brn({.num_features = 70}, off);
    check_same_as_batch_norm(bn, brn, {16, 70});
  }
  SUBCASE("[N, C, H, W]") {
    BatchNorm2d bn({.num_features = 3});
    BatchRenorm2d brn({.num_features = 3}, off);
    check_same_as_batch_norm(bn, brn, {4, 3, 5, 5});
  }
  SUBCASE("[N, C, H, W] above the OpenMP threshold, cumulative momentum") {
    BatchNorm2d bn({.num_features = 8, .momentum = std::nullopt});
    BatchRenorm2d brn({.num_features = 8, .momentum = std::nullopt}, off);
    check_same_as_batch_norm(bn, brn, {10, 8, 20, 21});
  }
  SUBCASE("the default schedule during its warm-up") {
    BatchNorm2d bn({.num_features = 3});
    BatchRenorm2d brn({.num_features = 3});
    check_same_as_batch_norm(bn, brn, {4, 3, 5, 5});
  }
  SUBCASE("the op: r = 1 and d = 0 exactly, whatever the running statistics hold") {
    Rng rng(3);
    Tensor x = Tensor::normal({6, 4, 3}, rng, 2.0f, 3.0f);
    Tensor g = Tensor::uniform({4}, rng, 0.5f, 1.5f), b = Tensor::uniform({4}, rng);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    BatchRenormArgs args{Tensor::from({100, nan, -3, 0}, {4}),
                         Tensor::from({1e-6f, 4, nan, 1}, {4}), 1.0f, 0.0f};
    BatchNormResult brn = batch_renorm_train(x, g, b, 1e-5f, args);
    BatchNormResult bn = batch_norm_train(x, g, b, 1e-5f);
    CHECK(same_bits(brn.y, bn.y));
    CHECK(same_bits(brn.mean, bn.mean));
    CHECK(same_bits(brn.var, bn.var));
    CHECK(brn.r.to_vector() == std::vector<float>(4, 1.0f));
    CHECK(brn.d.to_vector() == std::vector<float>(4, 0.0f));
    CHECK(!bn.r.defined());
  }
}

TEST_CASE("layers.batch_renorm: r, d, y and the parameter gradients by hand") {
  // Channel 0: x = 1, 2, 3, 4 (mu_B 2.5, sigma_B sqrt(1.25)) against mu 2, sigma 0.5:
  //   r = sqrt(1.25) / 0.5 = sqrt(5) and d = 0.5 / 0.5 = 1, both inside the limits (3, 5), so
  //   y = xhat * r + d = (x - 2.5) * 2 + 1 = (x - mu) / sigma: the running statistics' output.
  // Channel 1: x = 0, 0, 0, 8 (mu_B 2, sigma_B sqrt(12)) against mu -10, sigma 1:
  //   r = sqrt(12) clipped to 3, d = 12 clipped to 5; gamma 2, beta 1.
  // eps = 0 keeps the numbers round.
  Tensor x = Tensor::from({1, 0, 2, 0, 3, 0, 4, 8}, {4, 2});
  Tensor gamma = Tensor::from({1, 2}, {2}), beta = Tensor::from({0, 1}, {2});
  gamma.set_requires_grad();
  beta.set_requires_grad();
  BatchRenormArgs args{Tensor::from({2, -10}, {2}), Tensor::from({0.25f, 1}, {2}), 3.0f, 5.0f};
  BatchNormResult res = batch_renorm_train(x, gamma, beta, 0.0f, args);
  CHECK(res.r.data()[0] == doctest::Approx(std::sqrt(5.0)));
  CHECK(res.r.data()[1] == 3.0f);
  CHECK(res.d.data()[0] == doctest::Approx(1.0));
  CHECK(res.d.data()[1] == 5.0f);
  const float* y = res.y.data();
  const double root3 = std::sqrt(3.0);
  // Channel 1: 2 * ((x - 2) / sqrt(12) * 3 + 5) + 1, i.e. 11 - 2 sqrt(3) at x = 0, 11 + 6 sqrt(3)
  // at x = 8.
  const double expected[8] = {-2, 11 - 2 * root3, 0, 11 - 2 * root3,
                              2,  11 - 2 * root3, 4, 11 + 6 * root3};
  for (int i = 0; i < 8; ++i) {
    CAPTURE(i);
    CHECK(y[i] == doctest::Approx(expected[i]).epsilon(1e-6));
  }
  // dy = 1: dbeta = sum(dy) = 4; dgamma = sum(xhat * r + d) = r * 0 + 4 d = 4, 20 (batch norm's
  // would be 0, 0).
  res.y.backward(Tensor::ones({4, 2}));
  CHECK(beta.grad().to_vector() == std::vector<float>{4, 4});
  CHECK(gamma.grad().data()[0] == doctest::Approx(4.0));
  CHECK(gamma.grad().data()[1] == doctest::Approx(20.0));
}

TEST_CASE("layers.batch_renorm: gradient checks with r and d clipped (locally constant in x)") {
  // x in [-1, 1): sigma_B ~ 0.6, mu_B ~ 0. Channel 0: running variance 1e-4 and mean -50, so
  // r ~ 60 clips to r_max = 2 and d ~ 5000 to d_max = 1.5; channel 1: running variance 1e4 and
  // mean 400, so r ~ 0.006 clips to 1/2 and d = -4 to -1.5. Finite differences of 1e-3 cannot move
  // them off the limits, so the op's forward is the function its backward differentiates.
  for (const Shape& shape : {Shape{6, 2}, Shape{3, 2, 3, 2}}) {
    CAPTURE(shape);
    BatchRenormArgs args{Tensor::from({-50, 400}, {2}), Tensor::from({1e-4f, 1e4f}, {2}), 2.0f,
                         1.5f};
    Tensor x = param(shape, 21), gamma = param({2}, 22, 0.5f, 1.5f), beta = param({2}, 23);
    BatchNormResult res = batch_renorm_train(x, gamma, beta, 1e-5f, args);
    REQUIRE(res.r.to_vector() == std::vector<float>{2.0f, 0.5f});
    REQUIRE(res.d.to_vector() == std::vector<float>{1.5f, -1.5f});
    CHECK_GRADIENTS(
        "batch_renorm (clipped)",
        [&](const Inputs& in) { return batch_renorm_train(in[0], in[1], in[2], 1e-5f, args).y; },
        {x, gamma, beta});
    CHECK_GRADIENTS(
        "batch_renorm (clipped, no affine)",
        [&](const Inputs& in) { return batch_renorm_train(in[0], {}, {}, 1e-5f, args).y; },
        {param(shape, 24)});
  }
}

TEST_CASE("layers.batch_renorm: unclipped, backward is the gradient with r and d held fixed") {
  // With r and d inside their limits they move with x, and a finite difference of the op would
  // see that although backward must not (stop-gradient). So: the same function with r and d as
  // constant tensors, gamma * (xhat * r + d) + beta from gradient-checked ops, is itself
  // gradient-checked (r, d are fixed there by construction), and the op's gradients must equal
  // that function's.
  for (const Shape& shape : {Shape{6, 3}, Shape{3, 3, 2, 3}}) {
    CAPTURE(shape);
    const int64_t dim = static_cast<int64_t>(shape.size());
    BatchRenormArgs args{Tensor::from({0.1f, -0.2f, 0.05f}, {3}),
                         Tensor::from({0.1f, 0.9f, 0.15f}, {3}), 3.0f, 5.0f};
    Tensor x = param(shape, 31), gamma = param({3}, 32, 0.5f, 1.5f), beta = param({3}, 33);
    BatchNormResult res = batch_renorm_train(x, gamma, beta, 1e-5f, args);
    for (int64_t c = 0; c < 3; ++c) {
      const float r = res.r.data()[c], d = res.d.data()[c];
      CAPTURE(c);
      CAPTURE(r);
      CAPTURE(d);
      CHECK((r > 1.0f / 3.0f && r < 3.0f && std::fabs(r - 1.0f) > 0.05f));
      CHECK((std::fabs(d) < 5.0f && std::fabs(d) > 0.05f));
    }
    const Tensor r = per_channel(res.r, dim), d = per_channel(res.d, dim);
    auto fixed = [&](const Inputs& in) {
      Tensor xhat = batch_norm_train(in[0], {}, {}, 1e-5f).y;
      return add(mul(per_channel(in[1], dim), add(mul(xhat, r), d)), per_channel(in[2], dim));
    };
    CHECK_GRADIENTS("batch_renorm with r, d fixed", fixed, {x, gamma, beta});

    // The op's gradients against the fixed-r, d function's, for one upstream gradient.
    Rng rng(34);
    Tensor seed = Tensor::normal(shape, rng);
    auto grads = [&](bool op) {
      Tensor xi = x.detach().clone(), gi = gamma.detach().clone(), bi = beta.detach().clone();
      for (Tensor* t : {&xi, &gi, &bi}) t->set_requires_grad();
      Tensor y = op ? batch_renorm_train(xi, gi, bi, 1e-5f, args).y : fixed({xi, gi, bi});
      y.backward(seed);
      return std::vector<Tensor>{xi.grad(), gi.grad(), bi.grad()};
    };
    std::vector<Tensor> from_op = grads(true), from_fixed = grads(false);
    for (size_t i = 0; i < 3; ++i) {
      CAPTURE(i);
      std::vector<float> a = from_op[i].to_vector(), b = from_fixed[i].to_vector();
      REQUIRE(a.size() == b.size());
      for (size_t k = 0; k < a.size(); ++k)
        CHECK(a[k] == doctest::Approx(b[k]).epsilon(1e-5).scale(1.0));
    }
  }
}

TEST_CASE("layers.batch_renorm: the schedule's limits at the warm-up and ramp boundaries") {
  const BatchRenormOptions o{.r_max = 3.0f, .d_max = 5.0f, .warmup = 10, .ramp = 20};
  auto at = [&](int64_t step) { return batch_renorm_limits(o, step); };
  for (int64_t step : {0, 1, 9, 10}) {
    CAPTURE(step);
    CHECK(at(step).r_max == 1.0f);
    CHECK(at(step).d_max == 0.0f);
  }
  CHECK(at(11).r_max == doctest::Approx(1.1));  // 1 + 2 * 1/20
  CHECK(at(11).d_max == doctest::Approx(0.25));
  CHECK(at(20).r_max == doctest::Approx(2.0));  // halfway
  CHECK(at(20).d_max == doctest::Approx(2.5));
  CHECK(at(29).r_max < 3.0f);
  for (int64_t step : {30, 31, 1000000}) {
    CAPTURE(step);
    CHECK(at(step).r_max == 3.0f);
    CHECK(at(step).d_max == 5.0f);
  }
  // No ramp: the final limits right after the warm-up; no warm-up: the ramp starts at once.
  const BatchRenormOptions jump{.r_max = 2.0f, .d_max = 1.0f, .warmup = 10, .ramp = 0};
  CHECK(batch_renorm_limits(jump, 10).r_max == 1.0f);
  CHECK(batch_renorm_limits(jump, 11).r_max == 2.0f);
  CHECK(batch_renorm_limits(jump, 11).d_max == 1.0f);
  const BatchRenormOptions now{.r_max = 2.0f, .d_max = 1.0f, .warmup = 0, .ramp = 4};
  CHECK(batch_renorm_limits(now, 0).r_max == 1.0f);
  CHECK(batch_renorm_limits(now, 1).r_max == doctest::Approx(1.25));
  CHECK(batch_renorm_limits(now, 1).d_max == doctest::Approx(0.25));
}

TEST_CASE("layers.batch_renorm: the layer follows its schedule in num_batches_tracked") {
  // Warm-up 1, ramp 2: the limits are (1, 0) for the batches after 0 and 1 batches, (2, 2.5) after
  // 2, (3, 5) after 3 and on. Each step's output must be the op's with those limits and the
  // running statistics from before the step.
  const BatchRenormOptions o{.r_max = 3.0f, .d_max = 5.0f, .warmup = 1, .ramp = 2};
  BatchRenorm2d brn({.num_features = 2}, o);
  brn.weight().copy_(Tensor::from({0.8f, 1.2f}, {2}));
  brn.bias().copy_(Tensor::from({0.1f, -0.3f}, {2}));
  const BatchRenormLimits expected[5] = {{1, 0}, {1, 0}, {2, 2.5f}, {3, 5}, {3, 5}};
  Rng rng(41);
  for (int step = 0; step < 5; ++step) {
    CAPTURE(step);
    CHECK(brn.num_batches_tracked() == step);
    // Batches far from the running statistics (mean 0, var 1 at first): r and d are not 1, 0.
    Tensor x = Tensor::normal({4, 2, 3, 3}, rng, 4.0f, 3.0f);
    BatchRenormArgs args{snapshot(brn.running_mean()), snapshot(brn.running_var()),
                         expected[step].r_max, expected[step].d_max};
    BatchNormResult want = batch_renorm_train(x, brn.weight(), brn.bias(), 1e-5f, args);
    Tensor y = brn(x);
    CHECK(same_bits(y, want.y));
    // From step 2 on the output is not batch norm's.
    Tensor plain = batch_norm_train(x, brn.weight(), brn.bias(), 1e-5f).y;
    CHECK(same_bits(y, plain) == (step < 2));
  }
}

TEST_CASE("layers.batch_renorm: a checkpoint continues the schedule exactly") {
  // A: 6 steps straight. B: 2 steps, state_dict to a safetensors file, loaded into a fresh layer
  // C, 4 more steps. The schedule (warm-up 1, ramp 3) is mid-ramp at the split, so C must take its
  // step from the loaded num_batches_tracked, and its running statistics from the file, to match.
  const BatchRenormOptions o{.r_max = 3.0f, .d_max = 5.0f, .warmup = 1, .ramp = 3};
  BatchRenorm1d a({.num_features = 3}, o), b({.num_features = 3}, o), c({.num_features = 3}, o);
  std::vector<Tensor> batches;
  Rng rng(51);
  for (int i = 0; i < 6; ++i) batches.push_back(Tensor::normal({8, 3}, rng, 2.0f, 3.0f));
  std::vector<Tensor> outputs;
  for (const Tensor& x : batches) outputs.push_back(a(x));
  for (int i = 0; i < 2; ++i) b(batches[static_cast<size_t>(i)]);
  testing::TempDir dir("brn");
  save_safetensors(dir.file("b.safetensors"), b.state_dict(), {});
  c.load_state_dict(load_safetensors(dir.file("b.safetensors")).tensors);
  CHECK(c.num_batches_tracked() == 2);
  for (size_t i = 2; i < 6; ++i) {
    CAPTURE(i);
    CHECK(same_bits(c(batches[i]), outputs[i]));
  }
  CHECK(same_bits(c.running_mean(), a.running_mean()));
  CHECK(same_bits(c.running_var(), a.running_var()));
  CHECK(c.num_batches_tracked() == 6);
  // Not vacuous: a layer that restarts the schedule (no num_batches_tracked) differs.
  BatchRenorm1d fresh({.num_features = 3}, o);
  std::vector<NamedTensor> state = b.state_dict();
  for (NamedTensor& t : state)
    if (t.name == "num_batches_tracked") t.tensor = Tensor::zeros({});
  fresh.load_state_dict(state);
  CHECK(!same_bits(fresh(batches[2]), outputs[2]));
}

TEST_CASE("layers.batch_renorm: eval normalizes with the running statistics, as BatchNorm") {
  const BatchRenormOptions o{.r_max = 2.0f, .d_max = 1.0f, .warmup = 0, .ramp = 0};
  BatchRenorm1d brn({.num_features = 2}, o);
  Rng rng(61);
  for (int i = 0; i < 3; ++i) brn(Tensor::normal({8, 2}, rng, 1.0f, 2.0f));
  brn.eval();
  Tensor x = Tensor::normal({5, 2}, rng);
  Tensor want =
      batch_norm_eval(x, brn.running_mean(), brn.running_var(), brn.weight(), brn.bias(), 1e-5f);
  Tensor y = brn(x);
  CHECK(same_bits(y, want));
  // Independent of the batch: one sample alone gives its row of the batch's output.
  Tensor one = brn(Tensor::from({x.data()[2], x.data()[3]}, {1, 2}));
  CHECK(one.data()[0] == y.data()[2]);
  CHECK(one.data()[1] == y.data()[3]);
  CHECK(brn.num_batches_tracked() == 3);  // eval does not count
  CHECK_GRADIENTS("BatchRenorm1d(eval)", [&](const Inputs& in) { return brn(in[0]); },
                  {param({4, 2}, 62), brn.weight(), brn.bias()});
}

TEST_CASE("layers.batch_renorm: BatchNorm's state_dict names, type names and description") {
  BatchRenorm2d brn({.num_features = 4});
  std::vector<std::string> names;
  for (const NamedTensor& t : brn.state_dict()) names.push_back(t.name);
  CHECK(names == std::vector<std::string>{"weight", "bias", "running_mean", "running_var",
                                          "num_batches_tracked"});
  BatchNorm2d bn({.num_features = 4});
  bn.load_state_dict(brn.state_dict());  // a BatchNorm2d (PyTorch's twin) loads it unchanged
  CHECK(brn.type_name() == "BatchRenorm2d");
  CHECK(BatchRenorm1d({.num_features = 4}).type_name() == "BatchRenorm1d");
  CHECK(brn.renorm().has_value());
  CHECK(!bn.renorm().has_value());
  CHECK(brn.to_string().find("r_max 3") != std::string::npos);
}

TEST_CASE("layers.batch_renorm: bad options, steps and inputs are refused with a clear message") {
  auto make = [](BatchRenormOptions o) { BatchRenorm1d({.num_features = 2}, o); };
  CHECK_THROWS_WITH_AS(make({.r_max = 0.5f}),
                       doctest::Contains("BatchRenorm1d: r_max must be a finite number >= 1"),
                       Error);
  CHECK_THROWS_WITH_AS(make({.r_max = std::numeric_limits<float>::infinity()}),
                       doctest::Contains("r_max must be a finite number >= 1"), Error);
  CHECK_THROWS_WITH_AS(make({.d_max = -1.0f}),
                       doctest::Contains("BatchRenorm1d: d_max must be a finite number >= 0"),
                       Error);
  CHECK_THROWS_WITH_AS(make({.warmup = -1}),
                       doctest::Contains("BatchRenorm1d: warmup must be >= 0 steps; got -1"),
                       Error);
  CHECK_THROWS_WITH_AS(make({.ramp = -5}),
                       doctest::Contains("BatchRenorm1d: ramp must be >= 0 steps; got -5"), Error);
  CHECK_THROWS_WITH_AS(BatchRenorm2d({.num_features = 2, .track_running_stats = false}),
                       doctest::Contains("BatchRenorm2d: track_running_stats must be true"), Error);
  CHECK_THROWS_WITH_AS(batch_renorm_limits({}, -1),
                       doctest::Contains("batch_renorm_limits: step must be >= 0; got -1"), Error);

  Tensor x = Tensor::ones({4, 3});
  BatchRenormArgs args{Tensor::zeros({3}), Tensor::ones({3}), 2.0f, 1.0f};
  BatchRenormArgs bad = args;
  bad.r_max = 0.9f;
  CHECK_THROWS_WITH_AS(batch_renorm_train(x, {}, {}, 1e-5f, bad),
                       doctest::Contains("batch_renorm: r_max must be a finite number >= 1"),
                       Error);
  bad = args;
  bad.d_max = -0.1f;
  CHECK_THROWS_WITH_AS(batch_renorm_train(x, {}, {}, 1e-5f, bad),
                       doctest::Contains("batch_renorm: d_max must be a finite number >= 0"),
                       Error);
  bad = args;
  bad.running_var = Tensor::ones({2});
  CHECK_THROWS_WITH_AS(
      batch_renorm_train(x, {}, {}, 1e-5f, bad),
      doctest::Contains("batch_renorm: running_var has shape [2], expected [3] for input [4, 3]"),
      Error);
  bad = args;
  bad.running_mean = Tensor();
  CHECK_THROWS_WITH_AS(batch_renorm_train(x, {}, {}, 1e-5f, bad),
                       doctest::Contains("batch_renorm: running_mean and running_var are required"),
                       Error);
  BatchRenorm2d brn({.num_features = 3});
  CHECK_THROWS_WITH_AS(
      brn(Tensor::ones({2, 4, 5, 5})),
      doctest::Contains("BatchRenorm2d: expected input [N, C, H, W] with C = 3; got [2, 4, 5, 5]"),
      Error);
}

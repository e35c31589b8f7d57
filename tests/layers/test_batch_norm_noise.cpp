// Noisy batch norm (BatchNormOptions::noise, Santurkar et al. 2018): off by default and
// bit-identical to BatchNorm then; the output is BN's output scaled and shifted per channel by the
// step's draw (so over a large batch its mean and variance are the drawn mu and var); draws in
// their ranges, the same within a step (also after restoring the buffers), different across steps
// and layers; no noise in eval; running statistics and state_dict unchanged; gradient checks with
// the step held; errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;

// The layer's num_batches_tracked buffer (to hold or restore the step).
Tensor step_buffer(const Module& m) {
  for (const auto& [name, t] : m.named_buffers())
    if (name == "num_batches_tracked") return t;
  FAIL("no num_batches_tracked buffer");
  return Tensor();
}

bool same(const Tensor& a, const Tensor& b) { return a.to_vector() == b.to_vector(); }
}  // namespace

TEST_CASE(
    "layers.batch_norm_noise: off by default, and a zero-width noise is plain BN bit for bit") {
  CHECK(!BatchNormOptions{}.noise.has_value());
  Rng rng(1);
  Tensor x = Tensor::normal({6, 3, 4, 4}, rng, 1.0f, 2.0f);
  BatchNorm2d plain({.num_features = 3});
  BatchNorm2d zero({.num_features = 3, .noise = BatchNormNoise{.mean_range = 0, .var_max = 1}});
  for (BatchNorm2d* bn : {&plain, &zero}) bn->weight().copy_(Tensor::from({0.5f, 1.0f, 2.0f}, {3}));
  Tensor expected = batch_norm_train(x, plain.weight(), plain.bias(), 1e-5f).y;
  CHECK(same(plain(x), expected));
  CHECK(same(zero(x), expected));
}

TEST_CASE("layers.batch_norm_noise: the output is BN's, scaled by sqrt(var) and shifted by mu") {
  const BatchNormNoise noise{.mean_range = 0.5f, .var_max = 1.25f, .seed = 11};
  Rng rng(2);
  SUBCASE("BatchNorm2d: bit-identical to channel_affine of batch_norm_train") {
    BatchNorm2d bn({.num_features = 4, .noise = noise});
    Tensor x = Tensor::normal({3, 4, 5, 5}, rng, -1.0f, 3.0f);
    Tensor y = bn(x);
    BatchNormNoiseDraw draw = batch_norm_noise(noise, 0, 4);
    CHECK(same(y, channel_affine(batch_norm_train(x, bn.weight(), bn.bias(), 1e-5f).y, draw.scale,
                                 draw.mean)));
  }
  SUBCASE("BatchNorm1d over a large batch: per channel mean mu and variance var") {
    const int64_t C = 8;
    BatchNorm1d bn({.num_features = C, .noise = noise});
    step_buffer(bn).fill_(41.0f);  // any step: its draw is what must show
    Tensor y = bn(Tensor::normal({4096, C}, rng, 5.0f, 0.5f));
    BatchNormNoiseDraw draw = batch_norm_noise(noise, 41, C);
    const float* p = y.data();
    for (int64_t c = 0; c < C; ++c) {
      CAPTURE(c);
      double m = 0, v = 0;
      for (int64_t n = 0; n < 4096; ++n) m += p[n * C + c];
      m /= 4096;
      for (int64_t n = 0; n < 4096; ++n) v += (p[n * C + c] - m) * (p[n * C + c] - m);
      v /= 4096;
      // BN's output has mean 0 and biased variance 1 (less eps's share, 4e-5 here) exactly.
      CHECK(m == doctest::Approx(draw.mean.data()[c]).epsilon(1e-4).scale(1.0));
      CHECK(v == doctest::Approx(draw.var.data()[c]).epsilon(1e-4));
    }
  }
}

TEST_CASE("layers.batch_norm_noise: draws lie in their ranges and cover them") {
  const BatchNormNoise noise{.mean_range = 0.8f, .var_max = 2.0f, .seed = 3};
  float mu_lo = 1, mu_hi = -1, var_lo = 3, var_hi = 0;
  for (int64_t step = 0; step < 100; ++step) {
    BatchNormNoiseDraw d = batch_norm_noise(noise, step, 16);
    for (int64_t c = 0; c < 16; ++c) {
      const float mu = d.mean.data()[c], var = d.var.data()[c], s = d.scale.data()[c];
      REQUIRE(mu >= -0.8f);
      REQUIRE(mu <= 0.8f);
      REQUIRE(var >= 1.0f);
      REQUIRE(var <= 2.0f);
      CHECK(s == std::sqrt(var));
      mu_lo = std::min(mu_lo, mu), mu_hi = std::max(mu_hi, mu);
      var_lo = std::min(var_lo, var), var_hi = std::max(var_hi, var);
    }
  }
  // 1600 uniform draws each: the extremes come within 5% of the ends (failure odds ~1e-30).
  CHECK(mu_lo < -0.76f);
  CHECK(mu_hi > 0.76f);
  CHECK(var_lo < 1.05f);
  CHECK(var_hi > 1.95f);
}

TEST_CASE("layers.batch_norm_noise: the same step gives the same noise, another step other noise") {
  const BatchNormNoise noise{.seed = 5};
  Rng rng(4);
  Tensor x = Tensor::normal({8, 3}, rng);
  BatchNorm1d bn({.num_features = 3, .noise = noise});
  SUBCASE("an extra forward after restoring the buffers repeats the step's noise") {
    // Copies: state_dict() shares the layer's storage.
    std::vector<NamedTensor> saved = bn.state_dict();
    for (NamedTensor& t : saved) t.tensor = t.tensor.clone();
    Tensor first = bn(x);
    bn.load_state_dict(saved);
    CHECK(same(bn(x), first));
    CHECK(bn.num_batches_tracked() == 1);
  }
  SUBCASE("successive steps differ, each channel") {
    Tensor a = bn(x);
    Tensor b = bn(x);
    for (int64_t i = 0; i < a.numel(); ++i) CHECK(a.data()[i] != b.data()[i]);
    BatchNormNoiseDraw d0 = batch_norm_noise(noise, 0, 3), d1 = batch_norm_noise(noise, 1, 3);
    for (int64_t c = 0; c < 3; ++c) {
      CHECK(d0.mean.data()[c] != d1.mean.data()[c]);
      CHECK(d0.var.data()[c] != d1.var.data()[c]);
    }
  }
  SUBCASE("a pure function of (seed, step): a fresh layer resumed at the step agrees") {
    for (int i = 0; i < 3; ++i) bn(x);
    Tensor continued = bn(x);
    BatchNorm1d resumed({.num_features = 3, .noise = noise});
    step_buffer(resumed).fill_(3.0f);
    CHECK(same(resumed(x), continued));
  }
  SUBCASE("another seed, another stream") {
    BatchNorm1d other({.num_features = 3, .noise = BatchNormNoise{.seed = 6}});
    CHECK(!same(bn(x), other(x)));
  }
}

TEST_CASE("layers.batch_norm_noise: eval adds no noise and the running statistics are BN's") {
  Rng rng(6);
  BatchNorm2d plain({.num_features = 2});
  BatchNorm2d noisy({.num_features = 2, .noise = BatchNormNoise{.seed = 9}});
  for (int step = 0; step < 3; ++step) {
    Tensor x = Tensor::normal({4, 2, 3, 3}, rng, 2.0f, 1.5f);
    CHECK(!same(noisy(x), plain(x)));
  }
  CHECK(same(noisy.running_mean(), plain.running_mean()));
  CHECK(same(noisy.running_var(), plain.running_var()));
  CHECK(noisy.num_batches_tracked() == 3);
  plain.eval();
  noisy.eval();
  Tensor x = Tensor::normal({4, 2, 3, 3}, rng);
  CHECK(same(noisy(x), plain(x)));
  CHECK(same(noisy(x), noisy(x)));
}

TEST_CASE("layers.batch_norm_noise: gradient checks with the step held (input, weight, bias)") {
  const BatchNormNoise noise{.mean_range = 0.5f, .var_max = 1.25f, .seed = 2};
  BatchNorm2d bn2({.num_features = 2, .noise = noise});
  bn2.weight().copy_(Tensor::from({0.7f, 1.3f}, {2}));
  Tensor step2 = step_buffer(bn2);
  // Every forward of the check is the same step, as every forward within one training step is.
  CHECK_GRADIENTS("BatchNorm2d(noise)",
                  [&](const Inputs& in) {
                    step2.fill_(7.0f);
                    return bn2(in[0]);
                  },
                  {testing::param({3, 2, 3, 3}, 1), bn2.weight(), bn2.bias()});
  BatchNorm1d bn1({.num_features = 3, .noise = noise});
  Tensor step1 = step_buffer(bn1);
  CHECK_GRADIENTS("BatchNorm1d(noise)",
                  [&](const Inputs& in) {
                    step1.fill_(2.0f);
                    return bn1(in[0]);
                  },
                  {testing::param({5, 3}, 2), bn1.weight(), bn1.bias()});
}

TEST_CASE("layers.batch_norm_noise: BatchRenorm takes it too (in the warm-up: noisy BN exactly)") {
  const BatchNormNoise noise{.seed = 8};
  BatchRenorm2d brn({.num_features = 3, .noise = noise});
  BatchNorm2d bn({.num_features = 3, .noise = noise});
  Rng rng(7);
  for (int step = 0; step < 2; ++step) {
    Tensor x = Tensor::normal({4, 3, 2, 2}, rng);
    CHECK(same(brn(x), bn(x)));
  }
}

TEST_CASE("layers.batch_norm_noise: no new parameters or buffers, so a plain BatchNorm loads it") {
  BatchNorm2d noisy({.num_features = 4, .noise = BatchNormNoise{}});
  BatchNorm2d plain({.num_features = 4});
  std::vector<std::string> a, b;
  for (const NamedTensor& t : noisy.state_dict()) a.push_back(t.name);
  for (const NamedTensor& t : plain.state_dict()) b.push_back(t.name);
  CHECK(a == b);
  CHECK(noisy.parameters().size() == plain.parameters().size());
  plain.load_state_dict(noisy.state_dict());
  CHECK(noisy.to_string().find("noise mean_range 0.5") != std::string::npos);
  CHECK(plain.to_string().find("noise") == std::string::npos);
}

TEST_CASE("layers.batch_norm_noise: bad noise settings are refused with the value") {
  CHECK_THROWS_WITH_AS(
      BatchNorm1d({.num_features = 2, .noise = BatchNormNoise{.mean_range = -0.1f}}),
      doctest::Contains("noise mean_range must be a finite number >= 0"), Error);
  CHECK_THROWS_WITH_AS(BatchNorm2d({.num_features = 2, .noise = BatchNormNoise{.var_max = 0.9f}}),
                       doctest::Contains("noise var_max must be a finite number >= 1"), Error);
  CHECK_THROWS_WITH_AS(BatchNorm2d({.num_features = 2, .noise = BatchNormNoise{.mean_range = NAN}}),
                       doctest::Contains("mean_range must be a finite number >= 0"), Error);
  CHECK_THROWS_WITH_AS(
      BatchNorm1d({.num_features = 2, .track_running_stats = false, .noise = BatchNormNoise{}}),
      doctest::Contains("noise needs track_running_stats"), Error);
  CHECK_THROWS_WITH_AS(batch_norm_noise(BatchNormNoise{}, -1, 3),
                       doctest::Contains("batch_norm_noise: step must be >= 0; got -1"), Error);
  CHECK_THROWS_WITH_AS(batch_norm_noise(BatchNormNoise{}, 0, 0),
                       doctest::Contains("batch_norm_noise: channels must be >= 1; got 0"), Error);
}

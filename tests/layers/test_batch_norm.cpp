// BatchNorm1d/2d: closed-form outputs in train and eval mode, running statistics (momentum,
// unbiased variance, cumulative mode), eval independent of the batch, gradient checks, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("layers.batch_norm: train mode normalizes with the biased batch variance") {
  BatchNorm1d bn({.num_features = 2});
  // Channel 0: 1, 2, 3, 4 (mean 2.5, biased var 1.25); channel 1: constant 5 (var 0).
  Tensor x = Tensor::from({1, 5, 2, 5, 3, 5, 4, 5}, {4, 2});
  Tensor y = bn(x);
  float rstd = 1.0f / std::sqrt(1.25f + 1e-5f);
  CHECK(y.data()[0] == doctest::Approx(-1.5f * rstd));
  CHECK(y.data()[6] == doctest::Approx(1.5f * rstd));
  CHECK(y.data()[1] == doctest::Approx(0.0f));
  // Running stats after one step, momentum 0.1, unbiased variance 1.25 * 4/3.
  CHECK(bn.running_mean().data()[0] == doctest::Approx(0.25f));
  CHECK(bn.running_mean().data()[1] == doctest::Approx(0.5f));
  CHECK(bn.running_var().data()[0] == doctest::Approx(0.9f + 0.1f * 1.25f * 4.0f / 3.0f));
  CHECK(bn.running_var().data()[1] == doctest::Approx(0.9f));
  CHECK(bn.num_batches_tracked() == 1);
}

TEST_CASE("layers.batch_norm: 2d statistics are per channel over N, H, W - k steps of momentum") {
  BatchNorm2d bn({.num_features = 3});
  Rng rng(1);
  double expected_mean = 0.0;
  double expected_var = 1.0;
  for (int step = 0; step < 5; ++step) {
    Tensor x = Tensor::normal({4, 3, 2, 2}, rng, 2.0f, 3.0f);
    // Channel 1 by hand.
    double m = 0, v = 0;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 4; ++i) m += x.data()[n * 12 + 4 + i];
    m /= 16;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 4; ++i) v += std::pow(x.data()[n * 12 + 4 + i] - m, 2);
    expected_mean = 0.9 * expected_mean + 0.1 * m;
    expected_var = 0.9 * expected_var + 0.1 * v / 15;  // unbiased
    Tensor y = bn(x);
    double ym = 0, yv = 0;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 4; ++i) ym += y.data()[n * 12 + 4 + i];
    ym /= 16;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 4; ++i) yv += std::pow(y.data()[n * 12 + 4 + i] - ym, 2);
    CHECK(ym == doctest::Approx(0.0).epsilon(1e-5));
    CHECK(yv / 16 == doctest::Approx(1.0).epsilon(1e-3));
  }
  CHECK(bn.running_mean().data()[1] == doctest::Approx(expected_mean).epsilon(1e-5));
  CHECK(bn.running_var().data()[1] == doctest::Approx(expected_var).epsilon(1e-5));
  CHECK(bn.num_batches_tracked() == 5);
}

TEST_CASE("layers.batch_norm: momentum none gives the cumulative average") {
  BatchNorm1d bn({.num_features = 1, .momentum = std::nullopt});
  bn(Tensor::from({0, 2}, {2, 1}));  // mean 1, unbiased var 2
  bn(Tensor::from({4, 6}, {2, 1}));  // mean 5, unbiased var 2
  bn(Tensor::from({9, 9}, {2, 1}));  // mean 9, var 0
  CHECK(bn.running_mean().item() == doctest::Approx(5.0f));
  CHECK(bn.running_var().item() == doctest::Approx(4.0f / 3.0f));
}

TEST_CASE(
    "layers.batch_norm: load_state_dict refuses a negative or fractional num_batches_tracked") {
  // Found by the API attack: -1 loaded, and with the cumulative average (m = 1 / count) the next
  // training forward made the running statistics NaN; 1.5 loaded and made the next save fail.
  BatchNorm1d bn({.num_features = 2, .momentum = std::nullopt});
  bn(Tensor::from({0, 2, 4, 6}, {2, 2}));
  const std::vector<NamedTensor> good = bn.state_dict();
  REQUIRE(good.back().name == "num_batches_tracked");
  for (float bad : {-1.0f, 1.5f, 1e30f, NAN}) {
    CAPTURE(bad);
    std::vector<NamedTensor> state = good;
    state.back().tensor = Tensor::scalar(bad);
    std::ostringstream expected;
    expected << "num_batches_tracked is a count stored as int64 and must be a non-negative "
                "integer; checkpoint has "
             << bad;
    const std::string message = expected.str();
    CHECK_THROWS_WITH_AS(bn.load_state_dict(state), doctest::Contains(message.c_str()), Error);
    CHECK_THROWS_WITH_AS(bn.load_state_dict(state, false), doctest::Contains(message.c_str()),
                         Error);
  }
  // The failed loads changed nothing: the count is still 1 and a training step stays finite.
  CHECK(bn.num_batches_tracked() == 1);
  bn(Tensor::from({0, 2, 4, 6}, {2, 2}));
  CHECK(bn.num_batches_tracked() == 2);
  CHECK(std::isfinite(bn.running_mean().data()[0]));
  CHECK(std::isfinite(bn.running_var().data()[1]));
  // A large but exact count still loads (as PyTorch's int64 would).
  std::vector<NamedTensor> big = good;
  big.back().tensor = Tensor::scalar(16777216.0f);
  bn.load_state_dict(big);
  CHECK(bn.num_batches_tracked() == 16777216);
}

// A checkpoint whose running_var held -0.5 loaded, and eval computed sqrt(-0.5 + eps): loss -nan,
// exit 0, no warning (PyTorch loads it silently too). The variance rule is the layer's, kept as
// cheap as the count check: one pass over the channels.
TEST_CASE(
    "layers.batch_norm: load_state_dict refuses a negative or NaN running_var naming key and "
    "index") {
  Rng rng(3);
  Sequential net;
  net.emplace<Dense>(DenseOptions{.in_features = 2, .out_features = 3}, rng);
  auto bn = net.emplace<BatchNorm1d>(BatchNormOptions{.num_features = 3});
  auto in = net.emplace<InstanceNorm1d>(
      InstanceNormOptions{.num_features = 3, .track_running_stats = true});
  const std::vector<NamedTensor> good = net.state_dict();
  auto with = [&](const std::string& key, std::vector<float> values) {
    std::vector<NamedTensor> state = good;
    for (NamedTensor& t : state)
      if (t.name == key) t.tensor = Tensor::from(values, {3});
    return state;
  };
  CHECK_THROWS_WITH_AS(net.load_state_dict(with("1.running_var", {1, 2, -0.5f})),
                       "load_state_dict: 1.running_var must not be negative or NaN; checkpoint has "
                       "-0.5 at index 2",
                       Error);
  CHECK_THROWS_WITH_AS(net.load_state_dict(with("1.running_var", {NAN, 1, 1}), false),
                       doctest::Contains("1.running_var must not be negative or NaN; checkpoint "
                                         "has nan at index 0"),
                       Error);
  CHECK_THROWS_WITH_AS(net.load_state_dict(with("2.running_var", {1, -1, 1})),
                       doctest::Contains("2.running_var must not be negative or NaN; checkpoint "
                                         "has -1 at index 1"),
                       Error);
  // Refused loads changed nothing; a zero variance, and a negative mean, are fine.
  CHECK(bn->running_var().to_vector() == std::vector<float>{1, 1, 1});
  net.load_state_dict(with("1.running_var", {0, 2, 3}));
  CHECK(bn->running_var().to_vector() == std::vector<float>{0, 2, 3});
  net.load_state_dict(with("1.running_mean", {-1, -2, -3}));
  CHECK(bn->running_mean().to_vector() == std::vector<float>{-1, -2, -3});
  CHECK(in->running_var().to_vector() == std::vector<float>{1, 1, 1});
}

TEST_CASE("layers.batch_norm: eval uses running stats and is independent of the batch") {
  BatchNorm1d bn({.num_features = 2});
  bn.running_mean().copy_(Tensor::from({1, -1}, {2}));
  bn.running_var().copy_(Tensor::from({4, 0.25f}, {2}));
  bn.weight().copy_(Tensor::from({2, 1}, {2}));
  bn.bias().copy_(Tensor::from({0, 3}, {2}));
  bn.eval();
  Tensor y = bn(Tensor::from({3, 0}, {1, 2}));
  CHECK(y.data()[0] == doctest::Approx(2.0f * 2.0f / std::sqrt(4.0f + 1e-5f)));
  CHECK(y.data()[1] == doctest::Approx(1.0f / std::sqrt(0.25f + 1e-5f) + 3.0f));
  Tensor batch = Tensor::from({3, 0, 100, -50, -7, 8}, {3, 2});
  Tensor yb = bn(batch);
  CHECK(yb.data()[0] == y.data()[0]);
  CHECK(yb.data()[1] == y.data()[1]);
  CHECK(bn.num_batches_tracked() == 0);  // eval leaves the buffers alone
}

TEST_CASE("layers.batch_norm: eval batch statistics are plain batch norm, buffers untouched") {
  Rng rng(3);
  Tensor x = Tensor::normal({6, 3, 2, 2}, rng, 1.0f, 2.0f);
  Tensor other = Tensor::normal({6, 3, 2, 2}, rng, -2.0f, 0.5f);
  const std::vector<float> expected =
      batch_norm_train(x, Tensor::ones({3}), Tensor::zeros({3}), 1e-5f).y.to_vector();
  BatchNorm2d plain({.num_features = 3});
  BatchNorm2d noisy({.num_features = 3, .noise = BatchNormNoise{2.0f, 4.0f, 5}});
  BatchRenorm2d renorm({.num_features = 3}, {.warmup = 0, .ramp = 0});
  for (BatchNorm* bn : std::vector<BatchNorm*>{&plain, &noisy, &renorm}) {
    CAPTURE(bn->type_name());
    CAPTURE(bn->extra_repr());
    (*bn)(other);  // running statistics far from x's: renorm's r and d would not be 1 and 0
    (*bn)(other);
    bn->eval();
    bn->set_eval_batch_statistics(true);
    std::vector<std::vector<float>> before;
    for (const auto& [name, t] : bn->named_buffers()) before.push_back(t.to_vector());
    CHECK(bn->forward(x).to_vector() == expected);
    CHECK((*bn)(x).to_vector() == expected);
    std::vector<std::vector<float>> after;
    for (const auto& [name, t] : bn->named_buffers()) after.push_back(t.to_vector());
    CHECK(after == before);
    bn->set_eval_batch_statistics(false);  // back to the running statistics
    CHECK(bn->forward(x).to_vector() ==
          batch_norm_eval(x, bn->running_mean(), bn->running_var(), bn->weight(), bn->bias(), 1e-5f)
              .to_vector());
  }
}

TEST_CASE("layers.batch_norm: gradient checks in train mode for input, weight and bias") {
  BatchNorm1d bn1({.num_features = 3});
  bn1.weight().copy_(Tensor::from({0.5f, 1.5f, -1.0f}, {3}));
  CHECK_GRADIENTS("BatchNorm1d", [&](const Inputs& in) { return bn1(in[0]); },
                  {testing::param({5, 3}, 1), bn1.weight(), bn1.bias()});
  BatchNorm2d bn2({.num_features = 2});
  bn2.weight().copy_(Tensor::from({0.7f, 1.3f}, {2}));
  CHECK_GRADIENTS("BatchNorm2d", [&](const Inputs& in) { return bn2(in[0]); },
                  {testing::param({3, 2, 3, 3}, 2), bn2.weight(), bn2.bias()});
  bn2.eval();
  CHECK_GRADIENTS("BatchNorm2d(eval)", [&](const Inputs& in) { return bn2(in[0]); },
                  {testing::param({3, 2, 3, 3}, 3), bn2.weight(), bn2.bias()});
}

TEST_CASE("layers.batch_norm: bad input is reported with the shapes") {
  BatchNorm2d bn({.num_features = 3});
  CHECK_THROWS_WITH_AS(
      bn(Tensor::ones({2, 4, 5, 5})),
      doctest::Contains("BatchNorm2d: expected input [N, C, H, W] with C = 3; got [2, 4, 5, 5]"),
      Error);
  BatchNorm1d bn1({.num_features = 3});
  CHECK_THROWS_WITH_AS(bn1(Tensor::ones({1, 3})),
                       doctest::Contains("more than 1 value per channel"), Error);
  bn1.eval();
  CHECK(bn1(Tensor::ones({1, 3})).shape() == Shape{1, 3});  // eval with batch 1 is fine
}

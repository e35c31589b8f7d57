// cross_entropy (with and without label smoothing) and mse_loss.
#include <doctest/doctest.h>

#include <cmath>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("ops.loss: cross_entropy forward by hand and stable for huge logits") {
  // Uniform logits over K classes: loss = log K.
  CHECK(cross_entropy(Tensor::zeros({3, 4}), {0, 1, 3}).item() == doctest::Approx(std::log(4.0f)));
  // logits [0, log 3] -> p = [1/4, 3/4]; labels 1 then 0.
  Tensor z = Tensor::from({0, std::log(3.0f), 0, std::log(3.0f)}, {2, 2});
  float expected = -(std::log(0.75f) + std::log(0.25f)) / 2.0f;
  CHECK(cross_entropy(z, {1, 0}).item() == doctest::Approx(expected));
  Tensor huge = Tensor::from({1000, 0, -1000, 1000}, {2, 2});
  float loss = cross_entropy(huge, {0, 1}).item();
  CHECK(std::isfinite(loss));
  CHECK(loss == doctest::Approx(0.0f));
  // Smoothing s over K=2 with correct confident logits: loss -> s/2 * 1000 per row with logit gap
  // 1000.
  Tensor g = Tensor::from({0, std::log(3.0f)}, {1, 2});
  float s = 0.2f;
  float smoothed = -((1 - s) + s / 2) * std::log(0.75f) - (s / 2) * std::log(0.25f);
  CHECK(cross_entropy(g, {1}, s).item() == doctest::Approx(smoothed));
}

TEST_CASE("ops.loss: gradient checks") {
  std::vector<int64_t> labels{0, 3, 2, 1, 3};
  CHECK_GRADIENTS("cross_entropy", [&](const Inputs& in) { return cross_entropy(in[0], labels); },
                  {param({5, 4}, 1, -3.0f, 3.0f)});
  CHECK_GRADIENTS("cross_entropy",
                  [&](const Inputs& in) { return cross_entropy(in[0], labels, 0.1f); },
                  {param({5, 4}, 2, -3.0f, 3.0f)});
  CHECK_GRADIENTS("mse_loss", [](const Inputs& in) { return mse_loss(in[0], in[1]); },
                  {param({3, 4}, 3), param({3, 4}, 4)});
}

TEST_CASE("ops.loss: mse_loss by hand") {
  CHECK(mse_loss(Tensor::from({1, 2}, {2}), Tensor::from({3, 2}, {2})).item() == 2.0f);
}

TEST_CASE("ops.loss: bad labels and shapes are reported") {
  CHECK_THROWS_WITH_AS(cross_entropy(Tensor::zeros({2, 3}), {0, 3}),
                       doctest::Contains("label 3 at index 1 is outside [0, 3)"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(Tensor::zeros({2, 3}), {0}),
                       doctest::Contains("1 labels for logits of shape [2, 3]"), Error);
  CHECK_THROWS_WITH_AS(mse_loss(Tensor::zeros({2}), Tensor::zeros({3})),
                       doctest::Contains("[2] and target of shape [3]"), Error);
}

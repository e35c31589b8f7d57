// cross_entropy (with and without label smoothing), mse_loss, and nll_loss, binary
// cross-entropy (with logits), l1_loss, smooth_l1_loss, huber_loss.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

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

TEST_CASE("ops.loss: cross_entropy at logits near the float maximum") {
  // torch: F.cross_entropy(tensor([[3e38, 3e38, 0.]], requires_grad=True), tensor([0])) -> loss
  // log 2 = 0.6931, grad [-0.5, 0.5, 0]. Computed as x - (max + log z), log 2 vanished into 3e38's
  // ulp: loss 0 and grad [0, 1, 0].
  Tensor x = Tensor::from({3e38f, 3e38f, 0.0f}, {1, 3}).set_requires_grad();
  Tensor loss = cross_entropy(x, {0});
  CHECK(loss.item() == doctest::Approx(std::log(2.0f)));
  loss.backward();
  CHECK(x.grad().to_vector() == std::vector<float>{-0.5f, 0.5f, 0.0f});
  // The largest logits of opposite signs: the difference overflows float but not double; the
  // label's probability is 0, as torch's (inf loss there, -inf - max being -inf in float).
  Tensor y = Tensor::from({-3e38f, 3e38f}, {1, 2});
  CHECK(cross_entropy(y, {1}).item() == 0.0f);
  CHECK(cross_entropy(y, {0}).item() == std::numeric_limits<float>::infinity());
}

TEST_CASE("ops.loss: cross_entropy with a -inf logit: +inf at the label, finite elsewhere") {
  // torch: F.cross_entropy(tensor([[0.5, -inf, 1], [0.2, 0.1, 0.3]]), tensor([1, 0])) -> inf;
  // with labels [0, 0] the -inf logit just has probability 0.
  const float inf = std::numeric_limits<float>::infinity();
  Tensor x = Tensor::from({0.5f, -inf, 1, 0.2f, 0.1f, 0.3f}, {2, 3});
  CHECK(cross_entropy(x, {1, 0}).item() == inf);
  const float expected = -(0.5f - std::log(std::exp(0.5f) + std::exp(1.0f)) + 0.2f -
                           std::log(std::exp(0.2f) + std::exp(0.1f) + std::exp(0.3f))) /
                         2.0f;
  CHECK(cross_entropy(x, {0, 0}).item() == doctest::Approx(expected));
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

TEST_CASE("ops.loss: nll, binary cross-entropy, l1, smooth l1 and huber match PyTorch") {
  // Reference values: torch 1.13 in float64 (torch.nn.functional.<loss>(...).item()).
  Tensor logp = log_softmax(Tensor::from({1, 2, 3, 0.5f, -1, 2, 0, 0, 0}, {3, 3}), 1);
  CHECK(nll_loss(logp, {2, 0, 1}).item() == doctest::Approx(1.082509849923216).epsilon(1e-6));
  // ignore_index (-100 by default) leaves the row out of the sum and of the mean.
  CHECK(nll_loss(logp, {2, -100, 1}).item() == doctest::Approx(0.7531091265562451).epsilon(1e-6));
  CHECK(std::isnan(nll_loss(logp, {-100, -100, -100}).item()));
  // nll_loss of log_softmax is cross_entropy.
  CHECK(
      nll_loss(logp, {2, 0, 1}).item() ==
      doctest::Approx(
          cross_entropy(Tensor::from({1, 2, 3, 0.5f, -1, 2, 0, 0, 0}, {3, 3}), {2, 0, 1}).item()));

  Tensor logits = Tensor::from({-2, 0.5f, 3, -0.25f}, {2, 2});
  Tensor y = Tensor::from({0, 1, 1, 0.3f}, {2, 2});
  CHECK(binary_cross_entropy_with_logits(logits, y).item() ==
        doctest::Approx(0.3251329416689162).epsilon(1e-6));
  CHECK(binary_cross_entropy_with_logits(logits, y, Tensor::from({2, 0.5f}, {2})).item() ==
        doctest::Approx(0.2470474282943818).epsilon(1e-6));
  CHECK(binary_cross_entropy(Tensor::from({0.1f, 0.9f, 0.5f, 0.2f}, {2, 2}), y).item() ==
        doctest::Approx(0.38572501788144364).epsilon(1e-6));

  Tensor a = Tensor::from({0, 0.5f, -2, 3, 1}, {5});
  Tensor b = Tensor::from({0.2f, 0, 0, 0, 1}, {5});
  CHECK(l1_loss(a, b).item() == doctest::Approx(1.14).epsilon(1e-6));
  CHECK(smooth_l1_loss(a, b).item() == doctest::Approx(0.829).epsilon(1e-6));
  CHECK(smooth_l1_loss(a, b, 0.5f).item() == doctest::Approx(0.958).epsilon(1e-6));
  CHECK(smooth_l1_loss(a, b, 0.0f).item() == l1_loss(a, b).item());
  CHECK(huber_loss(a, b, 2.0f).item() == doctest::Approx(1.229).epsilon(1e-6));
}

TEST_CASE("ops.loss: binary cross-entropy at the extremes") {
  // Logits of any size: no overflow, and a confident right answer keeps its tiny loss
  // (log1p(e^-30) / 3 in the mean) where PyTorch's float form rounds it to 0.
  float tiny = binary_cross_entropy_with_logits(Tensor::from({100, -100, 30}, {3}),
                                                Tensor::from({1, 0, 1}, {3}))
                   .item();
  CHECK(tiny == doctest::Approx(std::log1p(std::exp(-30.0)) / 3).epsilon(1e-5));
  CHECK(
      binary_cross_entropy_with_logits(Tensor::from({-100}, {1}), Tensor::from({1}, {1})).item() ==
      doctest::Approx(100.0f));
  // p = 0 or 1 against the wrong label: each log clamps at -100, and the gradient is
  // (p - y) / max(p (1 - p), 1e-12) / N, as torch.
  Tensor p = Tensor::from({0, 1}, {2});
  p.set_requires_grad();
  Tensor loss = binary_cross_entropy(p, Tensor::from({1, 0}, {2}));
  CHECK(loss.item() == 100.0f);
  loss.backward();
  CHECK(p.grad().to_vector()[0] == doctest::Approx(-5e11f));
  CHECK(p.grad().to_vector()[1] == doctest::Approx(5e11f));
  // ... and against the right label: loss 0, gradient 0.
  p.zero_grad();
  loss = binary_cross_entropy(p, Tensor::from({0, 1}, {2}));
  CHECK(loss.item() == 0.0f);
  loss.backward();
  CHECK(p.grad().to_vector() == std::vector<float>{0, 0});
}

TEST_CASE("ops.loss: gradient checks of nll, bce, l1, smooth l1, huber") {
  CHECK_GRADIENTS("nll_loss",
                  [](const Inputs& in) {
                    return nll_loss(in[0], {1, -100, 0, 2});
                  },
                  {param({4, 3}, 1, -3.0f, 0.0f)});
  // Logits, targets and pos_weight all get gradients (targets may be soft labels).
  CHECK_GRADIENTS("binary_cross_entropy_with_logits",
                  [](const Inputs& in) { return binary_cross_entropy_with_logits(in[0], in[1]); },
                  {param({3, 4}, 2, -4.0f, 4.0f), param({3, 4}, 3, 0.0f, 1.0f)});
  CHECK_GRADIENTS(
      "binary_cross_entropy_with_logits",
      [](const Inputs& in) { return binary_cross_entropy_with_logits(in[0], in[1], in[2]); },
      {param({3, 4}, 4, -4.0f, 4.0f), param({3, 4}, 5, 0.0f, 1.0f), param({4}, 6, 0.5f, 3.0f)});
  CHECK_GRADIENTS("binary_cross_entropy",
                  [](const Inputs& in) { return binary_cross_entropy(in[0], in[1]); },
                  {param({3, 4}, 7, 0.05f, 0.95f), param({3, 4}, 8, 0.0f, 1.0f)});
  // Differences kept away from 0 (l1's kink) and from +-beta / +-delta (the switches).
  Tensor a = Tensor::from({-2.3f, -0.7f, -0.2f, 0.3f, 0.6f, 2.1f}, {2, 3});
  a.set_requires_grad();
  Tensor b = Tensor::zeros({2, 3});
  b.set_requires_grad();
  CHECK_GRADIENTS("l1_loss", [](const Inputs& in) { return l1_loss(in[0], in[1]); }, {a, b});
  CHECK_GRADIENTS("smooth_l1_loss", [](const Inputs& in) { return smooth_l1_loss(in[0], in[1]); },
                  {a, b});
  CHECK_GRADIENTS("smooth_l1_loss",
                  [](const Inputs& in) { return smooth_l1_loss(in[0], in[1], 0.5f); }, {a, b});
  CHECK_GRADIENTS("huber_loss", [](const Inputs& in) { return huber_loss(in[0], in[1], 1.5f); },
                  {a, b});
}

TEST_CASE("ops.loss: l1 kinks and the smooth l1 / huber switch, as PyTorch") {
  // Values from torch 1.13: l1'(0) = 0; at |d| = beta both sides of the switch agree (d / beta).
  Tensor d = Tensor::from({0, 1, -1, 0.5f}, {4});
  d.set_requires_grad();
  l1_loss(d, Tensor::zeros({4})).backward();
  CHECK(d.grad().to_vector() == std::vector<float>{0, 0.25f, -0.25f, 0.25f});
  d.zero_grad();
  smooth_l1_loss(d, Tensor::zeros({4})).backward();
  CHECK(d.grad().to_vector() == std::vector<float>{0, 0.25f, -0.25f, 0.125f});
  d.zero_grad();
  huber_loss(d, Tensor::zeros({4}), 0.5f).backward();
  CHECK(d.grad().to_vector() == std::vector<float>{0, 0.125f, -0.125f, 0.125f});
}

TEST_CASE("ops.loss: bad targets, shapes and options of the new losses") {
  Tensor lp = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(nll_loss(lp, {0, 3}), doctest::Contains("nll_loss: target 3 at index 1"),
                       Error);
  CHECK_THROWS_WITH_AS(nll_loss(lp, {0}),
                       doctest::Contains("nll_loss: 1 targets for input of shape [2, 3]"), Error);
  CHECK_THROWS_WITH_AS(nll_loss(Tensor::zeros({2, 3, 4}), {0, 1}),
                       doctest::Contains("nll_loss: input must be [N, C]"), Error);
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits(lp, Tensor::zeros({3, 2})),
                       doctest::Contains("input of shape [2, 3] and target of shape [3, 2]"),
                       Error);
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits(lp, lp, Tensor::ones({2})),
                       doctest::Contains("pos_weight of shape [2] does not broadcast"), Error);
  CHECK_THROWS_WITH_AS(binary_cross_entropy(Tensor::from({0.5f, 1.5f}, {2}), Tensor::zeros({2})),
                       doctest::Contains("probabilities in [0, 1]; got 1.5 at flat index 1"),
                       Error);
  CHECK_THROWS_WITH_AS(l1_loss(Tensor::zeros({2}), Tensor::zeros({3})),
                       doctest::Contains("l1_loss: input of shape [2] and target of shape [3]"),
                       Error);
  CHECK_THROWS_WITH_AS(smooth_l1_loss(lp, lp, -1.0f),
                       doctest::Contains("smooth_l1_loss: beta must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(huber_loss(lp, lp, 0.0f), doctest::Contains("huber_loss: delta must be > 0"),
                       Error);
}

// batch_norm_relu_train against the unfused pair relu(batch_norm_train(x).y): bit-identical
// statistics, output and gradients of x, gamma and beta for [N, C] and [N, C, H, W] (below and over
// the OpenMP threshold, with and without affine), the kinks (outputs exactly 0 after
// normalization, -0), NaN and inf, a channel of zero variance, a reducer (SyncBN),
// finite-difference gradient checks away from the kink, and shape errors under the op's own name.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;
using Floats = std::vector<std::vector<float>>;

// Bitwise equality, so that NaN == NaN and -0 != +0 (vector<float>'s == would say the opposite).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::signbit(a[i]) != std::signbit(b[i])) return false;
    if (std::isnan(a[i]) != std::isnan(b[i])) return false;
    if (!std::isnan(a[i]) && a[i] != b[i]) return false;
  }
  return true;
}

void check_same_bits(const Floats& fused, const Floats& unfused) {
  REQUIRE(fused.size() == unfused.size());
  for (size_t k = 0; k < fused.size(); ++k) {
    CAPTURE(k);
    CHECK(same_bits(fused[k], unfused[k]));
  }
}

// Output, mean, var and the grads of x, gamma, beta after backward with seed dz, fused or not.
// gamma/beta may be undefined (no affine); their grads are then left out.
Floats run(bool fused, const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& dz,
           const std::shared_ptr<BatchNormReducer>& reducer = nullptr) {
  Tensor xi = x.clone().set_requires_grad();
  Tensor gi = g.defined() ? g.clone().set_requires_grad() : Tensor();
  Tensor bi = b.defined() ? b.clone().set_requires_grad() : Tensor();
  BatchNormResult r;
  Tensor z;
  if (fused) {
    r = batch_norm_relu_train(xi, gi, bi, 1e-5f, reducer);
    z = r.y;
  } else {
    r = batch_norm_train(xi, gi, bi, 1e-5f, reducer);
    z = relu(r.y);
  }
  z.backward(dz);
  Floats out{z.to_vector(), r.mean.to_vector(), r.var.to_vector(), xi.grad().to_vector()};
  if (gi.defined()) out.push_back(gi.grad().to_vector());
  if (bi.defined()) out.push_back(bi.grad().to_vector());
  CHECK(r.count == x.numel() / x.size(1));
  return out;
}

// A reducer that changes nothing but forces the two-phase schedule (all first passes, reducer,
// all second passes), as SyncBN runs it.
class NoOtherShard final : public BatchNormReducer {
 public:
  void merge_moments(double*, int64_t) override {}
  void sum(double*, int64_t) override {}
};
}  // namespace

TEST_CASE("ops.bn_relu: bit-identical to relu(batch_norm_train) forward and backward") {
  // The last two shapes are over the OpenMP threshold (threads split the channels); [300, 130] has
  // three [N, C] channel blocks of up to 64. W4's shapes are in bench, not here (run time).
  Rng rng(61);
  for (const Shape& shape :
       {Shape{6, 70}, Shape{4, 3, 5, 5}, Shape{300, 130}, Shape{8, 16, 17, 19}, Shape{5, 4, 7}}) {
    CAPTURE(shape);
    const int64_t C = shape[1];
    Tensor x = Tensor::normal(shape, rng, 0.3f, 1.3f), dz = Tensor::normal(shape, rng);
    Tensor g = Tensor::uniform({C}, rng, -1.5f, 1.5f), b = Tensor::normal({C}, rng);
    SUBCASE("affine") { check_same_bits(run(true, x, g, b, dz), run(false, x, g, b, dz)); }
    SUBCASE("no affine") {
      check_same_bits(run(true, x, Tensor(), Tensor(), dz), run(false, x, Tensor(), Tensor(), dz));
    }
    SUBCASE("reducer") {
      auto reducer = std::make_shared<NoOtherShard>();
      check_same_bits(run(true, x, g, b, dz, reducer), run(false, x, g, b, dz, reducer));
      // And the reducer's schedule gives what no reducer gives (as batch_norm_train's does).
      check_same_bits(run(true, x, g, b, dz, reducer), run(true, x, g, b, dz));
    }
  }
}

TEST_CASE("ops.bn_relu: kinks, NaN, inf and a zero-variance channel as the unfused pair") {
  // [N, C] = [4, 3]. Channel 0: x = -1, 0, 0, 1 has mean exactly 0, so both zeros normalize to
  // exactly 0 (beta = 0): the kink, relu'(0) = 0. Channel 1: constant, zero variance, output beta
  // = 0.5 > 0 everywhere. Channel 2: a NaN in x makes the whole channel NaN (its mean is NaN).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::from({-1, 2, 0.5f, 0, 2, 3, 0, 2, nan, 1, 2, 7}, {4, 3});
  Tensor g = Tensor::from({1, 1, 1}, {3}), b = Tensor::from({0, 0.5f, 0}, {3});
  Tensor dz = Tensor::from({1, 2, 3, -4, 5, 6, 7, -8, 9, 10, 11, -12}, {4, 3});
  Floats fused = run(true, x, g, b, dz), unfused = run(false, x, g, b, dz);
  check_same_bits(fused, unfused);
  // The kink: outputs 1 and 2 of channel 0 are exactly 0 and their dz does not reach dbeta
  // (relu'(0) = 0); only the positive output's dz does.
  CHECK(fused[0][3] == 0.0f);
  CHECK(fused[0][6] == 0.0f);
  CHECK(fused[0][9] > 0.0f);
  CHECK(fused[5][0] == 10.0f);
  // Zero variance: output beta, gradient to beta is the whole sum of dz.
  CHECK(fused[0][1] == 0.5f);
  CHECK(fused[5][1] == 2 + 5 - 8 + 11);
  // NaN passes relu's forward (not mapped to 0), as relu(NaN) = NaN.
  CHECK(std::isnan(fused[0][2]));
  CHECK(std::isnan(fused[1][2]));

  SUBCASE("-0 stays -0 and gets no gradient; inf in dz gives NaN where relu' = 0") {
    // gamma = -1, beta = -0: the outputs are -xhat - 0; x = 0 in a channel of mean 0 gives
    // 0 * -rstd - 0 = -0, which relu keeps (-0 < 0 is false).
    Tensor x2 = Tensor::from({0, -2, 2, 0}, {4, 1});
    Tensor dz2 = Tensor::from({std::numeric_limits<float>::infinity(), 1, 1, 1}, {4, 1});
    Tensor g2 = Tensor::from({-1}, {1}), b2 = Tensor::from({-0.0f}, {1});
    Floats f2 = run(true, x2, g2, b2, dz2), u2 = run(false, x2, g2, b2, dz2);
    check_same_bits(f2, u2);
    CHECK(std::signbit(f2[0][0]));
    CHECK(f2[0][0] == 0.0f);
    // inf * relu'(-0) = inf * 0 = NaN, as relu's own backward: it multiplies, it does not select.
    CHECK(std::isnan(f2[5][0]));
  }
}

TEST_CASE("ops.bn_relu: gradient checks for x, gamma and beta") {
  // Random inputs keep the outputs away from 0, the kink (tested exactly above).
  auto fn = [](const Inputs& in) { return batch_norm_relu_train(in[0], in[1], in[2], 1e-5f).y; };
  SUBCASE("[N, C]") {
    CHECK_GRADIENTS("batch_norm_relu [N, C]", fn,
                    {param({6, 4}, 71), param({4}, 72, 0.5f, 1.5f), param({4}, 73)});
  }
  SUBCASE("[N, C, H, W]") {
    CHECK_GRADIENTS("batch_norm_relu [N, C, H, W]", fn,
                    {param({3, 2, 3, 2}, 74), param({2}, 75, -1.5f, 1.5f), param({2}, 76)});
  }
  SUBCASE("no affine") {
    CHECK_GRADIENTS(
        "batch_norm_relu no affine",
        [](const Inputs& in) { return batch_norm_relu_train(in[0], Tensor(), Tensor(), 1e-5f).y; },
        {param({5, 3, 2}, 77)});
  }
}

TEST_CASE("ops.bn_relu: shape errors name batch_norm_relu") {
  Tensor x = Tensor::ones({8, 3, 5, 5});
  CHECK_THROWS_WITH_AS(
      batch_norm_relu_train(x, Tensor::ones({4}), Tensor(), 1e-5f),
      doctest::Contains(
          "batch_norm_relu: gamma has shape [4], expected [3] for input [8, 3, 5, 5]"),
      Error);
  CHECK_THROWS_WITH_AS(batch_norm_relu_train(Tensor::ones({5}), Tensor(), Tensor(), 1e-5f),
                       doctest::Contains("batch_norm_relu: input must be [N, C] or [N, C, *]"),
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm_relu_train(x, Tensor(), Tensor(), -1.0f),
                       doctest::Contains("batch_norm_relu: eps must be >= 0"), Error);
}

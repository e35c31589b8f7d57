// avg_pool2d and adaptive_avg_pool2d: values and gradients against PyTorch, padding counted or not,
// floor-mode edges, adaptive windows that overlap or repeat, NaN, gradient checks and errors.
//
// Reference values: torch 2.x on the CPU (/usr/bin/python3) with x = torch.arange(1., 26.)
// .reshape(1, 1, 5, 5):
//   F.avg_pool2d(x, 2); F.avg_pool2d(x, 3, 2, 1); F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
//   F.adaptive_avg_pool2d(x, (3, 2)); F.adaptive_avg_pool2d(x, 1)
//   the gradients of .sum() of the adaptive (3, 2) and the count_include_pad=False pooling;
//   F.adaptive_avg_pool2d(torch.arange(1., 5.).reshape(1, 1, 2, 2), 3).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {

using Inputs = std::vector<Tensor>;
using Floats = std::vector<float>;

Tensor arange25() {  // [1, 1, 5, 5] holding 1 .. 25
  Floats v(25);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i + 1);
  return Tensor::from(v, {1, 1, 5, 5});
}

void check_close(const Tensor& t, const Floats& expected) {
  Floats got = t.to_vector();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i)
    CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-6));
}

}  // namespace

TEST_CASE("ops.avg_pool: values match PyTorch, with and without the padding in the divisor") {
  Tensor x = arange25();
  // Floor mode: the fifth row and column fit no 2x2 window and are dropped.
  Tensor a = avg_pool2d(x, 2);
  CHECK(a.shape() == Shape{1, 1, 2, 2});
  check_close(a, {4, 6, 14, 16});
  check_close(avg_pool2d(x, 3, 2, 1), {1.7777778f, 3.6666667f, 3.1111112f, 7.6666665f, 13,
                                       9.666667f, 8.444445f, 13.666667f, 9.777778f});
  check_close(avg_pool2d(x, 3, 2, 1, /*count_include_pad=*/false),
              {4, 5.5f, 7, 11.5f, 13, 14.5f, 19, 20.5f, 22});
  CHECK(avg_pool2d(x, 3, 1).shape() == Shape{1, 1, 3, 3});
}

TEST_CASE("ops.avg_pool: adaptive windows floor(i*H/oh) .. ceil((i+1)*H/oh) as PyTorch") {
  Tensor x = arange25();
  // 5 rows into 3: rows [0, 2), [1, 4), [3, 5) overlap; 5 columns into 2: [0, 3), [2, 5).
  check_close(adaptive_avg_pool2d(x, {3, 2}), {4.5f, 6.5f, 12, 14, 19.5f, 21.5f});
  Tensor g = adaptive_avg_pool2d(x, 1);
  CHECK(g.shape() == Shape{1, 1, 1, 1});
  CHECK(g.item() == 13.0f);
  // More outputs than inputs: windows of one cell repeat (2 -> 3: [0, 1), [0, 2), [1, 2)).
  check_close(adaptive_avg_pool2d(Tensor::from({1, 2, 3, 4}, {1, 1, 2, 2}), 3),
              {1, 1.5f, 2, 2, 2.5f, 3, 3, 3.5f, 4});
  // Global average pooling equals the mean over H and W, per (n, c).
  Rng rng(5);
  Tensor y = Tensor::normal({2, 3, 4, 6}, rng);
  Tensor by_mean = mean(mean(y, 3), 2);
  Floats gp = adaptive_avg_pool2d(y, {1, 1}).to_vector();
  for (size_t i = 0; i < gp.size(); ++i) CHECK(gp[i] == doctest::Approx(by_mean.to_vector()[i]));
}

TEST_CASE("ops.avg_pool: adaptive windows match PyTorch's formula for every small size") {
  // The windows are built from i * H kept as quotient and remainder, not from the product.
  for (int64_t H = 1; H <= 7; ++H) {
    Floats v(static_cast<size_t>(H));
    // Powers of two: each window's mean tells which cells it covers.
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(1 << i);
    const Tensor x = Tensor::from(v, {1, 1, H, 1});
    for (int64_t oh = 1; oh <= 9; ++oh) {
      Floats expected;
      for (int64_t i = 0; i < oh; ++i) {
        const int64_t h0 = i * H / oh, h1 = ((i + 1) * H + oh - 1) / oh;
        float acc = 0.0f;
        for (int64_t h = h0; h < h1; ++h) acc += v[static_cast<size_t>(h)];
        expected.push_back(acc / static_cast<float>(h1 - h0));
      }
      CAPTURE(H);
      CAPTURE(oh);
      check_close(adaptive_avg_pool2d(x, {oh, 1}), expected);
    }
  }
}

TEST_CASE("ops.avg_pool: an adaptive output too large for a tensor is refused before allocating") {
  // The windows (Ho + Wo entries) were built before the output's size was checked, so a huge
  // output size allocated without bound, and the error, if any, did not name the op.
  const Tensor x = Tensor::ones({1, 1, 4, 4});
  // REQUIRE: without the check, the calls below would allocate terabytes.
  REQUIRE_THROWS_WITH_AS(adaptive_avg_pool2d(x, {int64_t{1} << 20, int64_t{1} << 20}),
                         doctest::Contains("adaptive_avg_pool2d: output size 1048576x1048576 is "
                                           "too large for input [1, 1, 4, 4]: tensor: shape [1, "
                                           "1, 1048576, 1048576] needs 4096.0 GiB"),
                         Error);
  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(x, {int64_t{1} << 40, int64_t{1} << 40}),
                       doctest::Contains("adaptive_avg_pool2d: output size "
                                         "1099511627776x1099511627776 is too large for input [1, "
                                         "1, 4, 4]: tensor: shape [1, 1, 1099511627776, "
                                         "1099511627776] has more elements than int64 can count"),
                       Error);
  // An empty batch pools nothing: any output size is an empty tensor, as in PyTorch, and builds
  // no windows.
  Tensor e = Tensor::zeros({0, 2, 4, 4});
  e.set_requires_grad();
  Tensor y = adaptive_avg_pool2d(e, {int64_t{1} << 40, 3});
  CHECK(y.shape() == Shape{0, 2, int64_t{1} << 40, 3});
  sum(y).backward();
  CHECK(e.grad().shape() == Shape{0, 2, 4, 4});
}

TEST_CASE("ops.avg_pool: backward spreads dout / divisor over the window, as PyTorch") {
  Tensor x = arange25();
  x.set_requires_grad();
  adaptive_avg_pool2d(x, {3, 2}).sum().backward();
  const float a = 1.0f / 6, b = 5.0f / 18, c = 1.0f / 9;
  check_close(x.grad(), {a, a, 2 * a, a, a,     b, b, 2 * b, b, b,     c, c, 2 * c,
                         c, c, b,     b, 2 * b, b, b, a,     a, 2 * a, a, a});
  x.zero_grad();
  avg_pool2d(x, 3, 2, 1, false).sum().backward();
  const float q = 0.25f, r = 0.41666669f, t = 0.16666667f, u = 0.69444448f, w = 0.27777779f,
              z = 0.11111111f;
  check_close(x.grad(),
              {q, r, t, r, q, r, u, w, u, r, t, w, z, w, t, r, u, w, u, r, q, r, t, r, q});
}

TEST_CASE("ops.avg_pool: a NaN makes its windows NaN and only those") {
  Tensor x = arange25();
  x.data()[0] = std::numeric_limits<float>::quiet_NaN();
  Floats a = avg_pool2d(x, 2).to_vector();  // torch: [nan, 6, 14, 16]
  CHECK(std::isnan(a[0]));
  CHECK(Floats(a.begin() + 1, a.end()) == Floats{6, 14, 16});
  Floats g = adaptive_avg_pool2d(x, 2).to_vector();  // torch: [nan, 9, 17, 19]
  CHECK(std::isnan(g[0]));
  CHECK(Floats(g.begin() + 1, g.end()) == Floats{9, 17, 19});
}

TEST_CASE("ops.avg_pool: gradient checks") {
  for (bool include : {true, false}) {
    CHECK_GRADIENTS("avg_pool2d k3 s2 p1",
                    [include](const Inputs& in) { return avg_pool2d(in[0], 3, 2, 1, include); },
                    {param({2, 3, 7, 6}, 31)});
    CHECK_GRADIENTS("avg_pool2d k2 s1 p1",
                    [include](const Inputs& in) { return avg_pool2d(in[0], 2, 1, 1, include); },
                    {param({1, 2, 4, 5}, 32)});
  }
  CHECK_GRADIENTS("avg_pool2d k2", [](const Inputs& in) { return avg_pool2d(in[0], 2); },
                  {param({2, 2, 5, 4}, 33)});
  CHECK_GRADIENTS("adaptive_avg_pool2d 3x2",
                  [](const Inputs& in) {
                    return adaptive_avg_pool2d(in[0], {3, 2});
                  },
                  {param({2, 2, 5, 7}, 34)});
  CHECK_GRADIENTS("adaptive_avg_pool2d 1",
                  [](const Inputs& in) { return adaptive_avg_pool2d(in[0], 1); },
                  {param({2, 3, 4, 4}, 35)});
  CHECK_GRADIENTS("adaptive_avg_pool2d upsample",
                  [](const Inputs& in) {
                    return adaptive_avg_pool2d(in[0], {5, 3});
                  },
                  {param({1, 2, 3, 2}, 36)});
}

TEST_CASE("ops.avg_pool: a kernel or padding near int64's limit neither overflows nor wraps") {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const Tensor x = Tensor::ones({1, 1, 4, 4});
  CHECK_THROWS_WITH_AS(avg_pool2d(x, kMax, 1, kMax / 2),
                       "avg_pool2d: padding 4611686018427387903 makes the padded input overflow "
                       "int64 (input [1, 1, 4, 4], kernel 9223372036854775807)",
                       Error);
  // Kernel 2^40, padding 2^39: every window holds the 16 ones and 2^80 - 16 padded zeros. The
  // divisor k*k = 2^80 wrapped to 0 in int64, which read as "count only the real cells" (1).
  const int64_t k = int64_t{1} << 40;
  const Tensor with_pad = avg_pool2d(x, k, 1, k / 2);
  CHECK(with_pad.shape() == Shape{1, 1, 5, 5});
  for (float v : with_pad.to_vector()) CHECK(v == std::ldexp(1.0f, -76));
  for (float v : avg_pool2d(x, k, 1, k / 2, false).to_vector()) CHECK(v == 1.0f);
}

TEST_CASE("ops.avg_pool: errors name the op and the shape") {
  CHECK_THROWS_WITH_AS(avg_pool2d(Tensor::ones({2, 4, 4}), 2),
                       doctest::Contains("avg_pool2d: input must be [N, C, H, W]; got [2, 4, 4]"),
                       Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(Tensor::ones({1, 1, 4, 4}), 2, 2, 2),
                       doctest::Contains("padding must be in [0, kernel / 2] = [0, 1]; got 2"),
                       Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(Tensor::ones({1, 1, 2, 2}), 5, 1, 1),
                       doctest::Contains("kernel 5 is larger than the padded input 4x4"), Error);
  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(Tensor::ones({1, 1, 4, 4}), {0, 2}),
                       doctest::Contains("adaptive_avg_pool2d: output size must be at least 1x1"),
                       Error);
  CHECK_THROWS_WITH_AS(
      adaptive_avg_pool2d(Tensor::ones({4, 4}), 1),
      doctest::Contains("adaptive_avg_pool2d: input must be [N, C, H, W]; got [4, 4]"), Error);
}

// max_pool2d: hand-computed windows, padding as -inf, the first-index tie rule with exact
// gradients, gradient checks on inputs with distinct window maxima, and shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "core/blas.h"
#include "core/cpu_isa.h"
#include "core/ops/pool_general.h"
#include "gradcheck.h"
#include "memory_limit.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;

// A tensor whose values are a shuffled, evenly spaced grid in [-1, 1): all distinct, at least
// 2/numel apart, so the finite-difference step (1e-3) never changes which element is a window's
// maximum.
Tensor distinct_param(const Shape& shape, uint64_t seed) {
  int64_t n = numel_of(shape);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(order[static_cast<size_t>(i)], order[rng.below(static_cast<uint32_t>(i + 1))]);
  }
  std::vector<float> values(static_cast<size_t>(n));
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = -1.0f + 2.0f * static_cast<float>(order[i]) / static_cast<float>(n);
  Tensor t = Tensor::from(values, shape);
  t.set_requires_grad();
  return t;
}

Tensor arange(const Shape& shape, float start = 0.0f, float step = 1.0f) {
  std::vector<float> v(static_cast<size_t>(numel_of(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + step * static_cast<float>(i);
  return Tensor::from(v, shape);
}
}  // namespace

TEST_CASE("ops.pool: forward values by hand") {
  Tensor x = arange({1, 1, 4, 4});  // 0..15 row-major
  SUBCASE("2x2, stride defaults to the kernel") {
    Tensor y = max_pool2d(x, 2);
    CHECK(y.shape() == Shape{1, 1, 2, 2});
    CHECK(y.to_vector() == std::vector<float>{5, 7, 13, 15});
  }
  SUBCASE("2x2, stride 1 (overlapping windows)") {
    CHECK(max_pool2d(x, 2, 1).to_vector() == std::vector<float>{5, 6, 7, 9, 10, 11, 13, 14, 15});
  }
  SUBCASE("3x3, stride 2, padding 1") {
    CHECK(max_pool2d(x, 3, 2, 1).to_vector() == std::vector<float>{5, 7, 13, 15});
  }
  SUBCASE("padding acts as -inf, not 0: all-negative input") {
    Tensor neg = arange({1, 1, 4, 4}, -1.0f, -1.0f);  // -1..-16
    CHECK(max_pool2d(neg, 3, 2, 1).to_vector() == std::vector<float>{-1, -2, -5, -6});
  }
  SUBCASE("planes are pooled independently") {
    Tensor x2 = arange({2, 3, 2, 2});
    CHECK(max_pool2d(x2, 2).to_vector() == std::vector<float>{3, 7, 11, 15, 19, 23});
  }
  SUBCASE("a NaN in a window propagates") {
    float nan = std::numeric_limits<float>::quiet_NaN();
    Tensor xn = Tensor::from({1, nan, 3, 4}, {1, 1, 2, 2});
    CHECK(std::isnan(max_pool2d(xn, 2).item()));
  }
}

TEST_CASE("ops.pool: with several NaNs in a window the last one wins, as PyTorch") {
  // PyTorch's CPU max_pool2d replaces its maximum when `val > maxval || isnan(val)`, so of two
  // NaNs in a window the later one in row-major order takes the gradient. Values from PyTorch
  // 1.13 on the same inputs.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  SUBCASE("the 2x2 kernels") {
    for (const CpuIsa isa : {CpuIsa::avx512, CpuIsa::avx2, CpuIsa::portable}) {
      CAPTURE(static_cast<int>(isa));
      const CpuIsa before = detail::limit_max_pool2x2_isa(isa);
      Tensor x = Tensor::from({nan, 1, nan, 2}, {1, 1, 2, 2}).set_requires_grad();
      sum(max_pool2d(x, 2)).backward();
      detail::limit_max_pool2x2_isa(before);
      CHECK(x.grad().to_vector() == std::vector<float>{0, 0, 1, 0});
    }
  }
  SUBCASE("the general loop: kernel 3, stride 1, padding 1") {
    Tensor x = Tensor::from({0, nan, 2, 3, 4, nan, 6, 7, 8}, {1, 1, 3, 3}).set_requires_grad();
    Tensor y = max_pool2d(x, 3, 1, 1);
    y.backward(arange({1, 1, 3, 3}, 1.0f, 1.0f));
    CHECK(y.data()[6] == 7.0f);
    CHECK(x.grad().to_vector() == std::vector<float>{0, 5, 0, 0, 0, 33, 0, 7, 0});
  }
}

TEST_CASE("ops.pool: ties send the whole gradient to the first index in row-major order") {
  SUBCASE("all equal") {
    Tensor x = Tensor::ones({1, 1, 2, 2});
    x.set_requires_grad();
    sum(max_pool2d(x, 2)).backward();
    CHECK(x.grad().to_vector() == std::vector<float>{1, 0, 0, 0});
  }
  SUBCASE("tie between (0, 1) and (1, 0)") {
    Tensor x = Tensor::from({0, 3, 3, 1}, {1, 1, 2, 2});
    x.set_requires_grad();
    sum(max_pool2d(x, 2)).backward();
    CHECK(x.grad().to_vector() == std::vector<float>{0, 1, 0, 0});
  }
  SUBCASE("overlapping windows that share a maximum add up") {
    Tensor x = Tensor::from({0, 0, 0, 0, 9, 0, 0, 0, 0}, {1, 1, 3, 3});
    x.set_requires_grad();
    Tensor y = max_pool2d(x, 2, 1);
    CHECK(y.to_vector() == std::vector<float>{9, 9, 9, 9});
    y.backward(Tensor::from({1, 2, 3, 4}, {1, 1, 2, 2}));
    CHECK(x.grad().to_vector() == std::vector<float>{0, 0, 0, 0, 10, 0, 0, 0, 0});
  }
  SUBCASE("overlapping windows over a flat region: each picks its own first cell") {
    Tensor x = Tensor::ones({1, 1, 3, 3});
    x.set_requires_grad();
    sum(max_pool2d(x, 2, 1)).backward();
    CHECK(x.grad().to_vector() == std::vector<float>{1, 1, 0, 1, 1, 0, 0, 0, 0});
  }
}

TEST_CASE("ops.pool: gradient checks with distinct window maxima") {
  SUBCASE("2x2, stride 2") {
    CHECK_GRADIENTS("max_pool2d k2", [](const Inputs& in) { return max_pool2d(in[0], 2); },
                    {distinct_param({2, 3, 6, 6}, 1)});
  }
  SUBCASE("3x3, stride 2, padding 1, odd sizes") {
    CHECK_GRADIENTS("max_pool2d k3 s2 p1",
                    [](const Inputs& in) { return max_pool2d(in[0], 3, 2, 1); },
                    {distinct_param({2, 2, 7, 5}, 2)});
  }
  SUBCASE("3x3, stride 1 (overlapping)") {
    CHECK_GRADIENTS("max_pool2d k3 s1", [](const Inputs& in) { return max_pool2d(in[0], 3, 1); },
                    {distinct_param({1, 2, 5, 5}, 3)});
  }
}

TEST_CASE("ops.pool: errors name the op and the shape") {
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::ones({3, 4, 4}), 2),
                       doctest::Contains("max_pool2d: input must be [N, C, H, W]; got [3, 4, 4]"),
                       Error);
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::ones({1, 1, 4, 4}), 0),
                       doctest::Contains("max_pool2d: kernel must be >= 1; got 0"), Error);
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::ones({1, 1, 4, 4}), 2, -1),
                       doctest::Contains("max_pool2d: stride must be >= 1"), Error);
  CHECK_THROWS_WITH_AS(
      max_pool2d(Tensor::ones({1, 1, 4, 4}), 3, 1, 2),
      doctest::Contains("max_pool2d: padding must be in [0, kernel / 2] = [0, 1]; got 2"), Error);
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::ones({1, 1, 0, 4}), 2, 2, 1),
                       doctest::Contains("max_pool2d: input [1, 1, 0, 4] has no spatial extent"),
                       Error);
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::ones({1, 1, 2, 5}), 3),
                       doctest::Contains("max_pool2d: kernel 3 is larger than the padded input 2x5 "
                                         "(input [1, 1, 2, 5], padding 0)"),
                       Error);
}

TEST_CASE("ops.pool: a kernel or padding near int64's limit neither overflows nor wraps") {
  // The shape check computed H + 2 * padding, which overflowed int64 for a padding near
  // INT64_MAX / 2 (allowed by padding <= kernel / 2), and the error printed a negative input.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const Tensor x = arange({1, 1, 4, 4});
  CHECK_THROWS_WITH_AS(max_pool2d(x, kMax, 1, kMax / 2),
                       "max_pool2d: padding 4611686018427387903 makes the padded input overflow "
                       "int64 (input [1, 1, 4, 4], kernel 9223372036854775807)",
                       Error);
  // A kernel of 2^40 with padding 2^39 fits: (4 + 2^40 - 2^40) / 1 + 1 = 5 windows a side, each
  // over the whole input.
  const Tensor m = max_pool2d(x, int64_t{1} << 40, 1, int64_t{1} << 39);
  CHECK(m.shape() == Shape{1, 1, 5, 5});
  for (float v : m.to_vector()) CHECK(v == 15.0f);
}

// Run by the test below in a fresh process (in_exec_child), where a team of two threads can start.
TEST_CASE("ops.pool child: 2x2 row scratch too large at two threads" * doctest::skip()) {
  if (!testing::in_exec_child()) return;
  int code = 4;
  {
    set_num_threads(2);
    // The row scratch is the path without AVX2's.
    detail::limit_max_pool2x2_isa(CpuIsa::portable);
    // The team's threads (their stacks, their malloc arenas) start here, before the limit.
    max_pool2d(Tensor::ones({4, 8, 64, 64}), 2, 2, 0);
    // Each thread's row scratch is 64 MiB (and two 16 MiB ones); the output (128 MiB) fits.
    const Tensor x = Tensor::ones({1, 2, 2, int64_t{1} << 25});
    if (testing::limit_address_space(size_t{180} << 20)) {
      try {
        max_pool2d(x, 2, 2, 0);
        code = 2;
      } catch (const Error& e) {
        code = testing::expect_error_start(e,
                                           "max_pool2d: a thread's row scratch of 16777216 values "
                                           "(for input rows of 33554432) cannot be allocated");
      }
    }
  }
  std::fflush(nullptr);
  ::_exit(code);
}

TEST_CASE(
    "ops.pool: a 2x2 row scratch too large for memory is an error, not the end of the process") {
  if (!BNLAB_TEST_MEMORY_LIMIT) return;
  // Found by the audit of 2026-12-06 after the conv2d column-buffer fix: without AVX2 each thread
  // grows its row scratch inside the OpenMP region over the planes, where an exception cannot
  // leave; rows too long for memory ended the process in std::terminate. At one thread there is no
  // region, so the child is a fresh process at two.
  CHECK(testing::exec_child_exit_code("ops.pool child: 2x2 row scratch too large at two threads") ==
        0);
}

// conv2d: hand-computed forward values, agreement with a direct (seven-loop) convolution, gradient
// checks with and without stride/padding/bias, the per-thread dW reduction, and shape errors.
#include <doctest/doctest.h>

#include "core/blas.h"
#include "gradcheck.h"
#include "test_util.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;

// The definition of conv2d, written out directly: out[n, k, oh, ow] = b[k] + sum_{c, i, j} w[k, c,
// i, j] * x[n, c, oh*s - p + i, ow*s - p + j], zero outside the image.
std::vector<float> direct_conv(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s,
                               int64_t p) {
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t K = w.size(0), kh = w.size(2), kw = w.size(3);
  int64_t Ho = (H + 2 * p - kh) / s + 1, Wo = (W + 2 * p - kw) / s + 1;
  std::vector<float> out(static_cast<size_t>(N * K * Ho * Wo));
  const float* px = x.data();
  const float* pw = w.data();
  size_t o = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double acc = b.defined() ? b.data()[k] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                int64_t ih = oh * s - p + i, iw = ow * s - p + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += static_cast<double>(pw[((k * C + c) * kh + i) * kw + j]) *
                       px[((n * C + c) * H + ih) * W + iw];
              }
          out[o++] = static_cast<float>(acc);
        }
  return out;
}
}  // namespace

TEST_CASE("ops.conv: forward values by hand with constant weights") {
  Tensor x = Tensor::ones({1, 1, 3, 3});
  Tensor w = Tensor::ones({1, 1, 2, 2});
  Tensor b = Tensor::from({0.5f}, {1});
  SUBCASE("stride 1, no padding: every window sums four ones") {
    Tensor y = conv2d(x, w, b);
    CHECK(y.shape() == Shape{1, 1, 2, 2});
    CHECK(y.to_vector() == std::vector<float>{4.5f, 4.5f, 4.5f, 4.5f});
  }
  SUBCASE("stride 2, padding 1: corner windows see 1, 2, 2 and 4 real cells") {
    Tensor y = conv2d(x, w, b, 2, 1);
    CHECK(y.shape() == Shape{1, 1, 2, 2});
    CHECK(y.to_vector() == std::vector<float>{1.5f, 2.5f, 2.5f, 4.5f});
  }
  SUBCASE("a difference kernel and no bias") {
    Tensor x9 = Tensor::from({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
    Tensor diff = Tensor::from({1, 0, 0, -1}, {1, 1, 2, 2});  // x[i, j] - x[i+1, j+1]
    CHECK(conv2d(x9, diff, Tensor()).to_vector() == std::vector<float>{-4, -4, -4, -4});
  }
  SUBCASE("channels sum, out-channels are separate filters") {
    // channel 0 holds ones, channel 1 twos; filter 0 reads both, filter 1 only channel 1.
    // (Not {1 x 12, 0 x 4}: GCC 12.2 at -O2 with AVX-512 miscompiles exactly that float literal
    // list.)
    Tensor x2 = Tensor::from({1, 1, 1, 1, 2, 2, 2, 2}, {1, 2, 2, 2});
    Tensor w2 = Tensor::from({1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1}, {2, 2, 2, 2});
    CHECK(conv2d(x2, w2, Tensor()).to_vector() == std::vector<float>{12, 8});
  }
}

TEST_CASE("ops.conv: matches a direct convolution") {
  struct Case {
    Shape x, w;
    int64_t stride, padding;
  };
  for (const Case& c :
       {Case{{2, 3, 7, 6}, {4, 3, 3, 3}, 1, 0}, Case{{3, 2, 7, 7}, {5, 2, 3, 3}, 2, 1},
        Case{{1, 3, 5, 8}, {2, 3, 2, 3}, 2, 2}, Case{{2, 4, 3, 5}, {3, 4, 1, 1}, 1, 0},
        Case{{2, 4, 5, 5}, {3, 4, 1, 1}, 2, 0}}) {
    CAPTURE(to_string(c.x));
    CAPTURE(to_string(c.w));
    Tensor x = param(c.x, 1);
    Tensor w = param(c.w, 2);
    Tensor b = param({c.w[0]}, 3);
    std::vector<float> want = direct_conv(x, w, b, c.stride, c.padding);
    std::vector<float> got = conv2d(x, w, b, c.stride, c.padding).to_vector();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
  }
}

TEST_CASE("ops.conv: gradient checks for x, weight and bias") {
  SUBCASE("stride 2, padding 1, odd sizes") {
    CHECK_GRADIENTS("conv2d s2 p1",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 2, 1); },
                    {param({2, 3, 5, 5}, 1), param({4, 3, 3, 3}, 2), param({4}, 3)});
  }
  SUBCASE("stride 1, padding 0, odd non-square sizes and kernel") {
    CHECK_GRADIENTS("conv2d s1 p0",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 1, 0); },
                    {param({3, 2, 5, 7}, 4), param({3, 2, 3, 2}, 5), param({3}, 6)});
  }
  SUBCASE("no bias, a single image (GEMM outside the parallel loop)") {
    CHECK_GRADIENTS("conv2d no bias",
                    [](const Inputs& in) { return conv2d(in[0], in[1], Tensor(), 1, 1); },
                    {param({1, 2, 5, 5}, 7), param({3, 2, 3, 3}, 8)});
  }
  SUBCASE("1x1 pointwise (no im2col) and 1x1 strided") {
    CHECK_GRADIENTS("conv2d 1x1", [](const Inputs& in) { return conv2d(in[0], in[1], in[2]); },
                    {param({3, 4, 3, 3}, 9), param({2, 4, 1, 1}, 10), param({2}, 11)});
    CHECK_GRADIENTS("conv2d 1x1 s2",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 2, 0); },
                    {param({2, 3, 5, 5}, 12), param({2, 3, 1, 1}, 13), param({2}, 14)});
  }
}

TEST_CASE("ops.conv: per-thread dW partials reduce to the single-threaded gradient") {
  auto grads = [](int threads) {
    int previous = num_threads();
    set_num_threads(threads);
    // Big enough (N*K*CK*P = 5*8*72*144) that conv2d runs its parallel path.
    Tensor x = param({5, 8, 12, 12}, 21);
    Tensor w = param({8, 8, 3, 3}, 22);
    Tensor b = param({8}, 23);
    Rng rng(24);
    Tensor r = Tensor::uniform({5, 8, 12, 12}, rng, -1.0f, 1.0f);
    sum(mul(conv2d(x, w, b, 1, 1), r)).backward();
    set_num_threads(previous);
    return std::vector<std::vector<float>>{x.grad().to_vector(), w.grad().to_vector(),
                                           b.grad().to_vector()};
  };
  auto one = grads(1);
  auto many = grads(4);
  for (size_t t = 0; t < one.size(); ++t) {
    CAPTURE(t);
    CHECK(bnlab::testing::count_mismatches(one[t], many[t], 1e-5) == 0);
  }
}

TEST_CASE("ops.conv: shape errors name the op and both shapes") {
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({2, 3, 32, 32}), Tensor::ones({16, 1, 5, 5}), Tensor()),
                       doctest::Contains("conv2d: input has 3 channels, weight expects 1 (input "
                                         "[2, 3, 32, 32], weight [16, 1, 5, 5])"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({3, 8, 8}), Tensor::ones({4, 3, 3, 3}), Tensor()),
                       doctest::Contains("conv2d: input must be [N, C, H, W]; got [3, 8, 8]"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({1, 3, 8, 8}), Tensor::ones({4, 3, 3}), Tensor()),
                       doctest::Contains("conv2d: weight must be [K, C, kh, kw]; got [4, 3, 3]"),
                       Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Tensor::ones({1, 3, 8, 8}), Tensor::ones({4, 3, 3, 3}), Tensor::ones({3})),
      doctest::Contains("conv2d: bias has shape [3], expected [4]"), Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({1, 1, 8, 8}), Tensor::ones({1, 1, 3, 3}), Tensor(), 0),
                       doctest::Contains("conv2d: stride must be >= 1; got 0"), Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Tensor::ones({1, 1, 8, 8}), Tensor::ones({1, 1, 3, 3}), Tensor(), 1, -1),
      doctest::Contains("conv2d: padding must be >= 0; got -1"), Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({1, 1, 3, 3}), Tensor::ones({1, 1, 5, 5}), Tensor()),
                       doctest::Contains("conv2d: kernel 5x5 is larger than the padded input 3x3"),
                       Error);
}

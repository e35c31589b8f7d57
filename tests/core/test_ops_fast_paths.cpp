// The specialized kernels added for speed (issue 6) against straightforward references:
// max_pool2d's 2x2/stride-2 path (ties to the first index, the last NaN wins) and conv2d's
// bounds-hoisted im2col/col2im at stride 1 and 2 (forward values and gradients against a direct
// convolution), and conv2d's vectorized bias-gradient reduction.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/blas.h"
#include "core/gemm_avx512.h"
#include "core/ops.h"
#include "core/ops/max_pool2x2_avx2.h"
#include "core/ops/max_pool2x2_avx512.h"
#include "core/ops/pool_general.h"
#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

TEST_CASE("ops.pool: the 2x2 stride-2 path matches a reference, ties and NaN included") {
  Rng rng(31);
  const int64_t N = 2, C = 3, H = 6, W = 5;  // odd W: the last column is dropped (floor mode)
  Tensor x = Tensor::normal({N, C, H, W}, rng);
  float* px = x.data();
  px[0] = px[1] = px[W] = px[W + 1] = 0.5f;  // a four-way tie: the first index wins
  px[2 * W + 2] = std::numeric_limits<float>::quiet_NaN();
  x.set_requires_grad();
  Tensor y = max_pool2d(x, 2);
  REQUIRE(y.shape() == Shape{N, C, 3, 2});
  for (int64_t p = 0; p < N * C; ++p) {
    for (int64_t oh = 0; oh < 3; ++oh) {
      for (int64_t ow = 0; ow < 2; ++ow) {
        const float* xp = px + p * H * W;
        float best = xp[2 * oh * W + 2 * ow];
        for (int64_t i = 0; i < 2; ++i)
          for (int64_t j = 0; j < 2; ++j) {
            float v = xp[(2 * oh + i) * W + 2 * ow + j];
            if (v > best || std::isnan(v)) best = v;
          }
        float got = y.data()[(p * 3 + oh) * 2 + ow];
        if (std::isnan(best)) {
          CHECK(std::isnan(got));
        } else {
          CHECK(got == best);
        }
      }
    }
  }
  // The gradient of the tied window goes to index 0 only.
  sum(mul(y, Tensor::ones(y.shape()))).backward();
  CHECK(x.grad().data()[0] == 1.0f);
  CHECK(x.grad().data()[1] == 0.0f);
  CHECK(x.grad().data()[W] == 0.0f);
  CHECK_GRADIENTS("max_pool2d 2x2/2",
                  [](const std::vector<Tensor>& in) { return max_pool2d(in[0], 2); },
                  {param({1, 2, 4, 6}, 32)});
}

// The bits of a tensor's values, so that NaNs compare too.
static std::vector<uint32_t> bits_of(const Tensor& t) {
  std::vector<uint32_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.data(), out.size() * sizeof(float));
  return out;
}

TEST_CASE("ops.pool: the 2x2 stride-2 kernels equal the general path bit for bit") {
  // Values from {-1, 0, 1, 2} (many ties inside windows, -0 included) with NaNs sprinkled in; odd
  // H and W exercise floor mode (the last row / column belongs to no window). Widths around the
  // AVX-512 kernels' 16-output chunks (Wo 15, 16, 17, 32, 33), and every partial chunk of 1 to 15
  // outputs (their place bytes are stored and loaded in pieces of 8, 4, 2 and 1; the AVX2 rows'
  // chunks are 8 outputs). Every kernel the CPU (and BNLAB_MAX_ISA) allows: the AVX-512F rows, the
  // AVX2 forward rows and the portable loops.
  const CpuIsa widest = detail::max_pool2x2_isa();
  MESSAGE((std::string("2x2 max-pool kernels tested: up to ") + cpu_isa_name(widest)));
  for (CpuIsa isa : {CpuIsa::avx512, CpuIsa::avx2, CpuIsa::portable}) {
    if (isa > widest) continue;
    detail::limit_max_pool2x2_isa(isa);
    REQUIRE(detail::max_pool2x2_isa() == isa);
    for (Shape shape :
         {Shape{2, 3, 6, 5}, Shape{1, 2, 7, 7}, Shape{2, 2, 3, 2}, Shape{1, 1, 2, 2},
          Shape{2, 4, 9, 11}, Shape{8, 16, 28, 28}, Shape{2, 3, 5, 30}, Shape{2, 2, 4, 33},
          Shape{1, 2, 3, 34}, Shape{1, 3, 2, 64}, Shape{2, 2, 6, 67}, Shape{1, 2, 4, 8},
          Shape{1, 2, 4, 12}, Shape{1, 2, 4, 16}, Shape{1, 2, 4, 18}, Shape{1, 2, 4, 20},
          Shape{1, 2, 4, 22}, Shape{1, 2, 4, 24}, Shape{1, 2, 4, 26}}) {
      CAPTURE(cpu_isa_name(isa));
      CAPTURE(shape);
      Rng rng(77);
      Tensor x = Tensor::empty(shape);
      const float values[] = {-1.0f, -0.0f, 0.0f,
                              1.0f,  2.0f,  std::numeric_limits<float>::quiet_NaN()};
      for (int64_t i = 0; i < x.numel(); ++i) {
        const uint32_t r = rng.next_u32() % 64;
        x.data()[i] = r < 60 ? values[r % 5] : values[5];  // NaN with probability 1/16
      }
      x.set_requires_grad();
      Tensor y_fast = max_pool2d(x, 2);
      Tensor y_ref = detail::max_pool2d_general(x, 2, 2, 0);
      REQUIRE(y_fast.shape() == y_ref.shape());
      CHECK(bits_of(y_fast) == bits_of(y_ref));
      {
        NoGradGuard no_grad;  // the index-free forward
        CHECK(bits_of(max_pool2d(x, 2)) == bits_of(y_ref));
      }
      // Backward into a fresh grad, then accumulated into an existing one (both paths of grad
      // buffers), against the general path's routing.
      Tensor seed = Tensor::normal(y_ref.shape(), rng);
      // Some -0 gradients: a fresh buffer's winners must hold 0 + g = +0, as a zeroed one would.
      for (int64_t i = 0; i < seed.numel(); i += 7) seed.data()[i] = -0.0f;
      y_fast.backward(seed);
      max_pool2d(x, 2).backward(seed);
      Tensor fast_grad = x.grad().clone();
      x.zero_grad();
      y_ref.backward(seed);
      detail::max_pool2d_general(x, 2, 2, 0).backward(seed);
      CHECK(bits_of(fast_grad) == bits_of(x.grad()));
    }
  }
  detail::limit_max_pool2x2_isa(CpuIsa::avx512);
}

namespace {

// One output row of Wo windows for the backward row kernels: its gradients g (every third -0) and
// winners' places, and the two gradient rows of 2 Wo cells each, each followed by a sentinel cell
// that the kernels must leave alone.
struct GradientRows {
  static constexpr float kSentinel = 7.0f;
  int64_t Wo;
  std::vector<float> g;
  std::vector<uint8_t> place;
  std::vector<float> cells;

  GradientRows(Rng& rng, int64_t wo)
      : Wo(wo),
        g(static_cast<size_t>(wo)),
        place(static_cast<size_t>(wo)),
        cells(static_cast<size_t>(2 * (2 * wo + 1)), kSentinel) {
    for (int64_t j = 0; j < Wo; ++j) {
      g[j] = j % 3 == 0 ? -0.0f : rng.normal();
      place[j] = static_cast<uint8_t>(rng.next_u32() % 4);
    }
  }
  float* top() { return cells.data(); }
  float* bottom() { return cells.data() + 2 * Wo + 1; }
  // Where cell k (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of window j is.
  size_t at(int64_t j, int k) const {
    return static_cast<size_t>((k < 2 ? 0 : 2 * Wo + 1) + 2 * j + k % 2);
  }
  bool sentinels_intact() const {
    return cells[static_cast<size_t>(2 * Wo)] == kSentinel && cells.back() == kSentinel;
  }
};

}  // namespace

TEST_CASE("ops.pool: the unpool rows put each g, -0 included, at its window's winner") {
  // max_pool2x2_unpool_avx512 / _avx2 re-form batch norm's pooled gradient planes
  // (core/ops/norm.cpp): the winner (place 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)
  // gets g as it is, every other cell of the two rows +0. Every width from 1 to 40 windows (full
  // and partial chunks of 16 and 8 windows).
  struct Unpool {
    const char* name;
    CpuIsa isa;
    void (*rows)(float*, float*, const float*, const uint8_t*, int64_t);
  };
  for (const Unpool& kernel : {Unpool{"avx512", CpuIsa::avx512, detail::max_pool2x2_unpool_avx512},
                               Unpool{"avx2", CpuIsa::avx2, detail::max_pool2x2_unpool_avx2}}) {
    CAPTURE(kernel.name);
    if (cpu_isa() < kernel.isa) {
      MESSAGE(kernel.name,
              ": not on this CPU (or under BNLAB_MAX_ISA), its unpool rows not tested");
      continue;
    }
    Rng rng(19);
    for (int64_t Wo = 1; Wo <= 40; ++Wo) {
      CAPTURE(Wo);
      GradientRows r(rng, Wo);
      kernel.rows(r.top(), r.bottom(), r.g.data(), r.place.data(), Wo);
      for (int64_t j = 0; j < Wo; ++j) {
        for (int k = 0; k < 4; ++k) {
          const float want = k == r.place[j] ? r.g[j] : 0.0f;
          CHECK(std::bit_cast<uint32_t>(r.cells[r.at(j, k)]) == std::bit_cast<uint32_t>(want));
        }
      }
      CHECK(r.sentinels_intact());
    }
  }
}

TEST_CASE("ops.pool: the AVX-512 route rows assign every cell, or add to the winners only") {
  // max_pool2x2_route_avx512, max_pool2d's backward: assign writes 0 + g at the winner (+0 for a
  // -0 g) and +0 in the other cells; accumulate adds g to the winner and leaves the other cells'
  // bits alone, a -0 there included (adding +0 would make it +0). Every width from 1 to 40 windows.
  if (!detail::cpu_has_avx512f()) {
    MESSAGE("no AVX-512F (the CPU, or BNLAB_MAX_ISA): max_pool2x2_route_avx512 not tested");
    return;
  }
  Rng rng(23);
  for (const bool assign : {true, false}) {
    for (int64_t Wo = 1; Wo <= 40; ++Wo) {
      CAPTURE(assign);
      CAPTURE(Wo);
      GradientRows r(rng, Wo);
      for (int64_t i = 0; i < 2 * Wo; ++i) {
        r.top()[i] = i % 2 ? -0.0f : 0.5f * static_cast<float>(i);
        r.bottom()[i] = i % 3 ? -0.0f : -0.25f * static_cast<float>(i);
      }
      const std::vector<float> before = r.cells;
      detail::max_pool2x2_route_avx512(r.top(), r.bottom(), r.g.data(), r.place.data(), Wo, assign);
      for (int64_t j = 0; j < Wo; ++j) {
        for (int k = 0; k < 4; ++k) {
          const float old = before[r.at(j, k)];
          const float want =
              k == r.place[j] ? (assign ? 0.0f + r.g[j] : old + r.g[j]) : (assign ? 0.0f : old);
          CHECK(std::bit_cast<uint32_t>(r.cells[r.at(j, k)]) == std::bit_cast<uint32_t>(want));
        }
      }
      CHECK(r.sentinels_intact());
    }
  }
}

// Checks y = conv2d(x, w, no bias, stride, padding) element by element against the textbook
// definition, summed in double.
static void check_against_direct_conv(const Tensor& x, const Tensor& w, const Tensor& y,
                                      int64_t stride, int64_t padding) {
  const int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const int64_t K = w.shape()[0], kh = w.shape()[2], kw = w.shape()[3];
  const int64_t Ho = y.shape()[2], Wo = y.shape()[3];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < K; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double acc = 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                int64_t ih = oh * stride - padding + i, iw = ow * stride - padding + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += x.data()[((n * C + c) * H + ih) * W + iw] *
                       w.data()[((o * C + c) * kh + i) * kw + j];
              }
          CHECK(y.data()[((n * K + o) * Ho + oh) * Wo + ow] == doctest::Approx(acc).epsilon(1e-5));
        }
}

TEST_CASE("ops.conv: im2col/col2im fast paths match a direct convolution") {
  for (int64_t stride : {1, 2}) {
    for (int64_t padding : {0, 1, 2}) {
      CAPTURE(stride);
      CAPTURE(padding);
      Rng rng(static_cast<uint64_t>(40 + stride * 3 + padding));
      const int64_t N = 2, C = 2, H = 5, W = 7, K = 3, k = 3;
      Tensor x = Tensor::normal({N, C, H, W}, rng), w = Tensor::normal({K, C, k, k}, rng);
      Tensor y = conv2d(x, w, Tensor(), stride, padding);
      const int64_t Ho = (H + 2 * padding - k) / stride + 1,
                    Wo = (W + 2 * padding - k) / stride + 1;
      REQUIRE(y.shape() == Shape{N, K, Ho, Wo});
      check_against_direct_conv(x, w, y, stride, padding);
      CHECK_GRADIENTS("conv2d fast paths",
                      [=](const std::vector<Tensor>& in) {
                        return conv2d(in[0], in[1], in[2], stride, padding);
                      },
                      {param({1, 2, 4, 5}, 50), param({2, 2, 3, 3}, 51), param({2}, 52)});
    }
  }
}

TEST_CASE("ops.conv: the vectorized bias gradient equals the double-precision sum of dout") {
  // db[k] = sum over n, oh, ow of dout[n, k, oh, ow]. P = 5 * 7 = 35 output pixels per plane (not a
  // multiple of the vector width, so the reduction's remainder is exercised), N = 3 images, and a
  // bias gradient that already holds a value (backward adds into it).
  const int64_t N = 3, C = 2, K = 4, Ho = 5, Wo = 7;
  Rng rng(61);
  Tensor x = Tensor::normal({N, C, Ho, Wo}, rng);  // 3x3, padding 1: the output is Ho x Wo too
  Tensor w = param({K, C, 3, 3}, 62);
  Tensor b = param({K}, 63);
  Tensor r = Tensor::uniform({N, K, Ho, Wo}, rng, -1.0f, 1.0f);
  sum(mul(conv2d(x, w, b, 1, 1), r)).backward();  // dout = r
  sum(mul(conv2d(x, w, b, 1, 1), r)).backward();  // accumulates: db = 2 * sum(r)
  REQUIRE(b.grad().defined());
  for (int64_t k = 0; k < K; ++k) {
    double acc = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p = 0; p < Ho * Wo; ++p) acc += r.data()[(n * K + k) * Ho * Wo + p];
    CAPTURE(k);
    CHECK(b.grad().data()[k] == doctest::Approx(2.0 * acc).epsilon(1e-6));
  }
}

TEST_CASE("ops.conv: the bias gradient over the threading threshold, 1 and 2 threads alike") {
  // N * K * P = 8 * 16 * 289 values, over the size at which the images are split between threads;
  // each plane is summed on its own and the planes added in image order, so the result has the
  // same bits for any thread count and equals the double-precision sum to float rounding.
  const int64_t N = 8, C = 3, K = 16, H = 17;
  Rng rng(64);
  Tensor x = Tensor::normal({N, C, H, H}, rng);
  Tensor w = param({K, C, 3, 3}, 65);
  Tensor r = Tensor::uniform({N, K, H, H}, rng, -1.0f, 1.0f);
  auto bias_grad = [&](int threads) {
    set_num_threads(threads);
    Tensor b = param({K}, 66);
    sum(mul(conv2d(x, w, b, 1, 1), r)).backward();  // dout = r
    return b.grad().to_vector();
  };
  const int before = num_threads();
  const std::vector<float> one = bias_grad(1), two = bias_grad(2);
  set_num_threads(before);
  REQUIRE(one.size() == static_cast<size_t>(K));
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
  for (int64_t k = 0; k < K; ++k) {
    double acc = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p = 0; p < H * H; ++p) acc += r.data()[(n * K + k) * H * H + p];
    CAPTURE(k);
    CHECK(one[static_cast<size_t>(k)] == doctest::Approx(acc).epsilon(1e-6));
  }
}

TEST_CASE(
    "ops.conv: the same-width im2col/col2im path matches a direct convolution, padding wider "
    "than the image included") {
  // Stride 1 with a (2p+1)-wide kernel keeps the output as wide as the input, which takes im2col's
  // one-copy-per-row path. Narrow images (W = 1, 2 < p) make the copied range wrap across several
  // rows and clip at both ends of the plane; unequal kh and kw check that only the width matters.
  struct Case {
    int64_t H, W, kh, p;
  };
  for (Case cs :
       {Case{5, 7, 3, 1}, Case{6, 6, 5, 2}, Case{4, 1, 3, 1}, Case{3, 2, 1, 2}, Case{2, 1, 7, 3}}) {
    CAPTURE(cs.H);
    CAPTURE(cs.W);
    CAPTURE(cs.p);
    const int64_t N = 2, C = 2, K = 3, kw = 2 * cs.p + 1;
    Rng rng(static_cast<uint64_t>(70 + cs.W * 7 + cs.p));
    Tensor x = Tensor::normal({N, C, cs.H, cs.W}, rng), w = Tensor::normal({K, C, cs.kh, kw}, rng);
    Tensor y = conv2d(x, w, Tensor(), 1, cs.p);
    const int64_t Ho = cs.H + 2 * cs.p - cs.kh + 1, Wo = cs.W;
    REQUIRE(y.shape() == Shape{N, K, Ho, Wo});
    check_against_direct_conv(x, w, y, 1, cs.p);
    CHECK_GRADIENTS(
        "conv2d same-width path",
        [=](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], 1, cs.p); },
        {param({1, 2, cs.H, cs.W}, 80), param({2, 2, cs.kh, kw}, 81), param({2}, 82)});
  }
}

TEST_CASE(
    "ops: input gradients assigned into fresh buffers equal those added into existing ones "
    "(batch norm, batch norm + relu, Winograd conv)") {
  // The first backward writes x's gradient into a fresh buffer (assigned, or zeroed image by image
  // just before a scatter); the second adds into it. -0 contributions must come out +0 in the
  // fresh buffer, as adding into zeros would give. Batch norm adds its whole contribution at once,
  // so the sum is exactly twice the first (doubling is exact); Winograd's dx adds patch by patch
  // into what is there, so it is twice the first up to rounding.
  Rng rng(12);
  const Tensor gamma = Tensor::normal({32}, rng), beta = Tensor::normal({32}, rng);
  gamma.data()[0] = 0.0f;  // channel 0's dx is 0 * dy - 0 - 0 * xhat: -0 wherever dy < 0
  const Tensor w = Tensor::normal({32, 32, 3, 3}, rng);
  using Op = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&);
  struct Case {
    const char* name;
    Op op;
    bool exact;
  };
  const Case cases[] = {
      {"batch_norm_train",
       [](const Tensor& x, const Tensor& g, const Tensor& b, const Tensor&) {
         return batch_norm_train(x, g, b, 1e-5f).y;
       },
       true},
      {"batch_norm_relu_train",
       [](const Tensor& x, const Tensor& g, const Tensor& b, const Tensor&) {
         return batch_norm_relu_train(x, g, b, 1e-5f).y;
       },
       true},
      {"conv2d (Winograd: 32 -> 32, 3x3)",
       [](const Tensor& x, const Tensor&, const Tensor&, const Tensor& wt) {
         return conv2d(x, wt, Tensor(), 1, 1);
       },
       false},
  };
  for (const Case& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    Tensor x = Tensor::normal({3, 32, 6, 7}, rng).set_requires_grad();
    Tensor seed = Tensor::normal({3, 32, 6, 7}, rng);
    for (int64_t i = 0; i < seed.numel(); i += 5) seed.data()[i] = -0.0f;
    c.op(x, gamma, beta, w).backward(seed);
    const Tensor once = x.grad().clone();
    int64_t negative_zeros = 0;
    for (int64_t i = 0; i < once.numel(); ++i)
      negative_zeros += once.data()[i] == 0.0f && std::signbit(once.data()[i]) ? 1 : 0;
    CHECK(negative_zeros == 0);
    c.op(x, gamma, beta, w).backward(seed);
    const Tensor twice = x.grad();
    int64_t differ = 0;
    for (int64_t i = 0; i < once.numel(); ++i) {
      const float doubled = once.data()[i] + once.data()[i], got = twice.data()[i];
      const bool same = c.exact ? std::memcmp(&doubled, &got, sizeof got) == 0
                                : std::abs(got - doubled) <= 1e-5f * (1.0f + std::abs(doubled));
      differ += same ? 0 : 1;
    }
    CHECK(differ == 0);
  }
}

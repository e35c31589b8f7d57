// The direct convolution kernels for thin layers (core/ops/conv_direct.h), in every instruction set
// this CPU has (portable always): forward and weight gradient against a double reference with a
// proven bound, across the padding, the segment edges and partial channel blocks; bit-identical
// for 1 and 2 threads; an inf next to a window stays out of it; the shapes and the path rule; and
// conv2d on that path (gradient checks, agreement with im2col).
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/ops/conv_direct.h"
#include "core/ops/conv_path.h"
#include "core/random.h"
#include "core/tensor.h"
#include "gradcheck.h"
#include "test_util.h"

using namespace bnlab;
using detail::DirectConvShape;
using detail::DirectIsa;

namespace {

DirectConvShape shape_of(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t k,
                         int64_t pad) {
  return {N, C, H, W, K, k, pad, H + 2 * pad - k + 1, W + 2 * pad - k + 1};
}

std::vector<float> normal(int64_t count, Rng& rng) {
  Tensor t = Tensor::normal({count}, rng);
  return std::vector<float>(t.data(), t.data() + count);
}

// The instruction sets to test: portable, then each one the CPU has.
std::vector<DirectIsa> isas() {
  std::vector<DirectIsa> out{DirectIsa::portable};
  const DirectIsa best = detail::direct_conv_isa();
  if (best >= DirectIsa::avx2) out.push_back(DirectIsa::avx2);
  if (best >= DirectIsa::avx512) out.push_back(DirectIsa::avx512);
  return out;
}

const char* isa_name(DirectIsa isa) {
  return isa == DirectIsa::avx512 ? "avx512" : isa == DirectIsa::avx2 ? "avx2" : "portable";
}

class ScopedIsa {
 public:
  explicit ScopedIsa(DirectIsa isa) : previous_(detail::limit_direct_conv_isa(isa)) {}
  ~ScopedIsa() { detail::limit_direct_conv_isa(previous_); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  DirectIsa previous_;
};

// x at (n, c, ih, iw), 0 outside the image.
double x_at(const std::vector<float>& x, const DirectConvShape& s, int64_t n, int64_t c, int64_t ih,
            int64_t iw) {
  if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) return 0.0;
  return x[static_cast<size_t>(((n * s.C + c) * s.H + ih) * s.W + iw)];
}

// The bound accepted: a float sum of m exactly formed products (FMAs), added in any order, is
// within gamma_m = m u / (1 - m u) (u = 2^-24) of the exact sum, relative to the sum of the
// products' magnitudes (Higham, Accuracy and Stability of Numerical Algorithms, 4.2). A wrong tap,
// channel or lane shows as an error of the order of the magnitude itself.
bool within_bound(double got, double exact, double magnitude, int64_t terms) {
  const double mu = static_cast<double>(terms) * std::ldexp(1.0, -24);
  return std::abs(got - exact) <= mu / (1.0 - mu) * magnitude;
}

int64_t forward_errors(const DirectConvShape& s, bool bias, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> x = normal(s.N * s.C * s.H * s.W, rng),
                           w = normal(s.K * s.C * s.k * s.k, rng), b = normal(s.K, rng);
  std::vector<float> out(static_cast<size_t>(s.N * s.K * s.Ho * s.Wo), NAN);
  detail::conv2d_direct_forward(out.data(), x.data(), w.data(), bias ? b.data() : nullptr, s);
  int64_t bad = 0;
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.K; ++o)
      for (int64_t oh = 0; oh < s.Ho; ++oh)
        for (int64_t ow = 0; ow < s.Wo; ++ow) {
          double exact = bias ? b[static_cast<size_t>(o)] : 0.0;
          double magnitude = std::abs(exact);
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t i = 0; i < s.k; ++i)
              for (int64_t j = 0; j < s.k; ++j) {
                const double p = x_at(x, s, n, c, oh + i - s.padding, ow + j - s.padding) *
                                 w[static_cast<size_t>(((o * s.C + c) * s.k + i) * s.k + j)];
                exact += p;
                magnitude += std::abs(p);
              }
          const float got = out[static_cast<size_t>(((n * s.K + o) * s.Ho + oh) * s.Wo + ow)];
          if (!within_bound(got, exact, magnitude, s.C * s.k * s.k + 1)) ++bad;
        }
  return bad;
}

int64_t weight_grad_errors(const DirectConvShape& s, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> x = normal(s.N * s.C * s.H * s.W, rng),
                           g = normal(s.N * s.K * s.Ho * s.Wo, rng);
  // dw starts at 0.5: the kernel adds into it.
  std::vector<float> dw(static_cast<size_t>(s.K * s.C * s.k * s.k), 0.5f);
  detail::conv2d_direct_weight_grad(dw.data(), g.data(), x.data(), s);
  int64_t bad = 0;
  for (int64_t o = 0; o < s.K; ++o)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t i = 0; i < s.k; ++i)
        for (int64_t j = 0; j < s.k; ++j) {
          double exact = 0.5, magnitude = 0.5;
          for (int64_t n = 0; n < s.N; ++n)
            for (int64_t oh = 0; oh < s.Ho; ++oh)
              for (int64_t ow = 0; ow < s.Wo; ++ow) {
                const double p = g[static_cast<size_t>(((n * s.K + o) * s.Ho + oh) * s.Wo + ow)] *
                                 x_at(x, s, n, c, oh + i - s.padding, ow + j - s.padding);
                exact += p;
                magnitude += std::abs(p);
              }
          const float got = dw[static_cast<size_t>(((o * s.C + c) * s.k + i) * s.k + j)];
          if (!within_bound(got, exact, magnitude, s.N * s.Ho * s.Wo + 1)) ++bad;
        }
  return bad;
}

// dx = (assign ? 0 : 0.5) + the transposed conv of g, against the double reference.
int64_t input_grad_errors(const DirectConvShape& s, bool assign, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> w = normal(s.K * s.C * s.k * s.k, rng),
                           g = normal(s.N * s.K * s.Ho * s.Wo, rng);
  std::vector<float> dx(static_cast<size_t>(s.N * s.C * s.H * s.W), assign ? NAN : 0.5f);
  detail::conv2d_direct_input_grad(dx.data(), assign, g.data(), w.data(), s);
  int64_t bad = 0;
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t ih = 0; ih < s.H; ++ih)
        for (int64_t iw = 0; iw < s.W; ++iw) {
          double exact = assign ? 0.0 : 0.5, magnitude = std::abs(exact);
          // Output (oh, ow) meets input (ih, iw) through tap (ih - oh + p, iw - ow + p).
          for (int64_t o = 0; o < s.K; ++o)
            for (int64_t i = 0; i < s.k; ++i)
              for (int64_t j = 0; j < s.k; ++j) {
                const int64_t oh = ih - i + s.padding, ow = iw - j + s.padding;
                if (oh < 0 || oh >= s.Ho || ow < 0 || ow >= s.Wo) continue;
                const double p = g[static_cast<size_t>(((n * s.K + o) * s.Ho + oh) * s.Wo + ow)] *
                                 w[static_cast<size_t>(((o * s.C + c) * s.k + i) * s.k + j)];
                exact += p;
                magnitude += std::abs(p);
              }
          const float got = dx[static_cast<size_t>(((n * s.C + c) * s.H + ih) * s.W + iw)];
          if (!within_bound(got, exact, magnitude, s.K * s.k * s.k + 1)) ++bad;
        }
  return bad;
}

}  // namespace

TEST_CASE("ops.conv_direct: forward and weight gradient match a double reference") {
  // Output widths from 3 to 35: one partial segment, whole ones (16, 32 and the AVX2's 8), whole
  // ones and a partial one; every padding a 3x3 or 5x5 kernel can take; K cutting the channel
  // blocks (forward 4/6/8, weight gradient 2-6) partway.
  for (DirectIsa isa : isas()) {
    ScopedIsa scoped(isa);
    CAPTURE(isa_name(isa));
    for (int64_t k : {3, 5}) {
      for (int64_t pad = 0; pad < k; ++pad) {
        for (int64_t W : {7, 16, 33}) {
          for (int64_t C : {1, 3}) {
            for (int64_t K : {5, 17}) {
              const int64_t H = W == 33 ? 7 : 9;
              if (H + 2 * pad < k || W + 2 * pad < k) continue;
              const DirectConvShape s = shape_of(2, C, H, W, K, k, pad);
              CAPTURE(k);
              CAPTURE(pad);
              CAPTURE(W);
              CAPTURE(C);
              CAPTURE(K);
              const auto seed = static_cast<uint64_t>(C * 1000 + k * 100 + pad * 10 + W + K);
              CHECK(forward_errors(s, /*bias=*/K == 17, seed) == 0);
              CHECK(weight_grad_errors(s, seed + 1) == 0);
            }
          }
        }
      }
    }
    // The workloads' first layers: lenet's 1 -> 32 5x5 over 28x28, cifar-cnn's 3 -> 32 3x3 over
    // 32x32 (whole channel blocks, several tiles of segments).
    CHECK(forward_errors(shape_of(2, 1, 28, 28, 32, 5, 2), true, 11) == 0);
    CHECK(weight_grad_errors(shape_of(2, 1, 28, 28, 32, 5, 2), 12) == 0);
    CHECK(forward_errors(shape_of(2, 3, 32, 32, 32, 3, 1), true, 13) == 0);
    CHECK(weight_grad_errors(shape_of(2, 3, 32, 32, 32, 3, 1), 14) == 0);
  }
}

TEST_CASE("ops.conv_direct: the input gradient matches a double reference") {
  // The transposed conv runs the forward tiles over dout with padding k - 1 - p, so every padding
  // and the segment edges of both the output and the input widths are covered; K of 5 and 17 input
  // channels to it, C of 1, 6 and 9 output channels (blocks of 4, 6 and 8 cut partway).
  for (DirectIsa isa : isas()) {
    ScopedIsa scoped(isa);
    CAPTURE(isa_name(isa));
    for (int64_t k : {3, 5}) {
      for (int64_t pad = 0; pad < k; ++pad) {
        for (int64_t W : {7, 18, 33}) {
          for (int64_t C : {1, 6, 9}) {
            const int64_t H = 6, K = C == 6 ? 17 : 5;
            if (H + 2 * pad < k || W + 2 * pad < k) continue;
            CAPTURE(k);
            CAPTURE(pad);
            CAPTURE(W);
            CAPTURE(C);
            const auto seed = static_cast<uint64_t>(C * 1000 + k * 100 + pad * 10 + W);
            CHECK(input_grad_errors(shape_of(2, C, H, W, K, k, pad), /*assign=*/true, seed) == 0);
            CHECK(input_grad_errors(shape_of(2, C, H, W, K, k, pad), /*assign=*/false, seed) == 0);
          }
        }
      }
    }
    // lenet's second layer.
    CHECK(input_grad_errors(shape_of(2, 32, 14, 14, 64, 5, 2), true, 15) == 0);
  }
}

TEST_CASE("ops.conv_direct: results are bit-identical for 1 and 2 threads") {
  const DirectConvShape s = shape_of(8, 3, 32, 30, 32, 3, 1);
  Rng rng(3);
  const std::vector<float> x = normal(s.N * s.C * s.H * s.W, rng),
                           w = normal(s.K * s.C * s.k * s.k, rng), b = normal(s.K, rng),
                           g = normal(s.N * s.K * s.Ho * s.Wo, rng);
  const int saved = omp_get_max_threads();
  for (DirectIsa isa : isas()) {
    ScopedIsa scoped(isa);
    CAPTURE(isa_name(isa));
    std::vector<float> out[2], dx[2], dw[2];
    for (int t = 0; t < 2; ++t) {
      omp_set_num_threads(t + 1);
      out[t].assign(static_cast<size_t>(s.N * s.K * s.Ho * s.Wo), 0.0f);
      dx[t].assign(static_cast<size_t>(s.N * s.C * s.H * s.W), 0.0f);
      dw[t].assign(static_cast<size_t>(s.K * s.C * s.k * s.k), 0.0f);
      detail::conv2d_direct_forward(out[t].data(), x.data(), w.data(), b.data(), s);
      detail::conv2d_direct_input_grad(dx[t].data(), true, g.data(), w.data(), s);
      detail::conv2d_direct_weight_grad(dw[t].data(), g.data(), x.data(), s);
    }
    CHECK(out[0] == out[1]);
    CHECK(dx[0] == dx[1]);
    CHECK(dw[0] == dw[1]);
  }
  omp_set_num_threads(saved);
}

TEST_CASE("ops.conv_direct: an inf in x reaches exactly the weight-gradient taps im2col's does") {
  // Output width 20: a whole segment and a partial one (AVX-512), so lanes past the row's end
  // would read x's last columns with the wrong taps if they were not zeroed.
  const DirectConvShape s = shape_of(1, 1, 4, 22, 3, 3, 0);
  for (int64_t col : {0, 17, 19, 20, 21}) {
    CAPTURE(col);
    Rng rng(static_cast<uint64_t>(col + 5));
    std::vector<float> x = normal(s.H * s.W, rng);
    x[static_cast<size_t>(1 * s.W + col)] = std::numeric_limits<float>::infinity();
    const std::vector<float> g = normal(s.K * s.Ho * s.Wo, rng);
    for (DirectIsa isa : isas()) {
      ScopedIsa scoped(isa);
      CAPTURE(isa_name(isa));
      std::vector<float> dw(static_cast<size_t>(s.K * 9), 0.0f);
      detail::conv2d_direct_weight_grad(dw.data(), g.data(), x.data(), s);
      for (int64_t o = 0; o < s.K; ++o)
        for (int64_t i = 0; i < 3; ++i)
          for (int64_t j = 0; j < 3; ++j) {
            // Tap (i, j) meets x[1][col] at output (1 - i, col - j), if that output exists.
            const bool meets = 1 - i >= 0 && 1 - i < s.Ho && col - j >= 0 && col - j < s.Wo;
            CAPTURE(i);
            CAPTURE(j);
            CHECK(std::isfinite(dw[static_cast<size_t>((o * 3 + i) * 3 + j)]) == !meets);
          }
    }
  }
}

TEST_CASE("ops.conv_direct: the shapes it takes and the path rule") {
  // (kh, kw, stride, padding, groups)
  CHECK(detail::conv2d_direct_eligible(5, 5, 1, 2, 1));  // lenet's first layer
  CHECK(detail::conv2d_direct_eligible(3, 3, 1, 1, 1));  // cifar-cnn's
  CHECK(detail::conv2d_direct_eligible(3, 3, 1, 0, 1));
  CHECK(detail::conv2d_direct_eligible(5, 5, 1, 4, 1));
  CHECK_FALSE(detail::conv2d_direct_eligible(3, 3, 2, 1, 1));  // strided
  CHECK_FALSE(detail::conv2d_direct_eligible(7, 7, 1, 3, 1));  // other kernel sizes
  CHECK_FALSE(detail::conv2d_direct_eligible(3, 5, 1, 1, 1));  // not square
  CHECK_FALSE(detail::conv2d_direct_eligible(3, 3, 1, 3, 1));  // padding >= kernel
  CHECK_FALSE(detail::conv2d_direct_eligible(3, 3, 1, 1, 2));  // grouped

  using detail::ConvPath;
  using detail::ConvPathMode;
  const auto A = ConvPathMode::automatic, D = ConvPathMode::direct, I = ConvPathMode::im2col;
  // Without AVX2 or AVX-512F the automatic rule keeps im2col; thick 5x5 convs need AVX-512F.
  const bool simd = detail::direct_conv_isa() != DirectIsa::portable;
  const ConvPath thin = simd ? ConvPath::direct : ConvPath::im2col;
  const ConvPath thick5x5 =
      detail::direct_conv_isa() == DirectIsa::avx512 ? ConvPath::direct_data : ConvPath::im2col;
  // (mode, C, K, kh, kw, stride, padding, groups)
  CHECK(detail::conv2d_path(A, 1, 32, 5, 5, 1, 2, 1, 28, 28) == thin);
  CHECK(detail::conv2d_path(A, 3, 32, 3, 3, 1, 1, 1, 28, 28) == thin);
  CHECK(detail::conv2d_path(A, 4, 8, 3, 3, 1, 1, 1, 28, 28) == thin);
  CHECK(detail::conv2d_path(A, 5, 32, 3, 3, 1, 1, 1, 28, 28) == ConvPath::im2col);  // not thin
  CHECK(detail::conv2d_path(A, 32, 64, 5, 5, 1, 2, 1, 28, 28) == thick5x5);  // lenet's second
  CHECK(detail::conv2d_path(A, 5, 8, 5, 5, 1, 0, 1, 28, 28) == thick5x5);
  CHECK(detail::conv2d_path(A, 32, 32, 3, 3, 1, 1, 1, 28, 28) == ConvPath::winograd);
  CHECK(detail::conv2d_path(A, 3, 32, 3, 3, 2, 1, 1, 28, 28) == ConvPath::im2col);
  CHECK(detail::conv2d_path(D, 32, 64, 5, 5, 1, 2, 1, 28, 28) == ConvPath::direct);  // forced
  CHECK(detail::conv2d_path(D, 32, 64, 3, 3, 1, 1, 1, 28, 28) == ConvPath::direct);
  CHECK(detail::conv2d_path(D, 3, 32, 3, 3, 2, 1, 1, 28, 28) == ConvPath::im2col);  // not eligible
  CHECK(detail::conv2d_path(I, 1, 32, 5, 5, 1, 2, 1, 28, 28) == ConvPath::im2col);
  CHECK(detail::parse_conv_path_mode("direct") == D);
  CHECK_THROWS_WITH(detail::parse_conv_path_mode("fast"),
                    doctest::Contains("expected auto, im2col, winograd, direct or fourier"));
  CHECK(std::string(detail::conv_path_name(ConvPath::direct)) == "direct");
  CHECK(std::string(detail::conv_path_name(ConvPath::direct_data)) == "direct-data");
}

TEST_CASE("ops.conv_direct: conv2d on the direct path passes gradient checks") {
  using bnlab::testing::param;
  using Inputs = std::vector<Tensor>;
  detail::ScopedConvPathMode direct(detail::ConvPathMode::direct);
  // The input gradient of these convs is im2col's, the weight gradient the direct kernel's.
  for (DirectIsa isa : isas()) {
    ScopedIsa scoped(isa);
    CAPTURE(isa_name(isa));
    // 5x5 padding 2 over a width of 18 (a whole and a partial segment); 3x3 padding 1 with 3
    // input channels and 10 output channels (a partial block).
    CHECK_GRADIENTS("conv2d direct 5x5",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 1, 2); },
                    {param({2, 1, 6, 18}, 41), param({5, 1, 5, 5}, 42), param({5}, 43)});
    CHECK_GRADIENTS("conv2d direct 3x3",
                    [](const Inputs& in) { return conv2d(in[0], in[1], Tensor(), 1, 1); },
                    {param({2, 3, 5, 17}, 44), param({10, 3, 3, 3}, 45)});
  }
}

TEST_CASE("ops.conv_direct: conv2d on the direct-data path passes gradient checks") {
  using bnlab::testing::param;
  using Inputs = std::vector<Tensor>;
  // A 5x5 conv with 5 input channels takes direct-data in automatic mode when the CPU has
  // AVX-512F (under a lower cap im2col, and the check still holds): dx is the transposed direct
  // conv's.
  for (DirectIsa isa : isas()) {
    ScopedIsa scoped(isa);
    CAPTURE(isa_name(isa));
    CHECK_GRADIENTS("conv2d direct-data 5x5",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 1, 1); },
                    {param({2, 5, 6, 19}, 51), param({7, 5, 5, 5}, 52), param({7}, 53)});
  }
}

namespace {

struct Result {
  std::vector<float> out, dx, dw, db;
};

// conv2d (5x5, padding 2) forward and backward under `mode`.
Result run_conv(detail::ConvPathMode mode, const Tensor& x0, const Tensor& w0, const Tensor& b0,
                const Tensor& g) {
  detail::ScopedConvPathMode scoped(mode);
  Tensor x = x0.clone().set_requires_grad(), w = w0.clone().set_requires_grad(),
         b = b0.clone().set_requires_grad();
  Tensor out = conv2d(x, w, b, 1, 2);
  out.backward(g);
  return Result{out.to_vector(), x.grad().to_vector(), w.grad().to_vector(), b.grad().to_vector()};
}

bool close(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::abs(a[i] - b[i]) > tol * (1.0f + std::abs(b[i]))) return false;
  return true;
}

}  // namespace

TEST_CASE("ops.conv_direct: conv2d's direct paths and im2col agree") {
  Rng rng(8);
  SUBCASE("direct (3 input channels): forward and dw direct, dx im2col's") {
    const Tensor x = Tensor::normal({4, 3, 12, 21}, rng), w = Tensor::normal({9, 3, 5, 5}, rng),
                 b = Tensor::normal({9}, rng), g = Tensor::normal({4, 9, 12, 21}, rng);
    const Result direct = run_conv(detail::ConvPathMode::direct, x, w, b, g);
    const Result ref = run_conv(detail::ConvPathMode::im2col, x, w, b, g);
    CHECK(close(direct.out, ref.out, 1e-5f));
    CHECK(close(direct.dw, ref.dw, 1e-4f));
    CHECK(direct.dx == ref.dx);  // the same im2col code
    CHECK(direct.db == ref.db);  // the same bias code
  }
  SUBCASE("direct-data (12 input channels, automatic): forward and dx direct, dw im2col's") {
    if (detail::direct_conv_isa() != DirectIsa::avx512) return;  // automatic mode is im2col
    const Tensor x = Tensor::normal({3, 12, 9, 20}, rng), w = Tensor::normal({7, 12, 5, 5}, rng),
                 b = Tensor::normal({7}, rng), g = Tensor::normal({3, 7, 9, 20}, rng);
    REQUIRE(detail::conv2d_path(detail::ConvPathMode::automatic, 12, 7, 5, 5, 1, 2, 1, 9, 20) ==
            detail::ConvPath::direct_data);
    const Result direct = run_conv(detail::ConvPathMode::automatic, x, w, b, g);
    const Result ref = run_conv(detail::ConvPathMode::im2col, x, w, b, g);
    CHECK(close(direct.out, ref.out, 1e-5f));
    CHECK(close(direct.dx, ref.dx, 1e-4f));
    CHECK_FALSE(direct.dx == ref.dx);  // computed by the other code
    CHECK(direct.dw == ref.dw);        // the same im2col code
    CHECK(direct.db == ref.db);
  }
}

// conv2d's frequency-domain path (core/ops/conv_fourier.cpp): forward, dx and dw against a
// double-precision direct convolution within a stated error bound, on every instruction set this
// CPU has; finite-difference gradient checks; images split into several chunks; non-finite operands
// handed to im2col; bit-identical results for 1 and 2 threads; and the path rule.
#include <doctest/doctest.h>

#include <cfloat>
#include <cmath>
#include <cstring>

#include "conv_test_util.h"
#include "core/blas.h"
#include "core/ops/conv_direct.h"
#include "core/ops/conv_fourier.h"
#include "core/ops/conv_path.h"
#include "gradcheck.h"

using namespace bnlab;
using bnlab::detail::ConvPath;
using bnlab::detail::ConvPathMode;
using bnlab::detail::DirectIsa;
using bnlab::detail::ScopedConvPathMode;
using bnlab::testing::ConvResult;
using bnlab::testing::param;
using bnlab::testing::run_conv;
using bnlab::testing::same_bits;
using bnlab::testing::worst_ulps;

namespace {
using Inputs = std::vector<Tensor>;

// The error bound. Every output of a plane is a sum over all of the plane's frequencies, so its
// rounding error does not scale with its own window (an output whose window meets only padding is
// exactly 0 in the reference and a little off here) but with the plane's: each result r with exact
// value e must satisfy |r - e| <= kBoundUlps * FLT_EPSILON * m, where m is the largest magnitude
// (sum of |terms|) in r's plane: over the output plane (n, k) for y, the input plane (n, c) for
// dx, the kernel (k, c) for dw. Measured worst ratios over the cases below (g++ 12; AVX-512F,
// AVX2 and portable code alike): 0.8 for y, 1.1 for dx, 0.7 for dw; 8 leaves room across compilers
// and seeds, while a wrong twiddle fails by orders of magnitude (checked by flipping the sign of
// the forward's sine table, and by dropping the weight 2 of the inverse's paired columns).
constexpr double kBoundUlps = 8.0;

struct Reference {
  std::vector<double> y, y_mag, dx, dx_mag, dw, dw_mag;
};

// Exact (double) stride-1 convolution with padding p, its gradients for the output gradient g,
// and each result's plane magnitude (see kBoundUlps).
Reference reference(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g, int64_t p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = w.size(0);
  const int64_t kh = w.size(2), kw = w.size(3), Ho = H + 2 * p - kh + 1, Wo = W + 2 * p - kw + 1;
  Reference r;
  r.y.assign(static_cast<size_t>(N * K * Ho * Wo), 0.0);
  r.y_mag = r.y;
  r.dx.assign(static_cast<size_t>(N * C * H * W), 0.0);
  r.dx_mag = r.dx;
  r.dw.assign(static_cast<size_t>(K * C * kh * kw), 0.0);
  r.dw_mag = r.dw;
  const float *px = x.data(), *pw = w.data(), *pg = g.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const size_t o = static_cast<size_t>(((n * K + k) * Ho + oh) * Wo + ow);
          const double go = pg[o];
          if (b.defined()) {
            r.y[o] = b.data()[k];
            r.y_mag[o] = std::fabs(b.data()[k]);
          }
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t ih = oh - p + i, iw = ow - p + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const size_t xi = static_cast<size_t>(((n * C + c) * H + ih) * W + iw);
                const size_t wi = static_cast<size_t>(((k * C + c) * kh + i) * kw + j);
                const double xv = px[xi], wv = pw[wi];
                r.y[o] += wv * xv;
                r.y_mag[o] += std::fabs(wv * xv);
                r.dx[xi] += wv * go;
                r.dx_mag[xi] += std::fabs(wv * go);
                r.dw[wi] += go * xv;
                r.dw_mag[wi] += std::fabs(go * xv);
              }
        }
  auto plane_max = [](std::vector<double>& mag, size_t plane) {
    for (size_t a = 0; a < mag.size(); a += plane) {
      const auto first = mag.begin() + static_cast<std::ptrdiff_t>(a);
      const double top = *std::max_element(first, first + static_cast<std::ptrdiff_t>(plane));
      std::fill_n(first, plane, top);
    }
  };
  plane_max(r.y_mag, static_cast<size_t>(Ho * Wo));
  plane_max(r.dx_mag, static_cast<size_t>(H * W));
  plane_max(r.dw_mag, static_cast<size_t>(kh * kw));
  return r;
}

// The instruction sets this CPU runs, best first.
std::vector<DirectIsa> isas() {
  const DirectIsa best = detail::direct_conv_isa();
  std::vector<DirectIsa> out{best};
  if (best == DirectIsa::avx512) out.push_back(DirectIsa::avx2);
  if (best != DirectIsa::portable) out.push_back(DirectIsa::portable);
  return out;
}

struct Case {
  Shape x;
  int64_t K, kh, kw, padding;
  bool bias;
};

// Checks one case against the reference on every instruction set; returns the worst ratios.
void check_case(const Case& c) {
  CAPTURE(to_string(c.x));
  CAPTURE(c.K);
  CAPTURE(c.kh);
  CAPTURE(c.kw);
  CAPTURE(c.padding);
  REQUIRE(detail::conv2d_fourier_eligible(c.x[2], c.x[3], c.kh, c.kw, 1, c.padding, 1));
  const int64_t Ho = c.x[2] + 2 * c.padding - c.kh + 1, Wo = c.x[3] + 2 * c.padding - c.kw + 1;
  const Tensor x = param(c.x, 1);
  const Tensor w = param({c.K, c.x[1], c.kh, c.kw}, 2);
  const Tensor b = c.bias ? param({c.K}, 3) : Tensor();
  const Tensor g = param({c.x[0], c.K, Ho, Wo}, 4).detach();
  const Reference ref = reference(x, w, b, g, c.padding);
  for (const DirectIsa isa : isas()) {
    CAPTURE(static_cast<int>(isa));
    const DirectIsa before = detail::limit_direct_conv_isa(isa);
    const ConvResult got = run_conv(ConvPathMode::fourier, x, w, b, g, c.padding);
    detail::limit_direct_conv_isa(before);
    const double y_ulps = worst_ulps(got.y, ref.y, ref.y_mag);
    const double dx_ulps = worst_ulps(got.dx, ref.dx, ref.dx_mag);
    const double dw_ulps = worst_ulps(got.dw, ref.dw, ref.dw_mag);
    MESSAGE("worst error / (FLT_EPSILON * plane magnitude): y ", y_ulps, ", dx ", dx_ulps, ", dw ",
            dw_ulps);
    CHECK(y_ulps <= kBoundUlps);
    CHECK(dx_ulps <= kBoundUlps);
    CHECK(dw_ulps <= kBoundUlps);
    if (c.bias) CHECK(same_bits(got.db, run_conv(ConvPathMode::im2col, x, w, b, g, c.padding).db));
  }
}

}  // namespace

TEST_CASE("ops.conv fourier: forward, dx and dw match a double-precision direct convolution") {
  // lenet's second conv (5x5, padding 2, 14x14: an 18x18 grid), odd and even grid sides, no
  // padding, more padding than the kernel needs, non-square kernels and images, a 1x1 kernel,
  // the largest grid (32 x 31) and a 1x1 image; then transform groups (16 planes) that are full,
  // past half full and in two parts: 19 images (dX's and the forward's groups), 11 and 16
  // channels (dW's).
  for (const Case& c :
       {Case{{2, 3, 14, 14}, 4, 5, 5, 2, true}, Case{{3, 2, 7, 9}, 3, 3, 3, 1, true},
        Case{{2, 2, 8, 8}, 3, 5, 5, 0, false}, Case{{1, 3, 5, 6}, 2, 3, 3, 3, true},
        Case{{2, 2, 9, 13}, 3, 5, 3, 2, true}, Case{{2, 3, 6, 11}, 2, 2, 4, 1, false},
        Case{{2, 2, 4, 5}, 3, 1, 1, 0, true}, Case{{1, 2, 16, 15}, 2, 7, 16, 8, true},
        Case{{2, 1, 1, 1}, 2, 3, 3, 1, true}, Case{{19, 2, 5, 7}, 3, 3, 3, 1, true},
        Case{{2, 11, 6, 6}, 2, 3, 3, 1, false}, Case{{1, 16, 9, 5}, 2, 3, 5, 2, true}}) {
    check_case(c);
  }
}

TEST_CASE("ops.conv fourier: gradient checks through conv2d") {
  // conv2d is linear in x and in w separately, so a large step has no truncation error and keeps
  // the forward's rounding noise divided by 2h below the tolerances.
  GradcheckOptions opts;
  opts.step = 0.1;
  ScopedConvPathMode scoped(ConvPathMode::fourier);
  CHECK_GRADIENTS(
      "conv2d fourier", [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 1, 2); },
      {param({2, 3, 6, 7}, 11), param({4, 3, 5, 5}, 12), param({4}, 13)}, opts);
  CHECK_GRADIENTS(
      "conv2d fourier no bias, odd grid",
      [](const Inputs& in) { return conv2d(in[0], in[1], Tensor(), 1, 1); },
      {param({1, 2, 9, 6}, 14), param({3, 2, 3, 2}, 15)}, opts);
}

TEST_CASE("ops.conv fourier: batches of several chunks of images") {
  // Chunks of 3 images: a batch of 7 takes three, the last one partial; dW sums over the chunks.
  const int64_t before = detail::limit_fourier_chunk(3);
  check_case(Case{{7, 3, 6, 5}, 4, 3, 3, 1, true});
  detail::limit_fourier_chunk(before);
}

TEST_CASE("ops.conv fourier: a NaN or inf in x, w or dout gives im2col's results, bit for bit") {
  // Every frequency of a plane sums all its pixels, so one non-finite pixel would make every output
  // of its image non-finite; conv2d hands such operands to im2col instead.
  bnlab::testing::check_nonfinite_as_im2col(ConvPathMode::fourier, {3, 2, 10, 10}, {3, 2, 5, 5}, 2);
}

TEST_CASE("ops.conv fourier: operands near the float range give the im2col results, not inf") {
  // A spectrum sums a whole plane and its products a whole grid again: bounded like Winograd,
  // though at this scale its results differed from im2col's only by rounding before.
  bnlab::testing::check_huge_as_im2col(ConvPathMode::fourier, {3, 2, 10, 10}, {3, 2, 5, 5}, 2);
}

TEST_CASE("ops.conv fourier: results are bit-identical for 1 and 2 threads") {
  // Large enough to run the parallel regions.
  const Tensor x = param({8, 16, 14, 14}, 31);
  const Tensor w = param({16, 16, 5, 5}, 32);
  const Tensor b = param({16}, 33);
  const Tensor g = param({8, 16, 14, 14}, 34).detach();
  const int before = num_threads();
  set_num_threads(1);
  const ConvResult one = run_conv(ConvPathMode::fourier, x, w, b, g, 2);
  set_num_threads(2);
  const ConvResult two = run_conv(ConvPathMode::fourier, x, w, b, g, 2);
  set_num_threads(before);
  CHECK(same_bits(one.y, two.y));
  CHECK(same_bits(one.dx, two.dx));
  CHECK(same_bits(one.dw, two.dw));
  CHECK(same_bits(one.db, two.db));
}

TEST_CASE("ops.conv fourier: eligibility and BNLAB_CONV=fourier") {
  using detail::conv2d_fourier_eligible;
  CHECK(conv2d_fourier_eligible(14, 14, 5, 5, 1, 2, 1));        // lenet's second conv
  CHECK(conv2d_fourier_eligible(16, 15, 7, 16, 1, 8, 1));       // the largest grid, 32 x 31
  CHECK_FALSE(conv2d_fourier_eligible(28, 28, 5, 5, 1, 2, 1));  // rows wider than 16
  CHECK_FALSE(conv2d_fourier_eligible(16, 16, 3, 3, 1, 8, 1));  // grid 32 columns
  CHECK_FALSE(conv2d_fourier_eligible(14, 14, 5, 5, 2, 2, 1));  // stride 2
  CHECK_FALSE(conv2d_fourier_eligible(14, 14, 5, 5, 1, 2, 2));  // grouped
  CHECK_FALSE(conv2d_fourier_eligible(14, 14, 1, 1, 1, 2, 1));  // output rows of 18
  CHECK(detail::parse_conv_path_mode("fourier") == ConvPathMode::fourier);
  CHECK(std::string(detail::conv_path_name(ConvPath::fourier)) == "fourier");
  const auto F = ConvPathMode::fourier;
  CHECK(detail::conv2d_path(F, 32, 64, 5, 5, 1, 2, 1, 14, 14) == ConvPath::fourier);
  CHECK(detail::conv2d_path(F, 32, 64, 5, 5, 1, 2, 1, 28, 28) == ConvPath::im2col);
  // The automatic rule: 5x5 and larger kernels on small images past the thin-layer limit, with
  // AVX2 or AVX-512F; 3x3 stays Winograd's or im2col's, thin first layers the direct kernels'.
  const auto A = ConvPathMode::automatic;
  const bool vector_isa = detail::direct_conv_isa() != DirectIsa::portable;
  const ConvPath five = vector_isa ? ConvPath::fourier : ConvPath::im2col;
  CHECK(detail::conv2d_path(A, 32, 64, 5, 5, 1, 2, 1, 14, 14) == five);  // lenet's second conv
  CHECK(detail::conv2d_path(A, 8, 16, 5, 5, 1, 2, 1, 14, 14) == five);
  CHECK(detail::conv2d_path(A, 16, 16, 7, 7, 1, 3, 1, 8, 8) == five);
  CHECK(detail::conv2d_path(A, 32, 32, 3, 3, 1, 1, 1, 8, 8) == ConvPath::winograd);
  CHECK(detail::conv2d_path(A, 16, 16, 3, 3, 1, 1, 1, 8, 8) == ConvPath::im2col);
  CHECK(detail::conv2d_path(A, 1, 32, 5, 5, 1, 2, 1, 14, 14) ==
        (vector_isa ? ConvPath::direct : ConvPath::im2col));
  const DirectIsa before = detail::limit_direct_conv_isa(DirectIsa::portable);
  CHECK(detail::conv2d_path(A, 32, 64, 5, 5, 1, 2, 1, 14, 14) == ConvPath::im2col);
  detail::limit_direct_conv_isa(before);
}

TEST_CASE(
    "ops.conv fourier: the backward gives the same bits with or without the forward's spectra") {
  // conv2d's backward reuses the spectra its forward kept (U, and X's when the batch was one
  // chunk); without them it transforms w and x again, the same computation.
  const detail::FourierConvShape s{3, 4, 9, 7, 5, 5, 3, 2, 9, 9};
  const Tensor x = param({3, 4, 9, 7}, 61), w = param({5, 4, 5, 3}, 62);
  const Tensor g = param({3, 5, 9, 9}, 63);
  for (const int64_t cap : {int64_t{0}, int64_t{2}}) {  // one chunk; two (X's spectra not kept)
    CAPTURE(cap);
    const int64_t before = detail::limit_fourier_chunk(cap);
    std::vector<float> y(3 * 5 * 81), dx_kept(3 * 4 * 63), dw_kept(5 * 4 * 15, 0.5f);
    std::vector<float> dx_again(dx_kept.size()), dw_again(dw_kept);
    const auto saved =
        detail::fourier_conv2d_forward(y.data(), x.data(), w.data(), nullptr, s, false, true);
    REQUIRE(saved != nullptr);
    CHECK(detail::fourier_conv2d_forward(y.data(), x.data(), w.data(), nullptr, s) == nullptr);
    detail::fourier_conv2d_backward(dx_kept.data(), true, dw_kept.data(), g.data(), x.data(),
                                    w.data(), s, saved.get());
    detail::fourier_conv2d_backward(dx_again.data(), true, dw_again.data(), g.data(), x.data(),
                                    w.data(), s);
    detail::limit_fourier_chunk(before);
    CHECK(same_bits(dx_kept, dx_again));
    CHECK(same_bits(dw_kept, dw_again));
  }
}

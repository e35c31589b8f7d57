// conv2d's Winograd F(4x4, 3x3) path (core/ops/conv_winograd.cpp): forward, dx and dw against a
// double-precision direct convolution within a stated error bound, finite-difference gradient
// checks, non-finite operands handed to im2col, bit-identical results for 1 and 2 threads, and the
// path rule with its BNLAB_CONV override.
#include <doctest/doctest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "conv_test_util.h"
#include "core/blas.h"
#include "core/ops/conv_path.h"
#include "core/ops/conv_winograd.h"
#include "gradcheck.h"
#include "memory_limit.h"

using namespace bnlab;
using bnlab::detail::ConvPath;
using bnlab::detail::ConvPathMode;
using bnlab::detail::ScopedConvPathMode;
using bnlab::testing::ConvResult;
using bnlab::testing::param;
using bnlab::testing::run_conv;
using bnlab::testing::same_bits;
using bnlab::testing::worst_ulps;

namespace {
using Inputs = std::vector<Tensor>;

// The error bound: F(4x4, 3x3) in float mixes each output's 6x6 input patch with transform
// weights up to 5 (B^T), 8 (A^T) and 1/24 (G), so it loses a few more bits than a direct sum.
// Each result r with exact value e and magnitude m must satisfy
// |r - e| <= kBoundUlps * FLT_EPSILON * m, where m is the sum of |terms| r is made of: sum |w||x|
// over the output's window plus |b| for y, sum |w||dy| for dx, and for dw the sum of |dy||x| over
// all 9 taps of the (k, c) pair (see reference()). Measured worst ratios over the cases below
// (g++ 12, AVX-512): 21 for y, 13 for dx, 0.5 for dw; 64 leaves room across
// compilers and seeds, while a wrong transform entry fails by orders of magnitude (checked once by
// breaking one entry of B^T, A^T and G in turn). That window bound holds for operands of one size
// (these cases); the bound for any operands is the tile's (tile_magnitudes below).
constexpr double kBoundUlps = 64.0;

// Exact (double) 3x3, stride-1, padding-1 convolution y = conv(x, w) + b, its gradients for the
// output gradient g, and each result's magnitude (the sum of the absolute values of its terms).
struct Reference {
  std::vector<double> y, y_mag, dx, dx_mag, dw, dw_mag;
};

Reference reference(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = w.size(0);
  Reference r;
  r.y.assign(static_cast<size_t>(N * K * H * W), 0.0);
  r.y_mag = r.y;
  r.dx.assign(static_cast<size_t>(N * C * H * W), 0.0);
  r.dx_mag = r.dx;
  r.dw.assign(static_cast<size_t>(K * C * 9), 0.0);
  r.dw_mag = r.dw;
  const float *px = x.data(), *pw = w.data(), *pg = g.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t oh = 0; oh < H; ++oh)
        for (int64_t ow = 0; ow < W; ++ow) {
          const size_t o = static_cast<size_t>(((n * K + k) * H + oh) * W + ow);
          const double go = pg[o];
          if (b.defined()) {
            r.y[o] = b.data()[k];
            r.y_mag[o] = std::fabs(b.data()[k]);
          }
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < 3; ++i)
              for (int64_t j = 0; j < 3; ++j) {
                const int64_t ih = oh - 1 + i, iw = ow - 1 + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const size_t xi = static_cast<size_t>(((n * C + c) * H + ih) * W + iw);
                const size_t wi = static_cast<size_t>(((k * C + c) * 3 + i) * 3 + j);
                const double xv = px[xi], wv = pw[wi];
                r.y[o] += wv * xv;
                r.y_mag[o] += std::fabs(wv * xv);
                r.dx[xi] += wv * go;
                r.dx_mag[xi] += std::fabs(wv * go);
                r.dw[wi] += go * xv;
                r.dw_mag[wi] += std::fabs(go * xv);
              }
        }
  // A weight's gradient comes out of transforms mixing the pair's 9 taps, so its rounding error
  // scales with all of them (a tap that never meets a real pixel has exact gradient 0 but picks
  // up rounding from its neighbours): each tap's magnitude is the sum over the pair's taps.
  for (size_t kc = 0; kc < r.dw_mag.size(); kc += 9) {
    double total = 0.0;
    for (size_t t = 0; t < 9; ++t) total += r.dw_mag[kc + t];
    std::fill_n(r.dw_mag.begin() + static_cast<std::ptrdiff_t>(kc), 9, total);
  }
  return r;
}

}  // namespace

TEST_CASE("ops.conv winograd: forward, dx and dw match a double-precision direct convolution") {
  struct Case {
    Shape x;
    int64_t K;
    bool bias;
  };
  // H, W not multiples of 4 (cropped edge tiles), a 1x1 image, several images per block (8x8,
  // N = 40), and several blocks per image with a partial lane group (21x37 at 64/48 channels).
  for (const Case& c : {Case{{3, 2, 1, 1}, 3, true}, Case{{2, 3, 5, 7}, 4, true},
                        Case{{2, 5, 8, 8}, 6, false}, Case{{3, 7, 13, 6}, 5, true},
                        Case{{40, 16, 8, 8}, 16, false}, Case{{1, 64, 21, 37}, 48, true}}) {
    CAPTURE(to_string(c.x));
    CAPTURE(c.K);
    CAPTURE(c.bias);
    const Tensor x = param(c.x, 1);
    const Tensor w = param({c.K, c.x[1], 3, 3}, 2);
    const Tensor b = c.bias ? param({c.K}, 3) : Tensor();
    const Tensor g = param({c.x[0], c.K, c.x[2], c.x[3]}, 4).detach();
    const Reference ref = reference(x, w, b, g);
    // Both builds of the path: with the vector parts (AVX-512F: transforms, pre-packed GEMMs,
    // one-panel blocks; AVX2: the patch gather) where the CPU has them, and the portable one.
    for (const bool vector : {true, false}) {
      CAPTURE(vector);
      detail::allow_winograd_vector_parts(vector);
      const ConvResult got = run_conv(ConvPathMode::winograd, x, w, b, g, 1);
      detail::allow_winograd_vector_parts(true);
      const double y_ulps = worst_ulps(got.y, ref.y, ref.y_mag);
      const double dx_ulps = worst_ulps(got.dx, ref.dx, ref.dx_mag);
      const double dw_ulps = worst_ulps(got.dw, ref.dw, ref.dw_mag);
      MESSAGE("worst error / (FLT_EPSILON * magnitude): y ", y_ulps, ", dx ", dx_ulps, ", dw ",
              dw_ulps);
      CHECK(y_ulps <= kBoundUlps);
      CHECK(dx_ulps <= kBoundUlps);
      CHECK(dw_ulps <= kBoundUlps);
      // The bias gradient is the shared code of both paths: bit-identical to im2col's.
      if (c.bias) CHECK(same_bits(got.db, run_conv(ConvPathMode::im2col, x, w, b, g, 1).db));
    }
  }
}

// The bound that holds whatever the operands' range: a tile's outputs mix its whole 6x6 input
// patch, so their error scales with the patch, not with each output's 3x3 window. For y at a
// pixel of tile t: |b| + sum over c of (sum of |x| over t's patch) * (sum of |w[k][c]| over the
// taps). For dx at a pixel: the sum over the tiles whose patch holds it of sum over k of (sum of
// |dy| over the tile) * (sum of |w[k][c]|).
struct TileMagnitudes {
  std::vector<double> y, dx;
};

TileMagnitudes tile_magnitudes(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = w.size(0);
  const int64_t TH = (H + 3) / 4, TW = (W + 3) / 4;
  std::vector<double> wsum(static_cast<size_t>(K * C), 0.0);
  for (int64_t kc = 0; kc < K * C; ++kc)
    for (int64_t t = 0; t < 9; ++t)
      wsum[static_cast<size_t>(kc)] += std::fabs(w.data()[kc * 9 + t]);
  // Sum of |v| of plane p of a [P, H, W] tensor over rows [r0, r1) and columns [c0, c1), clipped.
  auto box = [&](const float* v, int64_t p, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    double sum = 0.0;
    for (int64_t r = std::max<int64_t>(r0, 0); r < std::min(r1, H); ++r)
      for (int64_t c = std::max<int64_t>(c0, 0); c < std::min(c1, W); ++c)
        sum += std::fabs(v[(p * H + r) * W + c]);
    return sum;
  };
  TileMagnitudes m;
  m.y.assign(static_cast<size_t>(N * K * H * W), 0.0);
  m.dx.assign(static_cast<size_t>(N * C * H * W), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ty = 0; ty < TH; ++ty)
      for (int64_t tx = 0; tx < TW; ++tx) {
        const int64_t r0 = 4 * ty - 1, c0 = 4 * tx - 1;  // the patch's corner
        std::vector<double> patch(static_cast<size_t>(C)), tile(static_cast<size_t>(K));
        for (int64_t c = 0; c < C; ++c)
          patch[static_cast<size_t>(c)] = box(x.data(), n * C + c, r0, r0 + 6, c0, c0 + 6);
        for (int64_t k = 0; k < K; ++k)
          tile[static_cast<size_t>(k)] = box(g.data(), n * K + k, r0 + 1, r0 + 5, c0 + 1, c0 + 5);
        for (int64_t k = 0; k < K; ++k) {
          double sum = b.defined() ? std::fabs(b.data()[k]) : 0.0;
          for (int64_t c = 0; c < C; ++c)
            sum += patch[static_cast<size_t>(c)] * wsum[static_cast<size_t>(k * C + c)];
          for (int64_t r = 4 * ty; r < std::min(4 * ty + 4, H); ++r)
            for (int64_t q = 4 * tx; q < std::min(4 * tx + 4, W); ++q)
              m.y[static_cast<size_t>(((n * K + k) * H + r) * W + q)] = sum;
        }
        for (int64_t c = 0; c < C; ++c) {
          double sum = 0.0;
          for (int64_t k = 0; k < K; ++k)
            sum += tile[static_cast<size_t>(k)] * wsum[static_cast<size_t>(k * C + c)];
          for (int64_t r = std::max<int64_t>(r0, 0); r < std::min(r0 + 6, H); ++r)
            for (int64_t q = std::max<int64_t>(c0, 0); q < std::min(c0 + 6, W); ++q)
              m.dx[static_cast<size_t>(((n * C + c) * H + r) * W + q)] += sum;
        }
      }
  return m;
}

TEST_CASE("ops.conv winograd: one large value moves only its tiles, within the tile bound") {
  // A value 1e4 (then 1e6) times the others, in x or in dy: every output of a tile whose patch
  // holds it may be off by up to kBoundUlps eps times the tile's magnitude, far more than its
  // own window's (at 1e6 some change sign); every other output keeps the window bound.
  const Tensor x0 = param({1, 8, 12, 12}, 51);
  const Tensor w = param({8, 8, 3, 3}, 52);
  const Tensor b = param({8}, 53);
  const Tensor g0 = param({1, 8, 12, 12}, 54).detach();
  for (const float large : {1e4f, 1e6f}) {
    for (const bool in_x : {true, false}) {
      CAPTURE(large);
      CAPTURE(in_x);
      const Tensor x = x0.detach().clone();
      const Tensor g = g0.clone();
      (in_x ? x : g).data()[(0 * 12 + 5) * 12 + 6] = large;  // channel 0, row 5, column 6
      const Reference ref = reference(x, w, b, g);
      const TileMagnitudes tiles = tile_magnitudes(x, w, b, g);
      const ConvResult got = run_conv(ConvPathMode::winograd, x, w, b, g, 1);
      const double y_tile_ulps = worst_ulps(got.y, ref.y, tiles.y);
      const double dx_tile_ulps = worst_ulps(got.dx, ref.dx, tiles.dx);
      MESSAGE("worst error / (FLT_EPSILON * tile magnitude): y ", y_tile_ulps, ", dx ",
              dx_tile_ulps);
      CHECK(y_tile_ulps <= kBoundUlps);
      CHECK(dx_tile_ulps <= kBoundUlps);
      // Away from the large value's tiles: the window bound. Rows 5 and column 6 lie in the
      // patches of tile rows 1 (rows 3..8) and 1 (columns 3..8) only, so for y every tile but
      // (1, 1) is clean; for dx, pixels outside the patches of tile (1, 1) (rows and columns
      // 3..8) are.
      std::vector<float> y_far, dx_far;
      std::vector<double> y_ref, y_mag, dx_ref, dx_mag;
      for (size_t i = 0; i < got.y.size(); ++i) {
        const int64_t r = static_cast<int64_t>(i) / 12 % 12, q = static_cast<int64_t>(i) % 12;
        const bool y_near = in_x && r / 4 == 1 && q / 4 == 1;
        if (!y_near) {
          y_far.push_back(got.y[i]);
          y_ref.push_back(ref.y[i]);
          y_mag.push_back(ref.y_mag[i]);
        }
        const bool dx_near = !in_x && r >= 3 && r <= 8 && q >= 3 && q <= 8;
        if (!dx_near) {
          dx_far.push_back(got.dx[i]);
          dx_ref.push_back(ref.dx[i]);
          dx_mag.push_back(ref.dx_mag[i]);
        }
      }
      CHECK(worst_ulps(y_far, y_ref, y_mag) <= kBoundUlps);
      CHECK(worst_ulps(dx_far, dx_ref, dx_mag) <= kBoundUlps);
      // And the window bound alone does not hold near it (why the stated bound is the tile's).
      CHECK(worst_ulps(in_x ? got.y : got.dx, in_x ? ref.y : ref.dx,
                       in_x ? ref.y_mag : ref.dx_mag) > kBoundUlps);
    }
  }
}

TEST_CASE("ops.conv winograd: gradient checks through conv2d") {
  // conv2d is linear in x and in w separately, so a large step has no truncation error, and it
  // keeps the forward's rounding noise (larger on this path, see kBoundUlps) divided by 2h below
  // the tolerances; with the default h = 1e-3 that noise alone reaches about 4 %.
  GradcheckOptions opts;
  opts.step = 0.1;
  ScopedConvPathMode scoped(ConvPathMode::winograd);
  CHECK_GRADIENTS(
      "conv2d winograd", [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 1, 1); },
      {param({2, 3, 5, 7}, 11), param({4, 3, 3, 3}, 12), param({4}, 13)}, opts);
  CHECK_GRADIENTS(
      "conv2d winograd no bias",
      [](const Inputs& in) { return conv2d(in[0], in[1], Tensor(), 1, 1); },
      {param({1, 2, 9, 6}, 14), param({3, 2, 3, 3}, 15)}, opts);
}

TEST_CASE("ops.conv winograd: a NaN or inf in x, w or dout gives im2col's results, bit for bit") {
  // Through the transforms one non-finite cell of a 6x6 patch reaches the whole 4x4 output tile,
  // and +inf meeting -inf makes NaN; conv2d hands such operands to im2col instead.
  bnlab::testing::check_nonfinite_as_im2col(ConvPathMode::winograd, {2, 3, 9, 10}, {4, 3, 3, 3}, 1);
}

TEST_CASE("ops.conv winograd: operands near the float range give the im2col results, not inf") {
  // The transforms' gains (up to 19 x 19 in A^T) overflowed dw before im2col's sums did.
  bnlab::testing::check_huge_as_im2col(ConvPathMode::winograd, {2, 3, 9, 10}, {4, 3, 3, 3}, 1);
}

TEST_CASE("ops.conv winograd: results are bit-identical for 1 and 2 threads") {
  // Large enough to run the parallel region, with several work units and dW slots.
  const Tensor x = param({8, 32, 16, 16}, 31);
  const Tensor w = param({32, 32, 3, 3}, 32);
  const Tensor b = param({32}, 33);
  const Tensor g = param({8, 32, 16, 16}, 34).detach();
  const int before = num_threads();
  set_num_threads(1);
  const ConvResult one = run_conv(ConvPathMode::winograd, x, w, b, g, 1);
  set_num_threads(2);
  const ConvResult two = run_conv(ConvPathMode::winograd, x, w, b, g, 1);
  set_num_threads(before);
  CHECK(same_bits(one.y, two.y));
  CHECK(same_bits(one.dx, two.dx));
  CHECK(same_bits(one.dw, two.dw));
  CHECK(same_bits(one.db, two.db));
}

TEST_CASE(
    "ops.conv winograd: the AVX-512F or AVX2 parts and packed GEMMs give the portable y and dx") {
  // Shapes whose lane groups mix interior and border patches, span image rows and images, and end
  // with a partial group (lanes past the last tile), with sizes not multiples of 4. On an AVX2
  // CPU the vector part is the patch gather.
  // Images 4 and more tiles wide scatter their patch gradients with AVX-512F, in strips of a tile
  // row's lanes (7 x 18: five tiles a row, strips split across lane groups; 16 x 13).
  for (Shape shape :
       {Shape{3, 2, 13, 6}, Shape{2, 3, 32, 32}, Shape{5, 2, 8, 8}, Shape{1, 2, 21, 37},
        Shape{2, 1, 1, 1}, Shape{3, 2, 7, 18}, Shape{2, 2, 16, 13}}) {
    CAPTURE(shape);
    const Tensor x = param(shape, 41);
    const Tensor w = param({4, shape[1], 3, 3}, 42);
    const Tensor b = param({4}, 43);
    const Tensor g = param({shape[0], 4, shape[2], shape[3]}, 44).detach();
    detail::allow_winograd_vector_parts(false);
    const ConvResult portable = run_conv(ConvPathMode::winograd, x, w, b, g, 1);
    detail::allow_winograd_vector_parts(true);
    const ConvResult dispatched = run_conv(ConvPathMode::winograd, x, w, b, g, 1);
    // Each output and input-gradient element is one tile's transform of sums over channels, the
    // same sums in the same order whatever the block size, so the bits agree. dW sums over tiles
    // block by block, and the AVX-512F build's blocks are one GEMM panel (32 tiles): its
    // rounding may differ, within the accuracy bound.
    CHECK(same_bits(portable.y, dispatched.y));
    CHECK(same_bits(portable.dx, dispatched.dx));
    const Reference ref = reference(x, w, b, g);
    CHECK(worst_ulps(portable.dw, ref.dw, ref.dw_mag) <= kBoundUlps);
    CHECK(worst_ulps(dispatched.dw, ref.dw, ref.dw_mag) <= kBoundUlps);
  }
}

TEST_CASE("ops.conv winograd: a fresh dx holds what adding into zeros gives, whatever it held") {
  // A fresh dx (grad_target's unfilled buffer) is zeroed unit by unit inside the backward, not
  // before it. Starting from NaN, every cell must be written, with the bits adding into a zeroed
  // dx gives (-0 included). Shapes: cropped edge tiles, a 1x1 and a one-row image, several
  // images per block, several blocks per image with a partial lane group.
  for (const Shape& shape : {Shape{3, 2, 13, 6}, Shape{2, 3, 5, 7}, Shape{2, 2, 1, 1},
                             Shape{2, 2, 1, 9}, Shape{40, 4, 8, 8}, Shape{1, 5, 21, 37}}) {
    CAPTURE(shape);
    const int64_t N = shape[0], C = shape[1], H = shape[2], W = shape[3], K = 3;
    const Tensor x = param(shape, 51);
    const Tensor w = param({K, C, 3, 3}, 52);
    Tensor g = param({N, K, H, W}, 53).detach();
    // Image 0's gradient all -0 (its patch gradients then hold -0 cells), some -0 elsewhere.
    for (int64_t i = 0; i < g.numel(); i += i < K * H * W ? 1 : 7) g.data()[i] = -0.0f;
    const detail::WinogradShape s{N, C, H, W, K};
    for (const bool vector : {true, false}) {
      CAPTURE(vector);
      detail::allow_winograd_vector_parts(vector);
      std::vector<float> fresh(static_cast<size_t>(x.numel()), std::nanf(""));
      std::vector<float> zeroed(static_cast<size_t>(x.numel()), 0.0f);
      detail::winograd_conv2d_backward(fresh.data(), true, nullptr, g.data(), x.data(), w.data(),
                                       s);
      detail::winograd_conv2d_backward(zeroed.data(), false, nullptr, g.data(), x.data(), w.data(),
                                       s);
      detail::allow_winograd_vector_parts(true);
      CHECK(std::memcmp(fresh.data(), zeroed.data(), fresh.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("ops.conv winograd: the path rule and BNLAB_CONV") {
  using detail::conv2d_path;
  const auto A = ConvPathMode::automatic, I = ConvPathMode::im2col, Wg = ConvPathMode::winograd;
  SUBCASE("eligible: 3x3, stride 1, padding 1, groups 1; automatic mode needs 32+ channels") {
    CHECK(conv2d_path(A, 32, 32, 3, 3, 1, 1, 1, 16, 16) == ConvPath::winograd);
    CHECK(conv2d_path(A, 128, 64, 3, 3, 1, 1, 1, 16, 16) == ConvPath::winograd);
    CHECK(conv2d_path(A, 16, 16, 3, 3, 1, 1, 1, 16, 16) == ConvPath::im2col);
    CHECK(conv2d_path(A, 16, 64, 3, 3, 1, 1, 1, 16, 16) == ConvPath::im2col);
    CHECK(conv2d_path(A, 64, 16, 3, 3, 1, 1, 1, 16, 16) == ConvPath::im2col);
    CHECK(conv2d_path(A, 3, 32, 3, 3, 1, 1, 1, 16, 16) !=
          ConvPath::winograd);  // cifar-cnn's first layer
    CHECK(conv2d_path(A, 32, 8, 3, 3, 1, 1, 1, 16, 16) == ConvPath::im2col);
    CHECK(conv2d_path(A, 32, 32, 3, 3, 2, 1, 1, 16, 16) == ConvPath::im2col);
    CHECK(conv2d_path(A, 32, 32, 3, 3, 1, 0, 1, 16, 16) == ConvPath::im2col);
    CHECK(conv2d_path(A, 32, 32, 3, 3, 1, 1, 2, 16, 16) == ConvPath::im2col);
    CHECK(conv2d_path(A, 32, 32, 5, 5, 1, 1, 1, 16, 16) != ConvPath::winograd);
    CHECK(conv2d_path(A, 32, 32, 3, 1, 1, 1, 1, 16, 16) == ConvPath::im2col);
  }
  SUBCASE("forced modes") {
    CHECK(conv2d_path(I, 32, 32, 3, 3, 1, 1, 1, 16, 16) == ConvPath::im2col);
    CHECK(conv2d_path(Wg, 3, 32, 3, 3, 1, 1, 1, 16, 16) == ConvPath::winograd);
    CHECK(conv2d_path(Wg, 32, 32, 3, 3, 2, 1, 1, 16, 16) == ConvPath::im2col);  // not eligible
    CHECK(std::string(detail::conv_path_name(ConvPath::winograd)) == "winograd");
    CHECK(std::string(detail::conv_path_name(ConvPath::im2col)) == "im2col");
  }
  SUBCASE("parsing BNLAB_CONV") {
    CHECK(detail::parse_conv_path_mode(nullptr) == A);
    CHECK(detail::parse_conv_path_mode("") == A);
    CHECK(detail::parse_conv_path_mode("auto") == A);
    CHECK(detail::parse_conv_path_mode("im2col") == I);
    CHECK(detail::parse_conv_path_mode("winograd") == Wg);
    CHECK_THROWS_WITH_AS(detail::parse_conv_path_mode("Winograd"), doctest::Contains("BNLAB_CONV"),
                         std::exception);
    CHECK_THROWS_WITH_AS(detail::parse_conv_path_mode("fast"),
                         doctest::Contains("auto, im2col, winograd, direct or fourier"),
                         std::exception);
  }
  SUBCASE("conv2d follows the rule: automatic mode gives the chosen path's exact bits") {
    const Tensor g32 = param({2, 32, 6, 9}, 44).detach();
    const Tensor x32 = param({2, 32, 6, 9}, 41), w32 = param({32, 32, 3, 3}, 42);
    const Tensor b32 = param({32}, 43);
    const ConvResult auto32 = run_conv(A, x32, w32, b32, g32, 1);
    const ConvResult win32 = run_conv(Wg, x32, w32, b32, g32, 1);
    const ConvResult col32 = run_conv(I, x32, w32, b32, g32, 1);
    CHECK(same_bits(auto32.y, win32.y));
    CHECK(same_bits(auto32.dx, win32.dx));
    CHECK(same_bits(auto32.dw, win32.dw));
    CHECK_FALSE(same_bits(win32.y, col32.y));  // the two paths are told apart by their bits
    const Tensor g3 = param({2, 32, 6, 9}, 48).detach();
    const Tensor x3 = param({2, 3, 6, 9}, 45), w3 = param({32, 3, 3, 3}, 46);
    // 3 input channels: not Winograd but the thin-layer rule's path (tests/core/
    // test_ops_conv_direct.cpp tests which).
    const ConvPathMode thin = conv2d_path(A, 3, 32, 3, 3, 1, 1, 1, 16, 16) == ConvPath::direct
                                  ? ConvPathMode::direct
                                  : ConvPathMode::im2col;
    const ConvResult auto3 = run_conv(A, x3, w3, Tensor(), g3, 1);
    const ConvResult thin3 = run_conv(thin, x3, w3, Tensor(), g3, 1);
    const ConvResult win3 = run_conv(Wg, x3, w3, Tensor(), g3, 1);
    CHECK(same_bits(auto3.y, thin3.y));
    CHECK(same_bits(auto3.dw, thin3.dw));
    CHECK_FALSE(same_bits(win3.y, thin3.y));
  }
}

TEST_CASE(
    "ops.conv_winograd: workspaces too large for memory are an error, not the end of the process") {
  if (!BNLAB_TEST_MEMORY_LIMIT) return;
  // Found by the audit of 2026-12-06 after the conv2d column-buffer fix: each thread allocated its
  // workspace inside the OpenMP region, where an exception cannot leave, so one that did not fit
  // ended the process in std::terminate. Each child runs under an address-space limit that leaves
  // room for everything but the workspace.
  SUBCASE("forward: 36 (C + K) floats a tile, 4.5 GiB at C = 2^20") {
    const int code = testing::child_exit_code([] {
      ScopedConvPathMode mode(ConvPathMode::winograd);
      const int64_t C = int64_t{1} << 20;
      const Tensor x = Tensor::ones({1, C, 4, 4}), w = Tensor::ones({1, C, 3, 3});
      if (!testing::limit_address_space(size_t{1} << 30)) return 4;
      try {
        conv2d(x, w, Tensor(), 1, 1);
        return 2;
      } catch (const Error& e) {
        return testing::expect_error_start(
            e,
            "conv2d: the Winograd workspaces [1, 1207960704] for input [1, 1048576, 4, 4], "
            "weight [1, 1048576, 3, 3], stride 1, padding 1 cannot be allocated: ");
      }
    });
    CHECK(code == 0);
  }
  SUBCASE("weight gradient: its dU, 36 K C floats, 604 MiB at K = C = 2048") {
    const int code = testing::child_exit_code([] {
      ScopedConvPathMode mode(ConvPathMode::winograd);
      const Tensor x = Tensor::ones({1, 2048, 4, 4});
      const Tensor w = Tensor::ones({2048, 2048, 3, 3}).set_requires_grad();
      Tensor y = conv2d(x, w, Tensor(), 1, 1);
      detail::storage_pool_release();  // the forward's buffers, kept for reuse
      // dw and the partial (144 MiB each) fit, the workspace (622 MiB) does not.
      if (!testing::limit_address_space(size_t{700} << 20)) return 4;
      try {
        y.backward(Tensor::ones(y.shape()));
        return 2;
      } catch (const Error& e) {
        return testing::expect_error_start(e, "conv2d: the Winograd workspaces [1, ");
      }
    });
    CHECK(code == 0);
  }
}

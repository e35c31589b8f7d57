// Frequency-domain convolution for stride-1, ungrouped conv2d on small images: forward, input
// gradient and weight gradient, each as whole-plane 2-D discrete Fourier transforms around one
// complex GEMM per frequency, except the frequencies whose products are the conjugates of others'
// (see Grid).
//
// Why: lenet's second conv (32 -> 64, 5x5, 14x14) is about 3.85 GFLOP per batch of 64 for the
// three passes; at this core's GEMM peak that alone needs more time than 1.25x PyTorch's whole step
// allows (docs/performance.md). In the frequency domain each (image, out-channel, in-channel)
// triple costs one complex multiply-add per frequency, 18 x 10 = 180 of them at 14x14 padded to
// 18x18, instead of 14 x 14 x 25 = 4900 multiply-adds: 6.8x fewer flops, and the transforms are
// done once per plane, not once per channel pair.
//
// Legend: N batch, C in-channels, K out-channels, H x W image, kh x kw kernel, p padding,
// Ho x Wo output (= H + 2p - kh + 1, likewise Wo). The grid is Lh x Lw = (H + 2p) x (W + 2p); a
// plane's spectrum is its 2-D DFT on that grid, kept for v < Vw = Lw / 2 + 1 (the rest is the
// complex conjugate: the planes are real), F = Lh * Vw frequencies f = u * Vw + v.
//   image x[n][c] sits at the grid's origin; kernel w[k][c] too; output y[n][k] at (i, j) is the
//   grid's (i - p, j - p) mod (Lh, Lw). On a grid of exactly the padded size the circular
//   correlation wraps only into zeros, so it is the padded convolution exactly:
//     Y[n][k](f) = sum_c X[n][c](f) conj(W[k][c](f))                 (correlation theorem)
//     dX[n][c](f) = sum_k dY[n][k](f) W[k][c](f)                      (the adjoint: convolution)
//     dW[k][c](f) = sum_n X[n][c](f) conj(dY[n][k](f))
//   As real GEMMs per frequency, with the real parts of a spectrum's rows above its imaginary
//   parts (the "4M" form):
//     U_f [2K, 2C] = [[Re W, Im W], [-Im W, Re W]]
//     forward:  Ys_f [2K, n] = U_f x Xs_f [2C, n]
//     dx:       dXs_f [2C, n] = U_f^T x dYs_f [2K, n]                  (transpose flag)
//     dw:       G_f [2K, 2C] += dYs_f x Xs_f^T; Re dW = G11 + G22, Im dW = G12 - G21
//   where Xs_f holds the images' spectra at f as columns (image innermost: one plane's values go to
//   F rows of the buffer, and planes of consecutive images fill each row's consecutive floats).
// The per-plane transforms (conv_fourier_kernels.inl) are two passes of dense DFTs, 16 lanes
// wide: along the rows with the spectrum's columns v in the lanes, then along the columns with
// u and Lh - u computed together. At these sizes (rows <= 32, 16 lanes) dense DFTs with
// precomputed twiddles cost less than the GEMMs and need no FFT plan per size.
//
// Blocking: images in chunks of up to `chunk` (the spectra of a chunk within kChunkFloats).
// Threads: within a chunk, OpenMP over planes for the transforms and over frequencies for the
// GEMMs (each GEMM on its thread), each thread on its static share until a thread that finishes
// takes over the other's last items (StealingLoop, core/stealing_loop.h: on this project's VM
// one vCPU often runs slower); dW's G accumulates chunk after chunk. Every value is the same
// sequence of operations for any thread count, so results are bit-identical for 1 and 2 threads.
// Numerics: a spectrum value sums up to rows x cols plane values with unit-modulus twiddles, and
// the inverse divides by Lh Lw, so rounding errors grow like those of a long dot product, not like
// Winograd's: tests/core/test_ops_conv_fourier.cpp bounds the difference from a double reference by
// a small multiple of float epsilon times the root-mean-square of sum |w||x| over the windows. A
// NaN or inf anywhere in an input plane reaches every output of that image (it enters every
// frequency); so conv2d gives this path finite operands only, and none whose products could
// overflow in a spectrum where im2col's sums would not (core/ops/conv.cpp, tile_products_fit).
#include "core/ops/conv_fourier.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numbers>
#include <type_traits>

#include "core/blas.h"
#include "core/ops/conv_direct.h"
#include "core/ops/isa_target.h"
#include "core/ops/plane_moments.h"
#include "core/ops/prefetch.h"
#include "core/ops/thread_scratch.h"
#include "core/ops/unary_op.h"
#include "core/stealing_loop.h"
#include "core/tensor.h"
#include "core/transpose16_avx512.h"
#include "core/transpose8_avx2.h"

// Row16 values are passed only inside noinline functions of one instruction set each; GCC warns
// that their ABI would differ between sets.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace bnlab::detail {

namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kMaxRows = 32;  // Lh, and so every placement's rows
constexpr int64_t kMaxCols = 16;  // every placement's columns, and Vw
// Floats of spectra (X's and Y's, or dY's and X's) per chunk of images: 16 MiB, so a batch of 64
// lenet images is one chunk.
constexpr int64_t kChunkFloats = int64_t{4} << 20;

// 16 floats as `Parts` vectors of the width the instruction set has. GCC lowers a 64-byte vector
// type on AVX2 through the stack, a few elements at a time (the AVX2 transforms then spent most of
// their time in stack moves and vpinsrq, and lenet trained 2.6x slower than with the same code
// compiled with AVX-512); vectors of the native width stay in registers. The operators are
// always_inline so that they compile with the instruction set of the transform that uses them.
using Floats4 = float __attribute__((vector_size(16)));
using Floats8 = float __attribute__((vector_size(32)));
template <int Parts>
struct SplitRow {
  static_assert(Parts == 2 || Parts == 4);
  // (An attribute on a type that depends on Parts would be dropped, hence the two named types.)
  using Part = std::conditional_t<Parts == 2, Floats8, Floats4>;
  Part part[Parts];

  [[gnu::always_inline]] SplitRow& operator+=(const SplitRow& b) {
    for (int i = 0; i < Parts; ++i) part[i] += b.part[i];
    return *this;
  }
  [[gnu::always_inline]] friend SplitRow operator+(SplitRow a, const SplitRow& b) { return a += b; }
  [[gnu::always_inline]] friend SplitRow operator-(SplitRow a, const SplitRow& b) {
    for (int i = 0; i < Parts; ++i) a.part[i] -= b.part[i];
    return a;
  }
  [[gnu::always_inline]] friend SplitRow operator*(SplitRow a, float s) {
    for (int i = 0; i < Parts; ++i) a.part[i] *= s;
    return a;
  }
};
static_assert(sizeof(SplitRow<2>) == kLanes * sizeof(float) &&
              sizeof(SplitRow<4>) == kLanes * sizeof(float));

std::atomic<int64_t> chunk_cap{0};  // limit_fourier_chunk()

// The grid, and which of its F half-spectrum frequencies get products. Columns v = 0 and, for an
// even Lw, v = Lw / 2 are themselves conjugate-symmetric along u, since their row sums are real:
// the value at (Lh - u, v) is the conjugate of the one at (u, v). The transforms give those pairs
// exactly (the same P and Q, the imaginary sign flipped), so the products at (Lh - u, v) would be
// the conjugates of those at (u, v), term by term; they are skipped (16 of lenet's 180), and the
// inverses read the mirror with its imaginary part negated.
struct Grid {
  int64_t Lh, Lw, Vw, F;

  // Columns kept in the rows u > Lh / 2: 1 .. upper_cols().
  int64_t upper_cols() const { return Vw - 1 - (Lw % 2 == 0 ? 1 : 0); }
  int64_t computed() const { return (Lh / 2 + 1) * Vw + (Lh - Lh / 2 - 1) * upper_cols(); }
  // The i-th computed frequency, i < computed(): every frequency of the rows u <= Lh / 2, then the
  // kept columns of the rows above.
  int64_t computed_frequency(int64_t i) const {
    const int64_t lower = (Lh / 2 + 1) * Vw;
    if (i < lower) return i;
    const int64_t j = i - lower, cols = upper_cols();
    return (Lh / 2 + 1 + j / cols) * Vw + 1 + j % cols;
  }
  // The frequency whose conjugate f is when f is skipped, else -1.
  int64_t mirror_of(int64_t f) const {
    const int64_t u = f / Vw, v = f % Vw;
    return u > Lh / 2 && (v == 0 || 2 * v == Lw) ? (Lh - u) * Vw + v : -1;
  }
};

// Where a real plane of rows x cols sits on the grid: element (r, j) at ((r + row_off) mod Lh,
// (j + col_off) mod Lw); and the twiddles its transforms use (floats, computed in double).
struct Placement {
  int64_t rows = 0, cols = 0;
  // forward_plane, along a row: fwd_col[j] = {cos, -sin}(2 pi v (j + col_off) / Lw), v in lanes.
  alignas(64) float fwd_col[kMaxCols * 2 * kLanes] = {};
  // inverse_plane, along a row: inv_col[v] = a_v / (Lh Lw) {cos, -sin}(2 pi v (j + col_off) / Lw),
  // j in lanes; a_v = 1 for v = 0 and v = Lw / 2, else 2.
  alignas(64) float inv_col[kMaxCols * 2 * kLanes] = {};
  // Both, along the columns: {cos, sin}(2 pi u (r + row_off) / Lh) at [u][r].
  float row_cos[kMaxRows * kMaxRows] = {};
  float row_sin[kMaxRows * kMaxRows] = {};

  Placement(int64_t rows_, int64_t cols_, int64_t row_off, int64_t col_off, const Grid& g)
      : rows(rows_), cols(cols_) {
    // cos and sin of 2 pi k / L for k < L (angles reduced mod L in integers before any table
    // lookup), with the zeros exact.
    double cos_w[2 * kMaxCols], sin_w[2 * kMaxCols], cos_h[kMaxRows], sin_h[kMaxRows];
    auto circle = [](double* cs, double* sn, int64_t L) {
      for (int64_t k = 0; k < L; ++k) {
        const double a = 2.0 * std::numbers::pi * static_cast<double>(k) / static_cast<double>(L);
        sn[k] = (2 * k) % L == 0 ? 0.0 : std::sin(a);
        cs[k] = (4 * k) % L == 0 && (4 * k / L) % 2 == 1 ? 0.0 : std::cos(a);
      }
    };
    circle(cos_w, sin_w, g.Lw);
    circle(cos_h, sin_h, g.Lh);
    const double scale = 1.0 / static_cast<double>(g.Lh * g.Lw);
    for (int64_t j = 0; j < cols; ++j) {
      for (int64_t v = 0; v < g.Vw; ++v) {
        const int64_t k = (v * (j + col_off)) % g.Lw;
        fwd_col[(2 * j) * kLanes + v] = static_cast<float>(cos_w[k]);
        fwd_col[(2 * j + 1) * kLanes + v] = static_cast<float>(-sin_w[k]);
        const double a_v = (v == 0 || 2 * v == g.Lw) ? scale : 2.0 * scale;
        inv_col[(2 * v) * kLanes + j] = static_cast<float>(a_v * cos_w[k]);
        inv_col[(2 * v + 1) * kLanes + j] = static_cast<float>(-a_v * sin_w[k]);
      }
    }
    for (int64_t u = 0; u < g.Lh; ++u) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t k = (u * (r + row_off)) % g.Lh;
        row_cos[u * kMaxRows + r] = static_cast<float>(cos_h[k]);
        row_sin[u * kMaxRows + r] = static_cast<float>(sin_h[k]);
      }
    }
  }
};

// ---- Planes into lanes and back ----
// A transform group holds cell q of its 16 planes in one Row16 (plane l in lane l). These move a
// group's planes (plane l at src + l * plane_stride, `cells` contiguous floats) into that form and
// back; lanes past `count` read as zero and are never written out. On the way out a value is
// assigned (relu(value + bias) when `relu`, else value + bias) when `assign`, else added.

void planes_to_lanes_scalar(const float* src, int64_t plane_stride, int64_t count, int64_t cells,
                            float* lanes) {
  for (int64_t l = 0; l < kLanes; ++l) {
    const float* s = src + l * plane_stride;
    for (int64_t q = 0; q < cells; ++q) lanes[q * kLanes + l] = l < count ? s[q] : 0.0f;
  }
}

void lanes_to_planes_scalar(const float* lanes, int64_t cells, int64_t count, float* dst,
                            int64_t plane_stride, bool assign, float bias, bool relu) {
  for (int64_t l = 0; l < count; ++l) {
    float* out = dst + l * plane_stride;
    if (!assign) {
      for (int64_t q = 0; q < cells; ++q) out[q] += lanes[q * kLanes + l];
    } else if (relu) {
      for (int64_t q = 0; q < cells; ++q) out[q] = relu_value(lanes[q * kLanes + l] + bias);
    } else {
      for (int64_t q = 0; q < cells; ++q) out[q] = lanes[q * kLanes + l] + bias;
    }
  }
}

// The same through 16 x 16 register transposes, 16 cells of every plane at a time. The scalar
// copies were a quarter of the forward transform's time (perf, lenet's second conv): one load
// per value, from planes that mostly come from L3, so few misses were in flight at once.
BNLAB_TARGET_BEGIN("avx512f")
void planes_to_lanes_avx512(const float* src, int64_t plane_stride, int64_t count, int64_t cells,
                            float* lanes) {
  for (int64_t q0 = 0; q0 < cells; q0 += kLanes) {
    const int64_t n = std::min(kLanes, cells - q0);
    const __mmask16 m = first_lanes(n);
    __m512 r[kLanes];
    for (int64_t l = 0; l < kLanes; ++l)
      r[l] =
          l < count ? _mm512_maskz_loadu_ps(m, src + l * plane_stride + q0) : _mm512_setzero_ps();
    transpose16(r);
    for (int64_t i = 0; i < n; ++i) _mm512_store_ps(lanes + (q0 + i) * kLanes, r[i]);
  }
}

void lanes_to_planes_avx512(const float* lanes, int64_t cells, int64_t count, float* dst,
                            int64_t plane_stride, bool assign, float bias, bool relu) {
  const __m512 zero = _mm512_setzero_ps(), b = _mm512_set1_ps(bias);
  for (int64_t q0 = 0; q0 < cells; q0 += kLanes) {
    const int64_t n = std::min(kLanes, cells - q0);
    const __mmask16 m = first_lanes(n);
    __m512 r[kLanes];
    for (int64_t i = 0; i < kLanes; ++i)
      r[i] = i < n ? _mm512_load_ps(lanes + (q0 + i) * kLanes) : zero;
    transpose16(r);
    for (int64_t l = 0; l < count; ++l) {
      float* out = dst + l * plane_stride + q0;
      __m512 v = r[l];
      if (!assign) {
        v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, out), v);
      } else {
        v = _mm512_add_ps(v, b);
        // relu_value: v < 0 becomes +0; -0 and NaN stay.
        if (relu) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
      }
      _mm512_mask_storeu_ps(out, m, v);
    }
  }
}
BNLAB_TARGET_END

// The AVX2 form of the same: each half of a group (planes 0-7, 8-15) through 8 x 8 register
// transposes, 8 cells at a time. The scalar copies were about 3 % of lenet's training step on a Zen
// 3 core, and a part of the forward transform's time there as well.
BNLAB_TARGET_BEGIN("avx2,fma")
void planes_to_lanes_avx2(const float* src, int64_t plane_stride, int64_t count, int64_t cells,
                          float* lanes) {
  constexpr int64_t kHalf = kLanes / 2;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t h = 0; h < kLanes; h += kHalf) {
    for (int64_t q0 = 0; q0 < cells; q0 += kHalf) {
      const int64_t n = std::min(kHalf, cells - q0);
      const __m256i m = first_lanes8(n);
      __m256 r[kHalf];
      for (int64_t i = 0; i < kHalf; ++i) {
        const float* s = src + (h + i) * plane_stride + q0;
        r[i] = h + i >= count ? zero : n == kHalf ? _mm256_loadu_ps(s) : _mm256_maskload_ps(s, m);
      }
      if (h < count) transpose8(r);
      for (int64_t i = 0; i < n; ++i) _mm256_store_ps(lanes + (q0 + i) * kLanes + h, r[i]);
    }
  }
}

void lanes_to_planes_avx2(const float* lanes, int64_t cells, int64_t count, float* dst,
                          int64_t plane_stride, bool assign, float bias, bool relu) {
  constexpr int64_t kHalf = kLanes / 2;
  const __m256 zero = _mm256_setzero_ps(), b = _mm256_set1_ps(bias);
  for (int64_t h = 0; h < count; h += kHalf) {
    const int64_t planes = std::min(kHalf, count - h);
    for (int64_t q0 = 0; q0 < cells; q0 += kHalf) {
      const int64_t n = std::min(kHalf, cells - q0);
      const __m256i m = first_lanes8(n);
      __m256 r[kHalf];
      for (int64_t i = 0; i < kHalf; ++i)
        r[i] = i < n ? _mm256_load_ps(lanes + (q0 + i) * kLanes + h) : zero;
      transpose8(r);
      for (int64_t l = 0; l < planes; ++l) {
        float* out = dst + (h + l) * plane_stride + q0;
        __m256 v = r[l];
        if (!assign) {
          v = _mm256_add_ps(n == kHalf ? _mm256_loadu_ps(out) : _mm256_maskload_ps(out, m), v);
        } else {
          v = _mm256_add_ps(v, b);
          // relu_value: v < 0 becomes +0; -0 and NaN stay.
          if (relu) v = _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
        }
        // (With masked stores for the whole chunks too, the copy was no faster than the scalar
        // one on Zen 3: only the last chunk's store is masked.)
        if (n == kHalf) {
          _mm256_storeu_ps(out, v);
        } else {
          _mm256_maskstore_ps(out, m, v);
        }
      }
    }
  }
}
BNLAB_TARGET_END

// ---- The instruction sets ----

// Each set's Row16: the vector registers one takes, and how many registers the transforms may
// keep as accumulators (half the set's registers: the rest hold the loads and broadcasts).
namespace portable {
using Row16 = SplitRow<4>;
constexpr int kRowRegisters = 4, kAccumulatorRegisters = 8;
constexpr auto& planes_to_lanes = planes_to_lanes_scalar;
constexpr auto& lanes_to_planes = lanes_to_planes_scalar;
#include "core/ops/conv_fourier_kernels.inl"
}  // namespace portable

BNLAB_TARGET_BEGIN("avx2,fma")
namespace avx2 {
using Row16 = SplitRow<2>;
constexpr int kRowRegisters = 2, kAccumulatorRegisters = 8;
constexpr auto& planes_to_lanes = planes_to_lanes_avx2;
constexpr auto& lanes_to_planes = lanes_to_planes_avx2;
#include "core/ops/conv_fourier_kernels.inl"
}  // namespace avx2
BNLAB_TARGET_END

BNLAB_TARGET_BEGIN("avx512f")
namespace avx512 {
using Row16 = float __attribute__((vector_size(64)));
constexpr int kRowRegisters = 1, kAccumulatorRegisters = 16;
constexpr auto& planes_to_lanes = planes_to_lanes_avx512;
constexpr auto& lanes_to_planes = lanes_to_planes_avx512;
#include "core/ops/conv_fourier_kernels.inl"
}  // namespace avx512
BNLAB_TARGET_END

struct Kernels {
  void (*forward)(const float*, int64_t, int64_t, const Placement&, const Grid&, float*, float*,
                  int64_t);
  void (*inverse)(const float*, const float*, int64_t, int64_t, const Placement&, const Grid&,
                  float*, int64_t, bool, float, bool);
};

// The direct kernels' instruction set (direct_conv_isa(), which tests can cap) picks ours too.
Kernels kernels() {
  switch (direct_conv_isa()) {
    case DirectIsa::avx512:
      return {avx512::forward_group, avx512::inverse_group};
    case DirectIsa::avx2:
      return {avx2::forward_group, avx2::inverse_group};
    case DirectIsa::portable:
      break;
  }
  return {portable::forward_group, portable::inverse_group};
}

struct Plan {
  FourierConvShape s;
  Grid g;
  Placement image, kernel, output;  // x and dx; w and dw; y and dy
  int64_t chunk;                    // images per chunk
  bool parallel;
  Kernels k;

  explicit Plan(const FourierConvShape& shape)
      : s(shape),
        g(grid(shape)),
        image(s.H, s.W, 0, 0, g),
        kernel(s.kh, s.kw, 0, 0, g),
        output(s.Ho, s.Wo, g.Lh - s.padding % g.Lh, g.Lw - s.padding % g.Lw, g),
        chunk(std::clamp<int64_t>(kChunkFloats / (g.F * 2 * (s.C + s.K)), 1, s.N)),
        parallel(s.N * s.K * s.C * s.H * s.W > (int64_t{1} << 18)),
        k(kernels()) {
    if (const int64_t cap = chunk_cap.load(); cap > 0) chunk = std::min(chunk, cap);
  }

  static Grid grid(const FourierConvShape& s) {
    const int64_t Lh = s.H + 2 * s.padding, Lw = s.W + 2 * s.padding, Vw = Lw / 2 + 1;
    return {Lh, Lw, Vw, Lh * Vw};
  }
};

// U [F][2K][2C] (see the top): each (k, c) kernel's spectrum into the upper block row, 16
// channels at a time, then the lower block row copied from it.
void weight_spectra(float* U, const float* w, const Plan& p) {
  const int64_t K = p.s.K, C = p.s.C, taps = p.s.kh * p.s.kw, fs = 4 * K * C;
  const int64_t groups = (C + kLanes - 1) / kLanes;
#pragma omp parallel if (p.parallel)
  {
#pragma omp for schedule(static)
    for (int64_t kg = 0; kg < K * groups; ++kg) {
      const int64_t k = kg / groups, c0 = kg % groups * kLanes;
      p.k.forward(w + (k * C + c0) * taps, taps, std::min(kLanes, C - c0), p.kernel, p.g,
                  U + k * 2 * C + c0, U + k * 2 * C + C + c0, fs);
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < p.g.computed(); ++i) {
      float* Uf = U + p.g.computed_frequency(i) * fs;
      for (int64_t k = 0; k < K; ++k) {
        const float* top = Uf + k * 2 * C;
        float* bottom = Uf + (K + k) * 2 * C;
        for (int64_t c = 0; c < C; ++c) {
          bottom[c] = -top[C + c];
          bottom[C + c] = top[c];
        }
      }
    }
  }
}

// Transform groups of 16 images for n images.
int64_t groups_of(int64_t n) { return (n + kLanes - 1) / kLanes; }

// Asks for the next frequency's slices of two per-frequency operands (a and b, frequency f's
// slice at f * floats) in L2, each capped at 256 KiB (a quarter of a Zen 5 core's L2). The
// products loops call it before each GEMM: the transforms wrote every frequency, so a frequency's
// operands (lenet's conv2: 32 + 16 KiB) lie in L3, and the GEMM's packing read them there at L3
// latency, line after line. With the next ones requested while this GEMM runs, lenet's 170
// per-frequency forward GEMMs ran about 1.6x faster (a harness, one thread;
// docs/performance.md). A thread that steals walks down, not up, so its hint is wasted, not wrong.
// always_inline, like prefetch_run inside it (core/ops/prefetch.h says why).
[[gnu::always_inline]] inline void prefetch_next(const Plan& p, int64_t i, const float* a,
                                                 int64_t a_floats, const float* b,
                                                 int64_t b_floats) {
  if (i + 1 >= p.g.computed()) return;
  const int64_t next = p.g.computed_frequency(i + 1);
  constexpr int64_t kCapBytes = int64_t{256} << 10;
  prefetch_run<PrefetchTo::l2>(a + next * a_floats, a_floats, kCapBytes);
  prefetch_run<PrefetchTo::l2>(b + next * b_floats, b_floats, kCapBytes);
}

// Spectra of a chunk of n images (src [n][A][rows][cols]) into dst: image i, plane a goes to
// column i, rows a (real) and A + a (imaginary) of every frequency's [2A, n] matrix; 16 images
// of one channel at a time.
void chunk_spectra(StealingLoop& loop, float* dst, const float* src, int64_t A, int64_t n,
                   const Placement& pl, const Plan& p) {
  const int64_t plane = pl.rows * pl.cols, fs = 2 * A * n, groups = groups_of(n);
  loop.run([&](int64_t ag) {
    const int64_t a = ag / groups, i0 = ag % groups * kLanes;
    p.k.forward(src + (i0 * A + a) * plane, A * plane, std::min(kLanes, n - i0), pl, p.g,
                dst + a * n + i0, dst + (A + a) * n + i0, fs);
  });
#pragma omp barrier
}

// The inverse of chunk_spectra: each plane of dst [n][A][rows][cols] from its column of src,
// assigned (+ bias[a], through relu when `relu`) or added. With pm, each plane's plane_moments
// (core/ops/plane_moments.h) into pm [n][A][2] right after it is written, and the threads split
// the images (16 at a time) rather than the channels: batch norm, which takes those moments,
// normalizes the images each thread wrote (for_image_ranges, core/ops/norm.cpp). Without pm the
// channels: an input gradient goes to batch norm's backward, which splits channels.
void chunk_planes(StealingLoop& loop, float* dst, const float* src, int64_t A, int64_t n,
                  const Placement& pl, const Plan& p, bool assign, const float* bias, bool relu,
                  double* pm = nullptr) {
  const int64_t plane = pl.rows * pl.cols, fs = 2 * A * n, groups = groups_of(n);
  const bool images_outer = pm != nullptr;
  loop.run([&](int64_t ag) {
    const int64_t a = images_outer ? ag % A : ag / groups;
    const int64_t i0 = (images_outer ? ag / A : ag % groups) * kLanes;
    const int64_t lanes = std::min(kLanes, n - i0);
    p.k.inverse(src + a * n + i0, src + (A + a) * n + i0, fs, lanes, pl, p.g,
                dst + (i0 * A + a) * plane, A * plane, assign, bias ? bias[a] : 0.0f, relu);
    if (!pm) return;
    for (int64_t i = i0; i < i0 + lanes; ++i)
      plane_moments(pm + 2 * (i * A + a), dst + (i * A + a) * plane, 1, plane);
  });
  // (No barrier: every caller ends its region here, and the region's end is one.)
}

// dw [K][C][kh][kw] += each kernel's dW (see the top) from G [F][2K][2C], 16 channels at a time
// (their dW spectra formed in a [F][16] buffer per thread first, core/ops/thread_scratch.h).
void add_weight_gradient(float* dw, const float* G, const Plan& p) {
  const int64_t K = p.s.K, C = p.s.C, taps = p.s.kh * p.s.kw, fs = 4 * K * C;
  const int64_t groups = (C + kLanes - 1) / kLanes;
  const int64_t team = p.parallel && !omp_in_parallel() ? omp_get_max_threads() : 1;
  const TeamScratch spectra(team, 2 * p.g.F * kLanes, [&](const Error& e) {
    BNLAB_FAIL("conv2d: the frequency-domain weight gradient's spectra [", team, ", ",
               2 * p.g.F * kLanes, "] for input [", p.s.N, ", ", C, ", ", p.s.H, ", ", p.s.W,
               "], weight [", K, ", ", C, ", ", p.s.kh, ", ", p.s.kw, "], stride 1, padding ",
               p.s.padding, " cannot be allocated: ", e.what());
  });
#pragma omp parallel num_threads(spectra.team()) if (spectra.team() > 1)
  {
    float* re = spectra.of_this_thread();
    float* im = re + p.g.F * kLanes;
#pragma omp for schedule(static)
    for (int64_t kg = 0; kg < K * groups; ++kg) {
      const int64_t k = kg / groups, c0 = kg % groups * kLanes, count = std::min(kLanes, C - c0);
      const float* g11 = G + k * 2 * C + c0;  // G_f[k][c]
      const float* g12 = g11 + C;             // G_f[k][C + c]
      const float* g21 = g11 + K * 2 * C;     // G_f[K + k][c]
      const float* g22 = g21 + C;             // G_f[K + k][C + c]
      // (The skipped frequencies, Grid::mirror_of, are left out: inverse reads their mirrors.)
      for (int64_t i = 0; i < p.g.computed(); ++i) {
        const int64_t f = p.g.computed_frequency(i), o = f * fs;
        for (int64_t l = 0; l < count; ++l) {
          re[f * kLanes + l] = g11[o + l] + g22[o + l];
          im[f * kLanes + l] = g12[o + l] - g21[o + l];
        }
      }
      p.k.inverse(re, im, kLanes, count, p.kernel, p.g, dw + (k * C + c0) * taps, taps, false, 0.0f,
                  false);
    }
  }
}

}  // namespace

int64_t limit_fourier_chunk(int64_t max_images) { return chunk_cap.exchange(max_images); }

bool conv2d_fourier_eligible(int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
                             int64_t padding, int64_t groups) {
  if (stride != 1 || groups != 1 || padding < 0) return false;
  const int64_t Lh = H + 2 * padding, Lw = W + 2 * padding;
  const int64_t Ho = Lh - kh + 1, Wo = Lw - kw + 1;
  return Lh <= kMaxRows && Lw <= 2 * kMaxCols - 1 && W <= kMaxCols && kw <= kMaxCols && Ho >= 1 &&
         Wo >= 1 && Wo <= kMaxCols && H >= 1 && W >= 1;
}

struct FourierSaved {
  Storage U;   // weight_spectra()
  Storage Xs;  // chunk_spectra() of x for the whole batch; empty when it took several chunks
  FourierSaved(size_t u, size_t xs) : U(u), Xs(xs) {}
};

std::shared_ptr<FourierSaved> fourier_conv2d_forward(float* out, const float* x, const float* w,
                                                     const float* b, const FourierConvShape& s,
                                                     bool relu, bool save, double* pm) {
  const Plan p(s);
  const int64_t F = p.g.F, C = s.C, K = s.K;
  const size_t u_size = static_cast<size_t>(F * 4 * K * C);
  const size_t xs_size = static_cast<size_t>(F * 2 * C * p.chunk);
  // The images' spectra are kept only when one chunk holds the batch (lenet's 64 images do).
  std::shared_ptr<FourierSaved> saved =
      save ? std::make_shared<FourierSaved>(u_size, p.chunk == s.N ? xs_size : 0) : nullptr;
  const bool keep_x = saved && saved->Xs.size() > 0;
  Storage own_U(saved ? 0 : u_size), own_Xs(keep_x ? 0 : xs_size);
  float* U = saved ? saved->U.data() : own_U.data();
  float* Xs = keep_x ? saved->Xs.data() : own_Xs.data();
  weight_spectra(U, w, p);
  Storage Ys(static_cast<size_t>(F * 2 * K * p.chunk));
  for (int64_t n0 = 0; n0 < s.N; n0 += p.chunk) {
    const int64_t n = std::min(p.chunk, s.N - n0);
    StealingLoop spectra(C * groups_of(n)), products(p.g.computed()), planes(K * groups_of(n));
#pragma omp parallel if (p.parallel)
    {
      chunk_spectra(spectra, Xs, x + n0 * C * s.H * s.W, C, n, p.image, p);
      products.run([&](int64_t i) {
        const int64_t f = p.g.computed_frequency(i);
        prefetch_next(p, i, U, 4 * K * C, Xs, 2 * C * n);
        gemm(false, false, 2 * K, n, 2 * C, 1.0f, U + f * 4 * K * C, 2 * C, Xs + f * 2 * C * n, n,
             0.0f, Ys.data() + f * 2 * K * n, n);
      });
#pragma omp barrier
      chunk_planes(planes, out + n0 * K * s.Ho * s.Wo, Ys.data(), K, n, p.output, p, true, b, relu,
                   pm ? pm + 2 * n0 * K : nullptr);
    }
  }
  return saved;
}

void fourier_conv2d_backward(float* dx, bool dx_fresh, float* dw, const float* dout, const float* x,
                             const float* w, const FourierConvShape& s, const FourierSaved* saved) {
  if (!dx && !dw) return;
  const Plan p(s);
  const int64_t F = p.g.F, C = s.C, K = s.K, KC = K * C;
  // U for dx: the forward's, else transformed again.
  Storage own_U(dx && !saved ? static_cast<size_t>(F * 4 * KC) : 0);
  if (dx && !saved) weight_spectra(own_U.data(), w, p);
  const float* U = saved ? saved->U.data() : own_U.data();
  // X's spectra for dW: the forward's when it kept them (one chunk), else transformed here.
  const bool saved_x = saved && saved->Xs.size() > 0 && p.chunk == s.N;
  // G, dW's spectra: the first chunk's products assign it (beta 0 never reads C), later ones add;
  // a zero fill before the parallel region was one thread's 5.9 MB memset per lenet step while the
  // other waited.
  Storage G(dw ? static_cast<size_t>(F * 4 * KC) : 0);
  // work holds X's spectra for dW (unless saved), then dX's.
  Storage dYs(static_cast<size_t>(F * 2 * K * p.chunk)),
      work(static_cast<size_t>(F * 2 * C * p.chunk));
  for (int64_t n0 = 0; n0 < s.N; n0 += p.chunk) {
    const int64_t n = std::min(p.chunk, s.N - n0);
    StealingLoop dy_spectra(K * groups_of(n)), x_spectra(C * groups_of(n)),
        dw_products(p.g.computed()), dx_products(p.g.computed()), dx_planes(C * groups_of(n));
#pragma omp parallel if (p.parallel)
    {
      chunk_spectra(dy_spectra, dYs.data(), dout + n0 * K * s.Ho * s.Wo, K, n, p.output, p);
      if (dw) {
        const float* Xs = saved_x ? saved->Xs.data() : work.data();
        if (!saved_x)
          chunk_spectra(x_spectra, work.data(), x + n0 * C * s.H * s.W, C, n, p.image, p);
        dw_products.run([&](int64_t i) {
          const int64_t f = p.g.computed_frequency(i);
          prefetch_next(p, i, dYs.data(), 2 * K * n, Xs, 2 * C * n);
          gemm(false, true, 2 * K, 2 * C, n, 1.0f, dYs.data() + f * 2 * K * n, n,
               Xs + f * 2 * C * n, n, n0 == 0 ? 0.0f : 1.0f, G.data() + f * 4 * KC, 2 * C);
        });
#pragma omp barrier
      }
      if (dx) {
        dx_products.run([&](int64_t i) {
          const int64_t f = p.g.computed_frequency(i);
          prefetch_next(p, i, U, 4 * KC, dYs.data(), 2 * K * n);
          gemm(true, false, 2 * C, n, 2 * K, 1.0f, U + f * 4 * KC, 2 * C,
               dYs.data() + f * 2 * K * n, n, 0.0f, work.data() + f * 2 * C * n, n);
        });
#pragma omp barrier
        chunk_planes(dx_planes, dx + n0 * C * s.H * s.W, work.data(), C, n, p.image, p, dx_fresh,
                     nullptr, false);
      }
    }
  }
  if (dw) add_weight_gradient(dw, G.data(), p);
}

}  // namespace bnlab::detail

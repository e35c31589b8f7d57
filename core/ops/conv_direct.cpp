// Direct convolution: stride 1, one group, square 3x3 or 5x5 kernels; forward, input gradient (the
// transposed conv, run by the forward's tiles) and weight gradient. Which of them a conv uses is
// conv_path.cpp's rule: thin first layers take the forward and dw, thicker 5x5 convs the forward
// and dx.
//
// Why not im2col: a first layer's GEMMs have an inner dimension of C*k*k (9-100), so the GEMM
// spends much of its time packing, and the column matrix it reads is k*k times the image; at 5x5
// the column matrix is 25 times the image for any channel count. Measured at W3's and W4's layers:
// docs/performance.md, "Direct convolution".
//
// Legend as in core/ops/conv.cpp: N batch, C in-channels, H/W input size, K out-channels, k kernel
// size, Ho/Wo output size, p padding. L lanes per register; a segment is up to L neighbouring
// outputs of one output row.
//   padded input xp [N, C, Hp, Wp] + L floats: x with p zero rows above and below and p zero
//             columns on each side (Hp = H + 2p, Wp = W + 2p), so the kernels never test for
//             padding. A segment's loads of L lanes stay inside its rows except in a row's last,
//             partial segment: the forward's lanes past the row read the next row (or the L zeros
//             after the last) and are never stored; the weight gradient masks them.
//   forward:  out[n, o, oh, ow0 .. +L) = b[o] + sum over c, i, j of
//             w[o, c, i, j] * xp[n, c, oh + i, ow0 + j .. +L)            (conv_direct_tiles.inl)
//             weights repacked as [K/Q][C][k][k][Q], zero-padded, so a tap's Q channels are
//             neighbours.
//   weight gradient: dw[o, c, i, j] += sum over n, oh, ow of dout[n, o, oh, ow] * xp[n, c, oh + i,
//             ow + j], kept as L lane sums per (o, c, i, j) and added lane by lane at the end.
// Instruction sets (chosen at run time, direct_conv_isa()): AVX-512F (L = 16; 3 segments x 8
// channels = 24 accumulators), AVX2 + FMA (L = 8; 2 x 6, within 16 registers), portable (L = 1).
// The tiles are written once (conv_direct_tiles.inl) and compiled per set under #pragma GCC target.
// Threads: the forward splits over (image, block of output channels), each thread's static share
// until a thread that finishes takes over the other's last pairs (core/stealing_loop.h); the
// weight gradient splits its (channel block, c, i) items among the threads, each visiting the
// images in order, so every output and every lane sum is the same sequence of operations for any
// thread count: results are bit-identical for 1 and 2 threads.
// Numerics: each output is the same sum as im2col + GEMM's in another order; the instruction sets
// differ from each other only in that order. tests/core/test_ops_conv_direct.cpp bounds the
// difference from a double reference.
#include "core/ops/conv_direct.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>

#include "core/cpu_isa.h"
#include "core/ops/isa_target.h"
#include "core/ops/plane_moments.h"
#include "core/ops/unary_op.h"
#include "core/parallel.h"
#include "core/stealing_loop.h"
#include "core/tensor.h"

// GCC 12's AVX-512 intrinsics (here _mm512_max_ps) start from _mm512_undefined_*(), which
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593); the value is fully
// overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// GCC turns short fill and copy loops into memset/memcpy calls; this keeps a function's loops as
// loops (clang has no such attribute and needs none here).
#if defined(__GNUC__) && !defined(__clang__)
#define BNLAB_KEEP_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define BNLAB_KEEP_LOOPS
#endif

namespace bnlab::detail {

namespace {

constexpr int kMaxSegments = 4;

// One forward tile: segment r's input starts at x[r] (channel 0, tap (0, 0)) and its output at
// out[r] (the block's first channel); count[r] of its lanes are outputs (0: a filler segment).
struct ForwardTile {
  const float* x[kMaxSegments];
  float* out[kMaxSegments];
  int64_t count[kMaxSegments];
  int64_t plane, row;  // xp's channel and row strides
  int64_t C;           // input channels
  int64_t out_plane;   // Ho * Wo
  int64_t channels;    // output channels of the block that exist (<= Vec::kChannels)
  const float* w;      // the block's packed weights [C][k][k][kChannels]
  const float* bias;   // kChannels values (0 past channels, or no bias)
  bool relu;           // store relu(out) (conv2d_relu in inference)
};

// One image's part of a weight-gradient item: dy at the block's first channel of image n, x at
// row i of xp's plane (n, c), part the item's lane sums [grad_channels][k][L].
struct GradTile {
  const float* dy;
  const float* x;
  float* part;
  int64_t out_plane, row, Ho, Wo;
  int64_t channels;  // output channels of the block that exist (<= grad_channels)
};

struct DirectKernels {
  int64_t lanes, segments, channels, grad_channels3, grad_channels5;
  void (*forward3)(const ForwardTile&);
  void (*forward5)(const ForwardTile&);
  void (*grad3)(const GradTile&);
  void (*grad5)(const GradTile&);
};

// ---- The instruction sets ----

namespace portable {
struct Vec {
  using reg = float;
  static constexpr int64_t kLanes = 1, kSegments = 2, kChannels = 4;
  static constexpr int grad_channels(int) { return 2; }
  static reg zero() { return 0.0f; }
  static reg set1(float v) { return v; }
  static reg load(const float* p) { return *p; }
  static reg load_first(const float* p, int64_t n) { return n > 0 ? *p : 0.0f; }
  static reg fma(reg a, reg b, reg c) { return a * b + c; }
  static reg relu(reg v) { return relu_value(v); }
  static void store(float* p, reg v) { *p = v; }
  static void store_first(float* p, reg v, int64_t n) {
    if (n > 0) *p = v;
  }
};
#include "core/ops/conv_direct_tiles.inl"
}  // namespace portable

BNLAB_TARGET_BEGIN("avx2,fma")
namespace avx2 {
struct Vec {
  using reg = __m256;
  static constexpr int64_t kLanes = 8, kSegments = 2, kChannels = 6;
  static constexpr int grad_channels(int k) { return k == 3 ? 3 : 2; }
  static __m256i first(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load_first(const float* p, int64_t n) { return _mm256_maskload_ps(p, first(n)); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  // max(0, v) returns its second operand when either is NaN: NaN passes, as relu_value.
  static reg relu(reg v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static void store_first(float* p, reg v, int64_t n) { _mm256_maskstore_ps(p, first(n), v); }
};
#include "core/ops/conv_direct_tiles.inl"
}  // namespace avx2
BNLAB_TARGET_END

BNLAB_TARGET_BEGIN("avx512f")
namespace avx512 {
struct Vec {
  using reg = __m512;
  static constexpr int64_t kLanes = 16, kSegments = 3, kChannels = 8;
  static constexpr int grad_channels(int k) { return k == 3 ? 6 : 4; }
  static __mmask16 first(int64_t n) {
    return n >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << n) - 1u);
  }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load_first(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  // max(0, v) returns its second operand when either is NaN: NaN passes, as relu_value.
  static reg relu(reg v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
  // Plain stores for whole registers: on AMD Zen 4/5 a masked store with every lane set is much
  // slower than a plain one.
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static void store_first(float* p, reg v, int64_t n) { _mm512_mask_storeu_ps(p, first(n), v); }
};
#include "core/ops/conv_direct_tiles.inl"
}  // namespace avx512
BNLAB_TARGET_END

std::atomic<DirectIsa> isa_cap{DirectIsa::avx512};

DirectIsa best_isa() {
  switch (cpu_isa()) {
    case CpuIsa::avx512:
      return DirectIsa::avx512;
    case CpuIsa::avx2:
      return DirectIsa::avx2;
    case CpuIsa::portable:
      break;
  }
  return DirectIsa::portable;
}

const DirectKernels& kernels_for(DirectIsa isa) {
  static constexpr DirectKernels table[] = {portable::kernels(), avx2::kernels(),
                                            avx512::kernels()};
  return table[static_cast<int>(isa)];
}

// Parallel only when the work pays for waking the team (as conv.cpp's rule).
bool worth_threads(const DirectConvShape& s) {
  return s.N > 1 && s.N * s.K * s.Ho * s.Wo * s.C * s.k * s.k > (int64_t{1} << 18);
}

// xp (see the legend), of padded_floats(s, L) floats. The rows are short (tens of
// floats), so the loops are kept as loops: GCC's default of turning them into memset and memcpy
// calls made the padding 10 % of a 32 -> 64 5x5 forward.
BNLAB_KEEP_LOOPS void pad_input(float* xp, const float* x, const DirectConvShape& s, int64_t L) {
  const int64_t p = s.padding, W = s.W, Hp = s.H + 2 * p, Wp = W + 2 * p, planes = s.N * s.C;
#pragma omp parallel for schedule(static) if (worth_threads(s))
  for (int64_t plane = 0; plane < planes; ++plane) {
    float* dst = xp + plane * Hp * Wp;
    const float* src = x + plane * s.H * W;
    for (int64_t r = 0; r < Hp; ++r, dst += Wp) {
      const int64_t ih = r - p;
      if (ih < 0 || ih >= s.H) {
        for (int64_t j = 0; j < Wp; ++j) dst[j] = 0.0f;
        continue;
      }
      const float* row = src + ih * W;
      for (int64_t j = 0; j < p; ++j) dst[j] = 0.0f;
      for (int64_t j = 0; j < W; ++j) dst[p + j] = row[j];
      for (int64_t j = p + W; j < Wp; ++j) dst[j] = 0.0f;
    }
  }
  std::fill_n(xp + planes * Hp * Wp, L, 0.0f);
}

}  // namespace

bool conv2d_direct_eligible(int64_t kh, int64_t kw, int64_t stride, int64_t padding,
                            int64_t groups) {
  return stride == 1 && groups == 1 && kh == kw && (kh == 3 || kh == 5) && padding < kh;
}

DirectIsa direct_conv_isa() {
  return std::min(best_isa(), isa_cap.load(std::memory_order_relaxed));
}

DirectIsa limit_direct_conv_isa(DirectIsa max) { return isa_cap.exchange(max); }

void conv2d_direct_forward(float* out, const float* x, const float* w, const float* b,
                           const DirectConvShape& s, bool relu, double* pm) {
  const DirectKernels& kr = kernels_for(direct_conv_isa());
  const int64_t L = kr.lanes, R = kr.segments, Q = kr.channels;
  const int64_t Hp = s.H + 2 * s.padding, Wp = s.W + 2 * s.padding;
  Storage xp(static_cast<size_t>(s.N * s.C * Hp * Wp + L));
  pad_input(xp.data(), x, s, L);

  const int64_t blocks = (s.K + Q - 1) / Q, taps = s.C * s.k * s.k;
  Storage packed(static_cast<size_t>(blocks * taps * Q + blocks * Q));
  float* pw = packed.data();
  float* pb = pw + blocks * taps * Q;
  std::fill_n(pw, blocks * taps * Q + blocks * Q, 0.0f);
  for (int64_t o = 0; o < s.K; ++o) {
    for (int64_t t = 0; t < taps; ++t) pw[((o / Q) * taps + t) * Q + o % Q] = w[o * taps + t];
    if (b) pb[o] = b[o];
  }
  void (*tile)(const ForwardTile&) = s.k == 3 ? kr.forward3 : kr.forward5;
  const int64_t per_row = (s.Wo + L - 1) / L, segments = s.Ho * per_row;

  // Items (image, channel block), image-major.
  StealingLoop items(s.N * blocks);
#pragma omp parallel if (worth_threads(s))
  items.run([&](int64_t item) {
    const int64_t n = item / blocks, block = item % blocks;
    ForwardTile t{};
    t.plane = Hp * Wp;
    t.row = Wp;
    t.C = s.C;
    t.out_plane = s.Ho * s.Wo;
    t.channels = std::min(Q, s.K - block * Q);
    t.w = pw + block * taps * Q;
    t.bias = pb + block * Q;
    t.relu = relu;
    for (int64_t first = 0; first < segments; first += R) {
      for (int64_t r = 0; r < R; ++r) {
        // A filler segment past the image's last repeats the first one and stores nothing.
        const int64_t seg = first + r < segments ? first + r : first;
        const int64_t oh = seg / per_row, ow0 = seg % per_row * L;
        t.x[r] = xp.data() + ((n * s.C) * Hp + oh) * Wp + ow0;
        t.out[r] = out + ((n * s.K + block * Q) * s.Ho + oh) * s.Wo + ow0;
        t.count[r] = first + r < segments ? std::min(L, s.Wo - ow0) : 0;
      }
      tile(t);
    }
    if (pm) {  // this image's planes of the block, just written
      const int64_t k0 = n * s.K + block * Q;
      plane_moments(pm + 2 * k0, out + k0 * s.Ho * s.Wo, t.channels, s.Ho * s.Wo);
    }
  });
}

void conv2d_direct_input_grad(float* dx, bool assign, const float* dout, const float* w,
                              const DirectConvShape& s) {
  // dx = dout convolved with w transposed to [C, K, k, k] and flipped (rotated 180 degrees), over
  // padding k - 1 - p: the transposed convolution, itself a stride-1 forward conv.
  const int64_t k = s.k, kk = k * k;
  Storage flipped(static_cast<size_t>(s.C * s.K * kk));
  for (int64_t o = 0; o < s.K; ++o)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t t = 0; t < kk; ++t)
        flipped.data()[(c * s.K + o) * kk + (kk - 1 - t)] = w[(o * s.C + c) * kk + t];
  const DirectConvShape t{s.N, s.K, s.Ho, s.Wo, s.C, k, k - 1 - s.padding, s.H, s.W};
  if (assign) {
    conv2d_direct_forward(dx, dout, flipped.data(), nullptr, t);
    return;
  }
  const int64_t size = s.N * s.C * s.H * s.W;
  Storage fresh(static_cast<size_t>(size));
  conv2d_direct_forward(fresh.data(), dout, flipped.data(), nullptr, t);
  const float* f = fresh.data();
  detail::parallel_for_simd(size, size > (1 << 16), [=](int64_t i) { dx[i] += f[i]; });
}

void conv2d_direct_weight_grad(float* dw, const float* dout, const float* x,
                               const DirectConvShape& s) {
  const DirectKernels& kr = kernels_for(direct_conv_isa());
  const int64_t L = kr.lanes, k = s.k;
  const int64_t Q = k == 3 ? kr.grad_channels3 : kr.grad_channels5;
  const int64_t Hp = s.H + 2 * s.padding, Wp = s.W + 2 * s.padding;
  Storage xp(static_cast<size_t>(s.N * s.C * Hp * Wp + L));
  pad_input(xp.data(), x, s, L);

  // Items (channel block, c, i), each with its lane sums [Q][k][L].
  const int64_t blocks = (s.K + Q - 1) / Q, items = blocks * s.C * k, part_size = Q * k * L;
  Storage parts(static_cast<size_t>(items * part_size));
  std::fill_n(parts.data(), items * part_size, 0.0f);
  void (*tile)(const GradTile&) = k == 3 ? kr.grad3 : kr.grad5;

#pragma omp parallel if (worth_threads(s))
  {
    const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t lo = items * t / team, hi = items * (t + 1) / team;
    // Images outermost: an image's dout and xp stay in cache across the thread's items.
    for (int64_t n = 0; n < s.N; ++n) {
      for (int64_t item = lo; item < hi; ++item) {
        const int64_t block = item / (s.C * k), c = item / k % s.C, i = item % k;
        GradTile g{};
        g.dy = dout + (n * s.K + block * Q) * s.Ho * s.Wo;
        g.x = xp.data() + ((n * s.C + c) * Hp + i) * Wp;
        g.part = parts.data() + item * part_size;
        g.out_plane = s.Ho * s.Wo;
        g.row = Wp;
        g.Ho = s.Ho;
        g.Wo = s.Wo;
        g.channels = std::min(Q, s.K - block * Q);
        tile(g);
      }
    }
  }

  for (int64_t item = 0; item < items; ++item) {
    const int64_t block = item / (s.C * k), c = item / k % s.C, i = item % k;
    const float* part = parts.data() + item * part_size;
    for (int64_t q = 0; q < std::min(Q, s.K - block * Q); ++q) {
      float* d = dw + (((block * Q + q) * s.C + c) * k + i) * k;
      for (int64_t j = 0; j < k; ++j) {
        const float* lanes = part + (q * k + j) * L;
        float sum = 0.0f;
        for (int64_t l = 0; l < L; ++l) sum += lanes[l];
        d[j] += sum;
      }
    }
  }
}

}  // namespace bnlab::detail

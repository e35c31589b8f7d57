// Winograd F(4x4, 3x3) convolution for 3x3, stride-1, padding-1, ungrouped conv2d: forward, input
// gradient and weight gradient.
//
// Legend: N batch, C in-channels, K out-channels, H x W image (= output size), a tile t is a 4x4
// block of outputs at rows [4ty, 4ty + 4) and columns [4tx, 4tx + 4) of image n (cropped at the
// bottom/right edge when H or W is not a multiple of 4); its input patch d is the 6x6 window at
// (4ty - 1, 4tx - 1), zero outside the image. xi in [0, 36) indexes a 6x6 transform cell.
//   weights: U[xi][k][c] = (G g[k][c] G^T)[xi]                        (computed in double)
//   forward: V[xi][c][t] = (B^T d[c] B)[xi]
//            M[xi] [K, T] = U[xi] [K, C] x V[xi] [C, T]                 (36 GEMMs per block)
//            y[k] tile = A^T M[.][k][t] A, cropped, + b[k]
//   backward (the exact adjoints of those linear maps):
//            dM[xi][k][t] = (A dY[k] tile A^T)[xi]                      (dY zero outside)
//            dU[xi] [K, C] += dM[xi] [K, T] x V[xi]^T                   (transpose flag)
//            dw[k][c] += G^T dU[.][k][c] G                              (3x3, in double)
//            dV[xi] [C, T] = U[xi]^T x dM[xi]                           (transpose flag)
//            dx patch of (t, c) += B dV[.][c][t] B^T, overlap-added (patches overlap by 2 cells;
//            cells in the padding are dropped)
//   B^T, G, A^T: Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2015), points
//   0, +-1, +-2, +-1/2, infinity; each 1-D transform below is one of those matrices written out.
//
// Blocking: tiles are numbered image by image, row by row. A work unit is a run of whole images
// (several small images, or one large one), so two units never write the same input pixel's
// gradient; a unit is processed in blocks of at most `block` tiles, sized so a block's V and M
// (36 (C + K) block floats) stay in L2. Within a block, kLanes consecutive tiles are transformed
// together, one SIMD lane each (the V/M layouts have the tile innermost, so a lane group is one
// contiguous store per cell).
// With bnlab's own GEMM (Plan::packed) a block is one GEMM panel, 32 tiles for the AVX-512 kernel
// and 16 for the AVX2 one: then a cell's V [C, panel] and dM [K, panel] are already in the layout
// the GEMM kernel packs B into, and U (and U^T for dx) are packed once per call, so the forward's
// and dx's 36 GEMMs per block pack nothing (docs/performance.md, "Pre-packed GEMMs").
//
// Threads: OpenMP over units, each thread with its own block workspace from the storage pool; a
// GEMM inside the region runs on the calling thread. Units (forward) and slots (backward) go to
// threads in static shares, and a thread that finishes takes over the other's last ones
// (core/stealing_loop.h). dW is a sum over tiles: the units are split into a FIXED number of slots
// (min(kSlots, units), independent of the thread count), each slot sums its units in order into a
// zeroed dU (in its thread's workspace) and transforms it to a weight-sized partial, and the
// partials are added in slot order, so dw, like dx and the output, is bit-identical for every
// thread count.
//
// Numerics: a transform cell mixes the 6x6 patch with weights up to 5 (B^T) and outputs mix 36
// cells with weights up to 8^2 (A^T), so rounding errors are larger than im2col's, and they scale
// with the output's tile, not its window: bounded in tests/core/test_ops_conv_winograd.cpp by a
// small multiple of float epsilon times sum over c of (sum of |x| over the tile's 6x6 patch) *
// (sum of |w[k][c]|) (dx: over the tiles whose patches hold the pixel). On operands of one size
// that is also within 64 eps of sum |w||x| over each output's own window; one value 1e4 times the
// rest moves all 16 outputs of its tiles by up to its share (at 1e6 some change sign), as any
// F(4x4, 3x3) does, while im2col's error stays within each window's sum. A NaN or inf in x reaches
// every output the reference makes non-finite and may also reach other outputs of the (up to four)
// tiles whose 6x6 patches contain it, never outputs outside those tiles; so conv2d gives this path
// finite operands only, and none whose products the transforms' gains could take past float's range
// where im2col's sums stay finite (core/ops/conv.cpp, mixes_tiles and tile_products_fit).
#include "core/ops/conv_winograd.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <optional>

#include "core/blas.h"
#include "core/cpu_isa.h"
#include "core/error.h"
#include "core/gemm_avx2.h"
#include "core/gemm_avx512.h"
#include "core/ops/plane_moments.h"
#include "core/ops/prefetch.h"
#include "core/ops/thread_scratch.h"
#include "core/ops/unary_op.h"
#include "core/stealing_loop.h"
#include "core/tensor.h"
#include "core/transpose8_avx2.h"

#define BNLAB_WINO_AVX512 __attribute__((target("avx512f")))
// AVX-512F with 512-bit vectors for the compiler's own vectorization (see the transform clones).
#if defined(__clang__)
#define BNLAB_WINO_AVX512_WIDE __attribute__((target("avx512f"), min_vector_width(512)))
#else
#define BNLAB_WINO_AVX512_WIDE __attribute__((target("avx512f,prefer-vector-width=512")))
#endif
// The transforms' float arithmetic must round alike in the AVX-512F clones and the portable code
// (a test compares their results bit for bit), whatever the build's -march: no contraction of
// a * b + c into fused multiply-adds in this file, which the clones could do and an SSE2 build not.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// GCC 12's AVX-512 shuffle, cast and extract intrinsics start from _mm512_undefined_*() or
// _mm_undefined_ps(), which -Wmaybe-uninitialized (and at -O1, as in the sanitizer build,
// -Wuninitialized) reports wherever they are inlined (GCC bug 105593); the value is fully
// overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace bnlab::detail {

namespace {

constexpr int64_t kLanes = 16;  // tiles transformed together
constexpr int64_t kCells = 36;  // 6x6 transform cells
constexpr int64_t kSlots = 8;   // dW reduction slots (see Threads above)
// Bytes of V and M per block: half of this machine's 1 MiB L2, leaving room for U's rows and the
// GEMM's packing buffers (budgets of 2 MiB measured the same within the noise, 8 MiB slower).
constexpr int64_t kBlockBytes = 512 * 1024;

// Whether the transforms may use their AVX-512F or AVX2 parts (on CPUs that have the set): tests
// turn it off to check the portable code on such a machine.
std::atomic<bool> winograd_vector_parts_allowed{true};

// Whether the transforms' AVX-512F parts run: the CPU has AVX-512F and tests have not turned them
// off.
bool avx512_transforms() {
  return winograd_vector_parts_allowed.load(std::memory_order_relaxed) && cpu_has_avx512f();
}

// Whether the transforms move patches and tiles with AVX2 (gather_patches_avx2 and the
// *_whole_tiles_avx2 pair): the CPU has AVX2 but not AVX-512F (cpu_isa(), so BNLAB_MAX_ISA=avx2
// selects them on an AVX-512 CPU), and tests have not turned the vector parts off.
bool avx2_moves() {
  return winograd_vector_parts_allowed.load(std::memory_order_relaxed) && cpu_isa() == CpuIsa::avx2;
}

// ---- 1-D transforms on kLanes tiles: in[i * is + lane] -> out[j * os + lane] ----

// B^T (6x6): the input transform.
inline void bt_1d(const float* in, int64_t is, float* out, int64_t os) {
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    const float d0 = in[l], d1 = in[is + l], d2 = in[2 * is + l], d3 = in[3 * is + l],
                d4 = in[4 * is + l], d5 = in[5 * is + l];
    out[l] = 4.0f * d0 - 5.0f * d2 + d4;
    out[os + l] = -4.0f * (d1 + d2) + (d3 + d4);
    out[2 * os + l] = 4.0f * (d1 - d2) + (d4 - d3);
    out[3 * os + l] = 2.0f * (d3 - d1) + (d4 - d2);
    out[4 * os + l] = 2.0f * (d1 - d3) + (d4 - d2);
    out[5 * os + l] = 4.0f * d1 - 5.0f * d3 + d5;
  }
}

// B = (B^T)^T (6x6): the adjoint of bt_1d.
inline void b_1d(const float* in, int64_t is, float* out, int64_t os) {
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    const float v0 = in[l], v1 = in[is + l], v2 = in[2 * is + l], v3 = in[3 * is + l],
                v4 = in[4 * is + l], v5 = in[5 * is + l];
    out[l] = 4.0f * v0;
    out[os + l] = 4.0f * (v2 - v1 + v5) + 2.0f * (v4 - v3);
    out[2 * os + l] = -5.0f * v0 - 4.0f * (v1 + v2) - (v3 + v4);
    out[3 * os + l] = (v1 - v2) + 2.0f * (v3 - v4) - 5.0f * v5;
    out[4 * os + l] = v0 + (v1 + v2) + (v3 + v4);
    out[5 * os + l] = v5;
  }
}

// A^T (4x6): the output transform.
inline void at_1d(const float* in, int64_t is, float* out, int64_t os) {
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    const float m0 = in[l], m1 = in[is + l], m2 = in[2 * is + l], m3 = in[3 * is + l],
                m4 = in[4 * is + l], m5 = in[5 * is + l];
    const float p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
    out[l] = m0 + p12 + p34;
    out[os + l] = d12 + 2.0f * d34;
    out[2 * os + l] = p12 + 4.0f * p34;
    out[3 * os + l] = d12 + 8.0f * d34 + m5;
  }
}

// A = (A^T)^T (6x4): the adjoint of at_1d.
inline void a_1d(const float* in, int64_t is, float* out, int64_t os) {
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    const float v0 = in[l], v1 = in[is + l], v2 = in[2 * is + l], v3 = in[3 * is + l];
    out[l] = v0;
    out[os + l] = v0 + v1 + v2 + v3;
    out[2 * os + l] = v0 - v1 + v2 - v3;
    out[3 * os + l] = v0 + 2.0f * v1 + 4.0f * v2 + 8.0f * v3;
    out[4 * os + l] = v0 - 2.0f * v1 + 4.0f * v2 - 8.0f * v3;
    out[5 * os + l] = v3;
  }
}

// G (6x3) and G^T (3x6) on doubles, for the weight transform and its adjoint (once per call per
// (k, c) pair; written out because a generic loop over G's entries cost 7 % of a 64->128 8x8
// forward).
constexpr double k6 = 1.0 / 6, k12 = 1.0 / 12, k24 = 1.0 / 24;  // products, not divisions

inline void g_1d(const double* in, int64_t is, double* out, int64_t os) {
  const double g0 = in[0], g1 = in[is], g2 = in[2 * is];
  out[0] = 0.25 * g0;
  out[os] = -k6 * (g0 + g1 + g2);
  out[2 * os] = -k6 * (g0 - g1 + g2);
  out[3 * os] = k24 * g0 + k12 * g1 + k6 * g2;
  out[4 * os] = k24 * g0 - k12 * g1 + k6 * g2;
  out[5 * os] = g2;
}

inline void gt_1d(const double* in, int64_t is, double* out, int64_t os) {
  const double v0 = in[0], v1 = in[is], v2 = in[2 * is], v3 = in[3 * is], v4 = in[4 * is],
               v5 = in[5 * is];
  out[0] = 0.25 * v0 - k6 * (v1 + v2) + k24 * (v3 + v4);
  out[os] = k6 * (v2 - v1) + k12 * (v3 - v4);
  out[2 * os] = k6 * (v3 + v4 - v1 - v2) + v5;
}

// U [36][K][C] from w [K][C][3][3]. 16 pairs at a time, so each of U's 36 planes gets one
// contiguous 64-byte row: one pair's 36 values sit K*C floats apart (16 KiB at 64x64, so all in one
// L1 set), and storing them one by one was 70 % of this function.
void transform_weights(float* U, const float* w, int64_t K, int64_t C) {
  const int64_t KC = K * C;
#pragma omp parallel for if (KC > 4096)
  for (int64_t kc0 = 0; kc0 < KC; kc0 += kLanes) {
    // Element e of a pair's g, t or u at [e * kLanes + q], q the pair's lane: each 1-D transform
    // runs on the 16 pairs at once (a scalar loop per pair was 1.7 % of a cifar-cnn step).
    alignas(64) double g[9 * kLanes], t[18 * kLanes], u[kCells * kLanes];
    const int64_t count = std::min(kLanes, KC - kc0);
    for (int i = 0; i < 9; ++i)
      for (int64_t q = 0; q < kLanes; ++q) g[i * kLanes + q] = q < count ? w[(kc0 + q) * 9 + i] : 0;
    for (int j = 0; j < 3; ++j) {  // t [6][3] = G g
#pragma omp simd
      for (int64_t q = 0; q < kLanes; ++q)
        g_1d(g + j * kLanes + q, 3 * kLanes, t + j * kLanes + q, 3 * kLanes);
    }
    for (int a = 0; a < 6; ++a) {  // u [6][6] = t G^T
#pragma omp simd
      for (int64_t q = 0; q < kLanes; ++q)
        g_1d(t + a * 3 * kLanes + q, kLanes, u + a * 6 * kLanes + q, kLanes);
    }
    for (int64_t xi = 0; xi < kCells; ++xi)
      for (int64_t q = 0; q < count; ++q)
        U[xi * KC + kc0 + q] = static_cast<float>(u[xi * kLanes + q]);
  }
}

// dw [K][C][3][3] = 0 + G^T dU[.][k][c] G, dU [36][K][C] (the adjoint of transform_weights; 16
// pairs at a time for the same reason). Assigned, as adding into a zeroed buffer would give (-0
// becomes +0), so that a slot's partial needs no zero fill (a serial memset of up to 4.7 MB per
// cifar-cnn layer while the other threads waited).
void write_weight_gradient(float* dw, const float* dU, int64_t K, int64_t C) {
  const int64_t KC = K * C;
#pragma omp parallel for if (KC > 4096)
  for (int64_t kc0 = 0; kc0 < KC; kc0 += kLanes) {
    // The lane layout of transform_weights (a scalar loop per pair here was 4.3 % of a cifar-cnn
    // + BN step: it runs once per dW slot).
    alignas(64) double v[kCells * kLanes], t[18 * kLanes], g[9 * kLanes];
    const int64_t count = std::min(kLanes, KC - kc0);
    for (int64_t xi = 0; xi < kCells; ++xi) {
      const float* src = dU + xi * KC + kc0;
      double* dst = v + xi * kLanes;
      if (count == kLanes) {
#pragma omp simd
        for (int64_t q = 0; q < kLanes; ++q) dst[q] = src[q];
      } else {
        for (int64_t q = 0; q < kLanes; ++q) dst[q] = q < count ? src[q] : 0;
      }
    }
    for (int b = 0; b < 6; ++b) {  // t [3][6] = G^T v
#pragma omp simd
      for (int64_t q = 0; q < kLanes; ++q)
        gt_1d(v + b * kLanes + q, 6 * kLanes, t + b * kLanes + q, 6 * kLanes);
    }
    for (int i = 0; i < 3; ++i) {  // g [3][3] = t G
#pragma omp simd
      for (int64_t q = 0; q < kLanes; ++q)
        gt_1d(t + i * 6 * kLanes + q, kLanes, g + i * 3 * kLanes + q, kLanes);
    }
    for (int64_t q = 0; q < count; ++q)
      for (int i = 0; i < 9; ++i)
        dw[(kc0 + q) * 9 + i] = 0.0f + static_cast<float>(g[i * kLanes + q]);
  }
}

// ---- Tiling ----

struct Plan {
  WinogradShape s;
  int64_t tiles_h, tiles_w, per_image;  // tiles per image = tiles_h * tiles_w
  int64_t block;                        // tiles per block, a multiple of kLanes
  int64_t images_per_unit, units;
  // The forward's and dx's GEMMs take pre-packed weights and V / dM as the kernel's B panel
  // (PackedCells); then a block is one panel: 32 tiles for the AVX-512 kernel, 16 for AVX2's.
  GemmPath packed_path = GemmPath::openblas;  // openblas: not packed
  bool packed;

  explicit Plan(const WinogradShape& shape) : s(shape) {
    tiles_h = (s.H + 3) / 4;
    tiles_w = (s.W + 3) / 4;
    per_image = tiles_h * tiles_w;
    if (s.C <= kGemmPackedMaxK && s.K <= kGemmPackedMaxK) {
      const GemmPath path = gemm_path();
      if ((path == GemmPath::avx512 && avx512_transforms()) || path == GemmPath::avx2)
        packed_path = path;
    }
    packed = packed_path != GemmPath::openblas;
    const int64_t panel =
        packed_path == GemmPath::avx512 ? kGemmPanelColumns : kGemmAvx2PanelColumns;
    // At least 32 tiles: the GEMM's register tile is 32 columns wide.
    const int64_t fit = kBlockBytes / (4 * kCells * (s.C + s.K));
    block = packed ? panel : std::clamp<int64_t>(fit / kLanes * kLanes, 2 * kLanes, 512);
    // Whole images per unit: as many as fill a block, at least one.
    images_per_unit = std::max<int64_t>(1, block / per_image);
    block = std::min(block, (images_per_unit * per_image + kLanes - 1) / kLanes * kLanes);
    units = (s.N + images_per_unit - 1) / images_per_unit;
  }
  // Parallel only when the work pays for waking the team (as conv.cpp's rule).
  bool parallel() const { return units > 1 && s.N * s.K * s.C * s.H * s.W > (int64_t{1} << 18); }
  int64_t workspace() const { return kCells * (s.C + s.K) * block; }
};

// The 36 cells' [rows, depth] matrices of U (each stored [K, C]; transposed: U^T, [C, K]) in the
// GEMM's packed form, for Plan::packed.
class PackedCells {
 public:
  PackedCells(const float* U, int64_t K, int64_t C, bool transposed, GemmPath path)
      : avx512_(path == GemmPath::avx512),
        rows_(transposed ? C : K),
        depth_(transposed ? K : C),
        stride_(avx512_ ? gemm_packed_a_floats(rows_, depth_)
                        : gemm_avx2_packed_a_floats(rows_, depth_)),
        data_(static_cast<size_t>(kCells * stride_)) {
    // In cell order: the AVX2 packing writes a few floats past a cell, which the next overwrites.
    for (int64_t xi = 0; xi < kCells; ++xi) {
      const float* u = U + xi * K * C;
      float* packed = data_.data() + xi * stride_;
      if (avx512_) {
        gemm_pack_a(transposed, u, C, rows_, depth_, packed);
      } else {
        gemm_avx2_pack_a(transposed, u, C, rows_, depth_, packed);
      }
    }
  }
  // C [rows, n] = cell xi's matrix x B, B one panel [depth, n <= the panel's columns] (beta 0).
  void multiply(int64_t xi, int64_t n, const float* b_panel, float* c, int64_t ldc) const {
    const float* a = data_.data() + xi * stride_;
    if (avx512_) {
      gemm_avx512_packed(rows_, n, depth_, 1.0f, a, b_panel, 0.0f, c, ldc);
    } else {
      gemm_avx2_packed(rows_, n, depth_, 1.0f, a, b_panel, 0.0f, c, ldc);
    }
  }

 private:
  bool avx512_;
  int64_t rows_, depth_, stride_;
  Storage data_;
};

// Where the lanes' tiles sit: image pointer offsets and the patch origin. Lanes past the unit's
// last tile are marked invalid (they transform zeros and are never written back).
struct LaneTiles {
  int64_t count;          // valid lanes
  int64_t n[kLanes];      // image
  bool interior[kLanes];  // patch entirely inside the image
  bool all_whole;         // every lane valid with a whole (uncropped) 4x4 output tile
  int64_t r0[kLanes];     // first output row (4ty); the patch starts one row above
  int64_t c0[kLanes];     // first output column (4tx)
};

LaneTiles lane_tiles(const Plan& p, int64_t n0, int64_t first, int64_t unit_tiles) {
  LaneTiles lt{};
  lt.count = std::clamp<int64_t>(unit_tiles - first, 0, kLanes);
  for (int64_t l = 0; l < lt.count; ++l) {
    const int64_t u = first + l, r = u % p.per_image;
    lt.n[l] = n0 + u / p.per_image;
    lt.r0[l] = 4 * (r / p.tiles_w);
    lt.c0[l] = 4 * (r % p.tiles_w);
    lt.interior[l] =
        lt.r0[l] >= 1 && lt.r0[l] + 5 <= p.s.H && lt.c0[l] >= 1 && lt.c0[l] + 5 <= p.s.W;
  }
  lt.all_whole = lt.count == kLanes;
  for (int64_t l = 0; l < lt.count; ++l) {
    lt.all_whole = lt.all_whole && lt.r0[l] + 4 <= p.s.H && lt.c0[l] + 4 <= p.s.W;
  }
  return lt;
}

// The rows of one channel's plane that the lanes read, one contiguous run per image (the lanes of
// one image are consecutive and go down its rows): each lane's rows r0 + shift .. r0 + shift +
// rows, clipped to the image. Offsets are from the tensor's start at channel 0.
struct LaneRuns {
  int64_t count = 0;
  int64_t begin[kLanes], end[kLanes];
};

LaneRuns lane_runs(const LaneTiles& lt, const Plan& p, int64_t channels, int64_t shift,
                   int64_t rows) {
  const int64_t H = p.s.H, W = p.s.W;
  LaneRuns r;
  int64_t last_n = -1;
  for (int64_t l = 0; l < lt.count; ++l) {
    const int64_t lo = std::clamp<int64_t>(lt.r0[l] + shift, 0, H);
    const int64_t hi = std::clamp<int64_t>(lt.r0[l] + shift + rows, 0, H);
    const int64_t plane = lt.n[l] * channels * H * W;
    if (lt.n[l] != last_n) {
      r.begin[r.count] = plane + lo * W;
      r.end[r.count++] = plane + hi * W;
      last_n = lt.n[l];
    } else {
      r.begin[r.count - 1] = std::min(r.begin[r.count - 1], plane + lo * W);
      r.end[r.count - 1] = std::max(r.end[r.count - 1], plane + hi * W);
    }
  }
  return r;
}

// Asks for the cache lines of the runs in the plane at `base` (a channel's offset into the tensor).
// The transforms walk channels, H * W floats apart: every channel's rows start on pages the
// hardware prefetcher has not seen (it stops at 4 KiB pages), so the loads of the next channels'
// patches are requested while the current one is transformed.
[[gnu::always_inline]] inline void prefetch_runs(const float* base, const LaneRuns& r) {
  for (int64_t i = 0; i < r.count; ++i) prefetch_run(base + r.begin[i], r.end[i] - r.begin[i]);
}

// How many channels ahead the transforms request their input rows.
constexpr int64_t kPrefetchChannels = 2;

// d [36][kLanes] <- the lanes' 6x6 patches of channel c of x (0 outside the image and in the
// lanes past lt.count). Per-lane copies that write every cell (a zero fill of d first was 12 % of
// a 64->64 16x16 step; one masked 16-lane gather per cell measured twice as slow as the copies).
void gather_patches(float* d, const float* x, int64_t c, const LaneTiles& lt, const Plan& p) {
  const int64_t H = p.s.H, W = p.s.W;
  for (int64_t l = 0; l < kLanes; ++l) {
    if (l >= lt.count) {
      for (int64_t ij = 0; ij < kCells; ++ij) d[ij * kLanes + l] = 0.0f;
      continue;
    }
    const float* plane = x + (lt.n[l] * p.s.C + c) * H * W;
    const int64_t ih0 = lt.r0[l] - 1, iw0 = lt.c0[l] - 1;
    if (lt.interior[l]) {
      for (int64_t i = 0; i < 6; ++i)
        for (int64_t j = 0; j < 6; ++j)
          d[(i * 6 + j) * kLanes + l] = plane[(ih0 + i) * W + iw0 + j];
      continue;
    }
    // A border patch: the rows and columns inside the image are ranges, so no per-cell test.
    const int64_t i0 = std::max<int64_t>(0, -ih0), i1 = std::clamp<int64_t>(H - ih0, i0, 6);
    const int64_t j0 = std::max<int64_t>(0, -iw0), j1 = std::clamp<int64_t>(W - iw0, j0, 6);
    for (int64_t i = 0; i < 6; ++i) {
      float* di = d + i * 6 * kLanes + l;
      if (i < i0 || i >= i1) {
        for (int64_t j = 0; j < 6; ++j) di[j * kLanes] = 0.0f;
        continue;
      }
      const float* src = plane + (ih0 + i) * W + iw0;
      for (int64_t j = 0; j < j0; ++j) di[j * kLanes] = 0.0f;
      for (int64_t j = j0; j < j1; ++j) di[j * kLanes] = src[j];
      for (int64_t j = j1; j < 6; ++j) di[j * kLanes] = 0.0f;
    }
  }
}

// Element t of a 16-lane mask is set for lo <= t < hi (bounds clamped to 0..16).
inline __mmask16 lanes_between(int64_t lo, int64_t hi) {
  lo = std::clamp<int64_t>(lo, 0, 16);
  hi = std::clamp<int64_t>(hi, 0, 16);
  if (hi <= lo) return 0;
  return static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

// Where the lanes' patches lie, for gather_patches_avx512: the same for every channel, so worked
// out once per lane group (per channel, these scalar tests outnumbered the gather's vector
// instructions).
struct PatchRows {
  int64_t offset[kLanes];       // patch cell (0, 0) from x's start at channel 0 (may be < 0)
  __mmask16 lo[6][kLanes / 2];  // patch row i's load mask for lane l (valid columns, or none)
  __mmask16 hi[6][kLanes / 2];  // ... for lane l + 8, shifted to elements 8..13
};

// Lane l's patch: cell (0, 0) from x's start at channel 0 (may be < 0), and its rows [i0, i1) and
// columns [j0, j1) that lie in the image.
struct PatchSpan {
  int64_t offset, i0, i1, j0, j1;
};
PatchSpan patch_span(const LaneTiles& lt, int64_t l, const Plan& p) {
  const int64_t H = p.s.H, W = p.s.W, ih0 = lt.r0[l] - 1, iw0 = lt.c0[l] - 1;
  const int64_t i0 = std::max<int64_t>(0, -ih0), j0 = std::max<int64_t>(0, -iw0);
  return {lt.n[l] * p.s.C * H * W + ih0 * W + iw0, i0, std::clamp<int64_t>(H - ih0, i0, 6), j0,
          std::clamp<int64_t>(W - iw0, j0, 6)};
}

PatchRows patch_rows(const LaneTiles& lt, const Plan& p) {
  PatchRows r{};
  for (int64_t l = 0; l < lt.count; ++l) {
    const PatchSpan span = patch_span(lt, l, p);
    r.offset[l] = span.offset;
    const __mmask16 cols = lanes_between(span.j0, span.j1);
    for (int64_t i = span.i0; i < span.i1; ++i) {
      if (l < kLanes / 2) {
        r.lo[i][l] = cols;
      } else {
        r.hi[i][l - kLanes / 2] = static_cast<__mmask16>(cols << 8);
      }
    }
  }
  return r;
}

// gather_patches with AVX-512F: per patch row i, each pair of lanes (l, l + 8) is one zmm filled by
// two masked loads (lane l's six cells in the low half, lane l + 8's in the high half; columns and
// rows in the padding, and lanes past lt.count, masked to 0), then an 8x8 transpose within each
// 256-bit half turns the eight registers into the row's six cells x 16 lanes. About 60
// instructions per patch row instead of 96 scalar loads and stores. Same values as gather_patches.
BNLAB_WINO_AVX512 void gather_patches_avx512(float* d, const float* x, int64_t c,
                                             const PatchRows& pr, const Plan& p) {
  const int64_t W = p.s.W;
  // The lanes' patch cell (0, 0) in channel c, formed as an integer: it may lie before the plane.
  uintptr_t base[kLanes];
  for (int64_t l = 0; l < kLanes; ++l)
    base[l] = reinterpret_cast<uintptr_t>(x) +
              static_cast<uintptr_t>(c * p.s.H * W + pr.offset[l]) * sizeof(float);
  // Indices that gather 128-bit blocks for the last transpose step: {a0, b0 | a2, b2} and
  // {a1, b1 | a3, b3}, as permutex2var indices (b's lanes are 16 + i).
  const __m512i lo_blocks =
      _mm512_set_epi32(27, 26, 25, 24, 11, 10, 9, 8, 19, 18, 17, 16, 3, 2, 1, 0);
  const __m512i hi_blocks =
      _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 23, 22, 21, 20, 7, 6, 5, 4);
  for (int64_t i = 0; i < 6; ++i) {
    __m512 r[8];
    const uintptr_t row_bytes = static_cast<uintptr_t>(i * W) * sizeof(float);
    for (int64_t l = 0; l < 8; ++l) {
      __m512 v =
          _mm512_maskz_loadu_ps(pr.lo[i][l], reinterpret_cast<const float*>(base[l] + row_bytes));
      // Lane l + 8's six cells land in elements 8..13: load from 8 floats before its row start.
      v = _mm512_mask_loadu_ps(
          v, pr.hi[i][l],
          reinterpret_cast<const float*>(base[l + 8] + row_bytes - 8 * sizeof(float)));
      r[l] = v;
    }
    // 8x8 transpose in each 256-bit half: rows r[l] = lane l's cells, columns = cells j.
    const __m512 t0 = _mm512_unpacklo_ps(r[0], r[1]), t1 = _mm512_unpackhi_ps(r[0], r[1]);
    const __m512 t2 = _mm512_unpacklo_ps(r[2], r[3]), t3 = _mm512_unpackhi_ps(r[2], r[3]);
    const __m512 t4 = _mm512_unpacklo_ps(r[4], r[5]), t5 = _mm512_unpackhi_ps(r[4], r[5]);
    const __m512 t6 = _mm512_unpacklo_ps(r[6], r[7]), t7 = _mm512_unpackhi_ps(r[6], r[7]);
    const __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xEE);
    const __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xEE);
    const __m512 u4 = _mm512_shuffle_ps(t4, t6, 0x44), u5 = _mm512_shuffle_ps(t4, t6, 0xEE);
    const __m512 u6 = _mm512_shuffle_ps(t5, t7, 0x44), u7 = _mm512_shuffle_ps(t5, t7, 0xEE);
    float* di = d + i * 6 * kLanes;
    // Cell j of the 16 lanes: lanes 0..7 in elements 0..7, lanes 8..15 in 8..15.
    _mm512_store_ps(di + 0 * kLanes, _mm512_permutex2var_ps(u0, lo_blocks, u4));
    _mm512_store_ps(di + 1 * kLanes, _mm512_permutex2var_ps(u1, lo_blocks, u5));
    _mm512_store_ps(di + 2 * kLanes, _mm512_permutex2var_ps(u2, lo_blocks, u6));
    _mm512_store_ps(di + 3 * kLanes, _mm512_permutex2var_ps(u3, lo_blocks, u7));
    _mm512_store_ps(di + 4 * kLanes, _mm512_permutex2var_ps(u0, hi_blocks, u4));
    _mm512_store_ps(di + 5 * kLanes, _mm512_permutex2var_ps(u1, hi_blocks, u5));
  }
}

// Where the lanes' patches lie, for gather_patches_avx2 (as PatchRows for AVX-512F).
struct PatchRowsAvx2 {
  int64_t offset[kLanes];  // patch cell (0, 0) from x's start at channel 0 (may be < 0)
  alignas(32) int32_t cols[kLanes][8];  // lane l's load mask for its rows: the valid columns
  uint8_t rows[kLanes];                 // bit i: lane l's patch row i lies in the image
};

PatchRowsAvx2 patch_rows_avx2(const LaneTiles& lt, const Plan& p) {
  PatchRowsAvx2 r{};
  for (int64_t l = 0; l < lt.count; ++l) {
    const PatchSpan span = patch_span(lt, l, p);
    r.offset[l] = span.offset;
    for (int64_t j = span.j0; j < span.j1; ++j) r.cols[l][j] = -1;
    for (int64_t i = span.i0; i < span.i1; ++i)
      r.rows[l] = static_cast<uint8_t>(r.rows[l] | (1u << i));
  }
  return r;
}

// gather_patches with AVX2: per patch row i and half of the lanes (0..7, 8..15), each lane's six
// cells are one masked load (columns in the padding masked to 0; rows in the padding and lanes past
// lt.count are zero registers), and an 8x8 transpose turns the eight registers into the row's six
// cells x 8 lanes. Same values as gather_patches, whose scalar copies were 60 % of the input
// transform's time on a Zen 3 core (cifar-cnn's second block).
__attribute__((target("avx2,fma"))) void gather_patches_avx2(float* d, const float* x, int64_t c,
                                                             const PatchRowsAvx2& pr,
                                                             const Plan& p) {
  const int64_t W = p.s.W;
  // The lanes' patch cell (0, 0) in channel c, formed as an integer: it may lie before the plane.
  uintptr_t base[kLanes];
  for (int64_t l = 0; l < kLanes; ++l)
    base[l] = reinterpret_cast<uintptr_t>(x) +
              static_cast<uintptr_t>(c * p.s.H * W + pr.offset[l]) * sizeof(float);
  for (int64_t i = 0; i < 6; ++i) {
    const uintptr_t row_bytes = static_cast<uintptr_t>(i * W) * sizeof(float);
    for (int64_t h = 0; h < kLanes; h += 8) {
      __m256 r[8];
      for (int64_t l = 0; l < 8; ++l) {
        const int64_t lane = h + l;
        r[l] = (pr.rows[lane] >> i & 1u) != 0
                   ? _mm256_maskload_ps(
                         reinterpret_cast<const float*>(base[lane] + row_bytes),
                         _mm256_load_si256(reinterpret_cast<const __m256i*>(pr.cols[lane])))
                   : _mm256_setzero_ps();
      }
      transpose8(r);
      for (int64_t j = 0; j < 6; ++j) _mm256_store_ps(d + (i * 6 + j) * kLanes + h, r[j]);
    }
  }
}

// In-place 16x16 transpose: element j of register i goes to element i of register j. Pairs of
// registers are interleaved (unpack), then quadruples (shuffle_ps), then the 128-bit blocks of four
// registers are transposed as a 4x4 matrix (two rounds of shuffle_f32x4).
BNLAB_WINO_AVX512 inline void transpose16x16(__m512 r[16]) {
  __m512 t[16], u[16];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    t[2 * j] = _mm512_unpacklo_ps(r[2 * j], r[2 * j + 1]);
    t[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j], r[2 * j + 1]);
  }
  // u[4j + m], block q: element 4q + m of rows 4j .. 4j + 3.
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    u[4 * j] = _mm512_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
    u[4 * j + 1] = _mm512_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
    u[4 * j + 2] = _mm512_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
    u[4 * j + 3] = _mm512_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
  }
  // Row 4q + m gathers block q of u[m], u[4 + m], u[8 + m], u[12 + m].
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
    const __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
    r[m] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    r[4 + m] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
    r[8 + m] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    r[12 + m] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
  }
}

// Where lane l's tile starts (its first output row) in plane k of a [N, K, H, W] tensor.
inline int64_t tile_offset(int64_t k, int64_t l, const LaneTiles& lt, const Plan& p) {
  return ((lt.n[l] * p.s.K + k) * p.s.H + lt.r0[l]) * p.s.W + lt.c0[l];
}

// tile_offset at channel 0 for every lane, worked out once per lane group rather than per channel.
struct TileOffsets {
  int64_t at[kLanes];
};
inline TileOffsets whole_tile_offsets(const LaneTiles& lt, const Plan& p) {
  TileOffsets t{};
  for (int64_t l = 0; l < lt.count; ++l) t.at[l] = tile_offset(0, l, lt, p);
  return t;
}

// dy [16][kLanes] <- the lanes' 4x4 tiles of channel k of dout, for 16 valid lanes with whole
// tiles (lt.all_whole): a lane's tile, 4 rows of 4, is one register, and a 16x16 transpose turns
// the 16 registers into the 16 cells x 16 lanes. The values of output_gradient_transform's copies,
// in 24 loads and stores and 64 shuffles instead of 256 scalar loads and stores.
// tiles: each lane's tile_offset at channel 0 (whole_tile_offsets), the same for every channel.
BNLAB_WINO_AVX512 void gather_whole_tiles_avx512(float* dy, const float* dout, int64_t k,
                                                 const int64_t* tiles, const Plan& p) {
  const int64_t W = p.s.W;
  const float* channel = dout + k * p.s.H * W;
  __m512 r[16];
#pragma GCC unroll 16
  for (int l = 0; l < 16; ++l) {
    const float* t = channel + tiles[l];
    __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(t));
    v = _mm512_insertf32x4(v, _mm_loadu_ps(t + W), 1);
    v = _mm512_insertf32x4(v, _mm_loadu_ps(t + 2 * W), 2);
    r[l] = _mm512_insertf32x4(v, _mm_loadu_ps(t + 3 * W), 3);
  }
  transpose16x16(r);
#pragma GCC unroll 16
  for (int e = 0; e < 16; ++e) _mm512_store_ps(dy + e * kLanes, r[e]);
}

// The inverse: the lanes' 4x4 output tiles y [16][kLanes] into channel k of out, for 16 valid
// lanes with whole tiles.
BNLAB_WINO_AVX512 void scatter_whole_tiles_avx512(float* out, const float* y, int64_t k,
                                                  const int64_t* tiles, const Plan& p) {
  const int64_t W = p.s.W;
  float* channel = out + k * p.s.H * W;
  __m512 r[16];
#pragma GCC unroll 16
  for (int e = 0; e < 16; ++e) r[e] = _mm512_load_ps(y + e * kLanes);
  transpose16x16(r);
#pragma GCC unroll 16
  for (int l = 0; l < 16; ++l) {
    float* t = channel + tiles[l];
    _mm_storeu_ps(t, _mm512_castps512_ps128(r[l]));
    _mm_storeu_ps(t + W, _mm512_extractf32x4_ps(r[l], 1));
    _mm_storeu_ps(t + 2 * W, _mm512_extractf32x4_ps(r[l], 2));
    _mm_storeu_ps(t + 3 * W, _mm512_extractf32x4_ps(r[l], 3));
  }
}

// The two above with AVX2, 8 lanes at a time: a lane's tile rows r and r + 1 are one ymm, and an
// 8x8 transpose turns 8 lanes' registers into cells (r, 0..3) and (r + 1, 0..3) x 8 lanes, which
// are 8 consecutive cells of dy. Same values as the scalar copies of the output transforms.
__attribute__((target("avx2,fma"))) void gather_whole_tiles_avx2(float* dy, const float* dout,
                                                                 int64_t k, const int64_t* tiles,
                                                                 const Plan& p) {
  const int64_t W = p.s.W;
  const float* channel = dout + k * p.s.H * W;
  for (int64_t h = 0; h < kLanes; h += 8) {
    for (int64_t row = 0; row < 4; row += 2) {
      __m256 r[8];
      for (int64_t l = 0; l < 8; ++l) {
        const float* t = channel + tiles[h + l] + row * W;
        r[l] = _mm256_set_m128(_mm_loadu_ps(t + W), _mm_loadu_ps(t));
      }
      transpose8(r);
      for (int64_t e = 0; e < 8; ++e) _mm256_store_ps(dy + (row * 4 + e) * kLanes + h, r[e]);
    }
  }
}

__attribute__((target("avx2,fma"))) void scatter_whole_tiles_avx2(float* out, const float* y,
                                                                  int64_t k, const int64_t* tiles,
                                                                  const Plan& p) {
  const int64_t W = p.s.W;
  float* channel = out + k * p.s.H * W;
  for (int64_t h = 0; h < kLanes; h += 8) {
    for (int64_t row = 0; row < 4; row += 2) {
      __m256 r[8];
      for (int64_t e = 0; e < 8; ++e) r[e] = _mm256_load_ps(y + (row * 4 + e) * kLanes + h);
      transpose8(r);
      for (int64_t l = 0; l < 8; ++l) {
        float* t = channel + tiles[h + l] + row * W;
        _mm_storeu_ps(t, _mm256_castps256_ps128(r[l]));
        _mm_storeu_ps(t + W, _mm256_extractf128_ps(r[l], 1));
      }
    }
  }
}

// dx's channel c += the lanes' 6x6 patch gradients dd [36][kLanes], cells in the padding dropped.
// Lanes are added in order, so overlapping patches accumulate deterministically.
void scatter_patches(float* dx, const float* dd, int64_t c, const LaneTiles& lt, const Plan& p) {
  const int64_t H = p.s.H, W = p.s.W;
  for (int64_t l = 0; l < lt.count; ++l) {
    float* plane = dx + (lt.n[l] * p.s.C + c) * H * W;
    const int64_t ih0 = lt.r0[l] - 1, iw0 = lt.c0[l] - 1;
    for (int64_t i = std::max<int64_t>(0, -ih0); i < std::min<int64_t>(6, H - ih0); ++i)
      for (int64_t j = std::max<int64_t>(0, -iw0); j < std::min<int64_t>(6, W - iw0); ++j)
        plane[(ih0 + i) * W + iw0 + j] += dd[(i * 6 + j) * kLanes + l];
  }
}

// Four rows of 16 lanes d0..d3 interleaved: out[q] element 4 mm + j = dj's lane 4 q + mm, i.e. the
// 64 values in the order lane 0's four, lane 1's four, ... (a 4 x 16 transpose).
BNLAB_WINO_AVX512 inline void interleave4(__m512 d0, __m512 d1, __m512 d2, __m512 d3,
                                          __m512 out[4]) {
  const __m512 t0 = _mm512_unpacklo_ps(d0, d1), t1 = _mm512_unpackhi_ps(d0, d1);
  const __m512 t2 = _mm512_unpacklo_ps(d2, d3), t3 = _mm512_unpackhi_ps(d2, d3);
  // u_r's 128-bit block k: lane 4 k + r's four values.
  const __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xEE);
  const __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xEE);
  const __m512 v0 = _mm512_shuffle_f32x4(u0, u1, 0x44), v1 = _mm512_shuffle_f32x4(u0, u1, 0xEE);
  const __m512 v2 = _mm512_shuffle_f32x4(u2, u3, 0x44), v3 = _mm512_shuffle_f32x4(u2, u3, 0xEE);
  out[0] = _mm512_shuffle_f32x4(v0, v2, 0x88);
  out[1] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
  out[2] = _mm512_shuffle_f32x4(v1, v3, 0x88);
  out[3] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
}

// scatter_patches with AVX-512F: the same additions in the same order, so the same bits.
// The lanes of one image and one tile row (a run: consecutive tiles) cover one strip per patch
// row, lane m's cell j at strip position 4 m + j, so neighbours share two positions, where the
// scalar loop adds lane m's cells 4, 5 and then lane m + 1's cells 0, 1. Per patch row, register
// transposes lay the 16 lanes' cells 0-3 out as P0 (position 4 m + j) and cells 4, 5 as P4 (also
// position 4 m + j: lane m's cell 4 sits where lane m + 1's cell 0 does); each strip is then one
// masked load, add P4, add P0 and masked store per 16 cells. A shared cell so gets (old + lane m's)
// + lane m + 1's, as before; the adds are masked to the cells that have a contribution, so the
// others keep their bits (-0). Vertical overlaps are between runs (tile rows), which are stored in
// lane order. (Storing one masked row per lane instead was slower than the scalar loop: each row's
// load overlapped the previous lane's store before it could complete.) Used for images at least 4
// tiles wide: on narrower ones (runs of 2 lanes) the transposes cost more than the scalar loop
// (conv_paths, 128 -> 128 at 8 x 8: 1.5 % slower; 32 -> 32 at 32 x 32: 5 % faster, forward +
// backward).
BNLAB_WINO_AVX512 void scatter_patches_avx512(float* dx, const float* dd, int64_t c,
                                              const LaneTiles& lt, const Plan& p) {
  const int64_t H = p.s.H, W = p.s.W;
  // Per patch row: P0 at positions 0..63, P4 at 4..67 (0..3 zero); a strip's loads start at a
  // multiple of 4 up to 64 and are masked to its positions.
  alignas(64) float p0[6][80], p4[6][80];
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < 6; ++i) {
    const float* row = dd + i * 6 * kLanes;
    __m512 a[4], b[4];
    interleave4(_mm512_load_ps(row), _mm512_load_ps(row + kLanes), _mm512_load_ps(row + 2 * kLanes),
                _mm512_load_ps(row + 3 * kLanes), a);
    interleave4(_mm512_load_ps(row + 4 * kLanes), _mm512_load_ps(row + 5 * kLanes), zero, zero, b);
    __m512i prev = _mm512_setzero_si512();
    for (int q = 0; q < 4; ++q) {
      _mm512_store_ps(p0[i] + 16 * q, a[q]);
      const __m512i cur = _mm512_castps_si512(b[q]);
      _mm512_store_si512(p4[i] + 16 * q, _mm512_alignr_epi32(cur, prev, 12));
      prev = cur;
    }
    _mm512_store_si512(p4[i] + 64, _mm512_alignr_epi32(_mm512_setzero_si512(), prev, 12));
  }
  for (int64_t a = 0, b = 0; a < lt.count; a = b) {
    for (b = a + 1; b < lt.count && lt.n[b] == lt.n[a] && lt.r0[b] == lt.r0[a];) ++b;
    const int64_t ih0 = lt.r0[a] - 1, iw0 = lt.c0[a] - 1;
    const int64_t width = 4 * (b - a) + 2, p0_end = 4 * (b - a);
    const int64_t t_lo = -iw0, t_hi = std::min(width, W - iw0);  // strip offsets in the plane
    // The strip's first cell of patch row 0, formed as an integer: it may lie before the plane.
    const uintptr_t strip = reinterpret_cast<uintptr_t>(dx + (lt.n[a] * p.s.C + c) * H * W) +
                            static_cast<uintptr_t>(ih0 * W + iw0) * sizeof(float);
    // The strip's 16-cell chunks: which cells lie in the plane, and which get P4 and P0 (the same
    // for every patch row).
    const int64_t chunks = (width + 15) / 16;
    __mmask16 valid[5], from_p0[5], from_p4[5];
    for (int64_t k = 0; k < chunks; ++k) {
      const int64_t t = 16 * k;
      valid[k] = lanes_between(t_lo - t, t_hi - t);
      from_p0[k] = valid[k] & lanes_between(0, p0_end - t);
      from_p4[k] = valid[k] & lanes_between(4 - t, 16);
    }
    for (int64_t i = std::max<int64_t>(0, -ih0); i < std::min<int64_t>(6, H - ih0); ++i) {
      const uintptr_t row = strip + static_cast<uintptr_t>(i * W) * sizeof(float);
      const float* q0 = p0[i] + 4 * a;
      const float* q4 = p4[i] + 4 * a;
      for (int64_t k = 0; k < chunks; ++k, q0 += 16, q4 += 16) {
        float* cells =
            reinterpret_cast<float*>(row + static_cast<uintptr_t>(k) * 16 * sizeof(float));
        __m512 v = _mm512_maskz_loadu_ps(valid[k], cells);
        v = _mm512_mask_add_ps(v, from_p4[k], v, _mm512_maskz_loadu_ps(from_p4[k], q4));
        v = _mm512_mask_add_ps(v, from_p0[k], v, _mm512_maskz_loadu_ps(from_p0[k], q0));
        _mm512_mask_storeu_ps(cells, valid[k], v);
      }
    }
  }
}

// V[xi][c][first .. first + kLanes) of a block (row stride ld) for every channel.
template <bool kAvx512>
[[gnu::always_inline]] inline void input_transform_impl(float* V, int64_t ld, int64_t col,
                                                        const float* x, const LaneTiles& lt,
                                                        const Plan& p) {
  alignas(64) float d[kCells * kLanes], t[kCells * kLanes];
  const int64_t xs = p.s.C * ld;  // from one cell's rows of V to the next's
  const bool avx512 = kAvx512;
  const LaneRuns runs = lane_runs(lt, p, p.s.C, -1, 6);
  const int64_t plane = p.s.H * p.s.W;
  const PatchRows rows = avx512 ? patch_rows(lt, p) : PatchRows{};
  const bool avx2 = !avx512 && avx2_moves();
  const PatchRowsAvx2 rows2 = avx2 ? patch_rows_avx2(lt, p) : PatchRowsAvx2{};
  for (int64_t c = 0; c < p.s.C; ++c) {
    if (c + kPrefetchChannels < p.s.C) prefetch_runs(x + (c + kPrefetchChannels) * plane, runs);
    if (avx512) {
      gather_patches_avx512(d, x, c, rows, p);
    } else if (avx2) {
      gather_patches_avx2(d, x, c, rows2, p);
    } else {
      gather_patches(d, x, c, lt, p);
    }
    for (int64_t j = 0; j < 6; ++j) bt_1d(d + j * kLanes, 6 * kLanes, t + j * kLanes, 6 * kLanes);
    float* Vc = V + c * ld + col;
    for (int64_t a = 0; a < 6; ++a) bt_1d(t + a * 6 * kLanes, kLanes, Vc + a * 6 * xs, xs);
  }
}

// The output tiles of the lanes from M[xi][k][col ..] (row stride ld), plus bias, through relu
// when `relu` (conv2d_relu in inference).
template <bool kAvx512>
[[gnu::always_inline]] inline void output_transform_impl(float* out, const float* b, const float* M,
                                                         int64_t ld, int64_t col,
                                                         const LaneTiles& lt, const Plan& p,
                                                         bool relu) {
  alignas(64) float t[24 * kLanes], y[16 * kLanes];
  const int64_t H = p.s.H, W = p.s.W, xs = p.s.K * ld;
  const bool whole_avx512 = lt.all_whole && kAvx512;
  const bool whole_avx2 = lt.all_whole && !kAvx512 && avx2_moves();
  const TileOffsets tiles = whole_avx512 || whole_avx2 ? whole_tile_offsets(lt, p) : TileOffsets{};
  for (int64_t k = 0; k < p.s.K; ++k) {
    const float* Mk = M + k * ld + col;
    for (int64_t j = 0; j < 6; ++j) at_1d(Mk + j * xs, 6 * xs, t + j * kLanes, 6 * kLanes);
    for (int64_t r = 0; r < 4; ++r) at_1d(t + r * 6 * kLanes, kLanes, y + r * 4 * kLanes, kLanes);
    const float bias = b ? b[k] : 0.0f;
    if (relu) {
#pragma omp simd
      for (int64_t i = 0; i < 16 * kLanes; ++i) y[i] = relu_value(y[i] + bias);
    } else {
#pragma omp simd
      for (int64_t i = 0; i < 16 * kLanes; ++i) y[i] += bias;
    }
    if (whole_avx512) {
      scatter_whole_tiles_avx512(out, y, k, tiles.at, p);
      continue;
    }
    if (whole_avx2) {
      scatter_whole_tiles_avx2(out, y, k, tiles.at, p);
      continue;
    }
    for (int64_t l = 0; l < lt.count; ++l) {
      float* plane = out + (lt.n[l] * p.s.K + k) * H * W;
      const int64_t rows = std::min<int64_t>(4, H - lt.r0[l]),
                    cols = std::min<int64_t>(4, W - lt.c0[l]);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t s = 0; s < cols; ++s)
          plane[(lt.r0[l] + r) * W + lt.c0[l] + s] = y[(r * 4 + s) * kLanes + l];
    }
  }
}

// dM[xi][k][col ..] = A dY tile A^T for the lanes (dY zero outside the image).
template <bool kAvx512>
[[gnu::always_inline]] inline void output_gradient_transform_impl(float* dM, int64_t ld,
                                                                  int64_t col, const float* dout,
                                                                  const LaneTiles& lt,
                                                                  const Plan& p) {
  alignas(64) float dy[16 * kLanes], t[24 * kLanes];
  const int64_t H = p.s.H, W = p.s.W, xs = p.s.K * ld;
  const bool whole_avx512 = lt.all_whole && kAvx512;
  const bool whole_avx2 = lt.all_whole && !kAvx512 && avx2_moves();
  const TileOffsets tiles = whole_avx512 || whole_avx2 ? whole_tile_offsets(lt, p) : TileOffsets{};
  for (int64_t k = 0; k < p.s.K; ++k) {
    if (!lt.all_whole) std::fill_n(dy, 16 * kLanes, 0.0f);
    if (whole_avx512) gather_whole_tiles_avx512(dy, dout, k, tiles.at, p);
    if (whole_avx2) gather_whole_tiles_avx2(dy, dout, k, tiles.at, p);
    for (int64_t l = 0; !whole_avx512 && !whole_avx2 && l < lt.count; ++l) {
      const float* plane = dout + (lt.n[l] * p.s.K + k) * H * W;
      const int64_t rows = std::min<int64_t>(4, H - lt.r0[l]),
                    cols = std::min<int64_t>(4, W - lt.c0[l]);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t s = 0; s < cols; ++s)
          dy[(r * 4 + s) * kLanes + l] = plane[(lt.r0[l] + r) * W + lt.c0[l] + s];
    }
    for (int64_t j = 0; j < 4; ++j) a_1d(dy + j * kLanes, 4 * kLanes, t + j * kLanes, 4 * kLanes);
    float* dMk = dM + k * ld + col;
    for (int64_t a = 0; a < 6; ++a) a_1d(t + a * 4 * kLanes, kLanes, dMk + a * 6 * xs, xs);
  }
}

// dx += B dV[.][c][col ..] B^T for the lanes, every channel.
template <bool kAvx512>
[[gnu::always_inline]] inline void input_gradient_transform_impl(float* dx, const float* dV,
                                                                 int64_t ld, int64_t col,
                                                                 const LaneTiles& lt,
                                                                 const Plan& p) {
  alignas(64) float t[kCells * kLanes], dd[kCells * kLanes];
  const int64_t xs = p.s.C * ld;
  for (int64_t c = 0; c < p.s.C; ++c) {
    const float* dVc = dV + c * ld + col;
    for (int64_t j = 0; j < 6; ++j) b_1d(dVc + j * xs, 6 * xs, t + j * kLanes, 6 * kLanes);
    for (int64_t a = 0; a < 6; ++a) b_1d(t + a * 6 * kLanes, kLanes, dd + a * 6 * kLanes, kLanes);
    if (kAvx512 && p.tiles_w >= 4) {
      scatter_patches_avx512(dx, dd, c, lt, p);
    } else {
      scatter_patches(dx, dd, c, lt, p);
    }
  }
}

// Each transform twice: the portable build, and a clone for CPUs with AVX-512F, whose 16-lane
// rows are one zmm register each (GCC's default for -march builds, 256-bit vectors, took two
// instructions per row operation, and a generic build's SSE2 four).
BNLAB_WINO_AVX512_WIDE void input_transform_avx512(float* V, int64_t ld, int64_t col,
                                                   const float* x, const LaneTiles& lt,
                                                   const Plan& p) {
  input_transform_impl<true>(V, ld, col, x, lt, p);
}
void input_transform(float* V, int64_t ld, int64_t col, const float* x, const LaneTiles& lt,
                     const Plan& p) {
  if (avx512_transforms()) {
    input_transform_avx512(V, ld, col, x, lt, p);
  } else {
    input_transform_impl<false>(V, ld, col, x, lt, p);
  }
}

BNLAB_WINO_AVX512_WIDE void output_transform_avx512(float* out, const float* b, const float* M,
                                                    int64_t ld, int64_t col, const LaneTiles& lt,
                                                    const Plan& p, bool relu) {
  output_transform_impl<true>(out, b, M, ld, col, lt, p, relu);
}
void output_transform(float* out, const float* b, const float* M, int64_t ld, int64_t col,
                      const LaneTiles& lt, const Plan& p, bool relu) {
  if (avx512_transforms()) {
    output_transform_avx512(out, b, M, ld, col, lt, p, relu);
  } else {
    output_transform_impl<false>(out, b, M, ld, col, lt, p, relu);
  }
}

BNLAB_WINO_AVX512_WIDE void output_gradient_transform_avx512(float* dM, int64_t ld, int64_t col,
                                                             const float* dout, const LaneTiles& lt,
                                                             const Plan& p) {
  output_gradient_transform_impl<true>(dM, ld, col, dout, lt, p);
}
void output_gradient_transform(float* dM, int64_t ld, int64_t col, const float* dout,
                               const LaneTiles& lt, const Plan& p) {
  if (avx512_transforms()) {
    output_gradient_transform_avx512(dM, ld, col, dout, lt, p);
  } else {
    output_gradient_transform_impl<false>(dM, ld, col, dout, lt, p);
  }
}

BNLAB_WINO_AVX512_WIDE void input_gradient_transform_avx512(float* dx, const float* dV, int64_t ld,
                                                            int64_t col, const LaneTiles& lt,
                                                            const Plan& p) {
  input_gradient_transform_impl<true>(dx, dV, ld, col, lt, p);
}
void input_gradient_transform(float* dx, const float* dV, int64_t ld, int64_t col,
                              const LaneTiles& lt, const Plan& p) {
  if (avx512_transforms()) {
    input_gradient_transform_avx512(dx, dV, ld, col, lt, p);
  } else {
    input_gradient_transform_impl<false>(dx, dV, ld, col, lt, p);
  }
}

// One workspace of `floats` for each thread of the region that follows (core/ops/thread_scratch.h:
// allocated before the region; a wide layer's workspace, 36 (C + K) floats a tile plus the
// backward's dU, 36 K C, may not fit).
detail::TeamScratch workspaces(const Plan& p, int64_t floats) {
  const int64_t team = p.parallel() && !omp_in_parallel() ? omp_get_max_threads() : 1;
  return detail::TeamScratch(team, floats, [&](const Error& e) {
    const WinogradShape& s = p.s;
    BNLAB_FAIL("conv2d: the Winograd workspaces [", team, ", ", floats, "] for input [", s.N, ", ",
               s.C, ", ", s.H, ", ", s.W, "], weight [", s.K, ", ", s.C,
               ", 3, 3], stride 1, padding 1 cannot be allocated: ", e.what());
  });
}

// Calls f(n0, first, count, unit_tiles) for each block of unit u: its first image n0, the
// block's first tile within the unit, its tile count, and the unit's tile count.
template <class F>
void for_each_block(const Plan& p, int64_t u, F&& f) {
  const int64_t n0 = u * p.images_per_unit;
  const int64_t unit_tiles = (std::min(p.s.N, n0 + p.images_per_unit) - n0) * p.per_image;
  for (int64_t first = 0; first < unit_tiles; first += p.block)
    f(n0, first, std::min(p.block, unit_tiles - first), unit_tiles);
}

}  // namespace

void allow_winograd_vector_parts(bool allowed) { winograd_vector_parts_allowed.store(allowed); }

bool conv2d_winograd_eligible(int64_t kh, int64_t kw, int64_t stride, int64_t padding,
                              int64_t groups) {
  return kh == 3 && kw == 3 && stride == 1 && padding == 1 && groups == 1;
}

void winograd_conv2d_forward(float* out, const float* x, const float* w, const float* b,
                             const WinogradShape& s, bool relu, double* pm) {
  const Plan p(s);
  Storage U(static_cast<size_t>(kCells * s.K * s.C));
  transform_weights(U.data(), w, s.K, s.C);
  std::optional<PackedCells> packed_u;
  if (p.packed) packed_u.emplace(U.data(), s.K, s.C, /*transposed=*/false, p.packed_path);
  const int64_t ld = p.block;
  StealingLoop units(p.units);
  const detail::TeamScratch ws = workspaces(p, p.workspace());
#pragma omp parallel num_threads(ws.team()) if (p.parallel())
  {
    float* V = ws.of_this_thread();
    float* M = V + kCells * s.C * ld;
    units.run([&](int64_t u) {
      for_each_block(p, u, [&](int64_t n0, int64_t first, int64_t count, int64_t unit_tiles) {
        for (int64_t col = 0; col < count; col += kLanes)
          input_transform(V, ld, col, x, lane_tiles(p, n0, first + col, unit_tiles), p);
        for (int64_t xi = 0; xi < kCells; ++xi) {
          if (packed_u) {
            packed_u->multiply(xi, count, V + xi * s.C * ld, M + xi * s.K * ld, ld);
          } else {
            gemm(false, false, s.K, count, s.C, 1.0f, U.data() + xi * s.K * s.C, s.C,
                 V + xi * s.C * ld, ld, 0.0f, M + xi * s.K * ld, ld);
          }
        }
        for (int64_t col = 0; col < count; col += kLanes)
          output_transform(out, b, M, ld, col, lane_tiles(p, n0, first + col, unit_tiles), p, relu);
      });
      if (pm) {  // the unit's images, just written
        const int64_t n0 = u * p.images_per_unit, n1 = std::min(s.N, n0 + p.images_per_unit);
        plane_moments(pm + 2 * n0 * s.K, out + n0 * s.K * s.H * s.W, (n1 - n0) * s.K, s.H * s.W);
      }
    });
  }
}

void winograd_conv2d_backward(float* dx, bool dx_fresh, float* dw, const float* dout,
                              const float* x, const float* w, const WinogradShape& s) {
  if (!dx && !dw) return;
  const Plan p(s);
  const int64_t ld = p.block, KC = s.K * s.C;
  Storage U(dx ? static_cast<size_t>(kCells * KC) : 0);
  if (dx) transform_weights(U.data(), w, s.K, s.C);
  std::optional<PackedCells> packed_ut;
  if (dx && p.packed) packed_ut.emplace(U.data(), s.K, s.C, /*transposed=*/true, p.packed_path);
  const int64_t slots = std::min(kSlots, p.units);
  // Each slot's weight gradient G^T dU G (see Threads above), [K, C, 3, 3]; a slot's dU lives in
  // the workspace of the thread running it, so dU-sized memory scales with threads, not slots.
  Storage partials(dw ? static_cast<size_t>(slots * KC * 9) : 0);  // each written once, whole
  StealingLoop slot_loop(slots);
  const detail::TeamScratch ws = workspaces(p, p.workspace() + (dw ? kCells * KC : 0));
#pragma omp parallel num_threads(ws.team()) if (p.parallel())
  {
    float* V = ws.of_this_thread();  // V for dU, then overwritten by dV
    float* dM = V + kCells * s.C * ld;
    float* dU_s = dw ? dM + kCells * s.K * ld : nullptr;
    slot_loop.run([&](int64_t slot) {
      // The slot's first block assigns dU (beta 0) instead of adding into a zero-filled one: the
      // fill was a pass of up to 2.4 MB per slot (36 cells x K x C) that the GEMM then re-read.
      bool dU_empty = true;
      for (int64_t u = p.units * slot / slots; u < p.units * (slot + 1) / slots; ++u) {
        // A fresh dx is zeroed unit by unit (whole images) just before its patches are added in,
        // while it is in cache, instead of a whole-tensor fill before the backward.
        if (dx && dx_fresh) {
          const int64_t n0 = u * p.images_per_unit, n1 = std::min(s.N, n0 + p.images_per_unit);
          std::fill(dx + n0 * s.C * s.H * s.W, dx + n1 * s.C * s.H * s.W, 0.0f);
        }
        for_each_block(p, u, [&](int64_t n0, int64_t first, int64_t count, int64_t unit_tiles) {
          for (int64_t col = 0; col < count; col += kLanes)
            output_gradient_transform(dM, ld, col, dout, lane_tiles(p, n0, first + col, unit_tiles),
                                      p);
          if (dU_s) {
            for (int64_t col = 0; col < count; col += kLanes)
              input_transform(V, ld, col, x, lane_tiles(p, n0, first + col, unit_tiles), p);
            for (int64_t xi = 0; xi < kCells; ++xi)
              gemm(false, true, s.K, s.C, count, 1.0f, dM + xi * s.K * ld, ld, V + xi * s.C * ld,
                   ld, dU_empty ? 0.0f : 1.0f, dU_s + xi * KC, s.C);
            dU_empty = false;
          }
          if (dx) {
            for (int64_t xi = 0; xi < kCells; ++xi) {
              if (packed_ut) {
                packed_ut->multiply(xi, count, dM + xi * s.K * ld, V + xi * s.C * ld, ld);
              } else {
                gemm(true, false, s.C, count, s.K, 1.0f, U.data() + xi * KC, s.C,
                     dM + xi * s.K * ld, ld, 0.0f, V + xi * s.C * ld, ld);
              }
            }
            for (int64_t col = 0; col < count; col += kLanes)
              input_gradient_transform(dx, V, ld, col, lane_tiles(p, n0, first + col, unit_tiles),
                                       p);
          }
        });
      }
      if (dU_s && dU_empty) std::fill_n(dU_s, kCells * KC, 0.0f);  // (a slot always has a block)
      if (dU_s) write_weight_gradient(partials.data() + slot * KC * 9, dU_s, s.K, s.C);
    });
  }
  if (dw) {
    for (int64_t slot = 0; slot < slots; ++slot) {
      const float* part = partials.data() + slot * KC * 9;
#pragma omp simd
      for (int64_t i = 0; i < KC * 9; ++i) dw[i] += part[i];
    }
  }
}

}  // namespace bnlab::detail

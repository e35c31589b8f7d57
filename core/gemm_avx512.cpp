// bnlab's own single-precision GEMM for CPUs with AVX-512F: C = alpha op(A) op(B) + beta C,
// row-major, the contract of bnlab::gemm (core/blas.h), which dispatches here at run time.
//
// Why: the environment pins OPENBLAS_CORETYPE=Haswell, which caps OpenBLAS at AVX2 kernels; on a
// core with full-width AVX-512 that leaves about half the FMA throughput unused
// (docs/performance.md).
//
// Design (GotoBLAS / BLIS): five loops around a register-blocked microkernel.
//   jc: columns of C in blocks of NC; the B block [KC, NC] is packed once per (jc, pc) and lives
//       in L2/L3.
//   pc: K in blocks of at most KC; the first block applies the caller's beta, later ones add.
//   ic: rows of C in blocks of MC; the A block [MC, KC] is packed once per (ic, pc) and lives in
//       L2.
//   jr: NR-wide column panels of the B block; one panel (KC x NR floats) stays in L1 across ir.
//   ir: MR-high row panels of the A block; the microkernel keeps an MR x NR tile of C in
//       registers.
// Packing absorbs the transposes: op(A) goes to MR x KC panels (k-major: MR values per k), op(B)
// to KC x NR panels (NR values per k), whatever the stored layout, so the microkernel sees one
// layout for all four transpose cases. Edge panels are zero-padded to MR / NR; the microkernel
// always computes a full tile and writes back only the valid mr x nr part with masked loads and
// stores, so any M, N, K work without a scalar tail. A column panel of at most 8 valid columns
// (N = 100's last 4), and the last 1-8 of a panel of 17-24, run narrow_kernel instead, with the
// rows in the vector lanes.
//
// Conventions (tested in tests/core/test_gemm.cpp):
//   - BLAS semantics: beta == 0 never reads C (it may hold NaN garbage: autograd's first writer
//     assigns with beta 0); alpha == 0 or K == 0 gives C = beta C without reading A or B
//     (as the reference BLAS and OpenBLAS).
//   - Determinism: each C element is sum over K blocks (fixed by K alone) of an in-order k sum in
//     one accumulator lane; threads only split rows or columns of C, so results are bit-identical
//     for every thread count.
//   - Threads: outside an OpenMP parallel region a large enough product is split over the OpenMP
//     team (columns when N is the wider side, rows otherwise: gemm_over_team, core/gemm_common.h);
//     inside one (conv's per-image loop) it runs on the calling thread.
//   - ISA: only the functions marked BNLAB_AVX512 use AVX-512; the rest of the binary stays
//     portable and the dispatcher checks cpu_has_avx512f() (cpu_isa(), core/cpu_isa.h: the CPU's
//     support capped by BNLAB_MAX_ISA) before calling in.
//
// References: K. Goto, R. van de Geijn, "Anatomy of high-performance matrix multiplication", ACM
// TOMS 34(3), 2008; F. Van Zee, R. van de Geijn, "BLIS", ACM TOMS 41(3), 2015.
#include "core/gemm_avx512.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include "core/cpu_isa.h"
#include "core/error.h"
#include "core/gemm_common.h"
#include "core/transpose16_avx512.h"

#define BNLAB_AVX512 __attribute__((target("avx512f")))

// GCC 12's AVX-512 shuffle intrinsics start from _mm512_undefined_ps(), a self-initialized
// variable that -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593, fixed in
// GCC 13); the value is fully overwritten, so the warning is noise here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace bnlab {
namespace {

// Register tile: NR = two zmm of columns, MR rows -> 2 * MR = 28 accumulators, plus the two B
// vectors and the A broadcast: 31 of the 32 zmm registers, none spilled. Measured against MR = 12
// (24 accumulators) on the bench/gemm_paths shapes: 1024^3 149 vs 143 GFLOP/s, and faster on all
// but the M = 32 conv shapes, which the edge-tile variants below recover.
constexpr int64_t kMR = 14;
constexpr int64_t kNR = 32;
// Cache blocks for Zen 5 (L1d 48 KiB, L2 1 MiB per core): a B panel KC x NR = 32 KiB stays in L1
// while the microkernel walks the A block; the A block MC x KC = 252 KiB sits in L2 next to the
// B block's current panels; the B block KC x NC = 2 MiB streams from L2/L3 one panel at a time.
constexpr int64_t kKC = detail::kGemmKC;
constexpr int64_t kMC = 18 * kMR;
constexpr int64_t kNC = 64 * kNR;

// The height of the next register tile with `rows` rows left: MR, except that 15 or 16 rows
// become two tiles of 8 (and 7): a 1- or 2-row tile has only 2 or 4 accumulator chains, too few
// to hide the FMA latency, and ran at half the FMA rate (M = 128 = 9 x 14 + 2, every dense
// layer's forward at batch 128, spent about 3 % of its time in the 2-row tile). The number of
// tiles stays ceil(rows / MR), so the packed size does not change; pack_a and every loop over
// row tiles take their heights from here, one panel (MR rows of stride) per tile.
constexpr int64_t row_tile(int64_t rows) {
  return rows > kMR && rows <= kMR + 2 ? (rows + 1) / 2 : std::min(kMR, rows);
}

// Copies `rows` (<= 16) rows of a row-major matrix, columns k0 .. k0 + kc, to k-major form: value
// (row r, column k0 + k) goes to dst[k * dst_ld + r]; rows past `rows` are written as zeros up to
// `width` (<= 16). This is the transposing half of packing (op(A) from [M, K] storage, op(B) from
// [N, K]); going through 16 x 16 register transposes keeps it at vector speed, where a scalar
// strided copy cost as much as the products for conv's small-M GEMMs.
BNLAB_AVX512 void pack_transposed(const float* src, int64_t ld, int64_t rows, int64_t kc,
                                  int64_t width, float* dst, int64_t dst_ld) {
  const __mmask16 out_mask = detail::first_lanes(width);
  for (int64_t k = 0; k < kc; k += 16) {
    const __mmask16 in_mask = detail::first_lanes(kc - k);
    __m512 r[16];
    for (int64_t i = 0; i < 16; ++i) {
      r[i] = i < rows ? _mm512_maskz_loadu_ps(in_mask, src + i * ld + k) : _mm512_setzero_ps();
    }
    detail::transpose16(r);
    const int64_t n = std::min<int64_t>(16, kc - k);
    for (int64_t i = 0; i < n; ++i) _mm512_mask_storeu_ps(dst + (k + i) * dst_ld, out_mask, r[i]);
  }
}

// op(A)[i0 : i0 + mc, k0 : k0 + kc] -> MR-row panels, panel p at dst + p * MR * kc, element
// (i, k) of the panel at k * MR + i; rows past mc are zero.
BNLAB_AVX512 void pack_a(bool trans_a, const float* A, int64_t lda, int64_t i0, int64_t k0,
                         int64_t mc, int64_t kc, float* dst) {
  for (int64_t p = 0, mr = 0; p < mc; p += mr, dst += kMR * kc) {
    mr = row_tile(mc - p);
    if (trans_a) {
      // Stored [K, M]: the MR values of one k are contiguous.
      const __mmask16 m = detail::first_lanes(mr);
      for (int64_t k = 0; k < kc; ++k) {
        const __m512 v = _mm512_maskz_loadu_ps(m, A + (k0 + k) * lda + i0 + p);
        _mm512_mask_storeu_ps(dst + k * kMR, detail::first_lanes(kMR), v);
      }
    } else {
      // Stored [M, K]: rows of A become the panel's columns.
      pack_transposed(A + (i0 + p) * lda + k0, lda, mr, kc, kMR, dst, kMR);
    }
  }
}

// op(B)[k0 : k0 + kc, j0 : j0 + nc] -> NR-column panels, panel q at dst + q * kc * NR, element
// (k, j) of the panel at k * NR + j; columns past nc are zero.
BNLAB_AVX512 void pack_b(bool trans_b, const float* B, int64_t ldb, int64_t k0, int64_t j0,
                         int64_t nc, int64_t kc, float* dst) {
  for (int64_t q = 0; q < nc; q += kNR, dst += kc * kNR) {
    const int64_t nr = std::min(kNR, nc - q);
    if (!trans_b) {
      // Stored [K, N]: one k row of the panel is NR contiguous floats (masked at the edge).
      const __mmask16 m0 = detail::first_lanes(nr), m1 = detail::first_lanes(nr - 16);
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = B + (k0 + k) * ldb + j0 + q;
        _mm512_store_ps(dst + k * kNR, _mm512_maskz_loadu_ps(m0, src));
        _mm512_store_ps(dst + k * kNR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
      }
    } else {
      // Stored [N, K]: rows of B become the panel's columns, 16 at a time.
      const float* src = B + (j0 + q) * ldb + k0;
      pack_transposed(src, ldb, std::min<int64_t>(nr, 16), kc, 16, dst, kNR);
      // (With nr <= 16 the second half reads no row and writes zeros.)
      pack_transposed(nr > 16 ? src + 16 * ldb : src, ldb, std::max<int64_t>(nr - 16, 0), kc, 16,
                      dst + 16, kNR);
    }
  }
}

// The tile C[0 : mr, 0 : nr] = alpha * (a_panel x b_panel) + beta * C, with the panels packed as
// above (kc steps). R <= MR rows and V (1 or 2) zmm columns are computed: the full tile is
// <MR, 2>; an edge tile takes the smallest variant that covers it, so the zero padding of an edge
// panel costs no FMAs (M = 32 = 14 + 14 + 4 would otherwise spend 42 rows of work on 32). Every
// variant does the same arithmetic per element (an in-order FMA chain over k, then alpha and
// beta), so which variant covers an element never changes its value. beta == 0 does not read C.
// noinline: inlined into gemm_serial, GCC 12 spilled the B vectors to the stack on every k step
// (1024^3 fell from about 134 to 90 GFLOP/s); on its own the loop keeps all accumulators, both B
// vectors and the broadcast in registers.
template <int R, int V>
__attribute__((noinline)) BNLAB_AVX512 void micro_kernel(int64_t kc, const float* __restrict a,
                                                         const float* __restrict b, float* c,
                                                         int64_t ldc, float alpha, float beta,
                                                         int64_t mr, int64_t nr) {
  static_assert(R >= 1 && R <= kMR && (V == 1 || V == 2));
  __m512 acc[R][V];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k, a += kMR, b += kNR) {
    __m512 bv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  const __mmask16 mask[2] = {detail::first_lanes(nr), detail::first_lanes(nr - 16)};
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    if (i >= mr) break;
    float* ci = c + i * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      __m512 r = _mm512_mul_ps(va, acc[i][v]);
      if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v), r);
      _mm512_mask_storeu_ps(ci + 16 * v, mask[v], r);
    }
  }
}

// A narrow column panel (nr <= kNarrow of its 32 columns are C's): the microkernel would compute
// all 14 rows x 16 columns of a zmm to keep nr of them, so at N = 100 (paper-mlp's layers: 96 + 4)
// the last 4 columns cost half a full tile's time per row panel. Here the rows are the vector
// lanes instead: a packed A panel holds the 14 rows of one k contiguously, so P panels' rows are
// loaded as they lie and each of W columns of B is broadcast: P x W accumulators (a column of one
// panel each), W multiply-adds per panel and k instead of 14. Per element the arithmetic is the
// microkernel's (an in-order FMA chain over k of the same products, then alpha, then beta), so
// results are bit-identical whichever covers a column; the write-back gathers and scatters C's
// columns (at stride ldc), once per tile.
constexpr int64_t kNarrow = 8;

template <int P, int W>
__attribute__((noinline)) BNLAB_AVX512 void narrow_kernel(int64_t kc, const float* __restrict a,
                                                          const float* __restrict b, float* c,
                                                          int64_t ldc, float alpha, float beta,
                                                          const int64_t* rows, int64_t nr) {
  static_assert(P >= 1 && W >= 1 && P * W + P + 1 <= 32, "accumulators must fit the registers");
  __m512 acc[P][W];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 8
    for (int j = 0; j < W; ++j) acc[p][j] = _mm512_setzero_ps();
  }
  // A panel's k step is MR = 14 floats: the two lanes past them are masked off (the last k of
  // the last panel ends the buffer).
  const __mmask16 panel_rows = detail::first_lanes(kMR);
  for (int64_t k = 0; k < kc; ++k, a += kMR, b += kNR) {
    __m512 av[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) av[p] = _mm512_maskz_loadu_ps(panel_rows, a + p * kMR * kc);
#pragma GCC unroll 8
    for (int j = 0; j < W; ++j) {
      const __m512 bj = _mm512_set1_ps(b[j]);
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) acc[p][j] = _mm512_fmadd_ps(av[p], bj, acc[p][j]);
    }
  }
  const __m512i row_offsets =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int32_t>(ldc)));
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  float* panel_c = c;
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    const __mmask16 m = detail::first_lanes(rows[p]);
#pragma GCC unroll 8
    for (int j = 0; j < W; ++j) {
      if (j >= nr) break;
      __m512 r = _mm512_mul_ps(va, acc[p][j]);
      if (beta != 0.0f) {
        const __m512 cv =
            _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, row_offsets, panel_c + j, 4);
        r = _mm512_fmadd_ps(vb, cv, r);
      }
      _mm512_mask_i32scatter_ps(panel_c + j, m, row_offsets, r, 4);
    }
    panel_c += rows[p] * ldc;
  }
}

// How many of a panel's nr columns the microkernel covers; narrow_panel takes the rest. A panel
// of 17-24 columns runs the one-zmm tile on 16 and narrow_panel on the last 1-8: two threads split
// N = 100 as 48 + 52 columns, and 52 = 32 + 20.
constexpr int64_t wide_columns(int64_t nr) {
  if (nr <= kNarrow) return 0;
  return nr > 16 && nr <= 16 + kNarrow ? 16 : nr;
}

using NarrowKernel = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float,
                              const int64_t*, int64_t);

// Panels per call: enough accumulators to cover the FMA latency, with the A loads and the
// broadcast still in registers.
constexpr int kNarrowPanels4 = 4;  // W = 4: 16 accumulators
constexpr int kNarrowPanels8 = 3;  // W = 8: 24 accumulators

// The narrow panel's C[0 : mc, 0 : nr] from the A block's row panels (heights from row_tile).
BNLAB_AVX512 void narrow_panel(int64_t kc, const float* pa, int64_t mc, const float* b, float* c,
                               int64_t ldc, float alpha, float beta, int64_t nr) {
  static constexpr NarrowKernel kW4[] = {narrow_kernel<1, 4>, narrow_kernel<2, 4>,
                                         narrow_kernel<3, 4>, narrow_kernel<4, 4>};
  static constexpr NarrowKernel kW8[] = {narrow_kernel<1, 8>, narrow_kernel<2, 8>,
                                         narrow_kernel<3, 8>};
  const int most = nr <= 4 ? kNarrowPanels4 : kNarrowPanels8;
  for (int64_t ir = 0; ir < mc;) {
    int64_t rows[kNarrowPanels4];
    int count = 0;
    int64_t covered = 0;
    while (count < most && ir + covered < mc) {
      rows[count] = row_tile(mc - ir - covered);
      covered += rows[count++];
    }
    (nr <= 4 ? kW4 : kW8)[count - 1](kc, pa, b, c + ir * ldc, ldc, alpha, beta, rows, nr);
    pa += count * kMR * kc;
    ir += covered;
  }
}

using MicroKernel = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float,
                             int64_t, int64_t);

// The variant for an mr x nr tile: rows rounded up to even (2, 4, ..., 12, then the full MR = 14),
// one or two zmm columns.
template <int V, size_t... I>
constexpr std::array<MicroKernel, sizeof...(I)> row_variants(std::index_sequence<I...>) {
  return {&micro_kernel<std::min<int>(2 * (I + 1), kMR), V>...};
}
constexpr auto kKernels1 = row_variants<1>(std::make_index_sequence<(kMR + 1) / 2>());
constexpr auto kKernels2 = row_variants<2>(std::make_index_sequence<(kMR + 1) / 2>());

MicroKernel kernel_for(int64_t mr, int64_t nr) {
  const size_t row_class = static_cast<size_t>((mr + 1) / 2 - 1);
  return nr > 16 ? kKernels2[row_class] : kKernels1[row_class];
}

// The jr / ir loops over one packed A block and B block (gemm_blocked, core/gemm_common.h).
BNLAB_AVX512 void panels(int64_t kc, const float* pa, int64_t mc, const float* pb, int64_t nc,
                         float* C, int64_t ldc, float alpha, float beta) {
  // narrow_panel addresses C's rows with 32-bit offsets (up to 15 ldc).
  const bool narrow_ok = ldc <= INT32_MAX / 16;
  for (int64_t jr = 0; jr < nc; jr += kNR) {
    const int64_t nr = std::min(kNR, nc - jr);
    const int64_t wide = narrow_ok ? wide_columns(nr) : nr;
    if (wide < nr) {
      narrow_panel(kc, pa, mc, pb + jr * kc + wide, C + jr + wide, ldc, alpha, beta, nr - wide);
    }
    if (wide == 0) continue;
    const float* panel = pa;
    for (int64_t ir = 0, mr = 0; ir < mc; ir += mr, panel += kMR * kc) {
      mr = row_tile(mc - ir);
      kernel_for(mr, wide)(kc, panel, pb + jr * kc, C + ir * ldc + jr, ldc, alpha, beta, mr, wide);
    }
  }
}

struct Avx512Kernel {
  static constexpr int64_t kMR = bnlab::kMR, kNR = bnlab::kNR, kMC = bnlab::kMC, kNC = bnlab::kNC,
                           kPackSlack = 0;
  static constexpr auto pack_a = bnlab::pack_a;
  static constexpr auto pack_b = bnlab::pack_b;
  static constexpr auto panels = bnlab::panels;
};

}  // namespace

namespace detail {

bool cpu_has_avx512f() { return cpu_isa() == CpuIsa::avx512; }

void gemm_avx512_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                        float* C, int64_t ldc) {
  gemm_run<Avx512Kernel>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int64_t gemm_packed_a_floats(int64_t M, int64_t K) { return (M + kMR - 1) / kMR * kMR * K; }

void gemm_pack_a(bool trans_a, const float* A, int64_t lda, int64_t M, int64_t K, float* packed) {
  BNLAB_CHECK(K <= kGemmPackedMaxK, "gemm_pack_a: K=", K, " exceeds one K block (", kGemmPackedMaxK,
              ")");
  static_assert(kGemmPackedMaxK == kKC && kGemmPanelColumns == kNR);
  pack_a(trans_a, A, lda, 0, 0, M, K, packed);
}

void gemm_avx512_packed(int64_t M, int64_t N, int64_t K, float alpha, const float* packed_a,
                        const float* b_panel, float beta, float* C, int64_t ldc) {
  BNLAB_CHECK(N >= 1 && N <= kNR && K >= 1 && K <= kKC, "gemm_avx512_packed: N=", N, " K=", K,
              " outside one panel (N <= ", kNR, ", K <= ", kKC, ")");
  // The loops of gemm_serial for one (jc, pc) block and one jr panel.
  const float* panel = packed_a;
  for (int64_t ir = 0, mr = 0; ir < M; ir += mr, panel += kMR * K) {
    mr = row_tile(M - ir);
    kernel_for(mr, N)(K, panel, b_panel, C + ir * ldc, ldc, alpha, beta, mr, N);
  }
}

int64_t gemm_avx512_packed_b_floats(int64_t K, int64_t N) {
  return packed_b_padded_columns<Avx512Kernel>(N) * K;
}

void gemm_avx512_pack_b(bool trans_b, const float* B, int64_t ldb, int64_t K, int64_t N,
                        float* packed) {
  pack_b_whole<Avx512Kernel>(trans_b, B, ldb, K, N, packed);
}

void gemm_avx512_kernel_packed_b(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                                 float alpha, const float* A, int64_t lda, const float* B,
                                 int64_t ldb, const float* packed, float beta, float* C,
                                 int64_t ldc) {
  gemm_run_packed_b<Avx512Kernel>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, packed, beta, C,
                                  ldc);
}

}  // namespace detail
}  // namespace bnlab

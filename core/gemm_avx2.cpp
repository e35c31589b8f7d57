// bnlab's own single-precision GEMM for CPUs with AVX2 and FMA (and without AVX-512F, where the
// AVX-512 kernel runs instead): C = alpha op(A) op(B) + beta C, row-major, the contract of
// bnlab::gemm (core/blas.h).
//
// Why not OpenBLAS, which bnlab used on these CPUs before: its threaded sgemm rounds some elements
// differently at different thread counts, so a run's bits depended on --threads (8343 of 204800
// elements of a 400 x 512 x 64 product differed between one and two threads on a Zen 3 EPYC).
// This kernel keeps the arithmetic of the AVX-512 one (core/gemm_common.h): the same bits at any
// thread count, and the same bits as an AVX-512F CPU gives. It also writes C directly for beta 0,
// where OpenBLAS clears C in a separate pass first. Speed: 0.87-1.46x OpenBLAS's Zen kernels at
// the workloads' shapes on one Zen 3 thread, 0.99-1.41x on W2's (docs/performance.md).
//
// Design: the five loops of core/gemm_avx512.cpp (GotoBLAS / BLIS) around a 6 x 16 register tile,
// BLIS's Haswell choice: 12 ymm accumulators, two B vectors and the A broadcast fill 15 of the 16
// registers. Packing absorbs the transposes (8 x 8 register transposes where a row of the stored
// matrix becomes a column of the panel); edge panels are zero-padded; an edge tile runs a variant
// with exactly its rows and one or two vectors of columns, and writes C with masked loads and
// stores. An A panel is MR = 6 floats per k: the packing stores whole 8-float vectors at that
// stride in increasing k, each store's last two lanes overwritten by the next, so the buffer has 8
// floats of slack after the last panel.
//
// Cache blocks for Zen 3 (L1d 32 KiB, L2 512 KiB per core): a B panel KC x NR = 16 KiB stays in
// L1 while the microkernel walks the A block; the A block MC x KC = 168 KiB sits in L2; the B
// block KC x NC = 2 MiB streams from L2/L3 one panel at a time.
#include "core/gemm_avx2.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "core/cpu_isa.h"
#include "core/error.h"
#include "core/gemm_common.h"
#include "core/transpose8_avx2.h"

#define BNLAB_AVX2 __attribute__((target("avx2,fma")))

namespace bnlab {
namespace {

using detail::first_lanes8;
using detail::transpose8;

constexpr int64_t kMR = 6;
constexpr int64_t kNR = 16;
constexpr int64_t kMC = 28 * kMR;
constexpr int64_t kNC = 128 * kNR;
// The packing of an A block stores 8 floats at the MR = 6 stride: up to 2 past its end.
constexpr int64_t kPackSlack = 8;

// The height of the next register tile with `rows` rows left: MR, except that 7 or 8 rows become
// two tiles of 4 (and 3): a 1- or 2-row tile has 2 or 4 accumulator chains, too few to hide the
// FMA latency. The number of tiles stays ceil(rows / MR), so the packed size does not change.
constexpr int64_t row_tile(int64_t rows) {
  return rows > kMR && rows <= kMR + 2 ? (rows + 1) / 2 : std::min(kMR, rows);
}

// Copies `rows` (<= 8) rows of a row-major matrix, columns 0 .. kc, to k-major form: value (row
// r, column k) goes to dst[k * dst_ld + r], 8 lanes per k (rows past `rows` as zeros), stored in
// increasing k. The transposing half of packing (op(A) from [M, K] storage, op(B) from [N, K]).
BNLAB_AVX2 void pack_transposed(const float* src, int64_t ld, int64_t rows, int64_t kc, float* dst,
                                int64_t dst_ld) {
  for (int64_t k = 0; k < kc; k += 8) {
    const __m256i in_mask = first_lanes8(kc - k);
    __m256 r[8];
    for (int64_t i = 0; i < 8; ++i) {
      r[i] = i < rows ? _mm256_maskload_ps(src + i * ld + k, in_mask) : _mm256_setzero_ps();
    }
    transpose8(r);
    const int64_t n = std::min<int64_t>(8, kc - k);
    for (int64_t i = 0; i < n; ++i) _mm256_storeu_ps(dst + (k + i) * dst_ld, r[i]);
  }
}

// op(A)[i0 : i0 + mc, k0 : k0 + kc] -> MR-row panels, panel p at dst + p * MR * kc, element
// (i, k) of the panel at k * MR + i; rows past the tile's height are zero.
BNLAB_AVX2 void pack_a(bool trans_a, const float* A, int64_t lda, int64_t i0, int64_t k0,
                       int64_t mc, int64_t kc, float* dst) {
  for (int64_t p = 0, mr = 0; p < mc; p += mr, dst += kMR * kc) {
    mr = row_tile(mc - p);
    if (trans_a) {
      // Stored [K, M]: the mr values of one k are contiguous.
      const __m256i m = first_lanes8(mr);
      for (int64_t k = 0; k < kc; ++k) {
        _mm256_storeu_ps(dst + k * kMR, _mm256_maskload_ps(A + (k0 + k) * lda + i0 + p, m));
      }
    } else {
      pack_transposed(A + (i0 + p) * lda + k0, lda, mr, kc, dst, kMR);
    }
  }
}

// op(B)[k0 : k0 + kc, j0 : j0 + nc] -> NR-column panels, panel q at dst + q * kc * NR, element
// (k, j) of the panel at k * NR + j; columns past nc are zero.
BNLAB_AVX2 void pack_b(bool trans_b, const float* B, int64_t ldb, int64_t k0, int64_t j0,
                       int64_t nc, int64_t kc, float* dst) {
  for (int64_t q = 0; q < nc; q += kNR, dst += kc * kNR) {
    const int64_t nr = std::min(kNR, nc - q);
    if (!trans_b) {
      const float* src = B + k0 * ldb + j0 + q;
      if (nr == kNR) {
        for (int64_t k = 0; k < kc; ++k, src += ldb) {
          _mm256_store_ps(dst + k * kNR, _mm256_loadu_ps(src));
          _mm256_store_ps(dst + k * kNR + 8, _mm256_loadu_ps(src + 8));
        }
      } else {
        const __m256i m0 = first_lanes8(nr), m1 = first_lanes8(nr - 8);
        for (int64_t k = 0; k < kc; ++k, src += ldb) {
          _mm256_store_ps(dst + k * kNR, _mm256_maskload_ps(src, m0));
          _mm256_store_ps(dst + k * kNR + 8, _mm256_maskload_ps(src + 8, m1));
        }
      }
    } else {
      // Stored [N, K]: rows of B become the panel's columns, 8 at a time.
      const float* src = B + (j0 + q) * ldb + k0;
      pack_transposed(src, ldb, std::min<int64_t>(nr, 8), kc, dst, kNR);
      pack_transposed(nr > 8 ? src + 8 * ldb : src, ldb, std::max<int64_t>(nr - 8, 0), kc, dst + 8,
                      kNR);
    }
  }
}

// The tile C[0 : R, 0 : nr] = alpha * (a_panel x b_panel) + beta * C over kc steps, V (1 or 2)
// ymm of columns. Every variant does the same arithmetic per element (core/gemm_common.h).
// noinline, as the AVX-512 kernel's: inlined into the loops, GCC spills the B vectors.
template <int R, int V>
__attribute__((noinline)) BNLAB_AVX2 void micro_kernel(int64_t kc, const float* __restrict a,
                                                       const float* __restrict b, float* c,
                                                       int64_t ldc, float alpha, float beta,
                                                       int64_t nr) {
  static_assert(R >= 1 && R <= kMR && (V == 1 || V == 2));
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 8 * V - 1), _MM_HINT_T0);
  }
  __m256 acc[R][V];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[i][v] = _mm256_setzero_ps();
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k, a += kMR, b += kNR) {
    __m256 bv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) bv[v] = _mm256_load_ps(b + 8 * v);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  const bool full = nr == 8 * V;
  const __m256i mask[2] = {first_lanes8(nr), first_lanes8(nr - 8)};
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    float* ci = c + i * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      __m256 r = _mm256_mul_ps(va, acc[i][v]);
      if (full) {
        if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8 * v), r);
        _mm256_storeu_ps(ci + 8 * v, r);
      } else {
        if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(ci + 8 * v, mask[v]), r);
        _mm256_maskstore_ps(ci + 8 * v, mask[v], r);
      }
    }
  }
}

using MicroKernel = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float,
                             int64_t);

template <int V, size_t... I>
constexpr std::array<MicroKernel, sizeof...(I)> row_variants(std::index_sequence<I...>) {
  return {&micro_kernel<static_cast<int>(I) + 1, V>...};
}
constexpr auto kKernels1 = row_variants<1>(std::make_index_sequence<kMR>());
constexpr auto kKernels2 = row_variants<2>(std::make_index_sequence<kMR>());

MicroKernel kernel_for(int64_t mr, int64_t nr) {
  return (nr > 8 ? kKernels2 : kKernels1)[static_cast<size_t>(mr - 1)];
}

// The jr / ir loops over one packed A block and B block (gemm_blocked, core/gemm_common.h).
void panels(int64_t kc, const float* pa, int64_t mc, const float* pb, int64_t nc, float* C,
            int64_t ldc, float alpha, float beta) {
  for (int64_t jr = 0; jr < nc; jr += kNR) {
    const int64_t nr = std::min(kNR, nc - jr);
    const float* panel = pa;
    for (int64_t ir = 0, mr = 0; ir < mc; ir += mr, panel += kMR * kc) {
      mr = row_tile(mc - ir);
      kernel_for(mr, nr)(kc, panel, pb + jr * kc, C + ir * ldc + jr, ldc, alpha, beta, nr);
    }
  }
}

struct Avx2Kernel {
  static constexpr int64_t kMR = bnlab::kMR, kNR = bnlab::kNR, kMC = bnlab::kMC, kNC = bnlab::kNC,
                           kPackSlack = bnlab::kPackSlack;
  static constexpr auto pack_a = bnlab::pack_a;
  static constexpr auto pack_b = bnlab::pack_b;
  static constexpr auto panels = bnlab::panels;
};

}  // namespace

namespace detail {

bool cpu_has_avx2_fma() { return cpu_isa() >= CpuIsa::avx2; }

void gemm_avx2_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                      float* C, int64_t ldc) {
  gemm_run<Avx2Kernel>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int64_t gemm_avx2_packed_a_floats(int64_t M, int64_t K) {
  return (M + kMR - 1) / kMR * kMR * K + kPackSlack;
}

void gemm_avx2_pack_a(bool trans_a, const float* A, int64_t lda, int64_t M, int64_t K,
                      float* packed) {
  BNLAB_CHECK(K <= kGemmKC, "gemm_avx2_pack_a: K=", K, " exceeds one K block (", kGemmKC, ")");
  static_assert(kGemmAvx2PanelColumns == kNR);
  pack_a(trans_a, A, lda, 0, 0, M, K, packed);
}

void gemm_avx2_packed(int64_t M, int64_t N, int64_t K, float alpha, const float* packed_a,
                      const float* b_panel, float beta, float* C, int64_t ldc) {
  BNLAB_CHECK(N >= 1 && N <= kNR && K >= 1 && K <= kGemmKC, "gemm_avx2_packed: N=", N, " K=", K,
              " outside one panel (N <= ", kNR, ", K <= ", kGemmKC, ")");
  // The whole packed A as one block, B as one block of one panel: the loops of gemm_blocked's
  // innermost step.
  panels(K, packed_a, M, b_panel, N, C, ldc, alpha, beta);
}

int64_t gemm_avx2_packed_b_floats(int64_t K, int64_t N) {
  return packed_b_padded_columns<Avx2Kernel>(N) * K;
}

void gemm_avx2_pack_b(bool trans_b, const float* B, int64_t ldb, int64_t K, int64_t N,
                      float* packed) {
  pack_b_whole<Avx2Kernel>(trans_b, B, ldb, K, N, packed);
}

void gemm_avx2_kernel_packed_b(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                               float alpha, const float* A, int64_t lda, const float* B,
                               int64_t ldb, const float* packed, float beta, float* C,
                               int64_t ldc) {
  gemm_run_packed_b<Avx2Kernel>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, packed, beta, C,
                                ldc);
}

}  // namespace detail
}  // namespace bnlab

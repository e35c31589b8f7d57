// What bnlab's own GEMM kernels share (internal; not installed): the AVX-512F kernel
// (core/gemm_avx512.cpp) and the AVX2 one (core/gemm_avx2.cpp) have the same five loops, the same
// K blocking and the same per-element arithmetic, so that both give the same bits; only the
// register tile, the packing and the instructions differ.
//
// The arithmetic both keep (tested in tests/core/test_gemm.cpp against a scalar emulation): K is
// split by balanced_block(K, kGemmKC, 1); in each K block an element's sum is one in-order chain
// of fused multiply-adds from +0; the result is alpha * sum, then fma(beta_block, C, that), where
// beta_block is the caller's beta in the first block and 1 after it (beta 0 does not read C).
// Threads only split C's rows or columns, so no thread count changes a bit.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace bnlab::detail {

// The K block of both kernels. Part of the arithmetic above: changing it changes results.
constexpr int64_t kGemmKC = 256;

// Below this many multiply-adds, a second thread costs more (fork/join, duplicate packing) than it
// saves.
constexpr int64_t kGemmParallelMinWork = int64_t{1} << 21;

// Splits n into ceil(n / block) nearly equal pieces (so K = 300 becomes 150 + 150, not 256 + 44);
// returns the piece size, a multiple of `unit` when n allows it.
inline int64_t balanced_block(int64_t n, int64_t block, int64_t unit) {
  const int64_t pieces = (n + block - 1) / block;
  const int64_t size = (n + pieces - 1) / pieces;
  return std::min(block, (size + unit - 1) / unit * unit);
}

// Packing buffers: one pair per thread and kernel (gemm_blocked's thread_local pair), grown on
// demand and reused, 64-byte aligned so the microkernels' B loads are aligned. Conv calls GEMM
// from every thread of its image loop, so the buffers must be per thread. get() returns null when
// the memory cannot be had: GEMM runs inside OpenMP regions (its own split, conv's image loop),
// which an exception cannot leave, so the caller computes without them (gemm_portable) instead of
// throwing.
class PackBuffer {
 public:
  PackBuffer() = default;
  PackBuffer(const PackBuffer&) = delete;
  PackBuffer& operator=(const PackBuffer&) = delete;
  ~PackBuffer() { std::free(data_); }
  float* get(int64_t floats) noexcept {
    const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
    if (bytes > capacity_) {
      std::free(data_);
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      capacity_ = data_ != nullptr ? bytes : 0;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

// C = beta * C, for alpha == 0 or K == 0; beta == 0 assigns zeros without reading C.
void gemm_scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) noexcept;

// The product by plain loops: no packing, no allocation, no instruction set beyond the build's,
// 64-bit sizes, never throws; slow, within the error bound of the others (one rounding per product
// and per sum). For products that must finish inside an OpenMP region, where an exception cannot
// leave, when the usual path cannot: a thread whose packing buffers cannot be allocated, and sizes
// past OpenBLAS's 32-bit interface on a CPU without an own kernel (core/blas.cpp).
void gemm_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc) noexcept;

// The five loops on the calling thread: jc (columns in blocks of NC; the B block is packed once
// per jc and K block), pc (K in blocks of at most kGemmKC; the caller's beta in the first, 1
// after), ic (rows in blocks of MC; the A block is packed once per ic and K block), then the
// kernel's own jr / ir loops over the packed blocks. Kernel supplies the block sizes kMR, kNR,
// kMC, kNC, the packing buffers' slack kPackSlack (floats written past an A block), pack_a,
// pack_b, and
//   panels(kc, packed_a, mc, packed_b, nc, C, ldc, alpha, beta_block): the mc x nc block of C.
// A thread whose buffers cannot be allocated computes with gemm_portable instead.
template <class Kernel>
void gemm_blocked(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc) {
  constexpr int64_t MR = Kernel::kMR, NR = Kernel::kNR;
  const int64_t KC = balanced_block(K, kGemmKC, 1);
  const int64_t MC = balanced_block(M, Kernel::kMC, MR);
  const int64_t NC = balanced_block(N, Kernel::kNC, NR);
  thread_local PackBuffer pack_a_buffer, pack_b_buffer;
  float* pa = pack_a_buffer.get(std::min(MC, (M + MR - 1) / MR * MR) * KC + Kernel::kPackSlack);
  float* pb = pack_b_buffer.get(std::min(NC, (N + NR - 1) / NR * NR) * KC);
  if (pa == nullptr || pb == nullptr) {
    gemm_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const float beta_block = pc == 0 ? beta : 1.0f;
      Kernel::pack_b(trans_b, B, ldb, pc, jc, nc, kc, pb);
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        Kernel::pack_a(trans_a, A, lda, ic, pc, mc, kc, pa);
        Kernel::panels(kc, pa, mc, pb, nc, C + ic * ldc + jc, ldc, alpha, beta_block);
      }
    }
  }
}

// Splits C [M, N] over the OpenMP team and runs part(row_lo, row_hi, col_lo, col_hi) once per
// thread on its share: outside a parallel region, for a product large enough, the wider side of C
// is split into one contiguous range per thread; inside one (conv's per-image loop), or for a small
// product, part(0, M, 0, N) runs on the calling thread. Columns go in units of column_unit, rows in
// units of row_unit. Threads only split C, so no thread count changes a bit (the top of this file).
template <class Part>
void split_over_team(int64_t column_unit, int64_t row_unit, int64_t M, int64_t N, int64_t K,
                     Part part) {
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads < 2 || M * N * K < kGemmParallelMinWork) {
    part(int64_t{0}, M, int64_t{0}, N);
    return;
  }
  const bool split_n = N >= M;
  const int64_t unit = split_n ? column_unit : row_unit;
  const int64_t extent = split_n ? N : M;
  const int64_t tiles = (extent + unit - 1) / unit;
  const int team = static_cast<int>(std::min(threads, tiles));
#pragma omp parallel num_threads(team)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t lo = std::min(tiles * t / team * unit, extent);
    const int64_t hi = std::min(tiles * (t + 1) / team * unit, extent);
    if (hi > lo) {
      if (split_n) {
        part(int64_t{0}, M, lo, hi);
      } else {
        part(lo, hi, int64_t{0}, N);
      }
    }
  }
}

// Runs serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) (a kernel's five
// loops on one thread) over the team's shares of C (split_over_team). Each thread packs and reads
// only its share of the larger operand (B's columns when splitting columns, A's rows otherwise) and
// all of the smaller one. That halves the packing of the operand that costs the most, and for a
// dense layer's forward (M = batch < N = out_features) it means each thread reads only its own
// rows of the weight: when both threads had read all of it, the optimizer's update then had to
// take every line back from the other core (on a 2-vCPU EPYC a write to a line the other core
// shares cost about 8 ns, so SGD on paper-mlp's 784 x 100 weight took 27 us at two threads against
// 7 at one). Columns go in units of column_unit (half a panel, so N = 100 splits 48 / 52 with
// 32-column panels), rows in units of row_unit (whole register tiles).
template <class Serial>
void gemm_over_team(int64_t column_unit, int64_t row_unit, bool trans_a, bool trans_b, int64_t M,
                    int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float beta, float* C, int64_t ldc, Serial serial) {
  split_over_team(column_unit, row_unit, M, N, K,
                  [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
                    const float* At = trans_a ? A + r0 : A + r0 * lda;
                    const float* Bt = trans_b ? B + c0 * ldb : B + c0;
                    serial(trans_a, trans_b, r1 - r0, c1 - c0, K, alpha, At, lda, Bt, ldb, beta,
                           C + r0 * ldc + c0, ldc);
                  });
}

// A kernel's whole product: empty C untouched, C = beta C when alpha or K is 0 (A and B unread),
// else gemm_blocked<Kernel> over the team, columns split in half panels, rows in whole tiles.
template <class Kernel>
void gemm_run(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    gemm_scale_c(M, N, beta, C, ldc);
    return;
  }
  gemm_over_team(Kernel::kNR / 2, Kernel::kMR, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                 beta, C, ldc, gemm_blocked<Kernel>);
}

// op(B) packed once for many products (an inference weight against every batch): the panels
// gemm_blocked's pack_b makes, for all of B at once. The K block starting at row pc holds the
// block's panels of all N columns, at packed + pc * padded_columns; panel q of a block of kc rows
// at q * kc * NR within it. Same K blocks as gemm_blocked (balanced_block(K, kGemmKC, 1)), so a
// product on these panels gives gemm_run's bits.
template <class Kernel>
int64_t packed_b_padded_columns(int64_t N) {
  return (N + Kernel::kNR - 1) / Kernel::kNR * Kernel::kNR;
}

template <class Kernel>
void pack_b_whole(bool trans_b, const float* B, int64_t ldb, int64_t K, int64_t N, float* packed) {
  const int64_t KC = balanced_block(K, kGemmKC, 1);
  const int64_t padded = packed_b_padded_columns<Kernel>(N);
  for (int64_t pc = 0; pc < K; pc += KC) {
    Kernel::pack_b(trans_b, B, ldb, pc, 0, N, std::min(KC, K - pc), packed + pc * padded);
  }
}

// gemm_run with B also packed by pack_b_whole: the same loops without B's packing, the team
// splitting columns in whole panels (a share must start at a panel). B itself is only read by a
// thread whose A buffer cannot be allocated: it computes its share as gemm_blocked would.
template <class Kernel>
void gemm_run_packed_b(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float* A, int64_t lda, const float* B, int64_t ldb,
                       const float* packed, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    gemm_scale_c(M, N, beta, C, ldc);
    return;
  }
  constexpr int64_t MR = Kernel::kMR, NR = Kernel::kNR;
  const int64_t KC = balanced_block(K, kGemmKC, 1);
  const int64_t padded = packed_b_padded_columns<Kernel>(N);
  split_over_team(NR, MR, M, N, K, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    const int64_t rows = r1 - r0;
    const float* At = trans_a ? A + r0 : A + r0 * lda;
    float* Ct = C + r0 * ldc + c0;
    const int64_t MC = balanced_block(rows, Kernel::kMC, MR);
    thread_local PackBuffer pack_a_buffer;
    float* pa =
        pack_a_buffer.get(std::min(MC, (rows + MR - 1) / MR * MR) * KC + Kernel::kPackSlack);
    if (pa == nullptr) {
      const float* Bt = trans_b ? B + c0 * ldb : B + c0;
      gemm_blocked<Kernel>(trans_a, trans_b, rows, c1 - c0, K, alpha, At, lda, Bt, ldb, beta, Ct,
                           ldc);
      return;
    }
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const float beta_block = pc == 0 ? beta : 1.0f;
      const float* pb = packed + pc * padded + c0 * kc;
      for (int64_t ic = 0; ic < rows; ic += MC) {
        const int64_t mc = std::min(MC, rows - ic);
        Kernel::pack_a(trans_a, At, lda, ic, pc, mc, kc, pa);
        Kernel::panels(kc, pa, mc, pb, c1 - c0, Ct + ic * ldc, ldc, alpha, beta_block);
      }
    }
  });
}

}  // namespace bnlab::detail

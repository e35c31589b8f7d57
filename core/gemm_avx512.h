// bnlab's own AVX-512F SGEMM (internal; not installed). Callers go through core/blas.h:
// bnlab::gemm dispatches here at run time, bnlab::gemm_avx512 calls it explicitly; both validate
// the arguments and check the CPU first. The design and conventions are at the top of
// core/gemm_avx512.cpp.
#pragma once

#include <cstdint>

#include "core/gemm_common.h"  // gemm_portable

namespace bnlab::detail {

// True when the dispatched kernels may use AVX-512F: cpu_isa() (core/cpu_isa.h), which is the
// CPU's support capped by BNLAB_MAX_ISA.
bool cpu_has_avx512f();

// C[M, N] = alpha op(A) op(B) + beta C with bnlab::gemm's argument conventions; requires
// cpu_has_avx512f() and arguments already validated.
void gemm_avx512_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                        float* C, int64_t ldc);

// Products that reuse one A many times (Winograd's transformed weights, one per cell, against
// every block of tiles) can pack A once and skip the packing of B by storing B as the kernel's
// panel. Requires cpu_has_avx512f().
//
// op(A) [M, K] in the kernel's packed form: gemm_packed_a_floats(M, K) floats; K at most
// kGemmPackedMaxK (one K block, so the sums run in the order gemm_avx512_kernel's do).
constexpr int64_t kGemmPackedMaxK = 256;
// B for gemm_avx512_packed: one panel of at most this many columns, row k at b + k * 32.
constexpr int64_t kGemmPanelColumns = 32;
int64_t gemm_packed_a_floats(int64_t M, int64_t K);
void gemm_pack_a(bool trans_a, const float* A, int64_t lda, int64_t M, int64_t K, float* packed);

// C[M, N] = alpha A B + beta C, A packed by gemm_pack_a, B one 64-byte-aligned panel [K, 32]
// whose first N <= 32 columns are used (the rest may hold anything, NaN included: they only feed
// lanes that are not stored). beta == 0 never reads C. Runs on the calling thread. Each element
// equals what gemm_avx512_kernel computes for the same operands.
void gemm_avx512_packed(int64_t M, int64_t N, int64_t K, float alpha, const float* packed_a,
                        const float* b_panel, float beta, float* C, int64_t ldc);

// B packed once for many products (core/blas.h's PackedB): gemm_avx512_pack_b writes op(B) [K, N]
// into gemm_avx512_packed_b_floats(K, N) floats, 64-byte aligned; gemm_avx512_kernel_packed_b then
// computes what gemm_avx512_kernel does for the same operands, to the bit, without packing B. It
// reads B itself only where a thread cannot allocate its A buffer.
int64_t gemm_avx512_packed_b_floats(int64_t K, int64_t N);
void gemm_avx512_pack_b(bool trans_b, const float* B, int64_t ldb, int64_t K, int64_t N,
                        float* packed);
void gemm_avx512_kernel_packed_b(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                                 float alpha, const float* A, int64_t lda, const float* B,
                                 int64_t ldb, const float* packed, float beta, float* C,
                                 int64_t ldc);

}  // namespace bnlab::detail

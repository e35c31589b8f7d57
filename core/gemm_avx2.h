// bnlab's own AVX2 + FMA SGEMM (internal; not installed). bnlab::gemm (core/blas.h) dispatches here
// on CPUs with AVX2 and FMA but without AVX-512F; bnlab::gemm_avx2 calls it explicitly. Both
// validate the arguments and check the CPU first. The design is at the top of core/gemm_avx2.cpp.
#pragma once

#include <cstdint>

#include "core/gemm_common.h"  // kGemmKC

namespace bnlab::detail {

// True when the dispatched kernels may use AVX2 and FMA: cpu_isa() (core/cpu_isa.h) is avx2 or
// wider.
bool cpu_has_avx2_fma();

// C[M, N] = alpha op(A) op(B) + beta C with bnlab::gemm's argument conventions; requires
// cpu_has_avx2_fma() and arguments already validated. Bit for bit what gemm_avx512_kernel gives
// for the same call (core/gemm_common.h).
void gemm_avx2_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                      float* C, int64_t ldc);

// gemm_avx512.h's pre-packed products for this kernel (requires cpu_has_avx2_fma()): op(A) [M, K]
// packed once by gemm_avx2_pack_a into gemm_avx2_packed_a_floats(M, K) floats (K at most
// kGemmKC), then C[M, N] = alpha A B + beta C with B one 32-byte-aligned panel [K, 16],
// row k at b + k * 16, whose first N <= 16 columns are used (the rest may hold anything). beta == 0
// never reads C. Runs on the calling thread. Each element equals what gemm_avx2_kernel computes
// for the same operands.
constexpr int64_t kGemmAvx2PanelColumns = 16;
int64_t gemm_avx2_packed_a_floats(int64_t M, int64_t K);
void gemm_avx2_pack_a(bool trans_a, const float* A, int64_t lda, int64_t M, int64_t K,
                      float* packed);
void gemm_avx2_packed(int64_t M, int64_t N, int64_t K, float alpha, const float* packed_a,
                      const float* b_panel, float beta, float* C, int64_t ldc);

// B packed once for many products (core/blas.h's PackedB): gemm_avx2_pack_b writes op(B) [K, N]
// into gemm_avx2_packed_b_floats(K, N) floats, 64-byte aligned; gemm_avx2_kernel_packed_b then
// computes what gemm_avx2_kernel does for the same operands, to the bit, without packing B. It
// reads B itself only where a thread cannot allocate its A buffer.
int64_t gemm_avx2_packed_b_floats(int64_t K, int64_t N);
void gemm_avx2_pack_b(bool trans_b, const float* B, int64_t ldb, int64_t K, int64_t N,
                      float* packed);
void gemm_avx2_kernel_packed_b(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                               float alpha, const float* A, int64_t lda, const float* B,
                               int64_t ldb, const float* packed, float beta, float* C, int64_t ldc);

}  // namespace bnlab::detail

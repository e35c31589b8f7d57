// bnlab's own AVX-512F SGEMM (internal; not installed). Callers go through core/blas.h:
// bnlab::gemm dispatches here at run time, bnlab::gemm_avx512 calls it explicitly; both validate
// the arguments and check the CPU first. The design and conventions are at the top of
// core/gemm_avx512.cpp.
#pragma once

#include <cstdint>

namespace bnlab::detail {

// True when the CPU executing us has AVX-512F (cached after the first call).
bool cpu_has_avx512f();

// C[M, N] = alpha op(A) op(B) + beta C with bnlab::gemm's argument conventions; requires
// cpu_has_avx512f() and arguments already validated.
void gemm_avx512_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                        float* C, int64_t ldc);

}  // namespace bnlab::detail

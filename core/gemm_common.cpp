// The plain-loop GEMM and C = beta C, shared by the own kernels (core/gemm_common.h).
#include "core/gemm_common.h"

#include <algorithm>

namespace bnlab::detail {

void gemm_scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) noexcept {
  for (int64_t i = 0; i < M; ++i) {
    float* ci = C + i * ldc;
    if (beta == 0.0f) {
      std::fill_n(ci, N, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < N; ++j) ci[j] *= beta;
    }
  }
}

void gemm_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc) noexcept {
  if (M == 0 || N == 0) return;
  gemm_scale_c(M, N, beta, C, ldc);
  if (alpha == 0.0f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* ci = C + i * ldc;
    for (int64_t k = 0; k < K; ++k) {
      const float a = alpha * (trans_a ? A[k * lda + i] : A[i * lda + k]);
      if (trans_b) {
        for (int64_t j = 0; j < N; ++j) ci[j] += a * B[j * ldb + k];
      } else {
        const float* bk = B + k * ldb;
        for (int64_t j = 0; j < N; ++j) ci[j] += a * bk[j];
      }
    }
  }
}

}  // namespace bnlab::detail

// GEMM through OpenBLAS and the shared thread-count setting.
#include "core/blas.h"

#include <cblas.h>
#include <omp.h>

#include <climits>

#include "core/error.h"

extern "C" {
// Declared by OpenBLAS's cblas.h in recent versions; repeated here for older headers.
int openblas_get_parallel(void);
char* openblas_get_config(void);
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
}

namespace bnlab {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  BNLAB_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
                  ldc <= INT_MAX,
              "gemm: sizes M=", M, " N=", N, " K=", K, " exceed the 32-bit BLAS interface");
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
}

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

std::string blas_parallel_mode() {
  switch (openblas_get_parallel()) {
    case 0:
      return "sequential";
    case 1:
      return "pthreads";
    case 2:
      return "OpenMP";
    default:
      return "unknown";
  }
}

std::string blas_config() { return openblas_get_config(); }

int blas_num_threads() { return openblas_get_num_threads(); }

}  // namespace bnlab

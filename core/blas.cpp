// GEMM dispatch (bnlab's AVX-512 kernel or OpenBLAS, chosen once per process), the OpenBLAS path,
// and the shared thread-count setting.
#include "core/blas.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "core/error.h"
#include "core/gemm_avx2.h"
#include "core/gemm_avx512.h"
#include "core/parallel.h"

extern "C" {
// Declared by OpenBLAS's cblas.h in recent versions; repeated here for older headers.
int openblas_get_parallel(void);
char* openblas_get_config(void);
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
}

namespace bnlab {

namespace {

void check_gemm_args(const char* op, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                     int64_t lda, int64_t ldb, int64_t ldc) {
  BNLAB_CHECK(M >= 0 && N >= 0 && K >= 0, op, ": negative size M=", M, " N=", N, " K=", K);
  const int64_t a_row = trans_a ? M : K, b_row = trans_b ? K : N;
  BNLAB_CHECK(lda >= a_row && ldb >= b_row && ldc >= N, op,
              ": leading dimension shorter than its row: lda=", lda, " (row ", a_row,
              "), ldb=", ldb, " (row ", b_row, "), ldc=", ldc, " (row ", N, ") for M=", M, " N=", N,
              " K=", K, trans_a ? " A^T" : "", trans_b ? " B^T" : "");
}

bool fits_blas_int(std::initializer_list<int64_t> sizes) {
  return std::all_of(sizes.begin(), sizes.end(), [](int64_t v) { return v <= INT_MAX; });
}

void openblas_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                    int64_t ldc) {
  BNLAB_CHECK(fits_blas_int({M, N, K, lda, ldb, ldc}), "gemm: sizes M=", M, " N=", N, " K=", K,
              " lda=", lda, " ldb=", ldb, " ldc=", ldc, " exceed the 32-bit BLAS interface");
  if (M == 0 || N == 0) return;
  // BLAS wants every leading dimension >= 1 even when that dimension is empty (K = 0); no element
  // is read along it then, so raising 0 to 1 changes nothing else.
  lda = std::max<int64_t>(lda, 1);
  ldb = std::max<int64_t>(ldb, 1);
  // With beta 0 OpenBLAS first clears C with scalar stores (its generic gemm_beta: 4 % of W2's
  // training step on Zen 3, where the first-written gradients take this path) and then its kernel
  // adds the product onto C. memset's vector stores clear it faster, and beta 1 then adds onto the
  // same +0s: the same bits. alpha 0 or K 0 (C = beta C) stays with OpenBLAS.
  if (beta == 0.0f && alpha != 0.0f && K > 0) {
    const auto clear_row = [=](int64_t i) {
      std::memset(C + i * ldc, 0, static_cast<size_t>(N) * sizeof(float));
    };
    detail::parallel_for(M, M * N >= (int64_t{1} << 17), clear_row);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
}

GemmPath choose_path() {
  const char* env = std::getenv("BNLAB_GEMM");
  if (env != nullptr && std::strcmp(env, "openblas") == 0) return GemmPath::openblas;
  if (detail::cpu_has_avx512f()) return GemmPath::avx512;
  return detail::cpu_has_avx2_fma() ? GemmPath::avx2 : GemmPath::openblas;
}

// The small-product rule: products with N <= 8 columns and fewer than 32 rows stay on OpenBLAS
// even on the own kernels' paths. Such a product is a few matrix-vector products, where OpenBLAS's
// kernels skip the packing the own kernel does. Since its narrow panels (rows in the lanes,
// core/gemm_avx512.cpp) the own kernel is ahead at N <= 8 from M = 32 rows on (one thread, best of
// 2000 calls, K = 100 and 800, B transposed: own / OpenBLAS speed 1.09-1.60 at M = 32, 1.14-1.96 at
// M = 64 and 512) and behind below (0.57-0.85 at M = 1 to 4, 0.78-1.15 at M = 8 and 16). From N = 9
// on it is ahead at every M (1.17-1.62 at M = 1 to 32). Every conv and dense shape of the
// workloads has N >= 25 except a 10-class classifier's forward (N = 10). The AVX2 kernel, which has
// no narrow panels, takes the same rule; it was not measured below M = 32 (at M = 64, N = 4 to 24,
// bench/gemm_paths on Zen 3: 0.97-1.28x OpenBLAS).
//
// Only while OpenBLAS runs such a product on one thread: its interface (interface/gemm.c) threads
// a product from M * N * K > 65536 * 4 on, and a threaded OpenBLAS product may round differently
// at another thread count. Longer ones go to the own kernel, whose bits never depend on it.
constexpr int64_t kOpenBlasOneThreadWork = int64_t{65536} * 4;
bool small_for_own_kernel(int64_t M, int64_t N, int64_t K) {
  return N <= 8 && M < 32 && M * N * K <= kOpenBlasOneThreadWork;
}

}  // namespace

GemmPath gemm_path() {
  static const GemmPath path = choose_path();
  return path;
}

std::string gemm_path_name() {
  switch (gemm_path()) {
    case GemmPath::avx512:
      return "bnlab-avx512";
    case GemmPath::avx2:
      return "bnlab-avx2";
    case GemmPath::openblas:
      break;
  }
  return "openblas";
}

bool gemm_avx512_available() { return detail::cpu_has_avx512f(); }

bool gemm_avx2_available() { return detail::cpu_has_avx2_fma(); }

namespace {

// The own kernel of this process's path; only called when gemm_path() is not openblas.
void own_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                int64_t ldc) {
  if (gemm_path() == GemmPath::avx512) {
    detail::gemm_avx512_kernel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    detail::gemm_avx2_kernel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_gemm_args("gemm", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  const bool own = gemm_path() != GemmPath::openblas;
  if (own && !small_for_own_kernel(M, N, K)) {
    own_kernel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else if (fits_blas_int({M, N, K, lda, ldb, ldc})) {
    openblas_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else if (own) {
    own_kernel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    // Past OpenBLAS's 32-bit interface on a CPU without an own kernel (a conv over a plane of
    // more than 2^31 values). gemm is called inside OpenMP regions (conv's image loop), which the
    // interface's error could not leave, so the product is computed, slowly, instead.
    detail::gemm_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

void PackedB::Free::operator()(float* p) const { std::free(p); }

PackedB::PackedB(bool trans_b, int64_t K, int64_t N, const float* B, int64_t ldb)
    : trans_b_(trans_b), K_(K), N_(N), ldb_(ldb), B_(B) {
  // Its own check, not gemm's: there is no A, C or M to name yet.
  BNLAB_CHECK(K >= 0 && N >= 0, "PackedB: negative size K=", K, " N=", N);
  const int64_t b_row = trans_b ? K : N;
  BNLAB_CHECK(ldb >= b_row, "PackedB: leading dimension shorter than its row: ldb=", ldb, " (row ",
              b_row, ") for K=", K, " N=", N, trans_b ? " B^T" : "");
  const GemmPath path = gemm_path();
  if (path == GemmPath::openblas || K == 0 || N == 0) return;
  const bool avx512 = path == GemmPath::avx512;
  const int64_t floats =
      avx512 ? detail::gemm_avx512_packed_b_floats(K, N) : detail::gemm_avx2_packed_b_floats(K, N);
  const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
  // Without the memory, the products run as gemm() does: slower, the same bits.
  packed_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
  if (!packed_) return;
  if (avx512) {
    detail::gemm_avx512_pack_b(trans_b, B, ldb, K, N, packed_.get());
  } else {
    detail::gemm_avx2_pack_b(trans_b, B, ldb, K, N, packed_.get());
  }
}

void gemm(bool trans_a, int64_t M, float alpha, const float* A, int64_t lda, const PackedB& B,
          float beta, float* C, int64_t ldc) {
  const int64_t N = B.N_, K = B.K_;
  check_gemm_args("gemm", trans_a, B.trans_b_, M, N, K, lda, B.ldb_, ldc);
  // gemm()'s rule for which products an own kernel runs, so that the bits are gemm()'s.
  if (!B.packed() || small_for_own_kernel(M, N, K)) {
    gemm(trans_a, B.trans_b_, M, N, K, alpha, A, lda, B.B_, B.ldb_, beta, C, ldc);
  } else if (gemm_path() == GemmPath::avx512) {
    detail::gemm_avx512_kernel_packed_b(trans_a, B.trans_b_, M, N, K, alpha, A, lda, B.B_, B.ldb_,
                                        B.packed_.get(), beta, C, ldc);
  } else {
    detail::gemm_avx2_kernel_packed_b(trans_a, B.trans_b_, M, N, K, alpha, A, lda, B.B_, B.ldb_,
                                      B.packed_.get(), beta, C, ldc);
  }
}

void gemm_openblas(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc) {
  check_gemm_args("gemm_openblas", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  openblas_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc) {
  check_gemm_args("gemm_avx512", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  BNLAB_CHECK(detail::cpu_has_avx512f(),
              "gemm_avx512: this CPU lacks AVX-512F; bnlab::gemm falls back to OpenBLAS there");
  detail::gemm_avx512_kernel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_avx2(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
               int64_t ldc) {
  check_gemm_args("gemm_avx2", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  BNLAB_CHECK(detail::cpu_has_avx2_fma(),
              "gemm_avx2: this CPU lacks AVX2 and FMA (or BNLAB_MAX_ISA caps them); bnlab::gemm "
              "falls back to OpenBLAS there");
  detail::gemm_avx2_kernel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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

// The BLAS and thread glue: one GEMM entry point (transposes as flags) and one place that sets the
// thread count for both OpenMP and OpenBLAS.
//
// bnlab::gemm runs one of three implementations, chosen once per process: bnlab's own AVX-512F
// kernel (core/gemm_avx512.cpp) when cpu_isa() allows AVX-512F, its own AVX2 + FMA kernel
// (core/gemm_avx2.cpp) when cpu_isa() allows AVX2 only, OpenBLAS's cblas_sgemm on older CPUs or
// when the environment variable BNLAB_GEMM is `openblas`. The two own kernels give the same bits
// as each other and at every thread count (core/gemm_common.h). All three are callable explicitly
// (gemm_openblas, gemm_avx512, gemm_avx2), for tests and benchmarks.
//
// bnlab links OpenBLAS's OpenMP build, so OpenBLAS shares OpenMP's thread pool: a GEMM called
// inside one of our parallel regions runs single-threaded instead of spawning threads of its own
// (no oversubscription).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace bnlab {

/// C[M, N] = alpha * op(A) op(B) + beta * C, row-major; op(A) is [M, K] (A stored [K, M] if
/// trans_a), op(B) is [K, N] (B stored [N, K] if trans_b). Leading dimensions are those of the
/// stored matrices.
/// BLAS semantics: beta == 0 assigns C without reading it (C may hold NaN); alpha == 0 or K == 0
/// gives beta * C. Throws on negative sizes or a leading dimension shorter than its row. Sizes past
/// OpenBLAS's 32-bit interface go to an own kernel, or without AVX2 to plain loops (slow).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

/// op(B) [K, N] packed once for many products with different A, as an inference weight meets
/// every batch: gemm(trans_a, M, alpha, A, lda, packed, beta, C, ldc) then skips the packing of B
/// that gemm() does per call, and gives gemm()'s bits for the same operands. B is referenced, not
/// owned: the products gemm() sends to OpenBLAS (its whole path when gemm_path() is openblas, where
/// nothing is packed; the few small ones an own kernel leaves to it) read B itself, so B must
/// outlive this object and must not change while it is in use (a change is not seen).
class PackedB {
 public:
  /// Packs op(B): B stored [N, K] with leading dimension ldb if trans_b, else [K, N]. Throws on
  /// negative sizes or a leading dimension shorter than its row.
  PackedB(bool trans_b, int64_t K, int64_t N, const float* B, int64_t ldb);
  PackedB(const PackedB&) = delete;
  PackedB& operator=(const PackedB&) = delete;
  int64_t rows() const { return K_; }  ///< K
  int64_t cols() const { return N_; }  ///< N
  /// False when nothing was packed (the OpenBLAS path, or no memory for the copy): the products
  /// then run as gemm() on B.
  bool packed() const { return packed_ != nullptr; }

 private:
  friend void gemm(bool trans_a, int64_t M, float alpha, const float* A, int64_t lda,
                   const PackedB& B, float beta, float* C, int64_t ldc);
  struct Free {
    void operator()(float* p) const;
  };
  bool trans_b_;
  int64_t K_, N_, ldb_;
  const float* B_;
  std::unique_ptr<float, Free> packed_;
};

/// C[M, N] = alpha * op(A) B + beta * C with B packed by PackedB (K and N are its rows() and
/// cols()); otherwise gemm()'s contract, and gemm()'s bits for the same operands.
void gemm(bool trans_a, int64_t M, float alpha, const float* A, int64_t lda, const PackedB& B,
          float beta, float* C, int64_t ldc);

/// The GEMM implementations behind gemm().
enum class GemmPath {
  openblas,  ///< OpenBLAS's cblas_sgemm (whatever kernel core it selected; see blas_config())
  avx512,    ///< bnlab's own AVX-512F kernel (needs a CPU with AVX-512F)
  avx2,      ///< bnlab's own AVX2 + FMA kernel (needs a CPU with both)
};

/// The path gemm() takes in this process: the widest own kernel cpu_isa() (core/cpu_isa.h: the
/// CPU capped by BNLAB_MAX_ISA) allows, avx512 or avx2, unless BNLAB_GEMM is `openblas` (the
/// variable is read once, at the first call); openblas otherwise. On an own kernel's path,
/// products with N <= 8 columns and M < 32 rows still go to OpenBLAS (a few matrix-vector
/// products, where it is faster; the rule and its figures are in core/blas.cpp).
GemmPath gemm_path();
/// gemm_path() as text for logs and benchmark records: "bnlab-avx512", "bnlab-avx2" or
/// "openblas".
std::string gemm_path_name();
/// True when this CPU can run gemm_avx512().
bool gemm_avx512_available();
/// True when this CPU can run gemm_avx2() (AVX2 and FMA, not capped by BNLAB_MAX_ISA).
bool gemm_avx2_available();

/// gemm() through OpenBLAS, whatever gemm_path() says (sizes limited to the 32-bit interface).
void gemm_openblas(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc);
/// gemm() through bnlab's AVX-512F kernel, whatever gemm_path() says; throws if
/// gemm_avx512_available() is false.
void gemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc);
/// gemm() through bnlab's AVX2 + FMA kernel, whatever gemm_path() says; throws if
/// gemm_avx2_available() is false.
void gemm_avx2(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
               int64_t ldc);

/// Sets OpenMP's and OpenBLAS's thread counts together (n <= 0: the machine's core count).
void set_num_threads(int n);
/// The thread count set_num_threads() established (OpenMP's maximum).
int num_threads();

/// What the linked OpenBLAS says about itself: "OpenMP" for the build we want, "pthreads" or
/// "sequential".
std::string blas_parallel_mode();
/// OpenBLAS's build configuration string (openblas_get_config()); with DYNAMIC_ARCH it names the
/// kernel core in use (e.g. "Haswell", which OPENBLAS_CORETYPE can force).
std::string blas_config();
/// The thread count OpenBLAS itself will use (openblas_get_num_threads()).
int blas_num_threads();

}  // namespace bnlab

// gemm() on a B operand packed once (PackedB, core/blas.h) against gemm() itself, bit for bit: the
// four transpose cases, sizes around the own kernels' panel and K-block edges (AVX-512: NR = 32,
// AVX2: NR = 16; KC = 256), the products gemm() leaves to OpenBLAS (N <= 8, M < 32), the BLAS rules
// for alpha and beta, 1 and 2 threads, and calls from inside a parallel region.
#include <doctest/doctest.h>
#include <omp.h>

#include <cstring>
#include <limits>
#include <vector>

#include "core/blas.h"
#include "core/error.h"
#include "gemm_test_util.h"

using namespace bnlab;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

using testing::Matrix;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Size {
  int64_t M, N, K;
};

}  // namespace

TEST_CASE(
    "gemm(PackedB): gemm()'s bits for every transpose, edge and alpha/beta, 1 and 2 threads") {
  const int before = num_threads();
  // W2's layers (fc1 128 x 512 x 784: four K blocks of 196); paper-mlp's (N = 100 ends in a
  // partial panel); columns split over threads (50 x 700) and rows (700 x 40); one column past a
  // panel; K one past a block; short M and N that gemm() sends to OpenBLAS (5 x 3 x 40), and N <= 8
  // with M >= 32 that it does not; single elements.
  const std::vector<Size> sizes{{128, 512, 784}, {60, 100, 784}, {50, 700, 300},
                                {700, 40, 300},  {29, 17, 257},  {5, 3, 40},
                                {40, 6, 70},     {1, 1, 1},      {33, 33, 33}};
  for (const Size& s : sizes) {
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        const Matrix A = ta ? Matrix(s.K, s.M, 1, 1) : Matrix(s.M, s.K, 1, 1);
        const Matrix B = tb ? Matrix(s.N, s.K, 2, 2) : Matrix(s.K, s.N, 2, 2);
        const Matrix C0(s.M, s.N, 3, 3);
        const PackedB packed(tb, s.K, s.N, B.v.data(), B.ld);
        CHECK(packed.rows() == s.K);
        CHECK(packed.cols() == s.N);
        CHECK(packed.packed() == (gemm_path() != GemmPath::openblas));
        for (const float alpha : {1.0f, -0.5f, 0.0f}) {
          for (const float beta : {0.0f, 1.0f, 0.7f}) {
            for (const int threads : {1, 2}) {
              CAPTURE(s.M);
              CAPTURE(s.N);
              CAPTURE(s.K);
              CAPTURE(ta);
              CAPTURE(tb);
              CAPTURE(alpha);
              CAPTURE(beta);
              CAPTURE(threads);
              set_num_threads(threads);
              std::vector<float> want = C0.v, got = C0.v;
              if (beta == 0.0f) {  // beta 0 must not read C: NaN garbage there
                std::fill(want.begin(), want.end(), kNaN);
                got = want;
              }
              gemm(ta, tb, s.M, s.N, s.K, alpha, A.v.data(), A.ld, B.v.data(), B.ld, beta,
                   want.data(), C0.ld);
              gemm(ta, s.M, alpha, A.v.data(), A.ld, packed, beta, got.data(), C0.ld);
              CHECK(same_bits(want, got));
            }
          }
        }
      }
    }
  }
  set_num_threads(before);
}

TEST_CASE("gemm(PackedB): inside a parallel region each thread's call gives gemm()'s bits") {
  const int before = num_threads();
  // The reference at one thread, as a call inside a region runs: on the OpenBLAS path (no own
  // kernel) a threaded product may round differently.
  set_num_threads(1);
  const Size s{128, 512, 784};
  const Matrix A(s.M, s.K, 0, 4), B(s.N, s.K, 0, 5);
  const PackedB packed(true, s.K, s.N, B.v.data(), B.ld);
  std::vector<float> want(static_cast<size_t>(s.M * s.N));
  gemm(false, true, s.M, s.N, s.K, 1.0f, A.v.data(), A.ld, B.v.data(), B.ld, 0.0f, want.data(),
       s.N);
  set_num_threads(2);
  std::vector<std::vector<float>> per_thread(2, std::vector<float>(want.size(), kNaN));
#pragma omp parallel num_threads(2)
  gemm(false, s.M, 1.0f, A.v.data(), A.ld, packed, 0.0f,
       per_thread[static_cast<size_t>(omp_get_thread_num())].data(), s.N);
  for (const auto& got : per_thread) CHECK(same_bits(want, got));
  set_num_threads(before);
}

TEST_CASE("gemm(PackedB): K = 0 gives beta * C, an empty M or N leaves C alone") {
  const std::vector<float> B(8, 1.0f);
  const PackedB no_k(false, 0, 4, B.data(), 4);
  CHECK_FALSE(no_k.packed());
  std::vector<float> C{1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<float> A(2, 1.0f);
  gemm(false, 2, 1.0f, A.data(), 1, no_k, 0.5f, C.data(), 4);
  CHECK(C == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f, 4});
  const PackedB two_by_four(false, 2, 4, B.data(), 4);
  gemm(false, 0, 1.0f, A.data(), 2, two_by_four, 0.0f, C.data(), 4);
  CHECK(C == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f, 4});
  const PackedB no_n(false, 2, 0, B.data(), 1);
  gemm(false, 2, 1.0f, A.data(), 2, no_n, 0.0f, C.data(), 1);
  CHECK(C == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f, 4});
}

TEST_CASE("gemm(PackedB): bad sizes and leading dimensions throw, naming the op") {
  const std::vector<float> B(64, 1.0f), A(64, 1.0f);
  std::vector<float> C(64);
  CHECK_THROWS_WITH_AS(PackedB(false, -1, 4, B.data(), 4), "PackedB: negative size K=-1 N=4",
                       bnlab::Error);
  // Only B's own sizes are named: no stand-in M, lda or ldc.
  CHECK_THROWS_WITH_AS(PackedB(false, 4, 8, B.data(), 7),
                       "PackedB: leading dimension shorter than its row: ldb=7 (row 8) for K=4 N=8",
                       bnlab::Error);
  CHECK_THROWS_WITH_AS(
      PackedB(true, 8, 4, B.data(), 7),
      "PackedB: leading dimension shorter than its row: ldb=7 (row 8) for K=8 N=4 B^T",
      bnlab::Error);
  const PackedB packed(false, 4, 8, B.data(), 8);
  CHECK_THROWS_WITH_AS(gemm(false, 2, 1.0f, A.data(), 3, packed, 0.0f, C.data(), 8),
                       doctest::Contains("gemm: leading dimension"), bnlab::Error);
  CHECK_THROWS_WITH_AS(gemm(false, 2, 1.0f, A.data(), 4, packed, 0.0f, C.data(), 7),
                       doctest::Contains("gemm: leading dimension"), bnlab::Error);
  CHECK_THROWS_WITH_AS(gemm(false, -2, 1.0f, A.data(), 4, packed, 0.0f, C.data(), 8),
                       doctest::Contains("gemm: negative size"), bnlab::Error);
}

// The GEMM paths behind bnlab::gemm (OpenBLAS and bnlab's own AVX-512F and AVX2 kernels) against a
// naive double-precision reference: the four transpose cases, sizes around every block edge of the
// own kernels (AVX-512: MR = 14, NR = 32, MC = 252; AVX2: MR = 6, NR = 16, MC = 168; both KC =
// 256, NC = 2048), padded leading dimensions, the alpha/beta rules of BLAS, NaN/Inf propagation,
// bit-identical results for 1 and 2 threads, and the own kernels against a scalar emulation of
// their arithmetic, bit for bit (so the two give the same bits). An own kernel this CPU cannot run
// is skipped with a message.
//
// Error bound: each C element is a sum of K products formed with fused multiply-adds (one rounding
// each), possibly in K blocks with alpha applied and C added per block (a few more roundings). The
// classical bound for such a sum (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1)
// is |err| <= gamma_n * (|alpha| sum_k |a_ik||b_kj| + |beta||c_ij|), gamma_n = n u / (1 - n u),
// u = 2^-24, with n the number of roundings on the longest path; n = K + 4 covers both paths.
#include <cblas.h>
#include <doctest/doctest.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/blas.h"
#include "core/error.h"
#include "core/gemm_avx2.h"
#include "core/gemm_avx512.h"
#include "core/random.h"
#include "gemm_test_util.h"
#include "memory_limit.h"
#include "test_util.h"

using namespace bnlab;

namespace {

using GemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                        const float*, int64_t, float, float*, int64_t);

struct Path {
  const char* name;
  GemmFn fn;
};

// The own kernels this machine can run; says so for each one skipped.
std::vector<Path> own_paths() {
  std::vector<Path> out;
  if (gemm_avx512_available()) {
    out.push_back({"avx512", &gemm_avx512});
  } else {
    MESSAGE("no AVX-512F (the CPU, or BNLAB_MAX_ISA): the own AVX-512 GEMM is not tested here");
  }
  if (gemm_avx2_available()) {
    out.push_back({"avx2", &gemm_avx2});
  } else {
    MESSAGE("no AVX2 + FMA (the CPU, or BNLAB_MAX_ISA): the own AVX2 GEMM is not tested here");
  }
  return out;
}

// The paths this machine can run: OpenBLAS and the own kernels.
std::vector<Path> paths() {
  std::vector<Path> out{{"openblas", &gemm_openblas}};
  for (const Path& p : own_paths()) out.push_back(p);
  return out;
}

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

using testing::Matrix;

// op(X)(i, k) of a stored matrix.
float op_at(const Matrix& x, bool trans, int64_t i, int64_t k) {
  return trans ? x.at(k, i) : x.at(i, k);
}

struct Shape {
  int64_t M, N, K;
};

// Runs every path and (alpha, beta) on one shape and transpose pair, checking each element
// against the double reference within the bound stated at the top.
void check_shape(const Shape& s, bool ta, bool tb, const std::vector<Path>& ps) {
  const int64_t pad = 3;
  Matrix A = ta ? Matrix(s.K, s.M, pad, 1) : Matrix(s.M, s.K, pad, 1);
  Matrix B = tb ? Matrix(s.N, s.K, pad, 2) : Matrix(s.K, s.N, pad, 2);
  const Matrix C0(s.M, s.N, pad, 3);
  std::vector<double> ab(static_cast<size_t>(s.M * s.N)), mag(ab.size());
  for (int64_t i = 0; i < s.M; ++i) {
    for (int64_t j = 0; j < s.N; ++j) {
      double sum = 0.0, abs_sum = 0.0;
      for (int64_t k = 0; k < s.K; ++k) {
        const double p = double(op_at(A, ta, i, k)) * double(op_at(B, tb, k, j));
        sum += p;
        abs_sum += std::fabs(p);
      }
      ab[i * s.N + j] = sum;
      mag[i * s.N + j] = abs_sum;
    }
  }
  const double u = std::ldexp(1.0, -24), n = double(s.K + 4);
  const double gamma = n * u / (1.0 - n * u);
  for (const Path& p : ps) {
    for (float alpha : {1.0f, -0.5f, 0.0f}) {
      for (float beta : {0.0f, 1.0f, 0.7f}) {
        CAPTURE(p.name);
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(s.K);
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(alpha);
        CAPTURE(beta);
        Matrix C = C0;
        // beta == 0 must not read C: give it NaN garbage.
        if (beta == 0.0f) {
          for (int64_t i = 0; i < s.M; ++i) std::fill_n(&C.at(i, 0), s.N, kNaN);
        }
        p.fn(ta, tb, s.M, s.N, s.K, alpha, A.v.data(), A.ld, B.v.data(), B.ld, beta, C.v.data(),
             C.ld);
        int64_t bad = 0;
        for (int64_t i = 0; i < s.M; ++i) {
          for (int64_t j = 0; j < s.N; ++j) {
            const double c0 = beta == 0.0f ? 0.0 : double(C0.at(i, j));
            const double want = double(alpha) * ab[i * s.N + j] + double(beta) * c0;
            const double bound =
                gamma * (std::fabs(alpha) * mag[i * s.N + j] + std::fabs(beta) * std::fabs(c0));
            const float got = C.at(i, j);
            if (!(std::fabs(double(got) - want) <= bound)) ++bad;
          }
          // The padding of C's rows is never written.
          for (int64_t j = s.N; j < C.ld; ++j) {
            if (!std::isnan(C.at(i, j))) ++bad;
          }
        }
        CHECK(bad == 0);
      }
    }
  }
}

}  // namespace

TEST_CASE("gemm: both paths match a double reference around every block edge") {
  // And the plain loops both fall back on (a thread without packing buffers, sizes past OpenBLAS's
  // 32-bit interface).
  std::vector<Path> ps = paths();
  ps.push_back({"portable", &detail::gemm_portable});
  // The last row: rows ending 15 or 16 past a full tile, which the own kernel covers with two
  // shorter tiles (alone, at batch 128, and at the end of the second row block: 268 = 140 + 128).
  const std::vector<Shape> shapes = {
      {1, 1, 1},
      {1, 1, 2},
      {11, 31, 7},
      {12, 32, 16},
      {13, 33, 17},
      {12, 31, 255},
      {11, 33, 256},
      {13, 32, 257},
      {7, 5, 515},
      {25, 65, 40},
      {241, 37, 19},
      {3, 2081, 9},
      {2, 2049, 3},
      {1, 300, 100},
      {300, 1, 100},
      {480, 70, 260},
      {15, 33, 20},
      {16, 31, 300},
      {128, 40, 784},
      {268, 20, 30},
      // The AVX2 kernel's edges: 6-row tiles (7 and 8 rows as two), 16-column panels, the
      // 168-row block.
      {6, 16, 1},
      {7, 15, 9},
      {8, 17, 300},
      {14, 8, 33},
      {169, 47, 33},
      {337, 9, 20},
  };
  for (const Shape& s : shapes) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) check_shape(s, ta, tb, ps);
    }
  }
}

TEST_CASE("gemm: the own kernels equal a scalar emulation of their arithmetic, bit for bit") {
  // The arithmetic core/gemm_common.h states: K in balanced blocks of at most 256, one in-order
  // FMA chain per element and block from +0, then fma(beta_block, C, alpha * sum). Both kernels
  // matching it means they give the same bits as each other, whichever CPU runs them. Shapes
  // cross both kernels' tile, panel and row-block edges, K one block and several (300 = 150 +
  // 150, 700 = 234 + 233 + 233), and a product large enough to be split over two threads.
  struct Case {
    Shape s;
    float alpha, beta;
  };
  const std::vector<Case> cases = {
      {{1, 1, 1}, 1.0f, 0.0f},      {{7, 17, 5}, -0.5f, 0.7f},     {{15, 33, 300}, 0.9f, 1.0f},
      {{29, 100, 257}, 1.0f, 0.0f}, {{128, 40, 784}, 0.7f, 0.3f},  {{170, 9, 700}, 1.0f, -1.0f},
      {{300, 70, 30}, 1.0f, 0.0f},  {{60, 530, 300}, -1.0f, 0.5f},
  };
  for (const Path& own : own_paths()) {
    for (const Case& c : cases) {
      const Shape& s = c.s;
      for (const auto& [ta, tb] :
           {std::pair{false, false}, {true, false}, {false, true}, {true, true}}) {
        CAPTURE(own.name);
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(s.K);
        CAPTURE(ta);
        CAPTURE(tb);
        const Matrix A = ta ? Matrix(s.K, s.M, 2, 21) : Matrix(s.M, s.K, 2, 21);
        const Matrix B = tb ? Matrix(s.N, s.K, 1, 22) : Matrix(s.K, s.N, 1, 22);
        const Matrix C0(s.M, s.N, 3, 23);
        Matrix got = C0;
        own.fn(ta, tb, s.M, s.N, s.K, c.alpha, A.v.data(), A.ld, B.v.data(), B.ld, c.beta,
               got.v.data(), got.ld);
        const int64_t blocks = (s.K + 255) / 256;
        const int64_t kc = (s.K + blocks - 1) / blocks;
        int64_t differ = 0;
        for (int64_t i = 0; i < s.M; ++i) {
          for (int64_t j = 0; j < s.N; ++j) {
            float want = C0.at(i, j);
            for (int64_t k0 = 0; k0 < s.K; k0 += kc) {
              float sum = 0.0f;
              for (int64_t k = k0; k < std::min(s.K, k0 + kc); ++k) {
                sum = std::fma(op_at(A, ta, i, k), op_at(B, tb, k, j), sum);
              }
              const float scaled = c.alpha * sum;
              const float beta_block = k0 == 0 ? c.beta : 1.0f;
              want = beta_block == 0.0f ? scaled : std::fma(beta_block, want, scaled);
            }
            if (std::memcmp(&want, &got.at(i, j), sizeof(float)) != 0) ++differ;
          }
        }
        CHECK(differ == 0);
      }
    }
  }
}

TEST_CASE("gemm: K = 0 gives beta * C, and empty M or N leaves C alone") {
  for (const Path& p : paths()) {
    CAPTURE(p.name);
    std::vector<float> C = {1, 2, 3, 4, 5, 6};
    const float a = kNaN, b = kNaN;  // never read
    p.fn(false, false, 2, 3, 0, 1.0f, &a, 0, &b, 3, 0.5f, C.data(), 3);
    CHECK(C == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3});
    std::vector<float> garbage(6, kNaN);
    p.fn(true, true, 2, 3, 0, 1.0f, &a, 2, &b, 0, 0.0f, garbage.data(), 3);
    CHECK(garbage == std::vector<float>(6, 0.0f));
    std::vector<float> untouched = {7, 8};
    p.fn(false, false, 0, 2, 4, 1.0f, &a, 4, &b, 2, 0.0f, untouched.data(), 2);
    p.fn(false, false, 2, 0, 4, 1.0f, &a, 4, &b, 0, 0.0f, untouched.data(), 1);
    CHECK(untouched == std::vector<float>{7, 8});
  }
}

TEST_CASE("gemm: the OpenBLAS path with beta 0 gives OpenBLAS's own beta-0 bits") {
  // gemm_openblas clears C itself and passes beta 1 (OpenBLAS's own clearing is a scalar loop).
  // Against cblas_sgemm with beta 0 on the same operands: C starting as NaN garbage, the gap
  // between padded rows left alone, C below and past the threshold of the team's clearing, outside
  // and inside a parallel region. A zero row of A times alpha -1 gives -0 products, which either
  // way are added onto +0.
  for (const Shape s : {Shape{13, 33, 17}, Shape{400, 512, 64}}) {
    for (const bool inside_region : {false, true}) {
      CAPTURE(s.M);
      CAPTURE(inside_region);
      Matrix A(s.M, s.K, 3, 11);
      const Matrix B(s.K, s.N, 0, 12);
      for (int64_t k = 0; k < s.K; ++k) A.at(2, k) = 0.0f;
      Matrix got(s.M, s.N, 5, 13), want(s.M, s.N, 5, 13);
      std::fill(got.v.begin(), got.v.end(), kNaN);
      std::fill(want.v.begin(), want.v.end(), kNaN);
      // Both calls in the same place: OpenBLAS at two threads may round differently from one
      // thread, as it runs inside a region.
      const auto run = [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(s.M),
                    static_cast<int>(s.N), static_cast<int>(s.K), -1.0f, A.v.data(),
                    static_cast<int>(A.ld), B.v.data(), static_cast<int>(B.ld), 0.0f, want.v.data(),
                    static_cast<int>(want.ld));
        gemm_openblas(false, false, s.M, s.N, s.K, -1.0f, A.v.data(), A.ld, B.v.data(), B.ld, 0.0f,
                      got.v.data(), got.ld);
      };
      if (inside_region) {
#pragma omp parallel num_threads(2)
        {
#pragma omp single
          run();
        }
      } else {
        run();
      }
      CHECK(std::memcmp(got.v.data(), want.v.data(), got.v.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("gemm: NaN and Inf in A propagate to their rows only") {
  for (const Path& p : paths()) {
    CAPTURE(p.name);
    const int64_t M = 14, N = 35, K = 300;
    Matrix A(M, K, 0, 4), B(K, N, 0, 5);
    for (int64_t j = 0; j < N; ++j) B.at(0, j) = 0.25f + std::fabs(B.at(0, j));
    A.at(2, 0) = kNaN;
    A.at(13, 0) = kInf;  // row 13 sits in the second (edge) row panel
    A.at(5, 0) = -kInf;
    std::vector<float> C(static_cast<size_t>(M * N));
    p.fn(false, false, M, N, K, 1.0f, A.v.data(), K, B.v.data(), N, 0.0f, C.data(), N);
    for (int64_t j = 0; j < N; ++j) {
      CAPTURE(j);
      CHECK(std::isnan(C[2 * N + j]));
      CHECK(C[13 * N + j] == kInf);
      CHECK(C[5 * N + j] == -kInf);
      CHECK(std::isfinite(C[0 * N + j]));
      CHECK(std::isfinite(C[12 * N + j]));
    }
  }
}

TEST_CASE("gemm: bit-identical for 1 and 2 threads and inside a parallel region") {
  // The own kernels only: OpenBLAS's threaded sgemm may round differently at another thread count.
  const int before = num_threads();
  // Wide (split over columns) and tall (split over rows), both above the threading threshold;
  // paper-mlp's first layer forward (60 x 784 times 784 x 100), whose columns split 48 / 52, in the
  // middle of the AVX-512 kernel's 32-column panel.
  for (const Path& own : own_paths()) {
    for (const Shape& s : std::vector<Shape>{{50, 700, 300}, {700, 40, 300}, {60, 100, 784}}) {
      for (const auto& [ta, tb] : {std::pair{false, false}, {true, false}, {false, true}}) {
        CAPTURE(own.name);
        CAPTURE(s.M);
        CAPTURE(ta);
        CAPTURE(tb);
        Matrix A = ta ? Matrix(s.K, s.M, 1, 6) : Matrix(s.M, s.K, 1, 6);
        const Matrix B = tb ? Matrix(s.N, s.K, 2, 7) : Matrix(s.K, s.N, 2, 7);
        const Matrix C0(s.M, s.N, 0, 8);
        auto run = [&](int threads) {
          set_num_threads(threads);
          Matrix C = C0;
          own.fn(ta, tb, s.M, s.N, s.K, 0.7f, A.v.data(), A.ld, B.v.data(), B.ld, 1.0f, C.v.data(),
                 C.ld);
          return C.v;
        };
        const std::vector<float> one = run(1), two = run(2);
        CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
        // Inside a parallel region each thread runs its own call on its own packing buffers.
        set_num_threads(2);
        std::vector<std::vector<float>> per_thread(2, C0.v);
#pragma omp parallel num_threads(2)
        {
          auto& C = per_thread[static_cast<size_t>(omp_get_thread_num())];
          own.fn(ta, tb, s.M, s.N, s.K, 0.7f, A.v.data(), A.ld, B.v.data(), B.ld, 1.0f, C.data(),
                 C0.ld);
        }
        for (const auto& C : per_thread) {
          CHECK(std::memcmp(one.data(), C.data(), one.size() * sizeof(float)) == 0);
        }
      }
    }
  }
  set_num_threads(before);
}

TEST_CASE(
    "gemm: columns in a narrow last panel equal the same columns in a full one, bit for bit") {
  if (!gemm_avx512_available()) {
    MESSAGE("no AVX-512F (the CPU, or BNLAB_MAX_ISA): the own kernel's narrow panels not tested");
    return;
  }
  // A last panel of 1-8 columns runs narrow_kernel (rows in the lanes), and so do the last 1-8
  // of a panel of 17-24 (N = 52, 17); the same columns inside a full 32-column panel run the
  // microkernel. N = 100: paper-mlp's layers (96 + 4); K = 300 and 784 span two and four K blocks
  // (beta applied once, then C added); M = 29 and 300 end in short row tiles, 300 in a second row
  // block.
  for (const Shape& s : std::vector<Shape>{{60, 100, 784},
                                           {29, 37, 300},
                                           {16, 4, 257},
                                           {300, 70, 30},
                                           {1, 40, 5},
                                           {60, 52, 784},
                                           {29, 17, 300}}) {
    const int64_t wide = (s.N + 31) / 32 * 32;
    for (const auto& [ta, tb] :
         {std::pair{false, false}, {true, false}, {false, true}, {true, true}}) {
      for (float beta : {0.0f, 0.5f}) {
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(beta);
        const Matrix A = ta ? Matrix(s.K, s.M, 0, 11) : Matrix(s.M, s.K, 0, 11);
        // B holds `wide` columns; the narrow call reads the first N of them (ldb unchanged).
        const Matrix B = tb ? Matrix(wide, s.K, 0, 12) : Matrix(s.K, wide, 0, 12);
        const Matrix C0(s.M, wide, 0, 13);
        Matrix full = C0, narrow = C0;
        gemm_avx512(ta, tb, s.M, wide, s.K, 0.7f, A.v.data(), A.ld, B.v.data(), B.ld, beta,
                    full.v.data(), full.ld);
        gemm_avx512(ta, tb, s.M, s.N, s.K, 0.7f, A.v.data(), A.ld, B.v.data(), B.ld, beta,
                    narrow.v.data(), narrow.ld);
        int64_t differ = 0, outside_changed = 0;
        for (int64_t i = 0; i < s.M; ++i) {
          for (int64_t j = 0; j < wide; ++j) {
            const float* got = &narrow.v[static_cast<size_t>(i * wide + j)];
            const float* want = j < s.N ? &full.v[static_cast<size_t>(i * wide + j)]
                                        : &C0.v[static_cast<size_t>(i * wide + j)];
            if (std::memcmp(got, want, sizeof(float)) != 0) ++(j < s.N ? differ : outside_changed);
          }
        }
        CHECK(differ == 0);
        CHECK(outside_changed == 0);
      }
    }
  }
}

// Run by the test below in a fresh process (in_exec_child), where a team of two threads can start.
TEST_CASE("gemm child: packing buffers that cannot be allocated at two threads" * doctest::skip()) {
  if (!testing::in_exec_child()) return;
  int code = 4;
  {
    set_num_threads(2);
    // The team's threads (their stacks) start here, before the limit, with no packing buffer yet.
    int started = 0;
#pragma omp parallel num_threads(2)
    {
#pragma omp atomic
      ++started;
    }
    if (started != 2) ::_exit(6);
    // 40 x 4096 x 100 is above the threading threshold; each thread's B packing buffer would be
    // 2048 x 100 floats (800 KB), more than the 256 KB the limit leaves.
    const Shape s{40, 4096, 100};
    std::vector<Matrix> as, bs, cs;
    std::vector<std::vector<double>> want(4), bound(4);
    for (int t = 0; t < 4; ++t) {
      const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
      as.push_back(ta ? Matrix(s.K, s.M, 1, 11) : Matrix(s.M, s.K, 1, 11));
      bs.push_back(tb ? Matrix(s.N, s.K, 2, 12) : Matrix(s.K, s.N, 2, 12));
      cs.emplace_back(s.M, s.N, 0, 13);
      const double u = std::ldexp(1.0, -24), n = double(s.K + 4), gamma = n * u / (1.0 - n * u);
      for (int64_t i = 0; i < s.M; ++i) {
        for (int64_t j = 0; j < s.N; ++j) {
          double sum = 0.0, mag = 0.0;
          for (int64_t k = 0; k < s.K; ++k) {
            const double p = double(op_at(as[t], ta, i, k)) * double(op_at(bs[t], tb, k, j));
            sum += p;
            mag += std::fabs(p);
          }
          const double c0 = cs[t].at(i, j);
          want[t].push_back(0.7 * sum + 0.5 * c0);
          bound[t].push_back(gamma * (0.7 * mag + 0.5 * std::fabs(c0)));
        }
      }
    }
    // The own kernel named by the parent (its paths() name).
    const char* name = std::getenv("BNLAB_TEST_OWN_GEMM");
    const GemmFn own = name != nullptr && std::string(name) == "avx2" ? &gemm_avx2 : &gemm_avx512;
    if (testing::limit_address_space(size_t{256} << 10)) {
      code = 0;
      for (int t = 0; t < 4; ++t) {
        own((t & 1) != 0, (t & 2) != 0, s.M, s.N, s.K, 0.7f, as[t].v.data(), as[t].ld,
            bs[t].v.data(), bs[t].ld, 0.5f, cs[t].v.data(), cs[t].ld);
        for (int64_t i = 0; i < s.M; ++i)
          for (int64_t j = 0; j < s.N; ++j)
            if (!(std::fabs(double(cs[t].at(i, j)) - want[t][i * s.N + j]) <=
                  bound[t][i * s.N + j]))
              code = 3;
      }
    }
  }
  std::fflush(nullptr);
  ::_exit(code);
}

TEST_CASE("gemm: packing buffers that cannot be allocated give the product, not the end") {
  if (!BNLAB_TEST_MEMORY_LIMIT) return;

  // Left open by the audit of the OpenMP regions (2026-12-06): each thread allocates its packing
  // buffers inside the region that splits the product (and inside conv's image loop), where an
  // exception cannot leave; a buffer that could not be allocated ended the process in
  // std::terminate.
  for (const Path& own : own_paths()) {
    CAPTURE(own.name);
    const testing::ScopedEnv which("BNLAB_TEST_OWN_GEMM", own.name);
    CHECK(testing::exec_child_exit_code(
              "gemm child: packing buffers that cannot be allocated at two threads") == 0);
  }
}

TEST_CASE("gemm: sizes past OpenBLAS's 32-bit interface are computed, also inside a region") {
  // C's two rows 2^31 + 5 floats apart, in a mapping of which only those rows are touched. M = 2,
  // N = 3 is a product bnlab::gemm gives OpenBLAS even on the AVX-512 path; its 32-bit interface
  // cannot take ldc, and the error it threw could not leave conv's image loop (std::terminate).
  const int64_t ldc = (int64_t{1} << 31) + 5;
  const size_t bytes = static_cast<size_t>(ldc + 3) * sizeof(float);
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    MESSAGE("cannot map 8 GiB of address space here: not tested");
    return;
  }
  float* C = static_cast<float*>(mem);
  const float A[4] = {1, 2, 3, 4};           // [2, 2]
  const float B[6] = {1, 0, -1, 2, 1, 0.5};  // [2, 3]
  const std::vector<float> row0 = {5, 2, 0}, row1 = {11, 4, -1};
  auto rows = [&] {
    return std::pair{std::vector<float>(C, C + 3), std::vector<float>(C + ldc, C + ldc + 3)};
  };
  gemm(false, false, 2, 3, 2, 1.0f, A, 2, B, 3, 0.0f, C, ldc);
  CHECK(rows() == std::pair{row0, row1});
  std::fill_n(C, 3, kNaN);
  std::fill_n(C + ldc, 3, kNaN);
  bool threw = false;
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    {
      try {
        gemm(false, false, 2, 3, 2, 1.0f, A, 2, B, 3, 0.0f, C, ldc);
      } catch (...) {
        threw = true;
      }
    }
  }
  CHECK_FALSE(threw);
  CHECK(rows() == std::pair{row0, row1});
  // The plain loops, which a CPU without AVX-512F takes for it.
  std::fill_n(C, 3, kNaN);
  std::fill_n(C + ldc, 3, kNaN);
  detail::gemm_portable(false, false, 2, 3, 2, 1.0f, A, 2, B, 3, 0.0f, C, ldc);
  CHECK(rows() == std::pair{row0, row1});
  // gemm_openblas is OpenBLAS alone, and says why it cannot.
  CHECK_THROWS_WITH_AS(gemm_openblas(false, false, 2, 3, 2, 1.0f, A, 2, B, 3, 0.0f, C, ldc),
                       doctest::Contains("exceed the 32-bit BLAS interface"), Error);
  ::munmap(mem, bytes);
}

TEST_CASE("gemm: bad sizes and leading dimensions throw, naming the op") {
  std::vector<float> x(64, 1.0f);
  for (const Path& p : paths()) {
    CAPTURE(p.name);
    CHECK_THROWS_WITH_AS(
        p.fn(false, false, -1, 2, 2, 1.0f, x.data(), 2, x.data(), 2, 0.0f, x.data(), 2),
        doctest::Contains("negative size"), Error);
    // A is [M, K] = [3, 4] but lda = 3.
    CHECK_THROWS_WITH_AS(
        p.fn(false, false, 3, 2, 4, 1.0f, x.data(), 3, x.data(), 2, 0.0f, x.data(), 2),
        doctest::Contains("lda=3"), Error);
    // B^T stored [N, K] = [2, 4] but ldb = 2.
    CHECK_THROWS_WITH_AS(
        p.fn(false, true, 3, 2, 4, 1.0f, x.data(), 4, x.data(), 2, 0.0f, x.data(), 2),
        doctest::Contains("ldb=2"), Error);
  }
  CHECK_THROWS_WITH_AS(
      gemm(false, false, 2, 5, 1, 1.0f, x.data(), 1, x.data(), 5, 0.0f, x.data(), 4),
      doctest::Contains("ldc=4"), Error);
}

TEST_CASE("gemm: bnlab::gemm runs the chosen path, OpenBLAS for N <= 8 and M < 32 if short") {
  // The two paths round differently, so bit-equality tells which one ran. OpenBLAS keeps the
  // small products only up to M * N * K = 2^18, where it stops running them on one thread.
  for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{20, 8, 300},
                                {31, 1, 300},
                                {32, 8, 300},
                                {64, 3, 300},
                                {20, 9, 300},
                                {20, 40, 300},
                                {31, 8, 1057},
                                {16, 8, 2049}}) {
    CAPTURE(M);
    CAPTURE(N);
    CAPTURE(K);
    const Matrix A(M, K, 0, 9), B(K, N, 0, 10);
    std::vector<float> via_gemm(static_cast<size_t>(M * N)), via_openblas = via_gemm;
    gemm(false, false, M, N, K, 1.0f, A.v.data(), K, B.v.data(), N, 0.0f, via_gemm.data(), N);
    gemm_openblas(false, false, M, N, K, 1.0f, A.v.data(), K, B.v.data(), N, 0.0f,
                  via_openblas.data(), N);
    if (gemm_path() == GemmPath::openblas || (N <= 8 && M < 32 && M * N * K <= (1 << 18))) {
      CHECK(via_gemm == via_openblas);
    } else {
      std::vector<float> via_own(via_gemm.size());
      const GemmFn own = gemm_path() == GemmPath::avx512 ? &gemm_avx512 : &gemm_avx2;
      own(false, false, M, N, K, 1.0f, A.v.data(), K, B.v.data(), N, 0.0f, via_own.data(), N);
      CHECK(via_gemm == via_own);
      CHECK(via_gemm != via_openblas);
    }
  }
}

TEST_CASE("gemm: the default path is the widest own kernel unless BNLAB_GEMM=openblas") {
  const char* env = std::getenv("BNLAB_GEMM");
  const bool forced = env != nullptr && std::string(env) == "openblas";
  GemmPath want = GemmPath::openblas;
  std::string name = "openblas";
  if (!forced && gemm_avx512_available()) {
    want = GemmPath::avx512;
    name = "bnlab-avx512";
  } else if (!forced && gemm_avx2_available()) {
    want = GemmPath::avx2;
    name = "bnlab-avx2";
  }
  CHECK(gemm_path() == want);
  CHECK(gemm_path_name() == name);
}

namespace {

// An own kernel's pre-packed entry (gemm_avx512.h, gemm_avx2.h) beside its whole product.
struct PrePacked {
  const char* name;
  bool available;
  int64_t panel_columns;
  int64_t (*packed_a_floats)(int64_t, int64_t);
  void (*pack_a)(bool, const float*, int64_t, int64_t, int64_t, float*);
  void (*packed)(int64_t, int64_t, int64_t, float, const float*, const float*, float, float*,
                 int64_t);
  void (*whole)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                int64_t, float, float*, int64_t);
};

}  // namespace

TEST_CASE("gemm: the pre-packed entries equal their own kernel bit for bit") {
  const PrePacked kernels[] = {
      {"avx512", gemm_avx512_available(), detail::kGemmPanelColumns, detail::gemm_packed_a_floats,
       detail::gemm_pack_a, detail::gemm_avx512_packed, gemm_avx512},
      {"avx2", gemm_avx2_available(), detail::kGemmAvx2PanelColumns,
       detail::gemm_avx2_packed_a_floats, detail::gemm_avx2_pack_a, detail::gemm_avx2_packed,
       gemm_avx2},
  };
  for (const PrePacked& kernel : kernels) {
    CAPTURE(kernel.name);
    if (!kernel.available) {
      MESSAGE(kernel.name,
              ": not on this CPU (or under BNLAB_MAX_ISA), its pre-packed entry is "
              "not tested");
      continue;
    }
    const int64_t P = kernel.panel_columns;
    // One K block (K <= 256) and one B panel (N <= P): every edge-tile variant of M and N, a
    // panel whose unused columns hold NaN (they feed only lanes that are not stored), beta 0 over
    // NaN garbage in C, and both orientations of A.
    for (const Shape& s : std::vector<Shape>{{1, 1, 1},
                                             {14, 32, 7},
                                             {15, 17, 64},
                                             {32, 32, 32},
                                             {37, 9, 256},
                                             {128, 31, 128},
                                             {7, 16, 5},
                                             {13, 8, 3},
                                             {20, 15, 9}}) {
      if (s.N > P) continue;
      for (bool ta : {false, true}) {
        for (float beta : {0.0f, 0.7f}) {
          CAPTURE(s.M);
          CAPTURE(s.N);
          CAPTURE(s.K);
          CAPTURE(ta);
          CAPTURE(beta);
          const Matrix A = ta ? Matrix(s.K, s.M, 2, 11) : Matrix(s.M, s.K, 2, 11);
          const Matrix B(s.K, P, 0, 12);
          float* panel =
              static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(s.K * P) * 4));
          std::copy(B.v.begin(), B.v.end(), panel);
          for (int64_t k = 0; k < s.K; ++k)
            std::fill(panel + k * P + s.N, panel + (k + 1) * P, kNaN);
          std::vector<float> packed(static_cast<size_t>(kernel.packed_a_floats(s.M, s.K)));
          kernel.pack_a(ta, A.v.data(), A.ld, s.M, s.K, packed.data());
          const Matrix C0(s.M, s.N, 1, 13);
          Matrix want = C0, got = C0;
          if (beta == 0.0f) {
            std::fill(got.v.begin(), got.v.end(), kNaN);
            want = got;
          }
          kernel.whole(ta, false, s.M, s.N, s.K, 0.9f, A.v.data(), A.ld, B.v.data(), B.ld, beta,
                       want.v.data(), want.ld);
          kernel.packed(s.M, s.N, s.K, 0.9f, packed.data(), panel, beta, got.v.data(), got.ld);
          std::free(panel);
          CHECK(std::memcmp(want.v.data(), got.v.data(), want.v.size() * sizeof(float)) == 0);
        }
      }
    }
    CHECK_THROWS_WITH_AS(kernel.pack_a(false, nullptr, 300, 4, 300, nullptr),
                         doctest::Contains("pack_a: K=300"), Error);
    CHECK_THROWS_WITH_AS(kernel.packed(4, P + 1, 8, 1.0f, nullptr, nullptr, 0.0f, nullptr, 1),
                         doctest::Contains("outside one panel"), Error);
  }
}

// Helpers shared by the GEMM tests (test_gemm.cpp, test_packed_b.cpp): a matrix with padded rows
// whose gap holds NaN, so a kernel that reads past a row poisons its result.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/random.h"

namespace bnlab::testing {

// A rows x cols matrix stored with leading dimension ld >= cols; the gap columns hold NaN so a
// kernel that reads them poisons its result.
struct Matrix {
  int64_t rows, cols, ld;
  std::vector<float> v;
  Matrix(int64_t r, int64_t c, int64_t pad, uint64_t seed) : rows(r), cols(c), ld(c + pad) {
    v.assign(static_cast<size_t>(std::max<int64_t>(r * ld, 1)),
             std::numeric_limits<float>::quiet_NaN());
    Rng rng(seed);
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t j = 0; j < c; ++j) v[i * ld + j] = rng.uniform(-1.0f, 1.0f);
    }
  }
  float& at(int64_t i, int64_t j) { return v[i * ld + j]; }
  float at(int64_t i, int64_t j) const { return v[i * ld + j]; }
};

}  // namespace bnlab::testing

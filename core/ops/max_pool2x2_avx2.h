// AVX2 row kernels of max_pool2d's 2x2 stride-2 path (internal; not installed). core/ops/pool.cpp
// (the forward) and core/ops/norm.cpp (the unpool) call them for each output row on CPUs with AVX2
// but no AVX-512F (max_pool2x2_isa()); the conventions (window places, ties, NaN, -0) are those of
// core/ops/max_pool2x2_avx512.cpp, and tests/core/test_ops_fast_paths.cpp checks them bit for bit.
#pragma once

#include <cstdint>

namespace bnlab::detail {

// One output row: out [Wo] = the max of each 2x2 window over the input rows top and bottom (each
// at least 2 Wo floats), and, when place is non-null, the winner's place in its window (0
// top-left, 1 top-right, 2 bottom-left, 3 bottom-right). Requires cpu_isa() >= CpuIsa::avx2.
void max_pool2x2_row_avx2(float* out, uint8_t* place, const float* top, const float* bottom,
                          int64_t Wo);

// max_pool2x2_unpool_avx512's routing: the winner of each window gets g as it is (a -0 stays -0),
// the other cells of the rows top and bottom (2 Wo floats each) +0. Requires cpu_isa() >=
// CpuIsa::avx2.
void max_pool2x2_unpool_avx2(float* top, float* bottom, const float* g, const uint8_t* place,
                             int64_t Wo);

}  // namespace bnlab::detail

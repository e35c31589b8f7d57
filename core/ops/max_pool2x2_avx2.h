// AVX2 row kernel of max_pool2d's 2x2 stride-2 forward (internal; not installed). core/ops/pool.cpp
// calls it for each output row on CPUs with AVX2 but no AVX-512F (max_pool2x2_isa()); the
// conventions (window places, ties, NaN) are those of core/ops/max_pool2x2_avx512.cpp, and
// tests/core/test_ops_fast_paths.cpp checks it against the general path bit for bit.
#pragma once

#include <cstdint>

namespace bnlab::detail {

// One output row: out [Wo] = the max of each 2x2 window over the input rows top and bottom (each
// at least 2 Wo floats), and, when place is non-null, the winner's place in its window (0
// top-left, 1 top-right, 2 bottom-left, 3 bottom-right). Requires cpu_isa() >= CpuIsa::avx2.
void max_pool2x2_row_avx2(float* out, uint8_t* place, const float* top, const float* bottom,
                          int64_t Wo);

}  // namespace bnlab::detail

// AVX-512F row kernels of max_pool2d's 2x2 stride-2 path (internal; not installed).
// core/ops/pool.cpp calls them for each output row when the CPU has AVX-512F; its portable loops
// are the fallback and the reference (tests/core/test_ops_fast_paths.cpp checks both against the
// general path bit for bit). Conventions (window places, ties, NaN, -0) are those at the top of
// core/ops/max_pool2x2_avx512.cpp.
#pragma once

#include <cstdint>

namespace bnlab::detail {

// One output row: out [Wo] = the max of each 2x2 window over the input rows top and bottom (each
// at least 2 Wo floats), and, when place is non-null, the winner's place in its window (0
// top-left, 1 top-right, 2 bottom-left, 3 bottom-right). Requires cpu_has_avx512f().
void max_pool2x2_row_avx512(float* out, uint8_t* place, const float* top, const float* bottom,
                            int64_t Wo);

// The adjoint for one output row: dout g [Wo] goes to the winning cell of each window in the
// input-gradient rows top and bottom (2 Wo floats each). assign: the rows are being created, so
// every one of their 2 Wo cells is written (0 + g in the winners, +0 elsewhere); else g is added to
// the winners only. Requires cpu_has_avx512f().
void max_pool2x2_route_avx512(float* top, float* bottom, const float* g, const uint8_t* place,
                              int64_t Wo, bool assign);

// The same routing with g written as it is: the winner of each window gets g (a -0 stays -0), the
// other cells +0; batch norm's pooled backward re-forms its gradient planes with it (core/ops/
// norm.cpp, for_pooled_planes). Requires cpu_has_avx512f().
void max_pool2x2_unpool_avx512(float* top, float* bottom, const float* g, const uint8_t* place,
                               int64_t Wo);

}  // namespace bnlab::detail

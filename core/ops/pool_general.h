// max_pool2d's general path (any window, padding and stride; int64 argmax), which max_pool2d uses
// for every shape but the common 2x2 stride-2 unpadded one, the choice of the 2x2 path's kernels,
// and that path on one plane. Internal: exposed so that tests can check both 2x2 kernels against
// the general path bit for bit (tests/core/test_ops_fast_paths.cpp), and so that
// batch_norm_relu_max_pool2x2_train (core/ops/norm.cpp) pools with exactly max_pool2d's code.
#pragma once

#include <cstdint>

#include "core/cpu_isa.h"
#include "core/tensor.h"

namespace bnlab::detail {

// max_pool2d(x, kernel, stride, padding) computed by the general loop for every shape, with the
// same checks, conventions (first maximum wins ties, the last NaN wins) and node name.
Tensor max_pool2d_general(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding);

// Which row kernels the 2x2 path runs: AVX-512F (core/ops/max_pool2x2_avx512.h), AVX2 (the
// forward's rows, core/ops/max_pool2x2_avx2.h; the backward then runs the portable loops) or the
// portable loops: cpu_isa(), capped by limit_max_pool2x2_isa.
CpuIsa max_pool2x2_isa();

// Tests: caps the kernels at `max` so that every kernel narrower than the CPU's is checked too;
// returns the previous cap (CpuIsa::avx512 restores the default). Not for use while another
// thread pools.
CpuIsa limit_max_pool2x2_isa(CpuIsa max);

// max_pool2d(x, 2)'s kernels on one plane x [H, W] (H, W >= 2), as max_pool2d runs them on this
// CPU: out [H/2, W/2] and, when `place` is non-null, each window's winner as its place in the
// window (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right). Ties go to the first maximum, a
// the last NaN wins (core/ops/pool.cpp). Allocates nothing after a thread's first call.
void max_pool2x2_plane(float* out, uint8_t* place, const float* x, int64_t H, int64_t W);

// The adjoint on one plane: dx [H, W] gets dout [H/2, W/2] at each window's `place`. assign: dx is
// being created, so every cell is written (0 + g at the winners, +0 elsewhere, including the row
// and column floor mode leaves out); else dout is added at the winners only.
void max_pool2x2_plane_backward(float* dx, const float* dout, const uint8_t* place, int64_t H,
                                int64_t W, bool assign);

}  // namespace bnlab::detail

// max_pool2d's general path (any window, padding and stride; int64 argmax), which max_pool2d uses
// for every shape but the common 2x2 stride-2 unpadded one, and the choice of the 2x2 path's
// kernels. Internal: exposed so that tests can check both 2x2 kernels against the general path bit
// for bit (tests/core/test_ops_fast_paths.cpp).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace bnlab::detail {

// max_pool2d(x, kernel, stride, padding) computed by the general loop for every shape, with the
// same checks, conventions (first maximum wins ties, NaN wins) and node name.
Tensor max_pool2d_general(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding);

// Whether the 2x2 path runs its AVX-512F row kernels (core/ops/max_pool2x2_avx512.h): when the CPU
// has AVX-512F, unless turned off below.
bool max_pool2x2_uses_avx512();

// Tests: false makes the 2x2 path use its portable loops (the fallback on other CPUs), so both
// kernels are checked on an AVX-512 machine; true restores the default. Not for use while another
// thread pools.
void allow_max_pool2x2_avx512(bool allowed);

}  // namespace bnlab::detail

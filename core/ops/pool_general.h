// max_pool2d's general path (any window, padding and stride; int64 argmax), which max_pool2d uses
// for every shape but the common 2x2 stride-2 unpadded one. Internal: exposed so that tests can
// check the 2x2 kernels against it bit for bit (tests/core/test_ops_fast_paths.cpp).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace bnlab::detail {

// max_pool2d(x, kernel, stride, padding) computed by the general loop for every shape, with the
// same checks, conventions (first maximum wins ties, NaN wins) and node name.
Tensor max_pool2d_general(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding);

}  // namespace bnlab::detail

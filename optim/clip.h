// Gradient clipping by total norm, torch.nn.utils.clip_grad_norm_ with norm_type 2.
//
// Reference: https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html
#pragma once

#include <vector>

#include "core/tensor.h"

namespace bnlab {

/// Scales every gradient in place by max_norm / (total + 1e-6) when that is < 1, where total is the
/// L2 norm of all the gradients taken together (summed in double). Parameters without a gradient
/// are skipped; with none at all the result is 0. Returns the total norm before clipping. A
/// non-finite total (an inf or nan gradient) is returned as is, so the caller can skip the step;
/// torch's default (error_if_nonfinite=False) clips anyway, and so does this. Throws unless
/// max_norm is finite and >= 0.
float clip_grad_norm(const std::vector<Tensor>& params, float max_norm);

namespace detail {
/// The sum of the squared gradients that clip_grad_norm takes the root of, in double: in fixed
/// chunks of 65536 values, each in order, then the chunks in order, so it has the same bits at
/// every thread count.
double grad_squared_norm(const std::vector<Tensor>& params);
}  // namespace detail

}  // namespace bnlab

// Inference-time BatchNorm folding: an eval-mode BatchNorm after a Dense or Conv2d is an affine map
// per output channel, so the pair equals ONE Dense/Conv2d with scaled weights and a shifted bias:
//   s = gamma / sqrt(running_var + eps),  W'[k, ...] = W[k, ...] * s[k],
//   b'[k] = (b[k] - running_mean[k]) * s[k] + beta[k]
// which saves the BatchNorm's whole pass over the activations. Sequential::forward uses it for each
// such adjacent pair when it can prove the result is only inference:
//   - no graph is recorded (NoGradGuard active), so no gradient can flow through W' or b';
//   - both modules are in eval mode and the BatchNorm tracks running statistics;
//   - neither module has forward hooks (a hook must see the unfolded intermediate output);
//   - the input fits the layer (otherwise the normal path runs and throws its usual error).
// W' and b' are recomputed at every call (cost K * D, against the layer's N * K * D), so nothing is
// cached that could go stale when parameters or running statistics change, and the model's own
// parameters and state_dict are never touched. The result equals the unfolded pair up to float
// rounding (tests/layers/test_bn_fold.cpp).
#pragma once

#include "layers/module.h"

namespace bnlab {

/// layer(x) followed by bn, computed folded; an undefined Tensor when the pair cannot be folded
/// (see above), in which case the caller runs the two modules normally.
Tensor forward_folded_batch_norm(Module& layer, Module& bn, const Tensor& x);

}  // namespace bnlab

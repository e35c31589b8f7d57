// BatchNorm folding for inference, done explicitly by the caller (as PyTorch's
// torch.ao.quantization.fuse_modules or torch.fx.experimental.optimization.fuse). An eval-mode
// BatchNorm right after a Dense or Conv2d is an affine map per output channel, so the pair equals
// ONE layer with scaled weights and a shifted bias:
//   s = gamma / sqrt(running_var + eps),  W'[k, ...] = W[k, ...] * s[k],
//   b'[k] = (b[k] - running_mean[k]) * s[k] + beta[k]
// which saves the BatchNorm's whole pass over the activations. The result equals the unfolded pair
// up to float rounding (tests/layers/test_bn_fold.cpp).
//
// fold_batch_norm(model) rewrites the model in place, as fuse_modules(..., inplace=True): in every
// Sequential of the model (the model itself and any descendant), each foldable pair of adjacent
// children i, i + 1 becomes the folded layer (always with a bias) at i and an Identity at i + 1,
// so every other child keeps its name and its state_dict keys. A pair is foldable when:
//   - it is a Dense followed by a BatchNorm1d or BatchRenorm1d, or a Conv2d followed by a
//     BatchNorm2d or BatchRenorm2d (exactly these types, not other subclasses), with the layer's
//     outputs = the BatchNorm's num_features. Batch renormalization differs from BatchNorm only in
//     training (r and d); in eval it is BatchNorm with its running statistics, which the fold uses;
//   - the BatchNorm tracks running statistics (without them, eval normalizes with the batch's);
//   - neither module has a forward hook (a hook must see the module it was registered on, so such
//     a pair is left as it is).
// Other pairs are left alone. A foldable pair in training mode is an error, thrown before anything
// changes: the fold bakes in the running statistics, which training would go on updating (fx's
// fuse asserts the same). Call model.eval() first.
//
// Why in place and not into a copy: modules are not copyable (there is no clone()), and a "copy"
// that shared its unfolded children with the original would share their train/eval mode, hooks
// and parameters with it. The folded model is for inference only: its state_dict no longer matches
// the model's architecture (BatchNorm keys gone, folded weights, a bias that may be new), so save
// checkpoints before folding. To keep a trainable model as well, fold a second instance: build
// it, load_state_dict(model.state_dict()), eval(), fold_batch_norm.
#pragma once

#include <cstdint>

#include "layers/module.h"

namespace bnlab {

/// Folds each eval-mode Dense + BatchNorm1d/BatchRenorm1d and Conv2d + BatchNorm2d/BatchRenorm2d
/// pair in the Sequentials of `model` into one layer followed by an Identity, in place (see above);
/// returns the number of pairs folded. Throws, changing nothing, when a foldable pair is in
/// training mode.
int64_t fold_batch_norm(Module& model);

}  // namespace bnlab

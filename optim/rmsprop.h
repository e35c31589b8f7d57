// Rmsprop: exactly torch.optim.RMSprop's update, with its centered and momentum variants. For each
// parameter p with gradient g:
//   g = g + weight_decay * p                            (if weight_decay != 0)
//   s = alpha * s + (1 - alpha) * g^2                   (square_avg)
//   a = alpha * a + (1 - alpha) * g                     (grad_avg; centered only, computed as a
//   lerp) r = sqrt(s - a^2) + eps  (centered)   or   r = sqrt(s) + eps b = momentum * b + g / r;  p
//   = p - lr * b           (momentum > 0; momentum_buffer starts at 0) p = p - lr * g / r
//   (otherwise)
// Unlike Adam there is no bias correction: s starts at 0, so early steps are large (torch does the
// same).
//
// References: Hinton, Coursera "Neural Networks for Machine Learning", lecture 6e; Graves 2013,
// "Generating Sequences With Recurrent Neural Networks" (arXiv:1308.0850, the centered form);
// https://pytorch.org/docs/stable/generated/torch.optim.RMSprop.html
#pragma once

#include <vector>

#include "optim/optimizer.h"

namespace bnlab {

/// torch.optim.RMSprop's defaults.
struct RmspropOptions {
  float lr = 1e-2f;           ///< learning rate
  float alpha = 0.99f;        ///< decay of the squared-gradient average, in [0, 1)
  float eps = 1e-8f;          ///< added to the denominator
  float weight_decay = 0.0f;  ///< L2, added to the gradient
  float momentum = 0.0f;      ///< momentum of the update (0: none)
  bool centered = false;      ///< divide by the estimated variance instead of the raw second moment
};

/// RMSprop with torch.optim.RMSprop's update (optionally centered, with momentum).
class Rmsprop : public Optimizer {
 public:
  /// One group with options.lr and options.weight_decay.
  explicit Rmsprop(std::vector<Tensor> params, RmspropOptions options = {});
  /// Each group's own lr and weight_decay (options.lr and options.weight_decay are unused).
  Rmsprop(std::vector<ParamGroup> groups, RmspropOptions options = {});

  /// The hyperparameters.
  const RmspropOptions& options() const { return options_; }

 protected:
  void update_param(size_t index, const ParamGroup& group, float* p, const float* g, int64_t n,
                    int64_t step) override;

 private:
  RmspropOptions options_;
};

}  // namespace bnlab

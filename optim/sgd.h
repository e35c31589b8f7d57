// Sgd: stochastic gradient descent with optional momentum, dampening, Nesterov momentum and (L2)
// weight decay, exactly torch.optim.SGD's update. For each parameter p with gradient g, at its t-th
// update:
//   g = g + weight_decay * p                           (if weight_decay != 0)
//   b = g                                              (t = 1: the buffer starts as g, undamped)
//   b = momentum * b + (1 - dampening) * g             (t > 1)        } if momentum != 0
//   g = g + momentum * b  (nesterov)   or   g = b      (otherwise)    }
//   p = p - lr * g
//
// Reference: https://pytorch.org/docs/stable/generated/torch.optim.SGD.html
#pragma once

#include <vector>

#include "optim/optimizer.h"

namespace bnlab {

/// torch.optim.SGD's defaults, except lr, which torch requires and we default to 0.01.
struct SgdOptions {
  float lr = 0.01f;           ///< learning rate
  float momentum = 0.0f;      ///< momentum factor (0: plain SGD)
  float dampening = 0.0f;     ///< dampening of the momentum
  float weight_decay = 0.0f;  ///< L2, added to the gradient
  bool nesterov = false;      ///< requires momentum > 0 and dampening == 0
};

/// Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay,
/// torch.optim.SGD's update.
class Sgd : public Optimizer {
 public:
  /// One group with options.lr and options.weight_decay.
  explicit Sgd(std::vector<Tensor> params, SgdOptions options = {});
  /// Each group's own lr and weight_decay (options.lr and options.weight_decay are unused);
  /// momentum, dampening and nesterov from `options`.
  Sgd(std::vector<ParamGroup> groups, SgdOptions options = {});

  /// The hyperparameters.
  const SgdOptions& options() const { return options_; }

 protected:
  void update_param(size_t index, const ParamGroup& group, float* p, const float* g, int64_t n,
                    int64_t step) override;

 private:
  SgdOptions options_;
};

}  // namespace bnlab

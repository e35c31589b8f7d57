// Adam and AdamW, exactly torch.optim.Adam's and torch.optim.AdamW's update. For each parameter p
// with gradient g, at its t-th update (t counts that parameter's own updates, as torch's
// state["step"]):
//   p = p * (1 - lr * weight_decay)                     (AdamW: decoupled weight decay)
//   g = g + weight_decay * p                            (Adam: L2 penalty added to the gradient)
//   m = beta1 * m + (1 - beta1) * g                     (exp_avg; computed as torch's lerp)
//   v = beta2 * v + (1 - beta2) * g^2                   (exp_avg_sq)
//   v_max = max(v_max, v), and v_max replaces v below   (amsgrad only; max_exp_avg_sq)
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// i.e. lr * m_hat / (sqrt(v_hat) + eps) with m_hat, v_hat the bias-corrected moments: eps is added
// after the bias correction, as in the paper's Algorithm 1 and in torch (not the paper's
// "efficient" variant).
//
// Hyperparameters are float32; the step's scalars (bias corrections, step size) are computed in
// double from them, as torch computes them in Python, and rounded once.
//
// References: Kingma & Ba 2015, "Adam" (arXiv:1412.6980); Loshchilov & Hutter 2019, "Decoupled
// Weight Decay Regularization" (arXiv:1711.05101); Reddi et al. 2018, "On the Convergence of Adam
// and Beyond" (amsgrad); https://pytorch.org/docs/stable/generated/torch.optim.Adam.html and
// .../torch.optim.AdamW.html
#pragma once

#include <vector>

#include "optim/optimizer.h"

namespace bnlab {

/// torch.optim.Adam's defaults.
struct AdamOptions {
  float lr = 1e-3f;           ///< learning rate
  float beta1 = 0.9f;         ///< decay of the first-moment (mean) estimate
  float beta2 = 0.999f;       ///< decay of the second-moment estimate
  float eps = 1e-8f;          ///< added to sqrt(v_hat) in the denominator
  float weight_decay = 0.0f;  ///< L2: added to the gradient
  bool amsgrad = false;       ///< use the running maximum of v_hat (AMSGrad)
};

/// torch.optim.AdamW's defaults: Adam's, with weight_decay 1e-2 (decoupled).
struct AdamWOptions {
  float lr = 1e-3f;            ///< learning rate
  float beta1 = 0.9f;          ///< decay of the first-moment (mean) estimate
  float beta2 = 0.999f;        ///< decay of the second-moment estimate
  float eps = 1e-8f;           ///< added to sqrt(v_hat) in the denominator
  float weight_decay = 1e-2f;  ///< decoupled: p *= 1 - lr * weight_decay
  bool amsgrad = false;        ///< use the running maximum of v_hat (AMSGrad)
};

/// Adam (Kingma & Ba 2015) with torch.optim.Adam's update; weight decay is L2 (added to the
/// gradient).
class Adam : public Optimizer {
 public:
  /// One group with options.lr and options.weight_decay.
  explicit Adam(std::vector<Tensor> params, AdamOptions options = {});
  /// Each group's own lr and weight_decay (options.lr and options.weight_decay are unused).
  Adam(std::vector<ParamGroup> groups, AdamOptions options = {});

  /// The hyperparameters.
  const AdamOptions& options() const { return options_; }

 protected:
  /// For AdamW: `decoupled` applies weight decay to the weights directly.
  Adam(const char* name, std::vector<ParamGroup> groups, AdamOptions options, bool decoupled);
  void update_param(size_t index, const ParamGroup& group, float* p, const float* g, int64_t n,
                    int64_t step) override;

 private:
  AdamOptions options_;
  bool decoupled_;  ///< AdamW
};

/// AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, torch.optim.AdamW's update.
class AdamW : public Adam {
 public:
  /// One group with options.lr and options.weight_decay.
  explicit AdamW(std::vector<Tensor> params, AdamWOptions options = {});
  /// Each group's own lr and weight_decay (options.lr and options.weight_decay are unused).
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options = {});
};

}  // namespace bnlab

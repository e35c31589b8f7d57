// Parameter-free activation layers: ReLU, LeakyReLU, Sigmoid, Tanh (torch.nn names and semantics).
// Each forwards to the op of the same name in core/ops.h. Identity (torch.nn.Identity) returns its
// input; fold_batch_norm (layers/bn_fold.h) puts one where each folded BatchNorm was.
#pragma once

#include "layers/module.h"

namespace bnlab {

/// Returns its input itself (no copy, no node); no parameters.
class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Identity"; }
};

/// max(x, 0) elementwise (relu()); no parameters.
class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "ReLU"; }
};

/// x if x > 0 else negative_slope * x (leaky_relu()); no parameters.
class LeakyReLU : public Module {
 public:
  /// The slope for x < 0 (torch's default 0.01).
  explicit LeakyReLU(float negative_slope = 0.01f) : slope_(negative_slope) {}
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "LeakyReLU"; }
  std::string extra_repr() const override;

 private:
  float slope_;
};

/// 1 / (1 + e^-x) elementwise (sigmoid()); no parameters.
class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sigmoid"; }
};

/// tanh(x) elementwise; no parameters.
class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Tanh"; }
};

}  // namespace bnlab

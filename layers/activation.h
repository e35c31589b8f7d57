// Parameter-free activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, ELU, Softplus
// (torch.nn names, semantics and printed options).
// Each forwards to the op of the same name in core/ops.h. Identity (torch.nn.Identity) returns its
// input; fold_batch_norm (layers/bn_fold.h) puts one where each folded BatchNorm was.
#pragma once

#include <string>

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

/// x Phi(x), or its tanh approximation (gelu()); no parameters.
class GELU : public Module {
 public:
  /// "none" (exact, torch's default) or "tanh"; anything else throws.
  explicit GELU(std::string approximate = "none");
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "GELU"; }
  std::string extra_repr() const override;

 private:
  std::string approximate_;
};

/// x * sigmoid(x), a.k.a. swish (silu()); no parameters.
class SiLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SiLU"; }
};

/// x if x > 0 else alpha (e^x - 1) (elu()); no parameters.
class ELU : public Module {
 public:
  /// The negative-side scale (torch's default 1).
  explicit ELU(float alpha = 1.0f) : alpha_(alpha) {}
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "ELU"; }
  std::string extra_repr() const override;

 private:
  float alpha_;
};

/// log(1 + e^(beta x)) / beta, linear above threshold (softplus()); no parameters.
class Softplus : public Module {
 public:
  /// torch's defaults: beta 1, threshold 20; beta must be finite and nonzero.
  explicit Softplus(float beta = 1.0f, float threshold = 20.0f);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Softplus"; }
  std::string extra_repr() const override;

 private:
  float beta_, threshold_;
};

}  // namespace bnlab

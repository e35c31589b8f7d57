// LayerNorm as torch.nn.LayerNorm: normalizes over the trailing `normalized_shape` dims of each
// sample (biased variance, eps inside the sqrt) with an elementwise affine of that shape.
// Independent of the batch, so it behaves the same at any batch size and in train and eval mode.
#pragma once

#include "layers/module.h"

namespace bnlab {

/// torch.nn.LayerNorm's arguments.
struct LayerNormOptions {
  Shape normalized_shape;          ///< the trailing dims normalized over
  float eps = 1e-5f;               ///< added to the variance inside the sqrt; >= 0
  bool elementwise_affine = true;  ///< learnable weight and bias of normalized_shape
};

/// Layer normalization (Ba et al. 2016; layer_norm()): same in training and eval.
class LayerNorm : public Module {
 public:
  /// See LayerNormOptions; throws on an empty normalized_shape or eps < 0 (or NaN).
  explicit LayerNorm(const LayerNormOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "LayerNorm"; }
  std::string extra_repr() const override;

  const Tensor& weight() const { return weight_; }  ///< undefined without affine
  /// Shape normalized_shape, undefined without affine
  const Tensor& bias() const { return bias_; }

 private:
  LayerNormOptions options_;
  Tensor weight_, bias_;
};

}  // namespace bnlab

// LayerNorm as torch.nn.LayerNorm: normalizes over the trailing `normalized_shape` dims of each
// sample (biased variance, eps inside the sqrt) with an elementwise affine of that shape.
// Independent of the batch, so it behaves the same at any batch size and in train and eval mode.
#pragma once

#include "layers/module.h"

namespace bnlab {

struct LayerNormOptions {
  Shape normalized_shape;
  float eps = 1e-5f;
  bool elementwise_affine = true;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(const LayerNormOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "LayerNorm"; }
  std::string extra_repr() const override;

  const Tensor& weight() const { return weight_; }  // undefined without affine
  const Tensor& bias() const { return bias_; }

 private:
  LayerNormOptions options_;
  Tensor weight_, bias_;
};

}  // namespace bnlab

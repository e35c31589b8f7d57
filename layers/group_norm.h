// GroupNorm as torch.nn.GroupNorm: channels split into `num_groups` groups, each normalized over
// its channels and spatial positions per sample; per-channel affine. num_groups == num_channels is
// InstanceNorm (with affine), num_groups == 1 is LayerNorm over (C, H, W) with per-channel affine.
// Batch independent, which is why it is the usual fix for BatchNorm at small batch sizes.
#pragma once

#include "layers/module.h"

namespace bnlab {

/// torch.nn.GroupNorm's arguments.
struct GroupNormOptions {
  int64_t num_groups = 0;    ///< groups; must divide num_channels
  int64_t num_channels = 0;  ///< C
  float eps = 1e-5f;         ///< added to the variance inside the sqrt; >= 0
  bool affine = true;        ///< learnable per-channel weight and bias
};

/// Group normalization (Wu & He 2018; group_norm()): same in training and eval.
class GroupNorm : public Module {
 public:
  /// See GroupNormOptions; throws unless num_groups divides num_channels, or on eps < 0 (or NaN).
  explicit GroupNorm(const GroupNormOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "GroupNorm"; }
  std::string extra_repr() const override;

  const Tensor& weight() const { return weight_; }  ///< undefined without affine
  /// [C], undefined without affine
  const Tensor& bias() const { return bias_; }

 private:
  GroupNormOptions options_;
  Tensor weight_, bias_;
};

}  // namespace bnlab

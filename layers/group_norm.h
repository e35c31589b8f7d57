// GroupNorm as torch.nn.GroupNorm: channels split into `num_groups` groups, each normalized over
// its channels and spatial positions per sample; per-channel affine. num_groups == num_channels is
// InstanceNorm (with affine), num_groups == 1 is LayerNorm over (C, H, W) with per-channel affine.
// Batch independent, which is why it is the usual fix for BatchNorm at small batch sizes.
#pragma once

#include "layers/module.h"

namespace bnlab {

struct GroupNormOptions {
  int64_t num_groups = 0;
  int64_t num_channels = 0;
  float eps = 1e-5f;
  bool affine = true;
};

class GroupNorm : public Module {
 public:
  explicit GroupNorm(const GroupNormOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "GroupNorm"; }
  std::string extra_repr() const override;

  const Tensor& weight() const { return weight_; }  // undefined without affine
  const Tensor& bias() const { return bias_; }

 private:
  GroupNormOptions options_;
  Tensor weight_, bias_;
};

}  // namespace bnlab

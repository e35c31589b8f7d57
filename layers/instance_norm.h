// InstanceNorm1d / InstanceNorm2d with torch.nn.InstanceNorm semantics
// (https://pytorch.org/docs/stable/generated/torch.nn.InstanceNorm2d.html):
// - each (n, c) is normalized over its own positions (L, or H*W) with the BIASED variance, eps
//   inside the sqrt; that is group_norm() with one group per channel;
// - affine (default off) adds a learnable per-channel weight and bias;
// - track_running_stats (default off): training updates running = (1 - m) * running + m * stat,
//   where stat is the MEAN OVER THE BATCH of the per-instance means and of the per-instance
//   UNBIASED variances (var * S / (S - 1), S positions), as PyTorch's instance_norm does; eval then
//   normalizes with the running statistics. Without it eval uses instance statistics too;
// - num_batches_tracked exists with track_running_stats (so a PyTorch checkpoint loads) but stays
//   0: PyTorch's InstanceNorm never counts batches (so, unlike BatchNorm, no cumulative momentum).
// Input: [N, C, L] (1d) or [N, C, H, W] (2d); PyTorch's unbatched [C, L] / [C, H, W] is refused,
// since an [N, C] dense output would silently be taken for one sample.
// state_dict: weight, bias [C] (affine only); running_mean, running_var [C] and
// num_batches_tracked (int64 scalar) (track_running_stats only) -- PyTorch's names and presence.
// Reference: Ulyanov et al. 2016, "Instance Normalization: The Missing Ingredient for Fast
// Stylization".
#pragma once

#include "layers/module.h"

namespace bnlab {

/// torch.nn.InstanceNorm1d/2d's arguments and defaults.
struct InstanceNormOptions {
  int64_t num_features = 0;          ///< C, the channels
  float eps = 1e-5f;                 ///< added to the variance inside the sqrt
  float momentum = 0.1f;             ///< running-stat update weight, in [0, 1]
  bool affine = false;               ///< learnable per-channel weight and bias
  bool track_running_stats = false;  ///< keep running mean/var and use them in eval
};

/// Instance normalization (Ulyanov et al. 2016): every (sample, channel) normalized over its
/// positions. Use InstanceNorm1d or InstanceNorm2d.
class InstanceNorm : public Module {
 public:
  /// `spatial_dims`: 1 for [N, C, L] input, 2 for [N, C, H, W].
  InstanceNorm(const InstanceNormOptions& options, int spatial_dims);
  /// [N, C, *] -> same shape. Instance statistics in training and, without
  /// track_running_stats, in eval; the running statistics in eval with it.
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const Tensor& weight() const { return weight_; }  ///< [C] gamma, undefined without affine
  const Tensor& bias() const { return bias_; }      ///< [C] beta, undefined without affine
  /// [C] running mean (a buffer; undefined without track_running_stats).
  const Tensor& running_mean() const { return running_mean_; }
  /// [C] running unbiased variance (a buffer; undefined without track_running_stats).
  const Tensor& running_var() const { return running_var_; }
  /// The options it was built with.
  const InstanceNormOptions& options() const { return options_; }

 private:
  void check_input(const Tensor& x) const;
  void update_running_stats(const Tensor& x);

  InstanceNormOptions options_;
  int spatial_dims_;  ///< 1 for InstanceNorm1d, 2 for InstanceNorm2d
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
};

/// Instance norm over [N, C, L] input (torch.nn.InstanceNorm1d).
class InstanceNorm1d : public InstanceNorm {
 public:
  /// See InstanceNormOptions.
  explicit InstanceNorm1d(const InstanceNormOptions& options) : InstanceNorm(options, 1) {}
  std::string type_name() const override { return "InstanceNorm1d"; }
};

/// Instance norm over [N, C, H, W] input, per sample and channel (torch.nn.InstanceNorm2d).
class InstanceNorm2d : public InstanceNorm {
 public:
  /// See InstanceNormOptions.
  explicit InstanceNorm2d(const InstanceNormOptions& options) : InstanceNorm(options, 2) {}
  std::string type_name() const override { return "InstanceNorm2d"; }
};

}  // namespace bnlab

// BatchNorm1d / BatchNorm2d with torch.nn.BatchNorm semantics
// (https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html):
// - train mode normalizes with the batch mean and the BIASED batch variance, eps inside the sqrt;
// - running_mean/running_var are updated as running = (1 - m) * running + m * batch with momentum m
// = 0.1,
//   running_var from the UNBIASED batch variance (var * M / (M - 1), M = values per channel);
//   momentum = nullopt gives the cumulative average (m = 1 / num_batches_tracked);
// - eval mode uses the running statistics (or batch statistics when track_running_stats is false);
// - 1d takes [N, C] or [N, C, L]; 2d takes [N, C, H, W], statistics per channel over N, H, W.
// Buffers: running_mean [C], running_var [C], num_batches_tracked (scalar, saved as int64).
#pragma once

#include <memory>
#include <optional>

#include "core/ops.h"
#include "layers/module.h"

namespace bnlab {

/// torch.nn.BatchNorm1d/2d's arguments and defaults.
struct BatchNormOptions {
  int64_t num_features = 0;  ///< C, the channels (features) normalized
  float eps = 1e-5f;         ///< added to the variance inside the sqrt
  /// running-stat update weight; nullopt: cumulative average
  std::optional<float> momentum = 0.1f;
  bool affine = true;               ///< learnable gamma (weight) and beta (bias)
  bool track_running_stats = true;  ///< keep running mean/var for eval (else batch stats always)
};

/// Batch normalization (Ioffe & Szegedy 2015): batch statistics in training (updating the
/// running estimates), running statistics in eval. Use BatchNorm1d or BatchNorm2d.
class BatchNorm : public Module {
 public:
  /// `spatial_dims`: 1 for [N, C] or [N, C, L] input, 2 for [N, C, H, W].
  BatchNorm(const BatchNormOptions& options, int spatial_dims);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const Tensor& weight() const { return weight_; }  ///< gamma, undefined without affine
  const Tensor& bias() const { return bias_; }      ///< beta
  /// [C] running mean (a buffer; undefined without track_running_stats).
  const Tensor& running_mean() const { return running_mean_; }
  /// [C] running unbiased variance (a buffer).
  const Tensor& running_var() const { return running_var_; }
  /// Training batches seen (stored as int64 like PyTorch).
  int64_t num_batches_tracked() const;
  /// The options it was built with.
  const BatchNormOptions& options() const { return options_; }
  /// SyncBN: train-mode statistics (and the running estimates) cover every shard's batch, merged
  /// through `reducer` (null: this process's batch only, the default).
  void set_reducer(std::shared_ptr<BatchNormReducer> reducer) { reducer_ = std::move(reducer); }

 private:
  void check_input(const Tensor& x) const;

  BatchNormOptions options_;
  int spatial_dims_;  ///< 0 or 1 for BatchNorm1d, 2 for BatchNorm2d
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
  std::shared_ptr<BatchNormReducer> reducer_;
};

/// Batch norm over [N, C] or [N, C, L] input (torch.nn.BatchNorm1d).
class BatchNorm1d : public BatchNorm {
 public:
  /// See BatchNormOptions.
  explicit BatchNorm1d(const BatchNormOptions& options) : BatchNorm(options, 1) {}
  std::string type_name() const override { return "BatchNorm1d"; }
};

/// Batch norm over [N, C, H, W] input, per channel (torch.nn.BatchNorm2d).
class BatchNorm2d : public BatchNorm {
 public:
  /// See BatchNormOptions.
  explicit BatchNorm2d(const BatchNormOptions& options) : BatchNorm(options, 2) {}
  std::string type_name() const override { return "BatchNorm2d"; }
};

}  // namespace bnlab

// BatchNorm1d / BatchNorm2d with torch.nn.BatchNorm semantics
// (https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html):
// - train mode normalizes with the batch mean and the BIASED batch variance, eps inside the sqrt;
// - running_mean/running_var are updated as running = (1 - m) * running + m * batch with momentum m
// = 0.1,
//   running_var from the UNBIASED batch variance (var * M / (M - 1), M = values per channel);
//   momentum = nullopt gives the cumulative average (m = 1 / num_batches_tracked);
// - eval mode uses the running statistics (or batch statistics when track_running_stats is false,
//   or set_eval_batch_statistics(true) is on: plain batch norm, running statistics untouched);
// - 1d takes [N, C] or [N, C, L]; 2d takes [N, C, H, W], statistics per channel over N, H, W.
// Buffers: running_mean [C], running_var [C], num_batches_tracked (scalar, saved as int64).
//
// BatchRenorm1d / BatchRenorm2d: batch renormalization (Ioffe 2017, "Batch Renormalization:
// Towards Reducing Minibatch Dependence in Batch-Normalized Models"), the same layer with
// batch_renorm_train in training: y = gamma * (xhat * r + d) + beta, r = clip(sigma_B / sigma,
// 1/r_max, r_max), d = clip((mu_B - mu) / sigma, -d_max, d_max) against the running statistics
// (sigma = sqrt(running_var + eps)), r and d stop-gradient. r_max and d_max follow a schedule in
// the layer's own num_batches_tracked (so a resumed run continues it): 1 and 0 for `warmup`
// batches, then linear to their final values over `ramp` batches. Running statistics, eval and
// the state_dict are BatchNorm's, so a torch.nn.BatchNorm1d/2d twin loads it unchanged (PyTorch
// has no batch renormalization; the twin matches it in eval, and in training during the warm-up).
//
// Noisy batch norm (BatchNormOptions::noise, off by default), an experiment tool after Santurkar,
// Tsipras, Ilyas & Madry 2018 ("How Does Batch Normalization Help Optimization?", section 2.1):
// in training, after normalization and affine, each channel's output y becomes s * y + mu with
// mu ~ U(-mean_range, mean_range), var ~ U(1, var_max), s = sqrt(var), drawn anew every training
// step and per channel, so the distribution the next layer sees moves every step (large internal
// covariate shift) while BN still trains. The draws are a function of (seed, step, channel), the
// step being num_batches_tracked before the batch: every forward within one step (also a
// measurement's extra forward after restoring the buffers) sees the same noise, a resumed run the
// same noise as an uninterrupted one, whatever the thread count. Eval mode adds none (as
// Dropout); the running statistics are BN's own, taken before the noise; the noise adds no
// parameter or buffer, so the state_dict and its PyTorch twin are unchanged. BatchRenorm1d/2d
// accept it too (the noise follows the renormalized output).
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include "core/ops.h"
#include "layers/module.h"

namespace bnlab {

/// Noisy batch norm's noise (Santurkar et al. 2018): per training step and channel, y' = sqrt(var)
/// * y + mu on BN's output y, mu ~ U(-mean_range, mean_range), var ~ U(1, var_max). The paper
/// specifies noise "with non-zero mean and non-unit variance", drawn per step; these uniform ranges
/// and their defaults are bnlab's reading of it, not the paper's numbers. An experiment tool: it
/// shows that BN trains despite a large internal covariate shift, it is not a regularizer to use.
struct BatchNormNoise {
  float mean_range = 0.5f;  ///< mu ~ U(-mean_range, mean_range); >= 0
  float var_max = 1.25f;    ///< var ~ U(1, var_max); >= 1 (1: no change of scale)
  /// The layer's stream: give each layer of a model its own (the zoo mixes the run seed with the
  /// layer's position)
  uint64_t seed = 0;
};

/// One step's noise for `channels` channels (what a noisy BatchNorm applies at that step).
struct BatchNormNoiseDraw {
  Tensor mean;   ///< [C] mu, the shift added
  Tensor var;    ///< [C] var, the variance the unit-variance output is scaled to
  Tensor scale;  ///< [C] sqrt(var), the factor applied
};

/// The noise of training step `step` (num_batches_tracked before the batch) for `channels`
/// channels: a pure function of (noise.seed, step, channel), so every call with the same arguments
/// returns the same values. Throws for bad ranges, a negative step or channels < 1.
BatchNormNoiseDraw batch_norm_noise(const BatchNormNoise& noise, int64_t step, int64_t channels);

/// torch.nn.BatchNorm1d/2d's arguments and defaults.
struct BatchNormOptions {
  int64_t num_features = 0;  ///< C, the channels (features) normalized
  float eps = 1e-5f;         ///< added to the variance inside the sqrt
  /// running-stat update weight; nullopt: cumulative average
  std::optional<float> momentum = 0.1f;
  bool affine = true;               ///< learnable gamma (weight) and beta (bias)
  bool track_running_stats = true;  ///< keep running mean/var for eval (else batch stats always)
  /// Noisy batch norm (an experiment tool, see BatchNormNoise); nullopt: off. Needs
  /// track_running_stats (num_batches_tracked is the step that picks the noise).
  std::optional<BatchNormNoise> noise = std::nullopt;
};

/// Batch renormalization's schedule (BatchRenorm1d/2d): r_max and d_max stay 1 and 0 for the
/// first `warmup` training batches, then grow linearly to `r_max` and `d_max` over `ramp` batches.
struct BatchRenormOptions {
  float r_max = 3.0f;     ///< final r_max (the paper's 3); >= 1
  float d_max = 5.0f;     ///< final d_max (the paper's 5); >= 0
  int64_t warmup = 1000;  ///< batches of plain batch norm first (docs/guide/modules.md: why 1000)
  int64_t ramp = 5000;    ///< batches over which the limits grow to r_max, d_max (0: at once)
};

/// The limits batch renormalization clips r and d to at a given step.
struct BatchRenormLimits {
  float r_max;  ///< r in [1 / r_max, r_max]
  float d_max;  ///< d in [-d_max, d_max]
};

/// The schedule's limits for the batch after `step` training batches (num_batches_tracked before
/// it): (1, 0) while step <= warmup, the final (r_max, d_max) from step >= warmup + ramp, linear
/// in between. Throws for bad options or a negative step.
BatchRenormLimits batch_renorm_limits(const BatchRenormOptions& options, int64_t step);

/// Batch normalization (Ioffe & Szegedy 2015): batch statistics in training (updating the
/// running estimates), running statistics in eval. Use BatchNorm1d or BatchNorm2d.
class BatchNorm : public Module {
 public:
  /// `spatial_dims`: 1 for [N, C] or [N, C, L] input, 2 for [N, C, H, W].
  BatchNorm(const BatchNormOptions& options, int spatial_dims);
  Tensor forward(const Tensor& x) override;
  /// Training BatchNorm1d/2d (exactly these types, tracking running statistics, no noise) followed
  /// by exactly ReLU: relu(forward(x)) in one op (batch_norm_relu_train), 1 module fused; and when
  /// next[1] is exactly a MaxPool2d with 2x2 windows, stride 2, no padding, and x is [N, C, H, W]
  /// with H, W >= 2, the pool too (batch_norm_relu_max_pool2x2_train), 2 fused; or by exactly
  /// Sigmoid: sigmoid(forward(x)) in one op (batch_norm_sigmoid_train), 1 fused. Bit-identical to
  /// the modules one by one, running statistics updated as forward does. Not fused ({}) otherwise,
  /// eval included.
  FusedForward forward_fused(std::span<Module* const> next, const Tensor& x) override;
  /// Whether a Conv2d before this module hands it its output's per-plane moments (the first pass
  /// of the statistics, computed while each image was in cache): exactly BatchNorm2d or
  /// BatchRenorm2d, using batch statistics (training, no running statistics tracked, or
  /// set_eval_batch_statistics). Then
  /// Conv2d::forward_fused runs this module, and what it fuses with, inside its op.
  bool takes_conv_planes() const;
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
  /// Batch renormalization's schedule (BatchRenorm1d/2d); nullopt for batch norm.
  const std::optional<BatchRenormOptions>& renorm() const { return renorm_; }
  /// Evaluation on batch statistics (evaluate()'s NormStatistics::kBatch): on, eval mode normalizes
  /// each batch with its own mean and biased variance as plain batch norm does in training, without
  /// batch renormalization's r and d and without noise (both training-only, like dropout), and
  /// leaves the running statistics and num_batches_tracked alone, as torch's BatchNorm built with
  /// track_running_stats=False does in eval. Off by default; no effect in training. A BatchNorm
  /// with it on is not folded (fold_batch_norm): it has no constant statistics.
  void set_eval_batch_statistics(bool on) { eval_batch_statistics_ = on; }
  /// Whether set_eval_batch_statistics is on.
  bool eval_batch_statistics() const { return eval_batch_statistics_; }
  /// SyncBN: train-mode statistics (and the running estimates) cover every shard's batch, merged
  /// through `reducer` (null: this process's batch only, the default).
  void set_reducer(std::shared_ptr<BatchNormReducer> reducer) { reducer_ = std::move(reducer); }

 protected:
  /// BatchRenorm1d/2d: batch norm that trains with batch_renorm_train on `renorm`'s schedule.
  BatchNorm(const BatchNormOptions& options, int spatial_dims,
            std::optional<BatchRenormOptions> renorm);

 private:
  void check_input(const Tensor& x) const;
  /// Normalizes with the batch's statistics: in training, without running statistics, or in eval
  /// with set_eval_batch_statistics on.
  bool uses_batch_statistics() const {
    return is_training() || !options_.track_running_stats || eval_batch_statistics_;
  }
  /// What the training forward computes after batch norm (plain batch norm only): nothing,
  /// relu (batch_norm_relu_train), relu and a 2x2 max-pool (batch_norm_relu_max_pool2x2_train) or
  /// sigmoid (batch_norm_sigmoid_train).
  enum class Then { kNothing, kRelu, kReluMaxPool2x2, kSigmoid };
  /// What forward_fused fuses with the modules `next` on x: what follows batch norm in its op and
  /// how many of `next` that is (0: not fused).
  std::pair<Then, size_t> fusion_with(std::span<Module* const> next, const Tensor& x) const;
  /// The training (batch statistics) forward: the op, the running statistics, the noise. planes:
  /// x's per-plane moments [N * C * 2] as its Conv2d computed them (core/ops/plane_moments.h), or
  /// null.
  Tensor forward_batch_stats(const Tensor& x, Then then, const double* planes = nullptr);
  /// For Conv2d::forward_fused, when takes_conv_planes(): forward_fused(next, x), or forward(x)
  /// when nothing fuses, with x's plane moments given. The modules run: this one and the first
  /// `modules - 1` of next.
  friend class Conv2d;
  FusedForward forward_given_planes(std::span<Module* const> next, const Tensor& x,
                                    const double* planes);
  /// running = (1 - m) * running + m * batch (running_var from the unbiased variance) and
  /// num_batches_tracked + 1, for r's statistics; the one update of every training forward.
  void update_running_stats(const BatchNormResult& r);

  BatchNormOptions options_;
  std::optional<BatchRenormOptions> renorm_;
  int spatial_dims_;  ///< 0 or 1 for BatchNorm1d, 2 for BatchNorm2d
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
  std::shared_ptr<BatchNormReducer> reducer_;
  bool eval_batch_statistics_ = false;
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

/// Batch renormalization over [N, C] or [N, C, L] input (BatchNorm1d's buffers and eval).
class BatchRenorm1d : public BatchNorm {
 public:
  /// See BatchNormOptions (track_running_stats must stay true) and BatchRenormOptions.
  explicit BatchRenorm1d(const BatchNormOptions& options, const BatchRenormOptions& renorm = {})
      : BatchNorm(options, 1, renorm) {}
  std::string type_name() const override { return "BatchRenorm1d"; }
};

/// Batch renormalization over [N, C, H, W] input, per channel (BatchNorm2d's buffers and eval).
class BatchRenorm2d : public BatchNorm {
 public:
  /// See BatchNormOptions (track_running_stats must stay true) and BatchRenormOptions.
  explicit BatchRenorm2d(const BatchNormOptions& options, const BatchRenormOptions& renorm = {})
      : BatchNorm(options, 2, renorm) {}
  std::string type_name() const override { return "BatchRenorm2d"; }
};

}  // namespace bnlab

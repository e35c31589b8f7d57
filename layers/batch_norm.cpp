#include "layers/batch_norm.h"

#include <algorithm>
#include <cmath>
#include <typeinfo>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/plane_moments.h"
#include "layers/activation.h"
#include "layers/max_pool.h"

namespace bnlab {

namespace {

void check_renorm_options(const char* name, const BatchRenormOptions& o) {
  BNLAB_CHECK(std::isfinite(o.r_max) && o.r_max >= 1.0f, name,
              ": r_max must be a finite number >= 1 (r is clipped to [1/r_max, r_max]); got ",
              o.r_max);
  BNLAB_CHECK(std::isfinite(o.d_max) && o.d_max >= 0.0f, name,
              ": d_max must be a finite number >= 0 (d is clipped to [-d_max, d_max]); got ",
              o.d_max);
  BNLAB_CHECK(o.warmup >= 0, name, ": warmup must be >= 0 steps; got ", o.warmup);
  BNLAB_CHECK(o.ramp >= 0, name, ": ramp must be >= 0 steps; got ", o.ramp);
}

void check_noise(const char* name, const BatchNormNoise& n) {
  BNLAB_CHECK(std::isfinite(n.mean_range) && n.mean_range >= 0.0f, name,
              ": noise mean_range must be a finite number >= 0 (mu ~ U(-mean_range, mean_range)); "
              "got ",
              n.mean_range);
  BNLAB_CHECK(std::isfinite(n.var_max) && n.var_max >= 1.0f, name,
              ": noise var_max must be a finite number >= 1 (var ~ U(1, var_max)); got ",
              n.var_max);
}

}  // namespace

BatchNormNoiseDraw batch_norm_noise(const BatchNormNoise& noise, int64_t step, int64_t channels) {
  check_noise("batch_norm_noise", noise);
  BNLAB_CHECK(step >= 0, "batch_norm_noise: step must be >= 0; got ", step);
  BNLAB_CHECK(channels >= 1, "batch_norm_noise: channels must be >= 1; got ", channels);
  BatchNormNoiseDraw draw{Tensor::empty({channels}), Tensor::empty({channels}),
                          Tensor::empty({channels})};
  // A generator made from (seed, step) alone, no state kept between steps: the same step gives
  // the same draws however often and in whatever order it is asked for (resume, extra forwards).
  Rng rng(mix_seed(noise.seed, static_cast<uint64_t>(step)));
  float* mu = draw.mean.data();
  float* var = draw.var.data();
  float* scale = draw.scale.data();
  for (int64_t c = 0; c < channels; ++c) {
    mu[c] = rng.uniform(-noise.mean_range, noise.mean_range);
    var[c] = rng.uniform(1.0f, noise.var_max);
    scale[c] = std::sqrt(var[c]);
  }
  return draw;
}

BatchRenormLimits batch_renorm_limits(const BatchRenormOptions& o, int64_t step) {
  check_renorm_options("batch_renorm_limits", o);
  BNLAB_CHECK(step >= 0, "batch_renorm_limits: step must be >= 0; got ", step);
  if (step <= o.warmup) return {1.0f, 0.0f};
  // Fraction of the ramp done; ramp 0 jumps to the final limits right after the warm-up. In
  // double: step - warmup is exact there for any step a float counter can hold.
  const double done =
      o.ramp == 0
          ? 1.0
          : std::min(1.0, static_cast<double>(step - o.warmup) / static_cast<double>(o.ramp));
  return {static_cast<float>(1.0 + (o.r_max - 1.0) * done), static_cast<float>(o.d_max * done)};
}

BatchNorm::BatchNorm(const BatchNormOptions& o, int spatial_dims)
    : BatchNorm(o, spatial_dims, std::nullopt) {}

BatchNorm::BatchNorm(const BatchNormOptions& o, int spatial_dims,
                     std::optional<BatchRenormOptions> renorm)
    : options_(o), renorm_(renorm), spatial_dims_(spatial_dims) {
  // type_name() is virtual, so not callable here: the name from what is being built.
  const char* name = !renorm ? "BatchNorm" : spatial_dims == 2 ? "BatchRenorm2d" : "BatchRenorm1d";
  BNLAB_CHECK(o.num_features > 0, name, ": num_features must be positive; got ", o.num_features);
  BNLAB_CHECK(o.eps > 0.0f, name, ": eps must be positive; got ", o.eps);
  BNLAB_CHECK(!o.momentum || (*o.momentum >= 0.0f && *o.momentum <= 1.0f), name,
              ": momentum must be in [0, 1]; got ", o.momentum.value_or(0.0f));
  if (renorm) {
    check_renorm_options(name, *renorm);
    BNLAB_CHECK(o.track_running_stats, name,
                ": track_running_stats must be true (r and d are measured against the running "
                "statistics)");
  }
  if (o.noise) {
    check_noise(name, *o.noise);
    BNLAB_CHECK(o.track_running_stats, name,
                ": noise needs track_running_stats (num_batches_tracked picks each step's noise)");
  }
  if (o.affine) {
    weight_ = register_parameter("weight", Tensor::ones({o.num_features}));
    bias_ = register_parameter("bias", Tensor::zeros({o.num_features}));
  }
  if (o.track_running_stats) {
    running_mean_ = register_buffer("running_mean", Tensor::zeros({o.num_features}));
    running_var_ = register_buffer("running_var", Tensor::ones({o.num_features}), DType::F32,
                                   BufferValues::kNonNegative);
    num_batches_tracked_ = register_buffer("num_batches_tracked", Tensor::zeros({}), DType::I64);
  }
}

int64_t BatchNorm::num_batches_tracked() const {
  return num_batches_tracked_.defined() ? static_cast<int64_t>(num_batches_tracked_.item()) : 0;
}

void BatchNorm::check_input(const Tensor& x) const {
  bool rank_ok = spatial_dims_ == 2 ? x.dim() == 4 : (x.dim() == 2 || x.dim() == 3);
  const char* expected = spatial_dims_ == 2 ? "[N, C, H, W]" : "[N, C] or [N, C, L]";
  BNLAB_CHECK(rank_ok && x.size(1) == options_.num_features, type_name(), ": expected input ",
              expected, " with C = ", options_.num_features, "; got ", x.shape());
}

Tensor BatchNorm::forward(const Tensor& x) {
  check_input(x);
  if (!uses_batch_statistics()) {
    return batch_norm_eval(x, running_mean_, running_var_, weight_, bias_, options_.eps);
  }
  return forward_batch_stats(x, Then::kNothing);
}

std::pair<BatchNorm::Then, size_t> BatchNorm::fusion_with(std::span<Module* const> next,
                                                          const Tensor& x) const {
  // Exactly BatchNorm1d/2d (not BatchRenorm or a user's subclass, whose forward may differ) in
  // training with running statistics and without noise, then exactly ReLU: what
  // batch_norm_relu_train computes, and with exactly MaxPool2d(2) after it what
  // batch_norm_relu_max_pool2x2_train computes; or then exactly Sigmoid: what
  // batch_norm_sigmoid_train computes. In eval they are left alone (fold_batch_norm's business).
  const std::type_info& type = typeid(*this);
  const bool plain = (type == typeid(BatchNorm1d) || type == typeid(BatchNorm2d)) && !renorm_ &&
                     !options_.noise && options_.track_running_stats;
  if (!plain || !is_training() || next.empty()) return {Then::kNothing, 0};
  if (typeid(*next[0]) == typeid(Sigmoid)) return {Then::kSigmoid, 1};
  if (typeid(*next[0]) != typeid(ReLU)) return {Then::kNothing, 0};
  const auto* pool = next.size() > 1 && typeid(*next[1]) == typeid(MaxPool2d)
                         ? static_cast<MaxPool2d*>(next[1])
                         : nullptr;
  // Where the pool would refuse x (H or W below 2), it runs on its own and says so.
  if (pool && pool->kernel() == 2 && pool->stride() == 2 && pool->padding() == 0 && x.dim() == 4 &&
      x.size(2) >= 2 && x.size(3) >= 2) {
    return {Then::kReluMaxPool2x2, 2};
  }
  return {Then::kRelu, 1};
}

FusedForward BatchNorm::forward_fused(std::span<Module* const> next, const Tensor& x) {
  check_input(x);
  const auto [then, fused] = fusion_with(next, x);
  if (fused == 0) return {};
  return {forward_batch_stats(x, then), fused};
}

bool BatchNorm::takes_conv_planes() const {
  const std::type_info& type = typeid(*this);
  return (type == typeid(BatchNorm2d) || type == typeid(BatchRenorm2d)) && uses_batch_statistics();
}

FusedForward BatchNorm::forward_given_planes(std::span<Module* const> next, const Tensor& x,
                                             const double* planes) {
  BNLAB_CHECK(takes_conv_planes(), type_name(), ": given plane moments outside training");
  check_input(x);
  const auto [then, fused] = fusion_with(next, x);
  return {forward_batch_stats(x, then, planes), 1 + fused};
}

Tensor BatchNorm::forward_batch_stats(const Tensor& x, Then then, const double* planes) {
  int64_t per_channel = x.numel() / options_.num_features;  // M = N * H * W
  // Under SyncBN a shard may hold a single value per channel: the check is on all shards' count.
  BNLAB_CHECK(per_channel > 1 || reducer_, type_name(),
              ": expected more than 1 value per channel when training; got input ", x.shape());
  BatchNormResult r;
  // The batches this layer has trained on before this one, a buffer: resume continues the renorm
  // schedule and the noise stream from it.
  const int64_t step = num_batches_tracked();
  // r and d correct training towards the running statistics; evaluation on batch statistics
  // (set_eval_batch_statistics) is plain batch norm.
  const bool renorm = renorm_ && is_training();
  if (planes) {
    // The same ops below, the conv's plane moments in place of their first pass.
    std::optional<BatchRenormArgs> args;
    if (renorm) {
      const BatchRenormLimits lim = batch_renorm_limits(*renorm_, step);
      args = BatchRenormArgs{running_mean_, running_var_, lim.r_max, lim.d_max};
    }
    const detail::BatchNormThen op_then = then == Then::kReluMaxPool2x2
                                              ? detail::BatchNormThen::relu_max_pool2x2
                                          : then == Then::kRelu    ? detail::BatchNormThen::relu
                                          : then == Then::kSigmoid ? detail::BatchNormThen::sigmoid
                                                                   : detail::BatchNormThen::nothing;
    r = detail::batch_norm_train_given_planes(x, weight_, bias_, options_.eps, reducer_,
                                              args ? &*args : nullptr, op_then, planes);
  } else if (renorm) {
    const BatchRenormLimits lim = batch_renorm_limits(*renorm_, step);
    r = batch_renorm_train(x, weight_, bias_, options_.eps,
                           {running_mean_, running_var_, lim.r_max, lim.d_max}, reducer_);
  } else if (then == Then::kReluMaxPool2x2) {
    r = batch_norm_relu_max_pool2x2_train(x, weight_, bias_, options_.eps, reducer_);
  } else if (then == Then::kRelu) {
    r = batch_norm_relu_train(x, weight_, bias_, options_.eps, reducer_);
  } else if (then == Then::kSigmoid) {
    r = batch_norm_sigmoid_train(x, weight_, bias_, options_.eps, reducer_);
  } else {
    r = batch_norm_train(x, weight_, bias_, options_.eps, reducer_);
  }
  per_channel = r.count;
  BNLAB_CHECK(per_channel > 1, type_name(), ": expected more than 1 value per channel over all ",
              "shards when training; got ", per_channel, " (this shard's input ", x.shape(), ")");
  if (is_training() && options_.track_running_stats) update_running_stats(r);
  if (options_.noise && is_training()) {
    // Noisy BN: after the statistics above, so they stay BN's own.
    const BatchNormNoiseDraw noise = batch_norm_noise(*options_.noise, step, options_.num_features);
    return channel_affine(r.y, noise.scale, noise.mean);
  }
  return r.y;
}

void BatchNorm::update_running_stats(const BatchNormResult& r) {
  NoGradGuard no_grad;
  float tracked = num_batches_tracked_.item() + 1.0f;
  num_batches_tracked_.fill_(tracked);
  float m = options_.momentum ? *options_.momentum : 1.0f / tracked;
  // The unbiased variance for the running estimate, as PyTorch: var * M / (M - 1).
  float unbias = static_cast<float>(r.count) / static_cast<float>(r.count - 1);
  float* rm = running_mean_.data();
  float* rv = running_var_.data();
  const float* bm = r.mean.data();
  const float* bv = r.var.data();
  for (int64_t c = 0; c < options_.num_features; ++c) {
    rm[c] = (1.0f - m) * rm[c] + m * bm[c];
    rv[c] = (1.0f - m) * rv[c] + m * bv[c] * unbias;
  }
  running_mean_.bump_version();
  running_var_.bump_version();
}

std::string BatchNorm::extra_repr() const {
  std::string s = std::to_string(options_.num_features);
  if (options_.eps != 1e-5f) s += ", eps " + std::to_string(options_.eps);
  s += options_.momentum
           ? (*options_.momentum != 0.1f ? ", momentum " + std::to_string(*options_.momentum) : "")
           : ", cumulative";
  if (!options_.affine) s += ", no affine";
  if (!options_.track_running_stats) s += ", batch stats only";
  if (options_.noise) {
    s += ", noise mean_range " + std::to_string(options_.noise->mean_range) + ", var_max " +
         std::to_string(options_.noise->var_max);
  }
  if (renorm_) {
    s += ", r_max " + std::to_string(renorm_->r_max) + ", d_max " + std::to_string(renorm_->d_max) +
         ", warmup " + std::to_string(renorm_->warmup) + ", ramp " + std::to_string(renorm_->ramp);
  }
  return s;
}

}  // namespace bnlab

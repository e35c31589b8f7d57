// InstanceNorm1d / InstanceNorm2d (see instance_norm.h for the semantics).
//
// Legend: N batch, C channels, S positions per channel (L, or H*W); x is [N, C, S] in memory.
//
// The op: normalizing each (n, c) over its S positions with a per-channel affine is group_norm()
// with one group per channel (groups == C), gradient-checked in tests/core/test_ops_norm.cpp; eval
// with running statistics is batch_norm_eval() on the same [N, C, *] input, since PyTorch's
// instance_norm then normalizes every instance of channel c with running_mean[c], running_var[c].
// So this layer adds no op and no backward; the running-statistics update is bookkeeping outside
// the graph, in double, two passes per instance, as the norm ops compute their statistics.
#include "layers/instance_norm.h"

#include <vector>

#include "core/autograd.h"
#include "core/ops.h"

namespace bnlab {

InstanceNorm::InstanceNorm(const InstanceNormOptions& o, int spatial_dims)
    : options_(o), spatial_dims_(spatial_dims) {
  const char* name = spatial_dims == 2 ? "InstanceNorm2d" : "InstanceNorm1d";
  BNLAB_CHECK(o.num_features > 0, name, ": num_features must be positive; got ", o.num_features);
  BNLAB_CHECK(o.eps > 0.0f, name, ": eps must be positive; got ", o.eps);
  BNLAB_CHECK(o.momentum >= 0.0f && o.momentum <= 1.0f, name, ": momentum must be in [0, 1]; got ",
              o.momentum);
  if (o.affine) {
    weight_ = register_parameter("weight", Tensor::ones({o.num_features}));
    bias_ = register_parameter("bias", Tensor::zeros({o.num_features}));
  }
  if (o.track_running_stats) {
    running_mean_ = register_buffer("running_mean", Tensor::zeros({o.num_features}));
    running_var_ = register_buffer("running_var", Tensor::ones({o.num_features}), DType::F32,
                                   BufferValues::kNonNegative);
    // Never incremented (PyTorch's InstanceNorm does not count batches); kept for the state_dict.
    num_batches_tracked_ = register_buffer("num_batches_tracked", Tensor::zeros({}), DType::I64);
  }
}

void InstanceNorm::check_input(const Tensor& x) const {
  const int64_t rank = spatial_dims_ + 2;
  const char* expected = spatial_dims_ == 2 ? "[N, C, H, W]" : "[N, C, L]";
  BNLAB_CHECK(x.dim() == rank && x.size(1) == options_.num_features, type_name(),
              ": expected input ", expected, " with C = ", options_.num_features, "; got ",
              x.shape());
}

Tensor InstanceNorm::forward(const Tensor& x) {
  check_input(x);
  // Eval with tracked statistics: every instance of channel c uses running_mean[c] and
  // running_var[c], which is batch norm's eval formula.
  if (!is_training() && options_.track_running_stats) {
    return batch_norm_eval(x, running_mean_, running_var_, weight_, bias_, options_.eps);
  }
  int64_t S = 1;  // positions per (n, c); a product, so an empty batch cannot divide by zero
  for (int64_t i = 2; i < x.dim(); ++i) S *= x.size(i);
  // One position normalizes to exactly 0 (and its unbiased variance divides by 0): PyTorch refuses
  // it whenever it uses instance statistics, in eval too.
  BNLAB_CHECK(S > 1, type_name(), ": expected more than 1 position per channel (instance ",
              "statistics over L or H*W); got input ", x.shape());
  // group_norm first: it also refuses an empty batch before the update divides by N.
  Tensor y = group_norm(x, options_.num_features, weight_, bias_, options_.eps);
  if (is_training() && options_.track_running_stats) update_running_stats(x);
  return y;
}

// running = (1 - m) * running + m * (average over n of the (n, c) statistic), with the unbiased
// per-instance variance, as PyTorch's instance_norm (it runs batch norm on the input seen as
// [1, N*C, S] with the running buffers repeated N times, then averages the N copies back).
void InstanceNorm::update_running_stats(const Tensor& x) {
  NoGradGuard no_grad;
  const int64_t N = x.size(0), C = options_.num_features, S = x.numel() / (N * C);
  std::vector<double> mean_sum(static_cast<size_t>(C), 0.0), var_sum(static_cast<size_t>(C), 0.0);
  const float* xd = x.data();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      // One instance: its S values are contiguous. Two passes, so a large offset does not cancel.
      const float* xi = xd + (n * C + c) * S;
      double sum = 0.0;
      for (int64_t s = 0; s < S; ++s) sum += xi[s];
      const double mean = sum / static_cast<double>(S);
      double m2 = 0.0;
      for (int64_t s = 0; s < S; ++s) m2 += (xi[s] - mean) * (xi[s] - mean);
      mean_sum[static_cast<size_t>(c)] += mean;
      var_sum[static_cast<size_t>(c)] += m2 / static_cast<double>(S - 1);  // unbiased; S > 1
    }
  }
  const double m = options_.momentum;
  float* rm = running_mean_.data();
  float* rv = running_var_.data();
  for (int64_t c = 0; c < C; ++c) {
    const double batch_mean = mean_sum[static_cast<size_t>(c)] / static_cast<double>(N);
    const double batch_var = var_sum[static_cast<size_t>(c)] / static_cast<double>(N);
    rm[c] = static_cast<float>((1.0 - m) * rm[c] + m * batch_mean);
    rv[c] = static_cast<float>((1.0 - m) * rv[c] + m * batch_var);
  }
  running_mean_.bump_version();
  running_var_.bump_version();
}

std::string InstanceNorm::extra_repr() const {
  std::string s = std::to_string(options_.num_features);
  if (options_.eps != 1e-5f) s += ", eps " + std::to_string(options_.eps);
  if (options_.affine) s += ", affine";
  if (options_.track_running_stats) {
    s += ", running stats";
    if (options_.momentum != 0.1f) s += " (momentum " + std::to_string(options_.momentum) + ")";
  }
  return s;
}

}  // namespace bnlab

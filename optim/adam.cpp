// Adam / AdamW: torch's single-tensor update, one elementwise pass per parameter (see adam.h for
// the rule).
//
// Reference: https://pytorch.org/docs/stable/generated/torch.optim.Adam.html
#include "optim/adam.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/parallel.h"

namespace bnlab {

namespace {

std::vector<std::string> adam_slots(const AdamOptions& options) {
  if (options.amsgrad) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"exp_avg", "exp_avg_sq"};
}

AdamOptions from_adamw(const AdamWOptions& o) {
  return {.lr = o.lr,
          .beta1 = o.beta1,
          .beta2 = o.beta2,
          .eps = o.eps,
          .weight_decay = o.weight_decay,
          .amsgrad = o.amsgrad};
}

// torch.lerp(a, b, w) on CPU: the form depends on w so that w = 1 gives exactly b.
inline float lerp(float a, float b, float w) {
  return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Adam("adam",
           std::vector<ParamGroup>{ParamGroup{std::move(params), options.lr, options.weight_decay}},
           options, false) {}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options)
    : Adam("adam", std::move(groups), options, false) {}

Adam::Adam(const char* name, std::vector<ParamGroup> groups, AdamOptions options, bool decoupled)
    : Optimizer(name, std::move(groups), adam_slots(options)),
      options_(options),
      decoupled_(decoupled) {
  detail::check_unit_interval(name, "beta1", options.beta1);
  detail::check_unit_interval(name, "beta2", options.beta2);
  detail::check_nonnegative(name, "eps", options.eps);
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions options)
    : Adam("adamw",
           std::vector<ParamGroup>{ParamGroup{std::move(params), options.lr, options.weight_decay}},
           from_adamw(options), true) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options)
    : Adam("adamw", std::move(groups), from_adamw(options), true) {}

void Adam::update_param(size_t index, const ParamGroup& group, float* p, const float* g, int64_t n,
                        int64_t step) {
  const double lr = group.lr;
  const float weight_decay = group.weight_decay;
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  // Per-step scalars, in double as torch computes them in Python, then rounded once to float.
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float one_minus_beta1 = static_cast<float>(1.0 - beta1);
  const float one_minus_beta2 = static_cast<float>(1.0 - beta2);
  const float beta2_f = options_.beta2;
  const float eps = options_.eps;
  const float decay = static_cast<float>(1.0 - lr * static_cast<double>(weight_decay));
  const bool decoupled = decoupled_ && weight_decay != 0.0f;
  const bool l2 = !decoupled_ && weight_decay != 0.0f;
  float* m = state(0, index);                                   // [n] exp_avg
  float* v = state(1, index);                                   // [n] exp_avg_sq
  float* v_max = options_.amsgrad ? state(2, index) : nullptr;  // [n] max_exp_avg_sq

  // amsgrad's v_max as a compile-time constant, not `if (v_max)` in the loop: see Sgd (a null
  // pointer's masked vector loads trap into microcode assists).
  auto update = [&](auto with_max) {
    constexpr bool kAmsgrad = decltype(with_max)::value;
    detail::parallel_for(n, n >= detail::kOptimParallelThreshold, [=](int64_t i) {
      float d = g[i];
      if (decoupled) p[i] *= decay;      // AdamW: shrink the weight, outside the adaptive scaling
      if (l2) d += weight_decay * p[i];  // Adam: the L2 gradient goes through the adaptive scaling
      m[i] = lerp(m[i], d, one_minus_beta1);
      v[i] = v[i] * beta2_f + one_minus_beta2 * d * d;
      float second = v[i];
      if constexpr (kAmsgrad) {
        v_max[i] = std::max(v_max[i], v[i]);
        second = v_max[i];
      }
      // Why eps after the correction: torch's denom = sqrt(v) / sqrt(1 - beta2^t) + eps.
      const float denom = std::sqrt(second) / bias_correction2_sqrt + eps;
      p[i] -= step_size * (m[i] / denom);
    });
  };
  if (v_max) {
    update(std::true_type{});
  } else {
    update(std::false_type{});
  }
}

}  // namespace bnlab

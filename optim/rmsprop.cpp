// Rmsprop: torch's single-tensor RMSprop update, one elementwise pass per parameter (see
// rmsprop.h).
//
// Reference: https://pytorch.org/docs/stable/generated/torch.optim.RMSprop.html
#include "optim/rmsprop.h"

#include <cmath>
#include <type_traits>

#include "core/parallel.h"

namespace bnlab {

namespace {

// Slot order follows torch's state: square_avg, momentum_buffer, grad_avg.
std::vector<std::string> rmsprop_slots(const RmspropOptions& options) {
  std::vector<std::string> slots{"square_avg"};
  if (options.momentum > 0.0f) slots.push_back("momentum_buffer");
  if (options.centered) slots.push_back("grad_avg");
  return slots;
}

// torch.lerp(a, b, w) on CPU: the form depends on w so that w = 1 gives exactly b.
inline float lerp(float a, float b, float w) {
  return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

}  // namespace

Rmsprop::Rmsprop(std::vector<Tensor> params, RmspropOptions options)
    : Rmsprop(
          std::vector<ParamGroup>{ParamGroup{std::move(params), options.lr, options.weight_decay}},
          options) {}

Rmsprop::Rmsprop(std::vector<ParamGroup> groups, RmspropOptions options)
    : Optimizer("rmsprop", std::move(groups), rmsprop_slots(options)), options_(options) {
  // [0, 1), as Adam's betas: torch takes any alpha >= 0, but at 1 the squared average never
  // leaves 0 (steps of lr * g / eps, ~1e6 times too large) and above 1 it goes negative (NaN).
  detail::check_unit_interval("rmsprop", "alpha", options.alpha);
  detail::check_nonnegative("rmsprop", "eps", options.eps);
  detail::check_nonnegative("rmsprop", "momentum", options.momentum);
}

void Rmsprop::update_param(size_t index, const ParamGroup& group, float* p, const float* g,
                           int64_t n, int64_t /*step: RMSprop has no bias correction*/) {
  const float lr = group.lr;
  const float weight_decay = group.weight_decay;
  const float alpha = options_.alpha;
  const float one_minus_alpha = static_cast<float>(1.0 - static_cast<double>(alpha));
  const float eps = options_.eps;
  const float momentum = options_.momentum;
  size_t slot = 0;
  float* s = state(slot++, index);                                // [n] square_avg
  float* b = momentum > 0.0f ? state(slot++, index) : nullptr;    // [n] momentum_buffer
  float* a = options_.centered ? state(slot++, index) : nullptr;  // [n] grad_avg

  // The optional buffers' presence as compile-time constants, not `if (a)` / `if (b)` in the loop:
  // see Sgd (a null pointer's masked vector loads trap into microcode assists).
  auto update = [&](auto centered, auto with_momentum) {
    constexpr bool kCentered = decltype(centered)::value;
    constexpr bool kMomentum = decltype(with_momentum)::value;
    detail::parallel_for(n, n >= detail::kOptimParallelThreshold, [=](int64_t i) {
      float d = g[i];
      if (weight_decay != 0.0f) d += weight_decay * p[i];
      s[i] = s[i] * alpha + one_minus_alpha * d * d;
      float r;
      if constexpr (kCentered) {
        // Centered: divide by an estimate of the gradient's standard deviation, not its RMS.
        a[i] = lerp(a[i], d, one_minus_alpha);
        r = std::sqrt(s[i] - a[i] * a[i]);
      } else {
        r = std::sqrt(s[i]);
      }
      r += eps;  // eps outside the sqrt, as torch
      if constexpr (kMomentum) {
        b[i] = b[i] * momentum + d / r;
        p[i] -= lr * b[i];
      } else {
        p[i] -= lr * (d / r);
      }
    });
  };
  auto with_momentum = [&](auto centered) {
    if (b) {
      update(centered, std::true_type{});
    } else {
      update(centered, std::false_type{});
    }
  };
  if (a) {
    with_momentum(std::true_type{});
  } else {
    with_momentum(std::false_type{});
  }
}

}  // namespace bnlab

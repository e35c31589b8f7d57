// clip_grad_norm: torch.nn.utils.clip_grad_norm_ (norm_type 2) over the gradients of a parameter
// list.
//
// Reference: https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html
#include "optim/clip.h"

#include <cmath>

#include "core/error.h"
#include "core/parallel.h"

namespace bnlab {

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  BNLAB_CHECK(std::isfinite(max_norm) && max_norm >= 0.0f,
              "clip_grad_norm: max_norm must be finite and >= 0; got ", max_norm);
  // Total squared norm in double: millions of float squares summed in float would lose digits.
  double total_sq = 0.0;
  for (const Tensor& p : params) {
    if (!p.defined() || !p.has_grad()) continue;
    const float* g = p.impl()->grad->data();
    const int64_t n = p.numel();
    double acc = 0.0;
    if (n >= (1 << 16)) {
#pragma omp parallel for reduction(+ : acc)
      for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(g[i]) * g[i];
    } else {
      // Not `parallel ... if`: a region of one thread still costs a system call (core/parallel.h).
      for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(g[i]) * g[i];
    }
    total_sq += acc;
  }
  const double total = std::sqrt(total_sq);
  // torch: clip_coef = max_norm / (total + 1e-6), clamped to at most 1. The 1e-6 keeps a zero norm
  // finite and makes the clipped norm land just under max_norm.
  const double coef = static_cast<double>(max_norm) / (total + 1e-6);
  if (coef < 1.0) {
    const float c = static_cast<float>(coef);
    for (const Tensor& p : params) {
      if (!p.defined() || !p.has_grad()) continue;
      float* g = p.impl()->grad->data();
      const int64_t n = p.numel();
      detail::parallel_for(n, n >= (1 << 16), [=](int64_t i) { g[i] *= c; });
    }
  }
  return static_cast<float>(total);
}

}  // namespace bnlab

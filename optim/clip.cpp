// clip_grad_norm: torch.nn.utils.clip_grad_norm_ (norm_type 2) over the gradients of a parameter
// list.
//
// Reference: https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html
#include "optim/clip.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"

namespace bnlab {

namespace {

// The squared norm is summed in chunks of this many values, each chunk in order and the chunks'
// sums in order, so that the total (and so the clipping coefficient) has the same bits at every
// thread count and in every run. An OpenMP reduction's result depended on how many threads split
// the loop, and with more than two threads on the order in which they finished.
constexpr int64_t kChunk = int64_t{1} << 16;

double sum_of_squares(const float* g, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(g[i]) * g[i];
  return acc;
}

}  // namespace

namespace detail {

double grad_squared_norm(const std::vector<Tensor>& params) {
  // In double: millions of float squares summed in float would lose digits.
  double total_sq = 0.0;
  std::vector<double> chunk_sums;
  for (const Tensor& p : params) {
    if (!p.defined() || !p.has_grad()) continue;
    const float* g = p.impl()->grad->data();
    const int64_t n = p.numel();
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    chunk_sums.assign(static_cast<size_t>(chunks), 0.0);
    double* sums = chunk_sums.data();
    parallel_for(chunks, chunks > 1, [=](int64_t k) {
      sums[k] = sum_of_squares(g + k * kChunk, std::min(kChunk, n - k * kChunk));
    });
    for (const double s : chunk_sums) total_sq += s;
  }
  return total_sq;
}

}  // namespace detail

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  BNLAB_CHECK(std::isfinite(max_norm) && max_norm >= 0.0f,
              "clip_grad_norm: max_norm must be finite and >= 0; got ", max_norm);
  const double total_sq = detail::grad_squared_norm(params);
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

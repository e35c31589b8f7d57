// Inverted dropout (Srivastava et al. 2014, scaled at train time as torch.nn.functional.dropout).
//
// Legend: any shape; the mask has the shape of x. p is the DROP probability.
//
// Training with 0 < p: element i is dropped when rng.uniform() < p, and survivors are scaled by
// 1/(1-p) so the expected output equals x and evaluation needs no rescaling. The mask stores the
// per-element factor (0 or 1/(1-p)), so backward is dx += dout * mask with no reference to the rng.
// p == 1 drops everything with factor 0 (no division by zero). Not training, or p == 0: x itself is
// returned (the same handle, no node), exactly the identity.
//
// The mask is drawn sequentially from rng, so a run is reproduced by the rng's seed regardless of
// threads.
//
// Reference: https://pytorch.org/docs/stable/generated/torch.nn.functional.dropout.html
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/parallel.h"

namespace bnlab {

namespace {

constexpr int64_t kParallelThreshold = 1 << 15;

// out [n] = x [n] * mask [n]
void dropout_forward(float* out, const float* x, const float* mask, int64_t n) {
  detail::parallel_for_simd(n, n > kParallelThreshold, [=](int64_t i) { out[i] = x[i] * mask[i]; });
}

// dx [n] += dout [n] * mask [n]; dx = ... when dx.fresh (see grad_target).
void dropout_backward(const GradTarget& dx, const float* dout, const float* mask, int64_t n) {
  detail::parallel_for_simd(n, n > kParallelThreshold, [=](int64_t i) {
    const float g = dout[i] * mask[i];
    dx.data[i] = dx.fresh ? g : dx.data[i] + g;
  });
}

}  // namespace

Tensor dropout(const Tensor& x, float p, bool training, Rng& rng) {
  // Written as !(in range) so that a NaN p is rejected too.
  BNLAB_CHECK(p >= 0.0f && p <= 1.0f, "dropout: p must be in [0, 1]; got ", p, " (input ",
              x.shape(), ")");
  if (!training || p == 0.0f) return x;

  // mask: same shape as x, 0 for dropped elements and 1/(1-p) for survivors.
  const int64_t n = x.numel();
  const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  Tensor mask = Tensor::empty(x.shape());
  float* pm = mask.data();
  // The draws first, in bulk (Rng::fill_uniform: the same values as n calls of rng.uniform()),
  // then the factors in a loop without a branch: drawing and comparing element by element took
  // 55 us for lenet's [64, 128] (a call and an unpredictable branch per element).
  rng.fill_uniform(pm, n);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) pm[i] = pm[i] < p ? 0.0f : keep_scale;

  Tensor out = Tensor::empty(x.shape());
  dropout_forward(out.data(), x.data(), pm, n);

  if (needs_grad({x})) {
    attach(out, "dropout", {x}, Reads::nothing(),
           [mask](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             dropout_backward(grad_target(in[0]), dout.data(), mask.data(), in[0].numel());
           });
  }
  return out;
}

}  // namespace bnlab

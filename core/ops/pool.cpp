// 2-D max pooling with saved argmax indices (as torch.nn.functional.max_pool2d, floor mode,
// dilation 1).
//
// Legend: N batch, C channels, H/W input height/width, Ho/Wo output height/width, k kernel
// (square), s stride, p padding; Ho = (H + 2p - k) / s + 1.
//
// Conventions, tested in tests/core/test_ops_pool.cpp:
//   - padded cells act as -inf: they are never selected, so every output is a real input value;
//   - ties go to the FIRST maximum in row-major window order (strict >), so the gradient is never
//   split;
//   - a NaN in the window wins (as PyTorch), so NaNs propagate instead of being silently dropped.
// Backward routes each dout to the saved argmax; overlapping windows (s < k) add up. Derivation:
// docs/derivations.md, "max_pool2d: argmax routing and ties".
//
// Reference: https://pytorch.org/docs/stable/generated/torch.nn.MaxPool2d.html
#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"

namespace bnlab {

namespace {

struct PoolDims {
  int64_t planes;  // N * C: each (n, c) plane is pooled independently
  int64_t H, W, kernel, stride, padding, Ho, Wo;
};

// out [planes, Ho, Wo] and argmax [planes, Ho, Wo] (index h*W + w inside the plane) from x [planes,
// H, W].
void max_pool2d_forward(float* out, int64_t* argmax, const float* x, const PoolDims& d) {
#pragma omp parallel for if (d.planes * d.Ho * d.Wo * d.kernel * d.kernel > (1 << 15))
  for (int64_t plane = 0; plane < d.planes; ++plane) {
    const float* xp = x + plane * d.H * d.W;
    float* op = out + plane * d.Ho * d.Wo;
    int64_t* ap = argmax + plane * d.Ho * d.Wo;
    if (d.kernel == 2 && d.stride == 2 && d.padding == 0) {
      // The common 2x2/2 case: the same comparisons in the same window order, unrolled, with no
      // window clamping (about 4x faster than the general loop below).
      for (int64_t oh = 0; oh < d.Ho; ++oh) {
        const float* r0 = xp + 2 * oh * d.W;
        const float* r1 = r0 + d.W;
        for (int64_t ow = 0; ow < d.Wo; ++ow) {
          const int64_t i0 = 2 * oh * d.W + 2 * ow;
          float best = r0[2 * ow];
          int64_t at = i0;
          // Non-short-circuit & and | with selects: on random data the comparisons are
          // unpredictable, and branches on them cost more than the rest of the loop.
          auto take = [&](float v, int64_t i) {
            bool better = (v > best) | (std::isnan(v) & !std::isnan(best));
            best = better ? v : best;
            at = better ? i : at;
          };
          take(r0[2 * ow + 1], i0 + 1);
          take(r1[2 * ow], i0 + d.W);
          take(r1[2 * ow + 1], i0 + d.W + 1);
          op[oh * d.Wo + ow] = best;
          ap[oh * d.Wo + ow] = at;
        }
      }
      continue;
    }
    for (int64_t oh = 0; oh < d.Ho; ++oh) {
      // Clamp the window to the real cells: that is what "padding is -inf" means for a max.
      int64_t h0 = std::max<int64_t>(oh * d.stride - d.padding, 0);
      int64_t h1 = std::min<int64_t>(oh * d.stride - d.padding + d.kernel, d.H);
      for (int64_t ow = 0; ow < d.Wo; ++ow) {
        int64_t w0 = std::max<int64_t>(ow * d.stride - d.padding, 0);
        int64_t w1 = std::min<int64_t>(ow * d.stride - d.padding + d.kernel, d.W);
        int64_t best = h0 * d.W + w0;
        float best_value = xp[best];
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t w = w0; w < w1; ++w) {
            float v = xp[h * d.W + w];
            // Strict > keeps the first of equal maxima; the first NaN wins and stays.
            if (v > best_value || (std::isnan(v) && !std::isnan(best_value))) {
              best_value = v;
              best = h * d.W + w;
            }
          }
        }
        op[oh * d.Wo + ow] = best_value;
        ap[oh * d.Wo + ow] = best;
      }
    }
  }
}

// dx [planes, H, W] += dout routed to the saved argmax. Parallel over planes: windows never cross
// planes.
void max_pool2d_backward(float* dx, const float* dout, const int64_t* argmax, const PoolDims& d) {
#pragma omp parallel for if (d.planes * d.Ho * d.Wo > (1 << 15))
  for (int64_t plane = 0; plane < d.planes; ++plane) {
    float* dxp = dx + plane * d.H * d.W;
    const float* gp = dout + plane * d.Ho * d.Wo;
    const int64_t* ap = argmax + plane * d.Ho * d.Wo;
    for (int64_t i = 0; i < d.Ho * d.Wo; ++i) dxp[ap[i]] += gp[i];
  }
}

}  // namespace

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  BNLAB_CHECK(x.dim() == 4, "max_pool2d: input must be [N, C, H, W]; got ", x.shape());
  BNLAB_CHECK(kernel >= 1, "max_pool2d: kernel must be >= 1; got ", kernel);
  BNLAB_CHECK(stride >= 0, "max_pool2d: stride must be >= 1 (or 0 for stride = kernel); got ",
              stride);
  if (stride == 0) stride = kernel;
  // As PyTorch, so that no window lies entirely in the padding.
  BNLAB_CHECK(padding >= 0 && padding <= kernel / 2,
              "max_pool2d: padding must be in [0, kernel / 2] = [0, ", kernel / 2, "]; got ",
              padding, " for kernel ", kernel);
  PoolDims d{};
  d.planes = x.size(0) * x.size(1);
  d.H = x.size(2);
  d.W = x.size(3);
  d.kernel = kernel;
  d.stride = stride;
  d.padding = padding;
  // With H, W >= 1 and padding <= kernel / 2, every window holds at least one real cell.
  BNLAB_CHECK(d.H >= 1 && d.W >= 1, "max_pool2d: input ", x.shape(), " has no spatial extent");
  BNLAB_CHECK(d.H + 2 * padding >= kernel && d.W + 2 * padding >= kernel, "max_pool2d: kernel ",
              kernel, " is larger than the padded input ", d.H + 2 * padding, "x",
              d.W + 2 * padding, " (input ", x.shape(), ", padding ", padding, ")");
  d.Ho = (d.H + 2 * padding - kernel) / stride + 1;
  d.Wo = (d.W + 2 * padding - kernel) / stride + 1;

  Tensor out = Tensor::empty({x.size(0), x.size(1), d.Ho, d.Wo});
  std::vector<int64_t> argmax(static_cast<size_t>(out.numel()));
  max_pool2d_forward(out.data(), argmax.data(), x.data(), d);

  if (needs_grad({x})) {
    attach(out, "max_pool2d", {x},
           [d, argmax = std::move(argmax)](const Tensor&, const Tensor& dout,
                                           const std::vector<Tensor>& in) {
             max_pool2d_backward(grad_buffer(in[0]), dout.data(), argmax.data(), d);
           });
  }
  return out;
}

}  // namespace bnlab

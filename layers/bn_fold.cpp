// BatchNorm folding into the preceding Dense/Conv2d for inference (see bn_fold.h).
#include "layers/bn_fold.h"

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/batch_norm.h"
#include "layers/conv2d.h"
#include "layers/dense.h"

namespace bnlab {

namespace {

// Folded weight [K, rest...] and bias [K] from the layer's weight/bias (bias may be undefined) and
// the BatchNorm's running statistics and affine parameters.
void fold(const Tensor& weight, const Tensor& bias, const BatchNorm& bn, Tensor* w_out,
          Tensor* b_out) {
  const int64_t K = weight.size(0);
  const int64_t per_k = weight.numel() / K;
  *w_out = Tensor::empty(weight.shape());
  *b_out = Tensor::empty({K});
  const float* w = weight.data();
  const float* b = bias.defined() ? bias.data() : nullptr;
  const float* mean = bn.running_mean().data();
  const float* var = bn.running_var().data();
  const float* gamma = bn.weight().defined() ? bn.weight().data() : nullptr;
  const float* beta = bn.bias().defined() ? bn.bias().data() : nullptr;
  const double eps = bn.options().eps;
  float* wf = w_out->data();
  float* bf = b_out->data();
  for (int64_t k = 0; k < K; ++k) {
    // The scale in double, as batch_norm_eval computes rstd; rounded once to float for the GEMM.
    const double s = (gamma ? gamma[k] : 1.0) / std::sqrt(static_cast<double>(var[k]) + eps);
    const float sf = static_cast<float>(s);
    for (int64_t i = 0; i < per_k; ++i) wf[k * per_k + i] = w[k * per_k + i] * sf;
    bf[k] = static_cast<float>(((b ? b[k] : 0.0) - mean[k]) * s + (beta ? beta[k] : 0.0));
  }
}

}  // namespace

Tensor forward_folded_batch_norm(Module& layer, Module& bn_module, const Tensor& x) {
  if (grad_enabled() || layer.is_training() || bn_module.is_training()) return {};
  if (layer.has_forward_hooks() || bn_module.has_forward_hooks()) return {};
  auto* bn = dynamic_cast<BatchNorm*>(&bn_module);
  if (!bn || !bn->options().track_running_stats) return {};
  Tensor w, b;
  if (auto* dense = dynamic_cast<Dense*>(&layer)) {
    const DenseOptions& o = dense->options();
    if (o.out_features != bn->options().num_features || x.dim() != 2 || x.size(1) != o.in_features)
      return {};
    fold(dense->weight(), dense->bias(), *bn, &w, &b);
    return linear(x, w, b);
  }
  if (auto* conv = dynamic_cast<Conv2d*>(&layer)) {
    const Conv2dOptions& o = conv->options();
    // BatchNorm2d only: a BatchNorm1d after a conv would reject the 4-D output itself.
    if (o.out_channels != bn->options().num_features || bn->type_name() != "BatchNorm2d" ||
        x.dim() != 4 || x.size(1) != o.in_channels)
      return {};
    fold(conv->weight(), conv->bias(), *bn, &w, &b);
    return conv2d(x, w, b, o.stride, o.padding);
  }
  return {};
}

}  // namespace bnlab

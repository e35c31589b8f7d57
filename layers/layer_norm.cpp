#include "layers/layer_norm.h"

#include "core/ops.h"

namespace bnlab {

LayerNorm::LayerNorm(const LayerNormOptions& o) : options_(o) {
  BNLAB_CHECK(!o.normalized_shape.empty() && numel_of(o.normalized_shape) > 0,
              "LayerNorm: normalized_shape must be non-empty; got ", o.normalized_shape);
  // layer_norm checks eps too, but only at the first forward, far from the options' mistake.
  BNLAB_CHECK(o.eps >= 0.0f, "LayerNorm: eps must be >= 0; got ", o.eps);
  if (o.elementwise_affine) {
    weight_ = register_parameter("weight", Tensor::ones(o.normalized_shape));
    bias_ = register_parameter("bias", Tensor::zeros(o.normalized_shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) {
  return layer_norm(x, options_.normalized_shape, weight_, bias_, options_.eps);
}

std::string LayerNorm::extra_repr() const {
  return bnlab::to_string(options_.normalized_shape) +
         (options_.elementwise_affine ? "" : ", no affine");
}

}  // namespace bnlab

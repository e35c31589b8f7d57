#include "layers/dense.h"

#include "core/ops.h"
#include "layers/init.h"

namespace bnlab {

Dense::Dense(const DenseOptions& options, Rng& rng) : options_(options) {
  BNLAB_CHECK(options.in_features > 0 && options.out_features > 0,
              "Dense: features must be positive; got ", options.in_features, " -> ",
              options.out_features);
  weight_ =
      register_parameter("weight", Tensor::empty({options.out_features, options.in_features}));
  if (options.bias) bias_ = register_parameter("bias", Tensor::empty({options.out_features}));
  init::torch_default_(weight_, bias_, rng);
}

Tensor Dense::forward(const Tensor& x) {
  BNLAB_CHECK(x.dim() == 2, "Dense: expected input [N, ", options_.in_features, "]; got ",
              x.shape(), x.dim() > 2 ? " (flatten it first, e.g. with a Flatten layer)" : "");
  BNLAB_CHECK(x.size(1) == options_.in_features, "Dense: input has ", x.size(1),
              " features, layer expects ", options_.in_features, " (input ", x.shape(),
              ", expected [N, ", options_.in_features, "])");
  return linear(x, weight_, bias_);
}

std::string Dense::extra_repr() const {
  return std::to_string(options_.in_features) + " -> " + std::to_string(options_.out_features) +
         (options_.bias ? ", bias" : ", no bias");
}

}  // namespace bnlab

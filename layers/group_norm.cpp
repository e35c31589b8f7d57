#include "layers/group_norm.h"

#include "core/ops.h"

namespace bnlab {

GroupNorm::GroupNorm(const GroupNormOptions& o) : options_(o) {
  BNLAB_CHECK(o.num_groups > 0 && o.num_channels > 0 && o.num_channels % o.num_groups == 0,
              "GroupNorm: ", o.num_channels, " channels not divisible into ", o.num_groups,
              " groups");
  // group_norm checks eps too, but only at the first forward, far from the options' mistake.
  BNLAB_CHECK(o.eps >= 0.0f, "GroupNorm: eps must be >= 0; got ", o.eps);
  if (o.affine) {
    weight_ = register_parameter("weight", Tensor::ones({o.num_channels}));
    bias_ = register_parameter("bias", Tensor::zeros({o.num_channels}));
  }
}

Tensor GroupNorm::forward(const Tensor& x) {
  BNLAB_CHECK(x.dim() >= 2 && x.size(1) == options_.num_channels, "GroupNorm: expected input [N, ",
              options_.num_channels, ", *]; got ", x.shape());
  return group_norm(x, options_.num_groups, weight_, bias_, options_.eps);
}

std::string GroupNorm::extra_repr() const {
  return std::to_string(options_.num_groups) + " groups, " + std::to_string(options_.num_channels) +
         " channels" + (options_.affine ? "" : ", no affine");
}

}  // namespace bnlab

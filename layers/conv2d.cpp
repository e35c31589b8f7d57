#include "layers/conv2d.h"

#include <typeinfo>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/plane_moments.h"
#include "layers/activation.h"
#include "layers/batch_norm.h"
#include "layers/init.h"
#include "layers/max_pool.h"

namespace bnlab {

Conv2d::Conv2d(const Conv2dOptions& o, Rng& rng) : options_(o) {
  BNLAB_CHECK(
      o.in_channels > 0 && o.out_channels > 0 && o.kernel > 0 && o.stride > 0 && o.padding >= 0,
      "Conv2d: invalid options in_channels=", o.in_channels, " out_channels=", o.out_channels,
      " kernel=", o.kernel, " stride=", o.stride, " padding=", o.padding);
  BNLAB_CHECK(o.groups >= 1 && o.in_channels % o.groups == 0 && o.out_channels % o.groups == 0,
              "Conv2d: groups=", o.groups, " must divide in_channels=", o.in_channels,
              " and out_channels=", o.out_channels);
  weight_ = register_parameter(
      "weight", Tensor::empty({o.out_channels, o.in_channels / o.groups, o.kernel, o.kernel}));
  if (o.bias) bias_ = register_parameter("bias", Tensor::empty({o.out_channels}));
  init::torch_default_(weight_, bias_, rng);
}

void Conv2d::check_input(const Tensor& x) const {
  BNLAB_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels, "Conv2d: expected input [N, ",
              options_.in_channels, ", H, W]; got ", x.shape());
}

Tensor Conv2d::forward(const Tensor& x) {
  check_input(x);
  return conv2d(x, weight_, bias_, options_.stride, options_.padding, options_.groups);
}

FusedForward Conv2d::forward_fused(std::span<Module* const> next, const Tensor& x) {
  // Exactly Conv2d: a user's subclass (a weight-standardized or masked conv) overrides forward(),
  // which the fused ops below would skip.
  if (next.empty() || typeid(*this) != typeid(Conv2d)) return {};
  const Conv2dOptions& o = options_;
  // A BatchNorm2d on batch statistics: its first pass, each plane's moments, done here while the
  // conv's output is in cache instead of in a pass of its own over the whole output.
  if (auto* bn = dynamic_cast<BatchNorm*>(next[0]); bn && bn->takes_conv_planes()) {
    check_input(x);
    plane_moments_.resize(static_cast<size_t>(2 * x.size(0) * o.out_channels));
    const Tensor y = detail::conv2d_with_plane_moments(
        x, weight_, bias_, o.stride, o.padding, o.groups, /*relu=*/false, plane_moments_.data());
    const FusedForward rest = bn->forward_given_planes(next.subspan(1), y, plane_moments_.data());
    return {rest.output, rest.modules};
  }
  // Exactly ReLU (a subclass may compute something else).
  if (typeid(*next[0]) != typeid(ReLU)) return {};
  check_input(x);
  // With gradients and exactly a MaxPool2d after the ReLU: the pool first, then relu. relu is
  // monotone, so it commutes with max: the values are max_pool2d(relu(y))'s and so are the
  // gradients (the winner of a window with a positive maximum is the same element either way; a
  // window whose maximum is <= 0 gets gradient 0 either way), while relu's forward and backward
  // pass over the pooled tensor instead of y (a quarter of it for 2x2). Only zeros may differ,
  // in sign: relu keeps -0.0 (relu_value), so the pooled zero of a window whose largest value is
  // -0.0 (and the zero gradients of windows with no positive value) can come out with the other
  // sign, which no later sum or product can tell apart from the same zero. Without gradients
  // conv2d_relu's fused write costs less still. Without a pool (or without gradients) it is
  // conv2d_relu, which writes relu(conv) directly in training too.
  if (next.size() >= 2 && typeid(*next[1]) == typeid(MaxPool2d) &&
      needs_grad({x, weight_, bias_})) {
    const auto& pool = static_cast<const MaxPool2d&>(*next[1]);
    const Tensor y = conv2d(x, weight_, bias_, o.stride, o.padding, o.groups);
    return {relu(max_pool2d(y, pool.kernel(), pool.stride(), pool.padding())), 2};
  }
  return {conv2d_relu(x, weight_, bias_, o.stride, o.padding, o.groups), 1};
}

std::string Conv2d::extra_repr() const {
  const Conv2dOptions& o = options_;
  return std::to_string(o.in_channels) + " -> " + std::to_string(o.out_channels) + ", " +
         std::to_string(o.kernel) + "x" + std::to_string(o.kernel) +
         (o.stride != 1 ? ", stride " + std::to_string(o.stride) : "") +
         (o.padding != 0 ? ", pad " + std::to_string(o.padding) : "") +
         (o.groups != 1 ? ", groups " + std::to_string(o.groups) : "") +
         (o.bias ? "" : ", no bias");
}

}  // namespace bnlab

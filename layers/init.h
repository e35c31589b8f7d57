// Weight initializers, in place, following torch.nn.init
// (https://pytorch.org/docs/stable/nn.init.html).
//
// fan_in / fan_out of a weight: Dense [K, D] has fan_in D, fan_out K; Conv2d [K, C, kh, kw] has
// fan_in C*kh*kw, fan_out K*kh*kw. Gains follow torch.nn.init.calculate_gain.
#pragma once

#include <string>

#include "core/random.h"
#include "core/tensor.h"

namespace bnlab::init {

/// A weight's fan-in and fan-out as torch.nn.init computes them.
struct Fans {
  int64_t in;   ///< fan_in: inputs per output unit (D, or C * kh * kw)
  int64_t out;  ///< fan_out: outputs per input unit (K, or K * kh * kw)
};
Fans fans(const Tensor& weight);  ///< throws for rank < 2

/// torch.nn.init.calculate_gain: "linear", "conv1d/2d/3d", "conv_transpose1d/2d/3d" and "sigmoid"
/// 1, "tanh" 5/3, "relu" sqrt(2), "leaky_relu" sqrt(2/(1+a^2)), "selu" 3/4.
float gain(const std::string& nonlinearity, float param = 0.01f);

/// Fills `t` with U(low, high) in place. Throws unless low and high are finite, low <= high and
/// high - low is finite (torch.nn.init.uniform_'s checks).
void uniform_(const Tensor& t, Rng& rng, float low, float high);
/// Fills `t` with N(mean, std^2) in place. Throws if std < 0 or NaN, as PyTorch.
void normal_(const Tensor& t, Rng& rng, float mean, float std);
/// Fills `t` with `value` in place.
void constant_(const Tensor& t, float value);
/// U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).
void xavier_uniform_(const Tensor& t, Rng& rng, float gain = 1.0f);
/// N(0, gain^2 * 2 / (fan_in + fan_out)).
void xavier_normal_(const Tensor& t, Rng& rng, float gain = 1.0f);
/// U(-b, b), b = gain(nonlinearity, a) * sqrt(3 / fan); fan = fan_in unless fan_out_mode. A tensor
/// with no elements is left as it is, as in PyTorch.
void kaiming_uniform_(const Tensor& t, Rng& rng, float a = 0.0f, bool fan_out_mode = false,
                      const std::string& nonlinearity = "leaky_relu");
/// N(0, (gain / sqrt(fan))^2). A tensor with no elements is left as it is, as in PyTorch.
void kaiming_normal_(const Tensor& t, Rng& rng, float a = 0.0f, bool fan_out_mode = false,
                     const std::string& nonlinearity = "leaky_relu");

/// PyTorch's default for nn.Linear and nn.Conv2d (reset_parameters): weight kaiming_uniform_ with
/// a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
/// or zeros when fan_in is 0.
void torch_default_(const Tensor& weight, const Tensor& bias, Rng& rng);

/// Applies a named scheme to a weight: "default" (PyTorch's), "xavier-uniform", "xavier-normal",
/// "kaiming-uniform", "kaiming-normal" (relu gain, fan_in), or "normal:<std>" (the BN paper's small
/// Gaussian). Biases are zeroed for every scheme but "default". Throws listing the schemes for an
/// unknown name.
void apply_scheme(const std::string& scheme, const Tensor& weight, const Tensor& bias, Rng& rng);

}  // namespace bnlab::init

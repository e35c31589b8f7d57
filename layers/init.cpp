// torch.nn.init's formulas, in place. Draws go through the caller's Rng so initial weights are a
// function of the seed alone.
#include "layers/init.h"

#include <cmath>

#include "core/error.h"

namespace bnlab::init {

Fans fans(const Tensor& weight) {
  BNLAB_CHECK(weight.dim() >= 2, "init: fan in/out need a weight of rank >= 2; got ",
              weight.shape());
  int64_t receptive = 1;
  for (int64_t d = 2; d < weight.dim(); ++d) receptive *= weight.size(d);
  return {weight.size(1) * receptive, weight.size(0) * receptive};
}

float gain(const std::string& nonlinearity, float param) {
  // torch.nn.init.calculate_gain's names: the linear maps (1), then the nonlinearities.
  for (const char* linear : {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                             "conv_transpose2d", "conv_transpose3d", "sigmoid"}) {
    if (nonlinearity == linear) return 1.0f;
  }
  if (nonlinearity == "tanh") return 5.0f / 3.0f;
  if (nonlinearity == "relu") return std::sqrt(2.0f);
  if (nonlinearity == "leaky_relu") return std::sqrt(2.0f / (1.0f + param * param));
  if (nonlinearity == "selu") return 0.75f;
  BNLAB_FAIL("init: unknown nonlinearity '", nonlinearity,
             "'; expected linear, conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, "
             "conv_transpose3d, sigmoid, tanh, relu, leaky_relu or selu");
}

void uniform_(const Tensor& t, Rng& rng, float low, float high) {
  detail::check_uniform_range("init::uniform_", low, high);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(low, high);
  t.bump_version();
}

void normal_(const Tensor& t, Rng& rng, float mean, float std) {
  detail::check_normal_std("init::normal_", std);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.normal(mean, std);
  t.bump_version();
}

void constant_(const Tensor& t, float value) { t.fill_(value); }

void xavier_uniform_(const Tensor& t, Rng& rng, float g) {
  Fans f = fans(t);
  float bound = g * std::sqrt(6.0f / static_cast<float>(f.in + f.out));
  uniform_(t, rng, -bound, bound);
}

void xavier_normal_(const Tensor& t, Rng& rng, float g) {
  Fans f = fans(t);
  normal_(t, rng, 0.0f, g * std::sqrt(2.0f / static_cast<float>(f.in + f.out)));
}

void kaiming_uniform_(const Tensor& t, Rng& rng, float a, bool fan_out_mode,
                      const std::string& nonlinearity) {
  Fans f = fans(t);
  // As PyTorch: with no elements there is nothing to fill, and the fan, 0, would give an infinite
  // bound that uniform_ refuses.
  if (t.numel() == 0) return;
  float std = gain(nonlinearity, a) / std::sqrt(static_cast<float>(fan_out_mode ? f.out : f.in));
  float bound = std::sqrt(3.0f) * std;
  uniform_(t, rng, -bound, bound);
}

void kaiming_normal_(const Tensor& t, Rng& rng, float a, bool fan_out_mode,
                     const std::string& nonlinearity) {
  Fans f = fans(t);
  if (t.numel() == 0) return;  // as kaiming_uniform_
  normal_(t, rng, 0.0f,
          gain(nonlinearity, a) / std::sqrt(static_cast<float>(fan_out_mode ? f.out : f.in)));
}

void torch_default_(const Tensor& weight, const Tensor& bias, Rng& rng) {
  kaiming_uniform_(weight, rng, std::sqrt(5.0f));
  if (bias.defined()) {
    // PyTorch's reset_parameters: bound 0 when fan_in is 0, where 1/sqrt(0) would fill in NaN.
    const int64_t fan_in = fans(weight).in;
    const float bound = fan_in > 0 ? 1.0f / std::sqrt(static_cast<float>(fan_in)) : 0.0f;
    uniform_(bias, rng, -bound, bound);
  }
}

void apply_scheme(const std::string& scheme, const Tensor& weight, const Tensor& bias, Rng& rng) {
  if (scheme == "default") {
    torch_default_(weight, bias, rng);
    return;
  }
  if (scheme == "xavier-uniform") {
    xavier_uniform_(weight, rng);
  } else if (scheme == "xavier-normal") {
    xavier_normal_(weight, rng);
  } else if (scheme == "kaiming-uniform") {
    kaiming_uniform_(weight, rng, 0.0f, false, "relu");
  } else if (scheme == "kaiming-normal") {
    kaiming_normal_(weight, rng, 0.0f, false, "relu");
  } else if (scheme.rfind("normal:", 0) == 0) {
    float std = 0.0f;
    size_t used = 0;
    const std::string text = scheme.substr(7);
    try {
      std = std::stof(text, &used);
    } catch (const std::exception&) {
    }
    // (stof stops at the first character it cannot read: "0.01abc" was read as 0.01.)
    BNLAB_CHECK(used > 0 && used == text.size(), "init: cannot read the std in '", scheme,
                "'; expected e.g. normal:0.1");
    BNLAB_CHECK(std > 0.0f && std::isfinite(std), "init: std must be positive in '", scheme, "'");
    normal_(weight, rng, 0.0f, std);
  } else {
    BNLAB_FAIL("init: unknown scheme '", scheme,
               "'; expected default, xavier-uniform, xavier-normal, kaiming-uniform, "
               "kaiming-normal, normal:<std>");
  }
  if (bias.defined()) bias.fill_(0.0f);
}

}  // namespace bnlab::init

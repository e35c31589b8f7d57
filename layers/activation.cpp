#include "layers/activation.h"

#include <cmath>
#include <sstream>
#include <utility>

#include "core/error.h"
#include "core/ops.h"

namespace bnlab {

Tensor Identity::forward(const Tensor& x) { return x; }
Tensor ReLU::forward(const Tensor& x) { return relu(x); }
Tensor LeakyReLU::forward(const Tensor& x) { return leaky_relu(x, slope_); }
Tensor Sigmoid::forward(const Tensor& x) { return sigmoid(x); }
Tensor Tanh::forward(const Tensor& x) { return tanh(x); }

Tensor SiLU::forward(const Tensor& x) { return silu(x); }
Tensor ELU::forward(const Tensor& x) { return elu(x, alpha_); }
Tensor GELU::forward(const Tensor& x) { return gelu(x, approximate_); }
Tensor Softplus::forward(const Tensor& x) { return softplus(x, beta_, threshold_); }

GELU::GELU(std::string approximate) : approximate_(std::move(approximate)) {
  BNLAB_CHECK(approximate_ == "none" || approximate_ == "tanh",
              "GELU: approximate must be 'none' or 'tanh'; got '", approximate_, "'");
}

Softplus::Softplus(float beta, float threshold) : beta_(beta), threshold_(threshold) {
  BNLAB_CHECK(beta != 0.0f && std::isfinite(beta),
              "Softplus: beta must be finite and nonzero; got ", beta);
}

std::string GELU::extra_repr() const { return "approximate='" + approximate_ + "'"; }

std::string ELU::extra_repr() const {
  std::ostringstream os;
  os << "alpha=" << alpha_;
  return os.str();
}

std::string Softplus::extra_repr() const {
  std::ostringstream os;
  os << "beta=" << beta_ << ", threshold=" << threshold_;
  return os.str();
}

std::string LeakyReLU::extra_repr() const {
  std::ostringstream os;
  os << "negative_slope=" << slope_;
  return os.str();
}

}  // namespace bnlab

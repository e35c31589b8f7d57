// Activations beyond relu/sigmoid/tanh: gelu (exact and tanh-approximated), silu, elu, softplus,
// softsign, hardtanh, as torch.nn.functional names and defines them.
//
// Legend: x input, y output (same shape), s = sigmoid(x).
//
// Conventions, tested in tests/core/test_ops_activation.cpp:
//   - gelu(x) = x Phi(x); Phi from erfc, so the lower tail keeps its relative accuracy (PyTorch's
//     float 0.5 x (1 + erf(x / sqrt 2)) cancels to 0 or noise below x = -6). approximate = "tanh"
//     is 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as x sigmoid(2u)
//     (1 + tanh(u) = 2 sigmoid(2u)): the same function without the cancellation.
//   - silu(x) = x s; silu'(x) = s (1 + x (1 - s)).
//   - elu(x) = x for x > 0, alpha (e^x - 1) otherwise (expm1: no cancellation near 0). At the kink
//     x = 0 the gradient is alpha e^0 = alpha (PyTorch takes the x <= 0 branch there).
//   - softplus(x) = log(1 + e^(beta x)) / beta, and x itself where beta x > threshold (PyTorch's
//     switch to linear, gradient exactly 1 there). Below it computed as max(bx, 0) +
//     log1p(e^-|bx|), which never overflows; the gradient is sigmoid(beta x).
//   - softsign(x) = x / (1 + |x|); hardtanh is clamp to [min_val, max_val] with a zero gradient at
//     and beyond the bounds (PyTorch's hardtanh_backward; clamp passes it at the bounds).
//   - NaN in, NaN out (forward and, through the multiplications, backward); +-inf map to the
//     function's limits.
// The kernels are the branch-free functions of core/ops/fast_math.h, so the loops vectorize: a
// swish model spent 19 % of its time in scalar expf (issue 17). Accuracy vs exact: a few 1e-7
// relative (fast_math.h states the bounds).
//
// References: https://pytorch.org/docs/stable/generated/torch.nn.GELU.html, .SiLU, .ELU, .Softplus;
// Hendrycks & Gimpel, "Gaussian Error Linear Units" (2016).
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/ops.h"
#include "core/ops/fast_math.h"
#include "core/ops/unary_op.h"

namespace bnlab {

using detail::unary;

namespace {

constexpr float kSqrt2OverPi = 0.79788456080286536f;  // sqrt(2 / pi)
constexpr float kInvSqrt2Pi = 0.39894228040143268f;   // 1 / sqrt(2 pi)
constexpr float kGeluTanhCubic = 0.044715f;

}  // namespace

Tensor gelu(const Tensor& x, std::string_view approximate) {
  if (approximate == "none") {
    // gelu'(x) = Phi(x) + x phi(x).
    return unary(
        "gelu", x, detail::kReadsX, [](float v) { return v * detail::normal_cdf(v); },
        [](float v, float) {
          return detail::normal_cdf(v) + v * kInvSqrt2Pi * detail::gauss_fast(v);
        });
  }
  BNLAB_CHECK(approximate == "tanh", "gelu: approximate must be 'none' or 'tanh'; got '",
              std::string(approximate), "'");
  // With s = sigmoid(2u): y = x s, and 1 - tanh(u)^2 = 4 s (1 - s), so
  // y' = s + 2 x s (1 - s) u'(x) with u'(x) = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
  return unary(
      "gelu", x, detail::kReadsX,
      [](float v) {
        float u = kSqrt2OverPi * (v + kGeluTanhCubic * v * v * v);
        return v * detail::sigmoid_fast(2.0f * u);
      },
      [](float v, float) {
        float u = kSqrt2OverPi * (v + kGeluTanhCubic * v * v * v);
        float s = detail::sigmoid_fast(2.0f * u);
        float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluTanhCubic * v * v);
        return s + 2.0f * v * s * (1.0f - s) * du;
      });
}

Tensor silu(const Tensor& x) {
  return unary(
      "silu", x, detail::kReadsX, [](float v) { return v * detail::sigmoid_fast(v); },
      [](float v, float) {
        float s = detail::sigmoid_fast(v);
        return s * (1.0f + v * (1.0f - s));
      });
}

Tensor elu(const Tensor& x, float alpha) {
  // For x <= 0, y' = alpha e^x = y + alpha: no second exp.
  return unary(
      "elu", x, detail::kReadsXY,
      [alpha](float v) { return v > 0.0f ? v : alpha * detail::expm1_fast(v); },
      [alpha](float v, float y) { return v > 0.0f ? 1.0f : y + alpha; });
}

Tensor softplus(const Tensor& x, float beta, float threshold) {
  BNLAB_CHECK(beta != 0.0f && std::isfinite(beta),
              "softplus: beta must be finite and nonzero; got ", beta);
  return unary(
      "softplus", x, detail::kReadsX,
      [beta, threshold](float v) {
        float bx = beta * v;
        float smooth =
            ((bx > 0.0f ? bx : 0.0f) + detail::log1p_fast(detail::exp_fast(-std::fabs(bx)))) / beta;
        return bx > threshold ? v : smooth;
      },
      [beta, threshold](float v, float) {
        float bx = beta * v;
        return bx > threshold ? 1.0f : detail::sigmoid_fast(bx);
      });
}

Tensor softsign(const Tensor& x) {
  return unary(
      "softsign", x, detail::kReadsX, [](float v) { return v / (1.0f + std::fabs(v)); },
      [](float v, float) {
        float d = 1.0f + std::fabs(v);
        return 1.0f / (d * d);
      });
}

Tensor hardtanh(const Tensor& x, float min_val, float max_val) {
  BNLAB_CHECK(min_val <= max_val, "hardtanh: min_val ", min_val, " exceeds max_val ", max_val);
  // clamp's forward; the gradient is zero AT the bounds too (PyTorch's hardtanh_backward tests
  // x <= min_val || x >= max_val), unlike clamp's. A NaN passes its gradient (both tests false).
  return unary(
      "hardtanh", x, detail::kReadsX,
      [min_val, max_val](float v) {
        float y = v < min_val ? min_val : v;
        return y > max_val ? max_val : y;
      },
      [min_val, max_val](float v, float) { return v <= min_val || v >= max_val ? 0.0f : 1.0f; });
}

}  // namespace bnlab

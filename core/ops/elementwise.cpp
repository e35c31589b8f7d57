// Elementwise ops: broadcasting binary arithmetic, scalar arithmetic, and unary math/activations.
//
// Binary ops broadcast NumPy-style. Their backward reduces each gradient to its input's shape with
// the one shared helper sum_to_shape (tinygrad's and ggml's repeat_back idea), so no op
// reimplements the reduction. Unary ops go through one template (core/ops/unary_op.h) whose
// backward multiplies dout by f'(x, y), the derivative written in terms of the input x and the
// saved output y (sigmoid' = y(1-y) needs no recomputation). exp, sigmoid and tanh use the
// vectorizable kernels of core/ops/fast_math.h (within 2 ulp of libm; scalar expf made them
// compute-bound).
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/fast_math.h"
#include "core/ops/unary_op.h"
#include "core/parallel.h"

namespace bnlab {

namespace {

using detail::kParallelThreshold;
using detail::unary;

// Strides of `shape` laid out inside `out_rank` dims (left-padded with 1s); broadcast dims get
// stride 0.
std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out_shape) {
  size_t r = out_shape.size();
  std::vector<int64_t> strides(r, 0);
  int64_t stride = 1;
  for (size_t k = 0; k < shape.size(); ++k) {
    size_t src = shape.size() - 1 - k;
    size_t dst = r - 1 - k;
    strides[dst] = shape[src] == 1 && out_shape[dst] != 1 ? 0 : stride;
    stride *= shape[src];
  }
  return strides;
}

// Calls f(out_index, a_index, b_index) for every element of out_shape, walking a and b with
// broadcast strides. The last dimension is the inner loop so the common cases ([N, D] + [D]) stay
// cache friendly.
template <typename F>
void for_each_broadcast(const Shape& out_shape, const std::vector<int64_t>& sa,
                        const std::vector<int64_t>& sb, F f) {
  size_t r = out_shape.size();
  if (r == 0) {
    f(0, 0, 0);
    return;
  }
  int64_t inner = out_shape[r - 1];
  int64_t ia_inner = sa[r - 1], ib_inner = sb[r - 1];
  int64_t outer = numel_of(out_shape) / std::max<int64_t>(inner, 1);
  if (inner == 0) return;
  std::vector<int64_t> idx(r, 0);
  int64_t o = 0;
  for (int64_t row = 0; row < outer; ++row) {
    int64_t ia = 0, ib = 0;
    for (size_t d = 0; d + 1 < r; ++d) {
      ia += idx[d] * sa[d];
      ib += idx[d] * sb[d];
    }
    for (int64_t j = 0; j < inner; ++j) f(o++, ia + j * ia_inner, ib + j * ib_inner);
    for (size_t d = r - 1; d-- > 0;) {  // odometer over the outer dims
      if (++idx[d] < out_shape[d]) break;
      idx[d] = 0;
    }
  }
}

// out = f(a, b) elementwise with broadcasting.
template <typename F>
Tensor binary_forward(const char* op, const Tensor& a, const Tensor& b, F f) {
  Shape out_shape = broadcast_shape(op, a.shape(), b.shape());
  Tensor out = Tensor::empty(out_shape);
  float* o = out.data();
  const float* pa = a.data();
  const float* pb = b.data();
  int64_t n = out.numel();
  if (a.shape() == b.shape()) {
    detail::parallel_for_simd(n, n > kParallelThreshold,
                              [=](int64_t i) { o[i] = f(pa[i], pb[i]); });
  } else if (b.numel() == 1 && a.shape() == out_shape) {
    float s = pb[0];
    detail::parallel_for_simd(n, n > kParallelThreshold, [=](int64_t i) { o[i] = f(pa[i], s); });
  } else {
    for_each_broadcast(out_shape, broadcast_strides(a.shape(), out_shape),
                       broadcast_strides(b.shape(), out_shape),
                       [&](int64_t i, int64_t ia, int64_t ib) { o[i] = f(pa[ia], pb[ib]); });
  }
  return out;
}

// Adds g (shape of the op's output) into input's grad, reduced to the input's shape.
void accumulate_reduced(const char* op, const Tensor& input, const Tensor& g) {
  if (!input.defined() || !input.requires_grad()) return;
  accumulate_grad(op, input, sum_to_shape(g, input.shape()));
}

// The gradient of one operand, computed as a full-size tensor then reduced: da = dout *
// d(out)/d(a).
template <typename F>
Tensor full_grad(const Tensor& dout, const Tensor& a, const Tensor& b, F partial) {
  Tensor g = Tensor::empty(dout.shape());
  float* pg = g.data();
  const float* pd = dout.data();
  const float* pa = a.data();
  const float* pb = b.data();
  if (a.shape() == dout.shape() && b.shape() == dout.shape()) {
    int64_t n = g.numel();
    detail::parallel_for_simd(n, n > kParallelThreshold,
                              [=](int64_t i) { pg[i] = pd[i] * partial(pa[i], pb[i]); });
  } else {
    for_each_broadcast(
        dout.shape(), broadcast_strides(a.shape(), dout.shape()),
        broadcast_strides(b.shape(), dout.shape()),
        [&](int64_t i, int64_t ia, int64_t ib) { pg[i] = pd[i] * partial(pa[ia], pb[ib]); });
  }
  return g;
}

}  // namespace

Shape broadcast_shape(const char* op, const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t k = 0; k < r; ++k) {
    int64_t da = k < a.size() ? a[a.size() - 1 - k] : 1;
    int64_t db = k < b.size() ? b[b.size() - 1 - k] : 1;
    BNLAB_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b,
                " cannot be broadcast together");
    out[r - 1 - k] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  // The target must broadcast to g's shape; anything else is an engine bug surfaced with both
  // shapes.
  BNLAB_CHECK(broadcast_shape("sum_to_shape", shape, g.shape()) == g.shape(),
              "sum_to_shape: ", shape, " does not broadcast to ", g.shape());
  Tensor out = Tensor::zeros(shape);
  float* po = out.data();
  const float* pg = g.data();
  std::vector<int64_t> none(g.shape().size(), 0);
  for_each_broadcast(g.shape(), broadcast_strides(shape, g.shape()), none,
                     [&](int64_t i, int64_t io, int64_t) { po[io] += pg[i]; });
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("add", a, b, [](float x, float y) { return x + y; });
  if (needs_grad({a, b})) {
    attach(out, "add", {a, b}, Reads::nothing(),
           [](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             accumulate_reduced("add", in[0], dout);
             accumulate_reduced("add", in[1], dout);
           });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("sub", a, b, [](float x, float y) { return x - y; });
  if (needs_grad({a, b})) {
    attach(out, "sub", {a, b}, Reads::nothing(),
           [](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             accumulate_reduced("sub", in[0], dout);
             if (in[1].requires_grad()) accumulate_reduced("sub", in[1], mul_scalar(dout, -1.0f));
           });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("mul", a, b, [](float x, float y) { return x * y; });
  if (needs_grad({a, b})) {
    attach(
        out, "mul", {a, b}, Reads::crosswise(),
        [](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
          const Tensor &a = in[0], &b = in[1];
          if (a.requires_grad())
            accumulate_reduced("mul", a, full_grad(dout, a, b, [](float, float y) { return y; }));
          if (b.requires_grad())
            accumulate_reduced("mul", b, full_grad(dout, a, b, [](float x, float) { return x; }));
        });
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  // d/da = 1 / b; d/db = -a / b^2.
  constexpr Reads kDivReads{{Reads::for_grad_of(1), Reads::kAlways, Reads::kNever}, Reads::kNever};
  Tensor out = binary_forward("div", a, b, [](float x, float y) { return x / y; });
  if (needs_grad({a, b})) {
    attach(out, "div", {a, b}, kDivReads,
           [](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             const Tensor &a = in[0], &b = in[1];
             if (a.requires_grad())
               accumulate_reduced("div", a,
                                  full_grad(dout, a, b, [](float, float y) { return 1.0f / y; }));
             if (b.requires_grad())
               accumulate_reduced(
                   "div", b, full_grad(dout, a, b, [](float x, float y) { return -x / (y * y); }));
           });
  }
  return out;
}

Tensor neg(const Tensor& x) { return mul_scalar(x, -1.0f); }

Tensor add_scalar(const Tensor& x, float s) {
  return unary(
      "add_scalar", x, detail::kReadsNone, [s](float v) { return v + s; },
      [](float, float) { return 1.0f; });
}

Tensor mul_scalar(const Tensor& x, float s) {
  return unary(
      "mul_scalar", x, detail::kReadsNone, [s](float v) { return v * s; },
      [s](float, float) { return s; });
}

Tensor exp(const Tensor& x) {
  return unary(
      "exp", x, detail::kReadsY, [](float v) { return detail::exp_fast(v); },
      [](float, float y) { return y; });
}

Tensor log(const Tensor& x) {
  return unary(
      "log", x, detail::kReadsX, [](float v) { return std::log(v); },
      [](float v, float) { return 1.0f / v; });
}

Tensor sqrt(const Tensor& x) {
  return unary(
      "sqrt", x, detail::kReadsY, [](float v) { return std::sqrt(v); },
      [](float, float y) { return 0.5f / y; });
}

namespace {

// x^e as PyTorch computes it: e = 0.5 and -0.5 as sqrt and 1 / sqrt, which differ from C's pow at
// -inf (pow(-inf, 0.5) = +inf by the C standard, sqrt(-inf) = NaN); otherwise C's pow.
float power(float v, float e) {
  if (e == 0.5f) return std::sqrt(v);
  if (e == -0.5f) return 1.0f / std::sqrt(v);
  return std::pow(v, e);
}

}  // namespace

Tensor pow(const Tensor& x, float p) {
  // The derivative p x^(p-1) is 0 for p = 0, as PyTorch's pow_backward: not 0 * x^-1, which is
  // NaN at x = 0. x^(p-1) takes power()'s route too (p = 1.5 at -inf: NaN, as PyTorch).
  return unary(
      "pow", x, detail::kReadsX, [p](float v) { return power(v, p); },
      [p](float v, float) { return p == 0.0f ? 0.0f : p * power(v, p - 1.0f); });
}

Tensor relu(const Tensor& x) {
  // NaN passes through (v < 0 is false for NaN), as torch.relu does, so a non-finite activation
  // still reaches the loss and the non-finite guard. The backward is PyTorch's threshold_backward
  // (relu_grad), taken from the output as PyTorch's is (exact: y <= 0 where x <= 0), so it reads
  // what torch saves and an in-place write to x after the forward is harmless.
  return unary(
      "relu", x, detail::kReadsY, [](float v) { return detail::relu_value(v); },
      [](float g, float, float y) { return detail::relu_grad(g, y); });
}

Tensor leaky_relu(const Tensor& x, float slope) {
  // At 0 the derivative is the slope, as in PyTorch (x > 0 takes the identity branch).
  return unary(
      "leaky_relu", x, detail::kReadsX, [slope](float v) { return v > 0.0f ? v : slope * v; },
      [slope](float v, float) { return v > 0.0f ? 1.0f : slope; });
}

Tensor sigmoid(const Tensor& x) {
  // e^-|x| never overflows; see sigmoid_fast.
  return unary(
      "sigmoid", x, detail::kReadsY, [](float v) { return detail::sigmoid_fast(v); },
      [](float, float y) { return detail::sigmoid_derivative(y); });
}

Tensor tanh(const Tensor& x) {
  return unary(
      "tanh", x, detail::kReadsY, [](float v) { return detail::tanh_fast(v); },
      [](float, float y) { return 1.0f - y * y; });
}

// ---- PyTorch's other pointwise ops ----
//
// Subgradients and NaN, as torch (tests/core/test_ops_elementwise.cpp pins each):
//   - abs'(0) = 0 (sign(0)); abs'(NaN) = 0, as PyTorch's sgn.
//   - sign has a zero gradient everywhere; sign(NaN) = NaN. PyTorch returns 0 there, a known
//     divergence from NumPy it tracks as a bug (pytorch/pytorch#41245); we propagate, so a NaN
//     still reaches the non-finite guard.
//   - clamp passes the gradient where min <= x <= max, bounds included; min > max makes every
//     output max (torch.clamp); NaN stays NaN with a zero gradient.
//   - maximum/minimum: NaN in either input gives NaN; at ties a == b each input gets half the
//     gradient (PyTorch's split); otherwise the chosen input gets all of it.
//   - where: the gradient goes to the selected input only (none to the condition).

Tensor abs(const Tensor& x) {
  return unary(
      "abs", x, detail::kReadsX, [](float v) { return std::fabs(v); },
      [](float v, float) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); });
}

Tensor sign(const Tensor& x) {
  return unary(
      "sign", x, detail::kReadsNone,
      [](float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : (v == 0.0f ? 0.0f : v)); },
      [](float, float) { return 0.0f; });
}

Tensor square(const Tensor& x) {
  return unary(
      "square", x, detail::kReadsX, [](float v) { return v * v; },
      [](float v, float) { return 2.0f * v; });
}

Tensor reciprocal(const Tensor& x) {
  return unary(
      "reciprocal", x, detail::kReadsY, [](float v) { return 1.0f / v; },
      [](float, float y) { return -y * y; });
}

Tensor rsqrt(const Tensor& x) {
  return unary(
      "rsqrt", x, detail::kReadsY, [](float v) { return 1.0f / std::sqrt(v); },
      [](float, float y) { return -0.5f * y * y * y; });
}

Tensor sin(const Tensor& x) {
  return unary(
      "sin", x, detail::kReadsX, [](float v) { return std::sin(v); },
      [](float v, float) { return std::cos(v); });
}

Tensor cos(const Tensor& x) {
  return unary(
      "cos", x, detail::kReadsX, [](float v) { return std::cos(v); },
      [](float v, float) { return -std::sin(v); });
}

Tensor log1p(const Tensor& x) {
  return unary(
      "log1p", x, detail::kReadsX, [](float v) { return std::log1p(v); },
      [](float v, float) { return 1.0f / (1.0f + v); });
}

Tensor expm1(const Tensor& x) {
  return unary(
      "expm1", x, detail::kReadsY, [](float v) { return detail::expm1_fast(v); },
      [](float, float y) { return y + 1.0f; });
}

Tensor clamp(const Tensor& x, std::optional<float> min, std::optional<float> max) {
  BNLAB_CHECK(min || max, "clamp: at least one of min and max must be given (input ", x.shape(),
              ")");
  BNLAB_CHECK(!(min && std::isnan(*min)) && !(max && std::isnan(*max)),
              "clamp: a bound is NaN (min ", min.value_or(0.0f), ", max ", max.value_or(0.0f), ")");
  const float lo = min.value_or(-std::numeric_limits<float>::infinity());
  const float hi = max.value_or(std::numeric_limits<float>::infinity());
  // Two selects in this order give torch's min > max rule and keep NaN (both tests are false).
  return unary(
      "clamp", x, detail::kReadsX,
      [lo, hi](float v) {
        float y = v < lo ? lo : v;
        return y > hi ? hi : y;
      },
      [lo, hi](float v, float) { return v >= lo && v <= hi ? 1.0f : 0.0f; });
}

Tensor clamp_min(const Tensor& x, float min) { return clamp(x, min, std::nullopt); }
Tensor clamp_max(const Tensor& x, float max) { return clamp(x, std::nullopt, max); }

namespace {

// maximum (kMax) or minimum: beats(x, y) says x is chosen over y; a NaN is always chosen, so it
// propagates. The gradient of each input is 1 where it was chosen alone, 1/2 at ties.
template <bool kMax>
Tensor extremum(const char* op, const Tensor& a, const Tensor& b) {
  auto beats = [](float x, float y) { return kMax ? x > y : x < y; };
  Tensor out =
      binary_forward(op, a, b, [beats](float x, float y) { return beats(x, y) || x != x ? x : y; });
  if (needs_grad({a, b})) {
    attach(out, op, {a, b}, Reads::only_inputs(),
           [op, beats](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             const Tensor &a = in[0], &b = in[1];
             if (a.requires_grad())
               accumulate_reduced(op, a, full_grad(dout, a, b, [beats](float x, float y) {
                                    return x == y ? 0.5f : (beats(y, x) ? 0.0f : 1.0f);
                                  }));
             if (b.requires_grad())
               accumulate_reduced(op, b, full_grad(dout, a, b, [beats](float x, float y) {
                                    return x == y ? 0.5f : (beats(x, y) ? 0.0f : 1.0f);
                                  }));
           });
  }
  return out;
}

}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return extremum<true>("maximum", a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum<false>("minimum", a, b); }

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  Shape out_shape;
  try {
    out_shape =
        broadcast_shape("where", condition.shape(), broadcast_shape("where", a.shape(), b.shape()));
  } catch (const Error&) {
    BNLAB_FAIL("where: condition ", condition.shape(), ", input ", a.shape(), " and other ",
               b.shape(), " cannot be broadcast together");
  }
  const float* pc = condition.data();
  for (int64_t i = 0; i < condition.numel(); ++i) {
    BNLAB_CHECK(pc[i] == 0.0f || pc[i] == 1.0f, "where: condition must hold 0 or 1; got ", pc[i],
                " at flat index ", i, " (condition ", condition.shape(), ")");
  }
  // mask: the condition stretched to the output's shape, saved for backward.
  Tensor mask = Tensor::empty(out_shape);
  float* pm = mask.data();
  const size_t r = out_shape.size();
  for_each_broadcast(out_shape, broadcast_strides(condition.shape(), out_shape),
                     std::vector<int64_t>(r, 0),
                     [&](int64_t o, int64_t ic, int64_t) { pm[o] = pc[ic]; });
  Tensor out = Tensor::empty(out_shape);
  float* po = out.data();
  const float* pa = a.data();
  const float* pb = b.data();
  for_each_broadcast(
      out_shape, broadcast_strides(a.shape(), out_shape), broadcast_strides(b.shape(), out_shape),
      [&](int64_t o, int64_t ia, int64_t ib) { po[o] = pm[o] != 0.0f ? pa[ia] : pb[ib]; });
  if (needs_grad({a, b})) {
    attach(out, "where", {a, b}, Reads::nothing(),
           [mask](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             // A select, not dout * mask: an inf in dout must not become NaN on the other side.
             for (int side = 0; side < 2; ++side) {
               if (!in[static_cast<size_t>(side)].requires_grad()) continue;
               const float take = side == 0 ? 1.0f : 0.0f;
               Tensor g = Tensor::empty(dout.shape());
               float* pg = g.data();
               const float* pd = dout.data();
               const float* pm = mask.data();
               int64_t n = g.numel();
               detail::parallel_for_simd(n, n > kParallelThreshold,
                                         [=](int64_t i) { pg[i] = pm[i] == take ? pd[i] : 0.0f; });
               accumulate_reduced("where", in[static_cast<size_t>(side)], g);
             }
           });
  }
  return out;
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& x, float s) { return add_scalar(x, s); }
Tensor operator+(float s, const Tensor& x) { return add_scalar(x, s); }
Tensor operator-(const Tensor& x, float s) { return add_scalar(x, -s); }
Tensor operator-(float s, const Tensor& x) { return add_scalar(neg(x), s); }
Tensor operator*(const Tensor& x, float s) { return mul_scalar(x, s); }
Tensor operator*(float s, const Tensor& x) { return mul_scalar(x, s); }
Tensor operator/(const Tensor& x, float s) { return mul_scalar(x, 1.0f / s); }

}  // namespace bnlab

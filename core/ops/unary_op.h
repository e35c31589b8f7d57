// The one loop behind every unary elementwise op (internal; not installed): y = f(x), and a node
// whose backward adds dout * df(x, y). Shared by core/ops/elementwise.cpp and activation.cpp so
// that each op is its two lambdas: the forward and its derivative, written in terms of the input x
// and the saved output y (sigmoid' = y (1 - y) needs no recomputation).
#pragma once

#include <bit>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/autograd.h"
#include "core/parallel.h"
#include "core/tensor.h"

namespace bnlab::detail {

/// Loops shorter than this stay on one thread, outside any parallel region (core/parallel.h):
/// forking costs more than it saves.
constexpr int64_t kParallelThreshold = 1 << 15;

/// relu(v) = max(v, 0), shared by relu() and batch_norm_relu_train so that the two cannot drift
/// apart. A NaN passes through (v < 0 is false for NaN), as torch.relu, and -0 stays -0.
inline float relu_value(float v) { return v < 0.0f ? 0.0f : v; }
/// relu's backward at one element: dout g where relu's input v is > 0 or NaN, else +0, even for a
/// NaN or inf g. That is PyTorch's threshold_backward (`v <= 0 ? 0 : g`): relu'(0) = 0, a NaN
/// input passes its gradient on, and a non-finite gradient stops where the unit is off. Exact from
/// relu's OUTPUT too, since relu(v) <= 0 exactly where v <= 0. A select on the bits, not g * relu'
/// (NaN * 0 is NaN) nor `?:`: for AVX2 GCC 12 kept `v > 0 ? 1 : 0` a branch inside batch norm's
/// fused sums, which then stayed scalar (20 % of an MLP's step with BN, against 2 % with
/// AVX-512's masks).
inline float relu_grad(float g, float v) {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(g) &
                              (0u - static_cast<uint32_t>(!(v <= 0.0f))));
}

/// sigmoid's derivative from its output y: y (1 - y). Shared by sigmoid() and
/// batch_norm_sigmoid_train so that the two cannot drift apart (their gradients are bit-identical).
inline float sigmoid_derivative(float y) { return y * (1.0f - y); }

/// What a unary op's derivative df(x, y) reads, for backward's check of in-place writes (Reads in
/// core/autograd.h): x, the output y, both, or neither (add_scalar's df is the constant 1).
inline constexpr Reads kReadsX = Reads::only_inputs();
inline constexpr Reads kReadsY = Reads::only_output();
inline constexpr Reads kReadsXY = Reads{};
inline constexpr Reads kReadsNone = Reads::nothing();

/// y = f(x) elementwise; backward adds dout * df(x, y), or df(dout, x, y) when df takes three
/// arguments: an op whose backward selects rather than multiplies (relu: a NaN dout where the unit
/// is off gives 0, which no factor does). df reads what `reads` says. f and df must be branch-free
/// enough to vectorize (see core/ops/fast_math.h) for the loops to run at memory speed.
template <typename F, typename DF>
Tensor unary(const char* op, const Tensor& x, Reads reads, F f, DF df) {
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  float* py = out.data();
  int64_t n = x.numel();
  detail::parallel_for_simd(n, n > kParallelThreshold, [=](int64_t i) { py[i] = f(px[i]); });
  if (needs_grad({x})) {
    attach(out, op, {x}, reads,
           [df](const Tensor& y, const Tensor& dout, const std::vector<Tensor>& in) {
             const GradTarget dx = grad_target(in[0]);
             const float* px = in[0].data();
             const float* py = y.data();
             const float* pd = dout.data();
             int64_t n = y.numel();
             detail::parallel_for_simd(n, n > kParallelThreshold, [=](int64_t i) {
               float g;
               if constexpr (std::is_invocable_v<DF, float, float, float>) {
                 g = df(pd[i], px[i], py[i]);
               } else {
                 g = pd[i] * df(px[i], py[i]);
               }
               dx.data[i] =
                   dx.fresh ? g : dx.data[i] + g;  // a fresh buffer is assigned, not zeroed
             });
           });
  }
  return out;
}

}  // namespace bnlab::detail

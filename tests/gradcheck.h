// check_gradients: the finite-difference gradient checker every differentiable op and layer is
// tested with.
//
// It reduces fn's output to a scalar L = sum(fn(inputs) * R) with a fixed random R (dlib's trick:
// every output element contributes with a different weight, so a transposed or misplaced gradient
// cannot cancel out), then compares, for every element of every input that requires grad, the
// analytic dL/dx from backward() with the central difference (L(x+h) - L(x-h)) / 2h evaluated in
// double precision.
//
// Grads are pre-filled with a sentinel so that a backward that overwrites instead of adding is
// caught. An element fails only when both the absolute and the relative error exceed their
// tolerances. Stochastic fns (dropout) must reseed their Rng inside fn so every call draws the same
// mask.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"

namespace bnlab::testing {

struct GradcheckOptions {
  double step = 1e-3;  // h = step * max(1, |x|)
  double atol = 2e-3;
  double rtol = 2e-2;
  uint64_t seed = 1234;  // seed of the projection R
  int max_failures = 5;  // failures listed in the message
};

struct GradcheckResult {
  bool ok = true;
  std::string message;
};

inline GradcheckResult check_gradients(const char* op,
                                       const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                                       std::vector<Tensor> inputs, GradcheckOptions opts = {}) {
  constexpr float kSentinel = 0.25f;
  GradcheckResult result;
  std::ostringstream failures;
  int failure_count = 0;

  // Analytic gradients.
  for (Tensor& x : inputs) {
    if (!x.requires_grad()) continue;
    x.zero_grad();
    float* g = grad_buffer(x);
    std::fill_n(g, x.numel(), kSentinel);
  }
  Tensor y = fn(inputs);
  Rng rng(opts.seed);
  Tensor r = Tensor::uniform(y.shape(), rng, -1.0f, 1.0f);
  Tensor loss = sum(mul(y, r));
  loss.backward();

  auto projected = [&]() {
    NoGradGuard no_grad;
    Tensor out = fn(inputs);
    const float* po = out.data();
    const float* pr = r.data();
    double acc = 0.0;
    for (int64_t i = 0; i < out.numel(); ++i) acc += static_cast<double>(po[i]) * pr[i];
    return acc;
  };

  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    std::vector<float> analytic = x.grad().to_vector();
    float* px = x.data();
    for (int64_t i = 0; i < x.numel(); ++i) {
      float original = px[i];
      double h = opts.step * std::max(1.0, std::fabs(static_cast<double>(original)));
      px[i] = static_cast<float>(original + h);
      double plus_h = static_cast<double>(px[i]) - original;  // the step actually taken in float
      double l_plus = projected();
      px[i] = static_cast<float>(original - h);
      double minus_h = original - static_cast<double>(px[i]);
      double l_minus = projected();
      px[i] = original;
      double numeric = (l_plus - l_minus) / (plus_h + minus_h);
      double got = static_cast<double>(analytic[static_cast<size_t>(i)]) - kSentinel;
      double abs_err = std::fabs(numeric - got);
      double rel_err = abs_err / std::max(std::fabs(numeric), std::fabs(got));
      if (abs_err > opts.atol && rel_err > opts.rtol) {
        result.ok = false;
        if (failure_count++ < opts.max_failures) {
          failures << op << ": input " << k << " " << to_string(x.shape()) << " flat index " << i
                   << ": numeric " << numeric << " vs analytic " << got << "\n";
        }
      }
    }
  }
  if (failure_count > opts.max_failures)
    failures << "... " << failure_count << " failures in all\n";
  result.message = failures.str();
  return result;
}

// Inputs for gradient checks: uniform in [low, high) from a fixed seed, marked requires_grad.
inline Tensor param(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  Rng rng(seed);
  Tensor t = Tensor::uniform(shape, rng, low, high);
  t.set_requires_grad();
  return t;
}

}  // namespace bnlab::testing

// CHECK_GRADIENTS("op", fn, {inputs...}) fails the test case with every mismatching element listed.
#define CHECK_GRADIENTS(op, fn, ...)                                               \
  do {                                                                             \
    auto bnlab_gc_result = ::bnlab::testing::check_gradients(op, fn, __VA_ARGS__); \
    CHECK_MESSAGE(bnlab_gc_result.ok, bnlab_gc_result.message);                    \
  } while (0)

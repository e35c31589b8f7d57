// check_gradients: the finite-difference gradient checker, public so that users can check the
// backward of their own ops and layers the way every op and layer in bnlab is tested.
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
// mask. Sample inputs away from kinks (relu at 0, ties in max-pool): a central difference across a
// kink measures neither side. Guide: docs/guide/new-op.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace bnlab {

/// Tolerances and knobs of check_gradients().
struct GradcheckOptions {
  double step = 1e-3;  ///< finite-difference step: h = step * max(1, |x|)
  double atol =
      2e-3;  ///< absolute tolerance; an element fails only if both tolerances are exceeded
  double rtol = 2e-2;    ///< relative tolerance, against max(|numeric|, |analytic|)
  uint64_t seed = 1234;  ///< seed of the random projection R
  int max_failures = 5;  ///< failing elements listed in the message (all are counted)
};

/// The verdict of check_gradients().
struct GradcheckResult {
  bool ok = true;       ///< true when every checked element is within tolerance
  std::string message;  ///< one line per failing element: op, input number and shape, flat index,
                        ///< numeric vs analytic value; empty when ok
};

/// The function under test: computes an output from the (perturbed) inputs. It is called once with
/// grad mode on (for backward) and twice per input element under NoGradGuard.
using GradcheckFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

/// Compares the analytic gradient of every input that requires grad (parameters included) with
/// central finite differences, as described at the top of core/gradcheck.h.
/// @param op     name printed in the failure lines (e.g. "softplus")
/// @param fn     the function under test; must be deterministic (reseed any Rng inside it)
/// @param inputs the inputs; those with requires_grad() are checked. Their data is perturbed and
///               restored, and their gradients are left holding the analytic gradient plus a
///               sentinel.
/// @param opts   step, tolerances and the seed of the projection
/// @return ok, and a message listing the first opts.max_failures mismatches
GradcheckResult check_gradients(const char* op, const GradcheckFn& fn, std::vector<Tensor> inputs,
                                GradcheckOptions opts = {});

/// An input for a gradient check: uniform in [low, high) from `seed`, marked requires_grad.
/// Choose [low, high) away from the op's kinks.
Tensor gradcheck_input(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f);

}  // namespace bnlab

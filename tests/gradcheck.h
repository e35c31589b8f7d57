// The doctest side of the gradient checker: CHECK_GRADIENTS and the short names the tests use.
// The checker itself is public API in core/gradcheck.h (bnlab::check_gradients), so users check
// their own ops with the same code.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>  // kept: tests relied on these coming with the checker
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"

namespace bnlab::testing {

using bnlab::check_gradients;
using bnlab::GradcheckOptions;
using bnlab::GradcheckResult;

// Inputs for gradient checks: uniform in [low, high) from a fixed seed, marked requires_grad.
inline Tensor param(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  return gradcheck_input(shape, seed, low, high);
}

}  // namespace bnlab::testing

// CHECK_GRADIENTS("op", fn, {inputs...}) fails the test case with every mismatching element listed.
#define CHECK_GRADIENTS(op, fn, ...)                                      \
  do {                                                                    \
    auto bnlab_gc_result = ::bnlab::check_gradients(op, fn, __VA_ARGS__); \
    CHECK_MESSAGE(bnlab_gc_result.ok, bnlab_gc_result.message);           \
  } while (0)

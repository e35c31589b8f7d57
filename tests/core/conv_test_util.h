// Helpers shared by the conv path tests (test_ops_conv_winograd.cpp, test_ops_conv_fourier.cpp):
// one conv2d forward and backward under a forced path, a bitwise comparison, the worst error
// against a double reference in units of float epsilon times a magnitude, and the checks that
// non-finite and huge operands give im2col's results.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/ops/conv_path.h"
#include "gradcheck.h"

namespace bnlab::testing {

struct ConvResult {
  std::vector<float> y, dx, dw, db;
};

// conv2d (stride 1, the given padding) and its backward for output gradient g, under `mode`; b
// may be undefined (db then stays empty).
inline ConvResult run_conv(detail::ConvPathMode mode, const Tensor& x0, const Tensor& w0,
                           const Tensor& b0, const Tensor& g, int64_t padding) {
  detail::ScopedConvPathMode scoped(mode);
  Tensor x = x0.detach().clone().set_requires_grad();
  Tensor w = w0.detach().clone().set_requires_grad();
  Tensor b = b0.defined() ? b0.detach().clone().set_requires_grad() : Tensor();
  Tensor y = conv2d(x, w, b, 1, padding);
  y.backward(g);
  ConvResult r{y.to_vector(), x.grad().to_vector(), w.grad().to_vector(), {}};
  if (b.defined()) r.db = b.grad().to_vector();
  return r;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The worst |got - want| / (FLT_EPSILON * magnitude) (0 where both are exactly 0).
inline double worst_ulps(const std::vector<float>& got, const std::vector<double>& want,
                         const std::vector<double>& mag) {
  REQUIRE(got.size() == want.size());
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    if (err == 0.0) continue;
    worst = std::max(worst, mag[i] > 0.0 ? err / (FLT_EPSILON * mag[i]) : INFINITY);
  }
  return worst;
}

// Random x, w, b and output gradient g for a stride-1 conv of those shapes, from seeds
// seed..seed+3.
struct ConvOperands {
  Tensor x, w, b, g;
};
inline ConvOperands conv_operands(const Shape& x_shape, const Shape& w_shape, int64_t padding,
                                  uint64_t seed) {
  const Shape g_shape{x_shape[0], w_shape[0], x_shape[2] + 2 * padding - w_shape[2] + 1,
                      x_shape[3] + 2 * padding - w_shape[3] + 1};
  return {param(x_shape, seed).detach(), param(w_shape, seed + 1).detach(),
          param({w_shape[0]}, seed + 2).detach(), param(g_shape, seed + 3).detach()};
}

// Under `mode` (a path that mixes a whole tile or image: Winograd, fourier), conv2d with one NaN,
// +inf or -inf in x, in w or in the output gradient gives bit for bit what im2col gives, which
// confines it to the windows that read it as PyTorch does; and with finite operands the path
// really runs (its rounding differs from im2col's somewhere).
inline void check_nonfinite_as_im2col(detail::ConvPathMode mode, const Shape& x_shape,
                                      const Shape& w_shape, int64_t padding) {
  const auto [x0, w0, b, g0] = conv_operands(x_shape, w_shape, padding, 21);
  const ConvResult clean = run_conv(mode, x0, w0, b, g0, padding);
  const ConvResult clean_ref = run_conv(detail::ConvPathMode::im2col, x0, w0, b, g0, padding);
  CHECK_FALSE(same_bits(clean.y, clean_ref.y));
  CHECK_FALSE(same_bits(clean.dx, clean_ref.dx));
  for (const std::string operand : {"x", "w", "dout"}) {
    for (const float bad : {NAN, INFINITY, -INFINITY}) {
      CAPTURE(operand);
      CAPTURE(bad);
      Tensor x = x0.clone(), w = w0.clone(), g = g0.clone();
      Tensor& target = operand[0] == 'x' ? x : operand[0] == 'w' ? w : g;
      target.data()[target.numel() / 2 + 1] = bad;
      const ConvResult got = run_conv(mode, x, w, b, g, padding);
      const ConvResult want = run_conv(detail::ConvPathMode::im2col, x, w, b, g, padding);
      // The forward does not read dout: it stays on the path.
      CHECK(same_bits(got.y, operand == "dout" ? clean.y : want.y));
      CHECK(same_bits(got.dx, want.dx));
      CHECK(same_bits(got.dw, want.dw));
      CHECK(same_bits(got.db, want.db));
    }
  }
}

// Under `mode`, operands so large that the path's intermediates could overflow where im2col's sums
// do not (one of x, w and the output gradient scaled by 2^118, a power of two so the values stay
// exact) give im2col's results bit for bit, and those are finite; scaled by 2^40 the path still
// runs. Before conv2d bounded the products, Winograd's weight gradient came out inf here (with x
// or dout scaled); the frequency domain's results differed from im2col's only by rounding.
inline void check_huge_as_im2col(detail::ConvPathMode mode, const Shape& x_shape,
                                 const Shape& w_shape, int64_t padding) {
  const auto [x0, w0, b, g0] = conv_operands(x_shape, w_shape, padding, 31);
  const auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float f) { return std::isfinite(f); });
  };
  for (const std::string operand : {"x", "w", "dout"}) {
    for (const int scale_log2 : {40, 118}) {
      CAPTURE(operand);
      CAPTURE(scale_log2);
      Tensor x = x0.clone(), w = w0.clone(), g = g0.clone();
      Tensor& target = operand[0] == 'x' ? x : operand[0] == 'w' ? w : g;
      float* p = target.data();
      for (int64_t i = 0; i < target.numel(); ++i) p[i] = std::ldexp(p[i], scale_log2);
      const ConvResult got = run_conv(mode, x, w, b, g, padding);
      const ConvResult want = run_conv(detail::ConvPathMode::im2col, x, w, b, g, padding);
      if (scale_log2 == 40) {
        // The forward does not read dout, and dw does not read w.
        if (operand != "dout") CHECK_FALSE(same_bits(got.y, want.y));
        CHECK_FALSE(same_bits(got.dx, want.dx));
        continue;
      }
      CHECK(finite(want.y));
      CHECK(finite(want.dx));
      CHECK(finite(want.dw));
      CHECK(finite(got.y));
      CHECK(finite(got.dx));
      CHECK(finite(got.dw));
      // With dout scaled the forward stays on the path: only the backward must fall back.
      if (operand != "dout") CHECK(same_bits(got.y, want.y));
      CHECK(same_bits(got.dx, want.dx));
      CHECK(same_bits(got.dw, want.dw));
      CHECK(same_bits(got.db, want.db));
    }
  }
}

}  // namespace bnlab::testing

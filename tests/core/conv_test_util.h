// Helpers shared by the conv path tests (test_ops_conv_winograd.cpp, test_ops_conv_fourier.cpp):
// one conv2d forward and backward under a forced path, a bitwise comparison, and the worst error
// against a double reference in units of float epsilon times a magnitude.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/ops.h"
#include "core/ops/conv_path.h"

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

}  // namespace bnlab::testing

// Vectorizable float math for the elementwise and activation kernels (internal; not installed).
//
// Each function is branch-free straight-line float/int arithmetic (selects, no calls into libm), so
// GCC turns a `#pragma omp simd` loop over it into AVX2/AVX-512 code; a libm call (expf, erff) in
// the loop keeps it scalar. A swish model spent 19 % of its time in scalar expf (issue 17).
//
// Accuracy against the exact value (computed in double), pinned by tests/core/test_fast_math.cpp
// over dense sweeps that include large |x|, the denormal range, +-inf and NaN:
//   exp_fast       relative error <= 2e-7 (about 2 ulp) where the result is a normal float;
//                  absolute error <= 2^-149 (one denormal step) below that; overflow to +inf at
//                  the same x as expf, underflow to 0; NaN in, NaN out.
//   expm1_fast     relative error <= 3e-7 everywhere (no cancellation near 0).
//   log1p_fast     relative error <= 2e-7 for u in [0, 1] (its only use: softplus), one denormal
//                  step below FLT_MIN.
//   normal_cdf     Phi(x) = P(N(0,1) <= x): relative error <= 1e-6 where the result is normal,
//                  absolute error <= 4 * 2^-149 below; gauss_fast (e^(-x^2/2)) likewise.
//                  Computed from erfc, so the lower tail keeps its relative accuracy (1 + erf(x)
//                  would cancel: PyTorch's float GELU has no correct digit left below x = -6).
//   sigmoid_fast, tanh_fast: relative error <= 4e-7.
// libm's expf is within 0.5-1 ulp; 2 ulp in an activation is far below float training noise.
//
// References: Cephes expf (S. Moshier), the range reduction x = n ln2 + r with ln2 split in two;
// erfc after Numerical Recipes' erfcc (Chebyshev fit, fractional error < 1.2e-7).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace bnlab::detail {

/// e^x. NaN propagates, x > 88.72 gives +inf, x < -103.97 gives 0.
inline float exp_fast(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  // ln 2 = kLn2Hi + kLn2Lo; kLn2Hi has 9 significant bits, so n * kLn2Hi is exact for |n| <= 150.
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  // Keep n in [-150, 128], where 2^n is a product of two normal floats. NaN fails the first test
  // and is restored at the end (converting NaN to int would be undefined).
  float xc = x > -104.0f ? x : -104.0f;
  xc = xc < 89.0f ? xc : 89.0f;
  // n = round(x / ln 2): adding 1.5 * 2^23 pushes the fraction bits out (round to nearest).
  constexpr float kShift = 12582912.0f;
  float n = (xc * kLog2e + kShift) - kShift;
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;  // r in [-ln2/2, ln2/2]
  // e^r by Cephes' minimax polynomial: 1 + r + r^2 (1/2 + r/6 + ...).
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n = 2^n1 * 2^n2 with both exponents in the normal range: a single 2^n would not reach the
  // denormal results (n < -126) or the top binade (n = 128).
  auto ni = static_cast<int32_t>(n);
  int32_t n1 = ni >> 1;
  int32_t n2 = ni - n1;
  float s1 = std::bit_cast<float>(static_cast<uint32_t>(n1 + 127) << 23);
  float s2 = std::bit_cast<float>(static_cast<uint32_t>(n2 + 127) << 23);
  float y = (p * s1) * s2;
  return std::isnan(x) ? x : y;
}

/// e^x - 1 without the cancellation of exp(x) - 1 near 0.
inline float expm1_fast(float x) {
  // |x| < 0.5: Taylor series to x^8 (truncation < 1.1e-8 relative); both branches are computed
  // and one selected, which is what vectorizes.
  float p = 1.0f / 40320.0f;
  p = p * x + 1.0f / 5040.0f;
  p = p * x + 1.0f / 720.0f;
  p = p * x + 1.0f / 120.0f;
  p = p * x + 1.0f / 24.0f;
  p = p * x + 1.0f / 6.0f;
  p = p * x + 0.5f;
  float small = p * x * x + x;
  // |x| >= 0.5: e^x - 1 loses at most a factor 1 / (1 - e^-0.5) = 2.5 of exp's relative accuracy.
  float large = exp_fast(x) - 1.0f;
  return std::fabs(x) < 0.5f ? small : large;
}

/// log(1 + u) for u in [0, 1], the range softplus needs (u = e^-|x|); NaN propagates.
inline float log1p_fast(float u) {
  // log(1 + u) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = u / (2 + u) <= 1/3: seven terms
  // leave < 1.4e-8.
  float s = u / (2.0f + u);
  float s2 = s * s;
  float q = 1.0f / 13.0f;
  q = q * s2 + 1.0f / 11.0f;
  q = q * s2 + 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  return 2.0f * s + 2.0f * s * s2 * q;
}

/// The rounding error of hi = a * a, so that a^2 = hi + lo exactly: an FMA where the target has
/// one (a libm fma call would keep the loop scalar), else Dekker's split of a into 12-bit halves.
inline float square_error(float a, float hi) {
#ifdef __FMA__
  return std::fma(a, a, -hi);
#else
  float c = 4097.0f * a;
  float ah = c - (c - a);
  float al = a - ah;
  return ((ah * ah - hi) + 2.0f * ah * al) + al * al;
#endif
}

/// Phi(x), the standard normal CDF 0.5 erfc(-x / sqrt 2), relative accuracy in both tails.
inline float normal_cdf(float x) {
  // erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z = |x| / sqrt 2 (Numerical Recipes' erfcc).
  // Phi(-20) is 3e-89, 0 in float: clamping there keeps x^2 and its rounding error finite (inf -
  // inf is NaN). NaN fails the test and is restored at the end.
  float a = std::fabs(x) < 20.0f ? std::fabs(x) : 20.0f;
  float z = a * 0.70710678118654752f;
  float t = 1.0f / (1.0f + 0.5f * z);
  float P = 0.17087277f;
  P = P * t - 0.82215223f;
  P = P * t + 1.48851587f;
  P = P * t - 1.13520398f;
  P = P * t + 0.27886807f;
  P = P * t - 0.18628806f;
  P = P * t + 0.09678418f;
  P = P * t + 0.37409196f;
  P = P * t + 1.00002368f;
  P = P * t - 1.26551223f;
  // -z^2 = -(hi + lo) / 2 with x^2 = hi + lo exactly: rounding z^2 itself would cost a
  // relative error of z^2 ulp in the result (1e-5 at z = 9).
  float hi = a * a;
  float lo = square_error(a, hi);
  float tail = 0.5f * t * exp_fast(-0.5f * hi) * exp_fast(P - 0.5f * lo);  // Phi(-|x|)
  float y = x < 0.0f ? tail : 1.0f - tail;
  return std::isnan(x) ? x : y;
}

/// exp(-x^2 / 2) with x^2 split exactly (the Gaussian density without 1/sqrt(2 pi)).
inline float gauss_fast(float x) {
  float a = std::fabs(x) < 20.0f ? std::fabs(x) : 20.0f;  // as in normal_cdf: keeps x^2 finite
  float hi = a * a;
  float lo = square_error(a, hi);
  float y = exp_fast(-0.5f * hi) * exp_fast(-0.5f * lo);
  return std::isnan(x) ? x : y;
}

/// 1 / (1 + e^-x); e^-|x| never overflows, and the x < 0 branch keeps the lower tail's relative
/// accuracy. One division of a selected numerator: with a division on each side of the select,
/// GCC (which may not speculate a division that could trap) kept a branch for AVX2 and the loops
/// stayed scalar; AVX-512 masks the divisions instead.
inline float sigmoid_fast(float x) {
  float e = exp_fast(-std::fabs(x));
  float d = 1.0f + e;
  return (x >= 0.0f ? 1.0f : e) / d;
}

/// tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with x's sign: no cancellation near 0.
inline float tanh_fast(float x) {
  float t = expm1_fast(-2.0f * std::fabs(x));
  return std::copysign(-t / (2.0f + t), x);
}

}  // namespace bnlab::detail

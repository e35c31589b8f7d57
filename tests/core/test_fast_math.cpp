// The vectorizable kernels of core/ops/fast_math.h against double-precision references, over
// sweeps of float bit patterns (so every binade is visited: denormals, huge values) plus +-inf and
// NaN. The bounds are the ones documented at the top of fast_math.h.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>

#include "core/ops/fast_math.h"

using namespace bnlab::detail;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kMinNormal = 1.1754943508222875e-38;  // FLT_MIN
const double kDenormalStep = std::ldexp(1.0, -149);

struct Bounds {
  double rel;           // where |reference| >= FLT_MIN
  double denormal_abs;  // below that
};

// Checks f against ref at every float whose bit pattern is a multiple of `stride` apart (both
// signs), for x in [lo, hi]; the result must be finite exactly where the reference is (within
// float range). Returns "" or a description of the worst failure.
template <typename F, typename R>
std::string sweep(F f, R ref, float lo, float hi, Bounds b, uint32_t stride = 997) {
  std::ostringstream fail;
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += stride) {
    float x = std::bit_cast<float>(static_cast<uint32_t>(bits));
    if (!(x >= lo && x <= hi)) continue;
    double r = ref(static_cast<double>(x));
    float y = f(x);
    bool r_overflows = std::fabs(r) > std::numeric_limits<float>::max();
    if (r_overflows || std::isinf(y)) {
      if (!(std::isinf(y) && r_overflows && (y > 0) == (r > 0)))
        fail << "x=" << x << ": got " << y << ", want " << r << "\n";
      continue;
    }
    double err = std::fabs(static_cast<double>(y) - r);
    bool ok = std::fabs(r) >= kMinNormal ? err <= b.rel * std::fabs(r) : err <= b.denormal_abs;
    if (!ok) fail << "x=" << x << ": got " << y << ", want " << r << "\n";
    if (fail.tellp() > 400) break;
  }
  return fail.str();
}

}  // namespace

TEST_CASE("fast_math: exp within 2e-7 relative, one denormal step below FLT_MIN") {
  auto f = [](float x) { return exp_fast(x); };
  auto ref = [](double x) { return std::exp(x); };
  CHECK(sweep(f, ref, -200.0f, 200.0f, {2e-7, kDenormalStep}) == "");
  CHECK(sweep(f, ref, -1.0f, 1.0f, {2e-7, 0.0}, 13) == "");  // dense where the polynomial works
  // The edges of the float range: the largest finite result, the first overflow, underflow to 0.
  CHECK(exp_fast(88.72f) == doctest::Approx(std::exp(double{88.72f})).epsilon(2e-7));
  CHECK(exp_fast(88.73f) == kInf);
  CHECK(exp_fast(-104.0f) == 0.0f);
  CHECK(exp_fast(-103.0f) > 0.0f);  // a denormal, not flushed
  CHECK(exp_fast(0.0f) == 1.0f);
  CHECK(exp_fast(kInf) == kInf);
  CHECK(exp_fast(-kInf) == 0.0f);
  CHECK(std::isnan(exp_fast(std::nanf(""))));
}

TEST_CASE("fast_math: expm1 and tanh keep their relative accuracy near 0") {
  auto e = [](float x) { return expm1_fast(x); };
  CHECK(sweep(e, [](double x) { return std::expm1(x); }, -200.0f, 200.0f, {3e-7, 0.0}) == "");
  auto t = [](float x) { return tanh_fast(x); };
  CHECK(sweep(t, [](double x) { return std::tanh(x); }, -kInf, kInf, {4e-7, 0.0}) == "");
  CHECK(expm1_fast(-kInf) == -1.0f);
  CHECK(tanh_fast(kInf) == 1.0f);
  CHECK(tanh_fast(-kInf) == -1.0f);
  CHECK(std::signbit(tanh_fast(-0.0f)));
  CHECK(std::isnan(expm1_fast(std::nanf(""))));
  CHECK(std::isnan(tanh_fast(std::nanf(""))));
}

TEST_CASE("fast_math: log1p on [0, 1], sigmoid over the whole line") {
  auto l = [](float u) { return log1p_fast(u); };
  CHECK(sweep(
            l, [](double u) { return std::log1p(u); }, 0.0f, 1.0f, {2e-7, kDenormalStep}, 31) ==
        "");
  auto s = [](float x) { return sigmoid_fast(x); };
  auto sref = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  CHECK(sweep(s, sref, -kInf, kInf, {4e-7, kDenormalStep}) == "");
  CHECK(sigmoid_fast(0.0f) == 0.5f);
  CHECK(sigmoid_fast(-kInf) == 0.0f);
  CHECK(sigmoid_fast(kInf) == 1.0f);
  CHECK(std::isnan(sigmoid_fast(std::nanf(""))));
}

TEST_CASE("fast_math: normal_cdf keeps relative accuracy in the lower tail") {
  auto phi = [](float x) { return normal_cdf(x); };
  auto ref = [](double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); };
  CHECK(sweep(phi, ref, -kInf, kInf, {1e-6, 4 * kDenormalStep}) == "");
  CHECK(sweep(phi, ref, -14.0f, 6.0f, {1e-6, 4 * kDenormalStep}, 37) == "");
  auto g = [](float x) { return gauss_fast(x); };
  CHECK(sweep(g, [](double x) { return std::exp(-x * x / 2); }, -kInf, kInf,
              {4e-7, 4 * kDenormalStep}) == "");
  CHECK(normal_cdf(0.0f) == doctest::Approx(0.5f).epsilon(1e-6));
  CHECK(normal_cdf(kInf) == 1.0f);
  CHECK(normal_cdf(-kInf) == 0.0f);
  CHECK(gauss_fast(kInf) == 0.0f);
  CHECK(std::isnan(normal_cdf(std::nanf(""))));
  CHECK(std::isnan(gauss_fast(std::nanf(""))));
}

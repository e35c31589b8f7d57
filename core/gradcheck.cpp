// check_gradients: see core/gradcheck.h for the method.
#include "core/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/autograd.h"
#include "core/ops.h"

namespace bnlab {

GradcheckResult check_gradients(const char* op, const GradcheckFn& fn, std::vector<Tensor> inputs,
                                GradcheckOptions opts) {
  // Added to every gradient before backward: a backward that overwrites instead of adding leaves
  // the analytic value short of the sentinel, which the comparison below then reports.
  constexpr float kSentinel = 0.25f;
  GradcheckResult result;
  std::ostringstream failures;
  int failure_count = 0;

  // Analytic gradients.
  for (Tensor& x : inputs) {
    if (!x.defined() || !x.requires_grad()) continue;
    x.zero_grad();
    float* g = grad_buffer(x);
    std::fill_n(g, x.numel(), kSentinel);
  }
  Tensor y = fn(inputs);
  Rng rng(opts.seed);
  Tensor r = Tensor::uniform(y.shape(), rng, -1.0f, 1.0f);
  Tensor loss = sum(mul(y, r));
  loss.backward();
  std::vector<std::vector<float>> added(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    added[k] = x.grad().to_vector();
    x.zero_grad();
  }
  // Again with no gradient buffers: an op whose first contribution assigns (grad_target) must
  // write all of it. Both results are checked.
  sum(mul(fn(inputs), r)).backward();

  // L = sum(fn(inputs) * R) in double, without a graph.
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
    // No buffer: nothing reached this input (a gradient of zero).
    const std::vector<float> fresh =
        x.has_grad() ? x.grad().to_vector() : std::vector<float>(static_cast<size_t>(x.numel()));
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
      const size_t at = static_cast<size_t>(i);
      for (double got :
           {static_cast<double>(added[k][at]) - kSentinel, static_cast<double>(fresh[at])}) {
        double abs_err = std::fabs(numeric - got);
        double rel_err = abs_err / std::max(std::fabs(numeric), std::fabs(got));
        // !(<=) so that a NaN (an unwritten fresh buffer) fails too.
        if (!(abs_err <= opts.atol) && !(rel_err <= opts.rtol)) {
          result.ok = false;
          if (failure_count++ < opts.max_failures) {
            failures << op << ": input " << k << " " << to_string(x.shape()) << " flat index " << i
                     << ": numeric " << numeric << " vs analytic " << got << "\n";
          }
        }
      }
    }
  }
  if (failure_count > opts.max_failures)
    failures << "... " << failure_count << " failures in all\n";
  result.message = failures.str();
  return result;
}

Tensor gradcheck_input(const Shape& shape, uint64_t seed, float low, float high) {
  Rng rng(seed);
  Tensor t = Tensor::uniform(shape, rng, low, high);
  t.set_requires_grad();
  return t;
}

}  // namespace bnlab

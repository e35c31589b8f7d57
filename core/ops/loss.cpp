// Losses, all reduced by the mean (torch's default reduction="mean"), as torch.nn.functional
// defines them.
//
// cross_entropy is fused (log-softmax and the negative log-likelihood in one pass) because the
// unfused form overflows exp for large logits and costs three passes; its gradient is simply
// (softmax - target) / N. nll_loss takes log-probabilities and skips targets equal to ignore_index
// (the mean is over the others; none left gives NaN, as torch). mse_loss and l1_loss are
// compositions of primitives.
//
// Numerics and kinks, tested in tests/core/test_ops_loss.cpp:
//   - binary_cross_entropy_with_logits: l = (1 - y) x + w softplus(-x), w = 1 + (pos_weight - 1) y,
//     evaluated as [(1 - y) x + w max(-x, 0)] + w log1p(e^-|x|): no exp overflows, and for hard
//     labels the bracket is exact, so a confident right answer keeps its tiny loss instead of
//     rounding to 0. dl/dx = w sigmoid(x) - pos_weight y.
//   - binary_cross_entropy clamps each log at -100 (torch's choice: finite loss at p = 0 or 1) and
//     divides its gradient by max(p (1 - p), 1e-12) (torch's EPSILON).
//   - smooth_l1_loss: 0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere; beta = 0 is
//     l1_loss. huber_loss: 0.5 d^2 where |d| <= delta, delta (|d| - 0.5 delta) elsewhere. Both
//     gradients are continuous at the switch; l1'(0) = 0 (sign(0)).
//
// References: https://pytorch.org/docs/stable/nn.functional.html#loss-functions
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/fast_math.h"
#include "core/ops/unary_op.h"
#include "core/parallel.h"

namespace bnlab {

Tensor cross_entropy(const Tensor& logits, const std::vector<int64_t>& labels,
                     float label_smoothing) {
  BNLAB_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, K]; got ", logits.shape());
  int64_t N = logits.size(0), K = logits.size(1);
  BNLAB_CHECK(static_cast<int64_t>(labels.size()) == N, "cross_entropy: ", labels.size(),
              " labels for logits of shape ", logits.shape());
  BNLAB_CHECK(N > 0 && K > 0, "cross_entropy: empty logits of shape ", logits.shape());
  BNLAB_CHECK(label_smoothing >= 0.0f && label_smoothing <= 1.0f,
              "cross_entropy: label_smoothing must be in [0, 1]; got ", label_smoothing);
  for (int64_t n = 0; n < N; ++n) {
    int64_t y = labels[static_cast<size_t>(n)];
    BNLAB_CHECK(y >= 0 && y < K, "cross_entropy: label ", y, " at index ", n, " is outside [0, ", K,
                ") for logits of shape ", logits.shape());
  }
  // probs [N, K] is saved for backward.
  Tensor probs = Tensor::empty({N, K});
  const float* px = logits.data();
  float* pp = probs.data();
  const float s = label_smoothing;
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = px + n * K;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t k = 0; k < K; ++k)
      m = std::max(m, row[k]);  // subtract the max: exp cannot overflow
    // log p_k = (x_k - m) - log z, as torch's log_softmax: x_k - (m + log z) rounded log z into
    // m's ulp, so at logits near 3e38 two equal largest logits each got p = 1. The differences are
    // taken in double, where they neither round nor overflow.
    const auto shifted = [&](int64_t k) { return static_cast<double>(row[k]) - m; };
    double z = 0.0;
    for (int64_t k = 0; k < K; ++k) z += std::exp(shifted(k));
    const double log_z = std::log(z);
    double row_sum_logp = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const double logp = shifted(k) - log_z;
      pp[n * K + k] = static_cast<float>(std::exp(logp));
      row_sum_logp += logp;
    }
    const double logp_label = shifted(labels[static_cast<size_t>(n)]) - log_z;
    // -sum_k q_k log p_k with q = (1-s) onehot + s/K. Without smoothing the second term is left
    // out, not multiplied by 0: a -inf logit makes row_sum_logp -inf, and 0 * -inf would turn
    // PyTorch's +inf loss into NaN.
    total += -(1.0 - s) * logp_label;
    if (s != 0.0f) total -= s / static_cast<double>(K) * row_sum_logp;
  }
  Tensor out = Tensor::scalar(static_cast<float>(total / static_cast<double>(N)));
  if (needs_grad({logits})) {
    attach(
        out, "cross_entropy", {logits}, Reads::nothing(),
        [probs, labels, N, K, s](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
          const GradTarget dx = grad_target(in[0]);
          const float* pp = probs.data();
          float g = dout.data()[0] / static_cast<float>(N);
          float uniform = s / static_cast<float>(K);
          for (int64_t n = 0; n < N; ++n) {
            int64_t y = labels[static_cast<size_t>(n)];
            for (int64_t k = 0; k < K; ++k) {
              float target = uniform + (k == y ? 1.0f - s : 0.0f);
              const float v = g * (pp[n * K + k] - target);
              dx.data[n * K + k] = dx.fresh ? v : dx.data[n * K + k] + v;
            }
          }
        });
  }
  return out;
}

namespace {

void check_same_shape(const char* op, const Tensor& input, const Tensor& target) {
  BNLAB_CHECK(input.shape() == target.shape(), op, ": input of shape ", input.shape(),
              " and target of shape ", target.shape(), " differ");
}

// Per-element loss of a pointwise (input, target) pair, both the same shape: out = f(x, y), and a
// backward adding dout * dx(x, y) and dout * dy(x, y) into whichever requires a grad.
template <typename F, typename DX, typename DY>
Tensor pointwise_loss(const char* op, const Tensor& x, const Tensor& y, F f, DX dfx, DY dfy) {
  check_same_shape(op, x, y);
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  const float* py = y.data();
  float* po = out.data();
  const int64_t n = x.numel();
  detail::parallel_for_simd(n, n > detail::kParallelThreshold,
                            [=](int64_t i) { po[i] = f(px[i], py[i]); });
  if (needs_grad({x, y})) {
    attach(out, op, {x, y}, Reads::only_inputs(),
           [dfx, dfy](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             const float* px = in[0].data();
             const float* py = in[1].data();
             const float* pd = dout.data();
             const int64_t n = dout.numel();
             if (float* dx = grad_buffer(in[0])) {
               detail::parallel_for_simd(n, n > detail::kParallelThreshold,
                                         [=](int64_t i) { dx[i] += pd[i] * dfx(px[i], py[i]); });
             }
             if (float* dy = grad_buffer(in[1])) {
               detail::parallel_for_simd(n, n > detail::kParallelThreshold,
                                         [=](int64_t i) { dy[i] += pd[i] * dfy(px[i], py[i]); });
             }
           });
  }
  return out;
}

}  // namespace

Tensor mse_loss(const Tensor& a, const Tensor& b) {
  check_same_shape("mse_loss", a, b);
  return mean(pow(sub(a, b), 2.0f));
}

Tensor l1_loss(const Tensor& a, const Tensor& b) {
  check_same_shape("l1_loss", a, b);
  return mean(abs(sub(a, b)));
}

Tensor smooth_l1_loss(const Tensor& a, const Tensor& b, float beta) {
  check_same_shape("smooth_l1_loss", a, b);
  BNLAB_CHECK(beta >= 0.0f, "smooth_l1_loss: beta must be >= 0; got ", beta);
  if (beta == 0.0f) return l1_loss(a, b);  // torch's special case: 0.5 d^2 / beta is 0/0 there
  return mean(detail::unary(
      "smooth_l1_loss", sub(a, b), detail::kReadsX,
      [beta](float d) {
        return std::fabs(d) < beta ? 0.5f * d * d / beta : std::fabs(d) - 0.5f * beta;
      },
      [beta](float d, float) { return d < -beta ? -1.0f : (d > beta ? 1.0f : d / beta); }));
}

Tensor huber_loss(const Tensor& a, const Tensor& b, float delta) {
  check_same_shape("huber_loss", a, b);
  BNLAB_CHECK(delta > 0.0f, "huber_loss: delta must be > 0; got ", delta);
  return mean(detail::unary(
      "huber_loss", sub(a, b), detail::kReadsX,
      [delta](float d) {
        return std::fabs(d) <= delta ? 0.5f * d * d : delta * (std::fabs(d) - 0.5f * delta);
      },
      [delta](float d, float) { return d < -delta ? -delta : (d > delta ? delta : d); }));
}

Tensor nll_loss(const Tensor& log_probs, const std::vector<int64_t>& targets,
                int64_t ignore_index) {
  BNLAB_CHECK(log_probs.dim() == 2, "nll_loss: input must be [N, C] log-probabilities; got ",
              log_probs.shape());
  const int64_t N = log_probs.size(0), C = log_probs.size(1);
  BNLAB_CHECK(static_cast<int64_t>(targets.size()) == N, "nll_loss: ", targets.size(),
              " targets for input of shape ", log_probs.shape());
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    int64_t t = targets[static_cast<size_t>(n)];
    if (t == ignore_index) continue;
    BNLAB_CHECK(t >= 0 && t < C, "nll_loss: target ", t, " at index ", n, " is outside [0, ", C,
                ") for input of shape ", log_probs.shape());
    ++count;
  }
  const float* px = log_probs.data();
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    int64_t t = targets[static_cast<size_t>(n)];
    if (t != ignore_index) total -= px[n * C + t];
  }
  Tensor out = Tensor::scalar(static_cast<float>(total / static_cast<double>(count)));
  if (needs_grad({log_probs})) {
    attach(out, "nll_loss", {log_probs}, Reads::nothing(),
           [targets, ignore_index, N, C, count](const Tensor&, const Tensor& dout,
                                                const std::vector<Tensor>& in) {
             float* dx = grad_buffer(in[0]);
             const float g = dout.data()[0] / static_cast<float>(count);
             for (int64_t n = 0; n < N; ++n) {
               int64_t t = targets[static_cast<size_t>(n)];
               if (t != ignore_index) dx[n * C + t] -= g;
             }
           });
  }
  return out;
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets,
                                        const Tensor& pos_weight) {
  // The pos_weight = 1 loss, fused (see the top of the file): dl/dx = sigmoid(x) - y,
  // dl/dy = -x (softplus(-x) - softplus(x) = -x).
  Tensor loss = pointwise_loss(
      "binary_cross_entropy_with_logits", logits, targets,
      [](float x, float y) {
        float m = x < 0.0f ? -x : 0.0f;
        return ((1.0f - y) * x + m) + detail::log1p_fast(detail::exp_fast(-std::fabs(x)));
      },
      [](float x, float y) { return detail::sigmoid_fast(x) - y; },
      [](float x, float) { return -x; });
  if (pos_weight.defined()) {
    // The weighted part on top: (pos_weight - 1) y softplus(-x), composed, so pos_weight
    // broadcasts ([C] against [N, C]) and gets its gradient.
    const Shape &w = pos_weight.shape(), &x = logits.shape();
    bool fits = w.size() <= x.size();
    for (size_t k = 0; fits && k < w.size(); ++k) {
      int64_t wk = w[w.size() - 1 - k];
      fits = wk == 1 || wk == x[x.size() - 1 - k];
    }
    BNLAB_CHECK(fits, "binary_cross_entropy_with_logits: pos_weight of shape ", w,
                " does not broadcast to logits of shape ", x);
    loss = loss + (pos_weight - 1.0f) * targets * softplus(-logits);
  }
  return mean(loss);
}

Tensor binary_cross_entropy(const Tensor& probs, const Tensor& targets) {
  check_same_shape("binary_cross_entropy", probs, targets);
  const float* pp = probs.data();
  for (int64_t i = 0; i < probs.numel(); ++i) {
    BNLAB_CHECK(pp[i] >= 0.0f && pp[i] <= 1.0f,
                "binary_cross_entropy: input must hold probabilities in [0, 1]; got ", pp[i],
                " at flat index ", i, " (input ", probs.shape(), ")");
  }
  auto clamped_log = [](float v) { return std::max(std::log(v), -100.0f); };
  return mean(pointwise_loss(
      "binary_cross_entropy", probs, targets,
      [clamped_log](float p, float y) {
        return -(y * clamped_log(p) + (1.0f - y) * clamped_log(1.0f - p));
      },
      [](float p, float y) { return (p - y) / std::max((1.0f - p) * p, 1e-12f); },
      [clamped_log](float p, float) { return clamped_log(1.0f - p) - clamped_log(p); }));
}

}  // namespace bnlab

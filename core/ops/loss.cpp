// Losses. cross_entropy is fused (log-softmax and the negative log-likelihood in one pass) because
// the unfused form overflows exp for large logits and costs three passes; its gradient is simply
// (softmax - target) / N. mse_loss is a composition of primitives and has no backward of its own.
#include <cmath>
#include <limits>

#include "core/autograd.h"
#include "core/ops.h"

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
    double z = 0.0;
    for (int64_t k = 0; k < K; ++k) z += std::exp(static_cast<double>(row[k] - m));
    double log_z = std::log(z) + m;
    double row_sum_logp = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      double logp = row[k] - log_z;
      pp[n * K + k] = static_cast<float>(std::exp(logp));
      row_sum_logp += logp;
    }
    double logp_label = row[labels[static_cast<size_t>(n)]] - log_z;
    // -sum_k q_k log p_k with q = (1-s) onehot + s/K
    total += -(1.0 - s) * logp_label - s / static_cast<double>(K) * row_sum_logp;
  }
  Tensor out = Tensor::scalar(static_cast<float>(total / static_cast<double>(N)));
  if (needs_grad({logits})) {
    attach(
        out, "cross_entropy", {logits},
        [probs, labels, N, K, s](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
          float* dx = grad_buffer(in[0]);
          const float* pp = probs.data();
          float g = dout.data()[0] / static_cast<float>(N);
          float uniform = s / static_cast<float>(K);
          for (int64_t n = 0; n < N; ++n) {
            int64_t y = labels[static_cast<size_t>(n)];
            for (int64_t k = 0; k < K; ++k) {
              float target = uniform + (k == y ? 1.0f - s : 0.0f);
              dx[n * K + k] += g * (pp[n * K + k] - target);
            }
          }
        });
  }
  return out;
}

Tensor mse_loss(const Tensor& a, const Tensor& b) {
  BNLAB_CHECK(a.shape() == b.shape(), "mse_loss: input of shape ", a.shape(),
              " and target of shape ", b.shape(), " differ");
  return mean(pow(sub(a, b), 2.0f));
}

}  // namespace bnlab

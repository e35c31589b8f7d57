// Integration: a tiny MLP built from raw ops learns a synthetic problem with plain SGD.
#include <doctest/doctest.h>

#include "core/autograd.h"
#include "core/ops.h"

using namespace bnlab;

TEST_CASE("training: a tiny MLP drives its loss far below where it started") {
  Rng rng(42);
  // Two Gaussian blobs per class in 2-D, 4 classes: not linearly trivial for a random init.
  const int64_t N = 128, D = 2, H = 32, K = 4;
  Tensor x = Tensor::empty({N, D});
  std::vector<int64_t> labels(N);
  for (int64_t n = 0; n < N; ++n) {
    int64_t k = n % K;
    labels[static_cast<size_t>(n)] = k;
    float cx = (k % 2 ? 1.0f : -1.0f) * 2.0f, cy = (k / 2 ? 1.0f : -1.0f) * 2.0f;
    x.data()[n * D] = cx + rng.normal() * 0.5f;
    x.data()[n * D + 1] = cy + rng.normal() * 0.5f;
  }
  Tensor w1 = Tensor::normal({H, D}, rng, 0.0f, 0.5f).set_requires_grad();
  Tensor b1 = Tensor::zeros({H}).set_requires_grad();
  Tensor w2 = Tensor::normal({K, H}, rng, 0.0f, 0.5f).set_requires_grad();
  Tensor b2 = Tensor::zeros({K}).set_requires_grad();
  std::vector<Tensor> params{w1, b1, w2, b2};

  float first = 0, last = 0;
  for (int step = 0; step < 200; ++step) {
    Tensor loss = cross_entropy(linear(tanh(linear(x, w1, b1)), w2, b2), labels);
    if (step == 0) first = loss.item();
    last = loss.item();
    loss.backward();
    NoGradGuard no_grad;
    for (Tensor& p : params) {
      float* w = p.data();
      const float* g = p.grad().data();
      for (int64_t i = 0; i < p.numel(); ++i) w[i] -= 0.5f * g[i];
      p.zero_grad();
    }
  }
  CHECK(first > 1.0f);
  CHECK(last < 0.1f * first);
}

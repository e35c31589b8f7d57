// FrozenWeightsGuard (core/frozen_weights.h): linear() under it gives the bits it gives without
// it, packs each weight once per guard, packs again after a counted write, keeps a weight it
// packed alive, and lets go of everything when the outermost guard ends.
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "core/autograd.h"
#include "core/blas.h"
#include "core/frozen_weights.h"
#include "core/ops.h"
#include "core/random.h"

using namespace bnlab;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  return a.shape() == b.shape() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("frozen weights: linear() gives the same bits with and without the guard") {
  const int before = num_threads();
  Rng rng(7);
  // W2's three layers at batch 128, paper-mlp's first at 60; a 3-column layer at batch 5, which
  // gemm() sends to OpenBLAS.
  struct Layer {
    int64_t N, D, K;
  };
  for (const Layer& l : std::vector<Layer>{
           {128, 784, 512}, {128, 512, 256}, {128, 256, 10}, {60, 784, 100}, {5, 40, 3}}) {
    const Tensor x = Tensor::randn({l.N, l.D}, rng), w = Tensor::randn({l.K, l.D}, rng),
                 b = Tensor::randn({l.K}, rng);
    for (const int threads : {1, 2}) {
      for (const bool with_bias : {true, false}) {
        CAPTURE(l.N);
        CAPTURE(l.K);
        CAPTURE(threads);
        CAPTURE(with_bias);
        set_num_threads(threads);
        NoGradGuard no_grad;
        const Tensor bias = with_bias ? b : Tensor();
        const Tensor want = linear(x, w, bias);
        FrozenWeightsGuard frozen;
        // The first call packs, the second uses the packed copy.
        CHECK(same_bits(linear(x, w, bias), want));
        CHECK(same_bits(linear(x, w, bias), want));
      }
    }
  }
  set_num_threads(before);
}

TEST_CASE("frozen weights: one packed copy per weight per guard, all freed by the outermost") {
  Rng rng(8);
  const Tensor x = Tensor::randn({32, 64}, rng), w1 = Tensor::randn({48, 64}, rng),
               w2 = Tensor::randn({20, 48}, rng);
  NoGradGuard no_grad;
  CHECK_FALSE(weights_frozen());
  CHECK(detail::frozen_packed_transposed(w1) == nullptr);
  {
    FrozenWeightsGuard outer;
    CHECK(weights_frozen());
    for (int batch = 0; batch < 3; ++batch) (void)linear(linear(x, w1, {}), w2, {});
    CHECK(detail::frozen_weight_count() == 2);
    const PackedB* first = detail::frozen_packed_transposed(w1);
    {
      FrozenWeightsGuard inner;  // shares the outer guard's copies
      CHECK(detail::frozen_packed_transposed(w1) == first);
      CHECK(detail::frozen_weight_count() == 2);
    }
    CHECK(weights_frozen());
    CHECK(detail::frozen_packed_transposed(w1) == first);
  }
  CHECK_FALSE(weights_frozen());
  CHECK(detail::frozen_weight_count() == 0);
}

TEST_CASE("frozen weights: a weight written by an in-place op is packed again") {
  Rng rng(9);
  const Tensor x = Tensor::randn({40, 64}, rng);
  Tensor w = Tensor::randn({48, 64}, rng);
  const Tensor replacement = Tensor::randn({48, 64}, rng);
  NoGradGuard no_grad;
  const Tensor want_before = linear(x, w, {}), want_after = linear(x, replacement, {});
  FrozenWeightsGuard frozen;
  CHECK(same_bits(linear(x, w, {}), want_before));
  // An in-place op (as an optimizer step or load_state_dict) counts its write in version().
  w.copy_(replacement);
  CHECK(same_bits(linear(x, w, {}), want_after));
  CHECK(detail::frozen_weight_count() == 1);
}

TEST_CASE("frozen weights: the guard holds each weight it packed until it ends") {
  // A weight freed while its packed copy was kept could give its address to a new tensor, which
  // must not be given the old copy: the guard keeps the weight alive instead.
  Rng rng(10);
  const Tensor x = Tensor::randn({40, 64}, rng);
  NoGradGuard no_grad;
  std::weak_ptr<TensorImpl> dropped;
  {
    FrozenWeightsGuard frozen;
    {
      const Tensor temporary = Tensor::randn({48, 64}, rng);
      dropped = temporary.impl();
      (void)linear(x, temporary, {});
    }
    CHECK_FALSE(dropped.expired());
    const Tensor fresh = Tensor::randn({48, 64}, rng);
    const Tensor got = linear(x, fresh, {});
    CHECK(detail::frozen_weight_count() == 2);
    CHECK(detail::frozen_packed_transposed(fresh) != nullptr);
  }
  CHECK(dropped.expired());
}

TEST_CASE("frozen weights: a recorded linear() under the guard has the usual gradients") {
  Rng rng(11);
  const Tensor x = Tensor::randn({40, 64}, rng);
  const Tensor w0 = Tensor::randn({48, 64}, rng);
  auto grads = [&](bool frozen_weights) {
    Tensor w = w0.clone();
    w.set_requires_grad();
    std::unique_ptr<FrozenWeightsGuard> frozen;
    if (frozen_weights) frozen = std::make_unique<FrozenWeightsGuard>();
    sum(linear(x, w, {})).backward();
    return w.grad();
  };
  CHECK(same_bits(grads(true), grads(false)));
}

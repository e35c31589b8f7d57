// BatchNorm folding for inference (layers/bn_fold.h) and the channel-blocked batch-norm kernels
// (core/ops/norm.cpp): the folded Sequential equals the unfolded pair, leaves the state untouched,
// and is skipped whenever a graph, training mode or a hook needs the unfolded computation; the
// [N, C] kernels with more channels than one block (64) pass gradient checks and match a double
// reference.
#include <doctest/doctest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {

// Gives a BatchNorm non-trivial running statistics and affine parameters.
void perturb(BatchNorm& bn, Rng& rng) {
  const int64_t C = bn.options().num_features;
  for (int64_t c = 0; c < C; ++c) {
    bn.running_mean().data()[c] = rng.normal(0.0f, 0.5f);
    bn.running_var().data()[c] = rng.uniform(0.2f, 3.0f);
    bn.weight().data()[c] = rng.uniform(0.5f, 1.5f);
    bn.bias().data()[c] = rng.normal(0.0f, 0.3f);
  }
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  float m = 0.0f;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a.data()[i] - b.data()[i]));
  return m;
}

std::vector<float> flat_state(const Module& m) {
  std::vector<float> v;
  for (const auto& t : m.state_dict()) {
    auto d = t.tensor.to_vector();
    v.insert(v.end(), d.begin(), d.end());
  }
  return v;
}

}  // namespace

TEST_CASE("layers.bn_fold: Dense + BatchNorm1d in eval equals the unfolded pair") {
  Rng rng(3);
  auto dense = std::make_shared<Dense>(DenseOptions{.in_features = 7, .out_features = 5}, rng);
  auto bn = std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 5});
  perturb(*bn, rng);
  Sequential net({dense, bn, std::make_shared<ReLU>()});
  net.eval();
  Tensor x = Tensor::normal({4, 7}, rng);
  std::vector<float> before = flat_state(net);
  NoGradGuard no_grad;
  Tensor folded = net(x);
  Tensor unfolded = relu((*bn)((*dense)(x)));
  CHECK(max_abs_diff(folded, unfolded) < 1e-5f);
  CHECK(flat_state(net) == before);  // parameters and running statistics untouched
}

TEST_CASE("layers.bn_fold: Conv2d + BatchNorm2d in eval equals the unfolded pair") {
  Rng rng(4);
  auto conv = std::make_shared<Conv2d>(
      Conv2dOptions{.in_channels = 2, .out_channels = 3, .kernel = 3, .stride = 2, .padding = 1},
      rng);
  auto bn = std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 3});
  perturb(*bn, rng);
  Sequential net({conv, bn});
  net.eval();
  Tensor x = Tensor::normal({2, 2, 5, 6}, rng);
  std::vector<float> before = flat_state(net);
  NoGradGuard no_grad;
  Tensor folded = net(x);
  Tensor unfolded = (*bn)((*conv)(x));
  CHECK(max_abs_diff(folded, unfolded) < 1e-5f);
  CHECK(flat_state(net) == before);
  // The next call sees changed statistics: nothing stale is cached.
  bn->running_mean().data()[1] += 2.0f;
  CHECK(max_abs_diff(net(x), (*bn)((*conv)(x))) < 1e-5f);
}

TEST_CASE("layers.bn_fold: no folding with a graph, in training mode or with a hook") {
  Rng rng(5);
  auto dense = std::make_shared<Dense>(DenseOptions{.in_features = 3, .out_features = 4}, rng);
  auto bn = std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 4});
  perturb(*bn, rng);
  Sequential net({dense, bn});
  Tensor x = Tensor::normal({6, 3}, rng);
  SUBCASE("eval with grad mode on: BatchNorm's own op, and gamma gets a gradient") {
    net.eval();
    Tensor y = net(x);
    REQUIRE(y.grad_fn());
    CHECK(std::string(y.grad_fn()->op) == "batch_norm_eval");
    sum(y).backward();
    CHECK(bn->weight().has_grad());
  }
  SUBCASE("training mode under NoGradGuard: batch statistics, running stats updated") {
    NoGradGuard no_grad;
    Tensor y = net(x);
    CHECK(bn->num_batches_tracked() == 1);
    double mean = 0.0;
    for (int64_t n = 0; n < 6; ++n) mean += y.data()[n * 4];
    // Normalized with the batch's own mean: channel 0 averages to its beta.
    CHECK(mean / 6.0 == doctest::Approx(bn->bias().data()[0]).epsilon(1e-4));
  }
  SUBCASE("a hook on the BatchNorm still sees its input") {
    net.eval();
    int calls = 0;
    bn->register_forward_hook([&](const Module&, const Tensor& in, const Tensor&) {
      ++calls;
      CHECK(in.shape() == Shape{6, 4});
    });
    NoGradGuard no_grad;
    net(x);
    CHECK(calls == 1);
  }
}

TEST_CASE("ops.norm: batch_norm_train on [N, C] with several channel blocks") {
  // 70 channels: two blocks of the [N, C] kernel (64 + 6).
  SUBCASE("gradient check") {
    CHECK_GRADIENTS("batch_norm [N, 70]",
                    [](const std::vector<Tensor>& in) {
                      return batch_norm_train(in[0], in[1], in[2], 1e-5f).y;
                    },
                    {param({3, 70}, 21), param({70}, 22, 0.5f, 1.5f), param({70}, 23)});
  }
  SUBCASE("forward against a double reference") {
    Rng rng(24);
    const int64_t N = 9, C = 70;
    Tensor x = Tensor::normal({N, C}, rng, 3.0f, 2.0f);
    Tensor g = Tensor::uniform({C}, rng, 0.5f, 1.5f), b = Tensor::normal({C}, rng);
    BatchNormResult r = batch_norm_train(x, g, b, 1e-5f);
    for (int64_t c = 0; c < C; ++c) {
      double m = 0.0, v = 0.0;
      for (int64_t n = 0; n < N; ++n) m += x.data()[n * C + c];
      m /= N;
      for (int64_t n = 0; n < N; ++n) v += (x.data()[n * C + c] - m) * (x.data()[n * C + c] - m);
      v /= N;
      CHECK(r.mean.data()[c] == doctest::Approx(m).epsilon(1e-6));
      CHECK(r.var.data()[c] == doctest::Approx(v).epsilon(1e-5));
      for (int64_t n = 0; n < N; ++n) {
        double y = (x.data()[n * C + c] - m) / std::sqrt(v + 1e-5) * g.data()[c] + b.data()[c];
        CHECK(r.y.data()[n * C + c] == doctest::Approx(y).epsilon(1e-5));
      }
    }
  }
}

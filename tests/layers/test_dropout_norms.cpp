// Dropout layer, LayerNorm, GroupNorm, activations, MaxPool2d and Flatten layers.
#include <doctest/doctest.h>

#include <cmath>

#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("layers.dropout: eval is the identity - train keeps ~1-p scaled by 1/(1-p)") {
  Rng rng(1);
  Dropout d(0.25f, rng);
  Tensor x = Tensor::ones({100, 100});
  Tensor y = d(x);
  int kept = 0;
  for (float v : y.to_vector()) {
    if (v != 0.0f) {
      ++kept;
      CHECK(v == doctest::Approx(1.0f / 0.75f));
    }
  }
  CHECK(kept / 10000.0 == doctest::Approx(0.75).epsilon(0.03));
  d.eval();
  CHECK(d(x).to_vector() == x.to_vector());
  CHECK_THROWS_WITH_AS(Dropout(1.5f, rng), doctest::Contains("[0, 1]; got 1.5"), Error);
}

TEST_CASE("layers.dropout: gradient check with a frozen mask") {
  Rng rng(2);
  Dropout d(0.5f, rng);
  CHECK_GRADIENTS("Dropout",
                  [&](const Inputs& in) {
                    rng.seed_with(99);  // same mask on every call
                    return d(in[0]);
                  },
                  {testing::param({4, 6}, 3)});
}

TEST_CASE("layers.layer_norm: each sample normalized over its features - gradient check") {
  LayerNorm ln({.normalized_shape = {4}});
  Tensor y = ln(Tensor::from({1, 2, 3, 4, 10, 10, 10, 14}, {2, 4}));
  float rstd = 1.0f / std::sqrt(1.25f + 1e-5f);
  CHECK(y.data()[0] == doctest::Approx(-1.5f * rstd));
  CHECK(y.data()[7] == doctest::Approx(3.0f / std::sqrt(3.0f + 1e-5f)));
  ln.weight().copy_(Tensor::from({1, 2, 3, 4}, {4}));
  CHECK_GRADIENTS("LayerNorm", [&](const Inputs& in) { return ln(in[0]); },
                  {testing::param({3, 4}, 1), ln.weight(), ln.bias()});
}

TEST_CASE("layers.layer_norm, layers.group_norm: a bad eps is refused at construction") {
  // Found by the API attack: the constructors took eps < 0 or NaN, and only the first forward
  // said so, from inside the op. eps = 0 is valid, as in PyTorch.
  for (float eps : {-1.0f, NAN}) {
    CAPTURE(eps);
    CHECK_THROWS_WITH_AS(LayerNorm({.normalized_shape = {4}, .eps = eps}),
                         doctest::Contains("LayerNorm: eps must be >= 0; got "), Error);
    CHECK_THROWS_WITH_AS(GroupNorm({.num_groups = 2, .num_channels = 4, .eps = eps}),
                         doctest::Contains("GroupNorm: eps must be >= 0; got "), Error);
  }
  LayerNorm ln({.normalized_shape = {2}, .eps = 0.0f});
  CHECK(ln(Tensor::from({1, 3}, {1, 2})).data()[1] == doctest::Approx(1.0f));
  GroupNorm gn({.num_groups = 1, .num_channels = 2, .eps = 0.0f});
  CHECK(gn(Tensor::from({1, 3}, {1, 2})).data()[1] == doctest::Approx(1.0f));
}

TEST_CASE("layers.group_norm: groups, instance-norm extreme, gradient check, errors") {
  GroupNorm gn({.num_groups = 2, .num_channels = 4});
  Tensor x = Tensor::from({1, 3, 5, 7, 0, 0, 0, 0}, {1, 4, 2, 1});
  Tensor y = gn(x);
  // Group 0 = channels 0,1: values 1,3,5,7 (mean 4, var 5).
  CHECK(y.data()[0] == doctest::Approx(-3.0f / std::sqrt(5.0f + 1e-5f)));
  CHECK(y.data()[4] == doctest::Approx(0.0f));
  GroupNorm in({.num_groups = 3, .num_channels = 3});
  CHECK_GRADIENTS(
      "GroupNorm", [&](const Inputs& i) { return in(i[0]); },
      {testing::param({2, 3, 2, 2}, 2), testing::param({3}, 3)});  // input and a free tensor
  CHECK_GRADIENTS("GroupNorm", [&](const Inputs& i) { return gn(i[0]); },
                  {testing::param({2, 4, 3, 1}, 4), gn.weight(), gn.bias()});
  CHECK_THROWS_WITH_AS(GroupNorm({.num_groups = 4, .num_channels = 6}),
                       doctest::Contains("6 channels not divisible into 4 groups"), Error);
}

// Found by the API attack: GroupNorm(4, 4) on [1, 4, 1, 1] (one value per group) returned the
// bias and gave x no gradient, where torch raises and bnlab's own InstanceNorm (the same groups)
// refuses. Refused for any batch size and in eval too: the statistics do not depend on either.
TEST_CASE("layers.group_norm: a group of one value is refused naming the op and the input") {
  GroupNorm gn({.num_groups = 4, .num_channels = 4});
  for (const auto& [shape, text] : {std::pair<Shape, std::string>{{1, 4, 1, 1}, "[1, 4, 1, 1]"},
                                    {{3, 4, 1, 1}, "[3, 4, 1, 1]"},
                                    {{2, 4}, "[2, 4]"},
                                    {{1, 4, 1}, "[1, 4, 1]"}}) {
    CAPTURE(text);
    const std::string expected =
        "group_norm: expected more than 1 value per group; got input " + text + " in 4 groups of 1";
    CHECK_THROWS_WITH_AS(gn(Tensor::ones(shape)), doctest::Contains(expected.c_str()), Error);
  }
  gn.eval();
  CHECK_THROWS_WITH_AS(gn(Tensor::ones({1, 4, 1, 1})),
                       doctest::Contains("expected more than 1 value per group"), Error);
  CHECK_THROWS_WITH_AS(
      group_norm(Tensor::ones({2, 6}), 6, Tensor(), Tensor(), 1e-5f),
      doctest::Contains("group_norm: expected more than 1 value per group; got "
                        "input [2, 6] in 6 groups of 1 channel(s) x 1 position(s)"),
      Error);
  // Two values in a group are enough (two channels of one position, or one channel of two).
  CHECK(GroupNorm({.num_groups = 2, .num_channels = 4})(Tensor::from({1, 3, 0, 2}, {1, 4, 1, 1}))
            .data()[1] == doctest::Approx(1.0f).epsilon(1e-4));
  CHECK(gn(Tensor::from({1, 3, 0, 2, 5, 5, 4, 6}, {1, 4, 2, 1})).data()[7] ==
        doctest::Approx(1.0f).epsilon(1e-4));
}

TEST_CASE("layers: activations, pooling and flatten forward to their ops") {
  Tensor x = Tensor::from({-2, -0.5f, 0.5f, 2}, {1, 1, 2, 2});
  CHECK(Identity()(x).data() == x.data());  // the input itself, as torch.nn.Identity
  CHECK_GRADIENTS("Identity", [](const Inputs& i) { return Identity()(i[0]); },
                  {testing::param({2, 3}, 5)});
  CHECK(ReLU()(x).to_vector() == std::vector<float>{0, 0, 0.5f, 2});
  CHECK(LeakyReLU(0.5f)(x).to_vector() == std::vector<float>{-1, -0.25f, 0.5f, 2});
  CHECK(Tanh()(x).data()[3] == doctest::Approx(std::tanh(2.0f)));
  CHECK(Sigmoid()(x).data()[0] == doctest::Approx(1.0f / (1.0f + std::exp(2.0f))));
  CHECK(MaxPool2d(2)(x).item() == 2.0f);
  CHECK(Flatten()(x).shape() == Shape{1, 4});
  CHECK_THROWS_WITH_AS(MaxPool2d(2)(Tensor::ones({4, 4})),
                       doctest::Contains("MaxPool2d: expected input [N, C, H, W]; got [4, 4]"),
                       Error);
}

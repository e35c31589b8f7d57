// Dense and Conv2d layers: PyTorch default init bounds, forward by hand, gradient checks, shape
// errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("layers.dense: PyTorch default init stays within 1/sqrt(fan_in)") {
  Rng rng(1);
  Dense d({.in_features = 100, .out_features = 50}, rng);
  float bound = 1.0f / std::sqrt(100.0f);
  float max_abs = 0;
  for (float v : d.weight().to_vector()) max_abs = std::max(max_abs, std::fabs(v));
  CHECK(max_abs <= bound);
  CHECK(max_abs > 0.9f * bound);  // actually spread over the range
  for (float v : d.bias().to_vector()) CHECK(std::fabs(v) <= bound);
}

TEST_CASE("layers.dense: forward by hand with constant weights, and gradient check") {
  Rng rng(2);
  Dense d({.in_features = 3, .out_features = 2}, rng);
  d.weight().fill_(0.5f);
  d.bias().fill_(1.0f);
  CHECK(d(Tensor::from({1, 2, 3}, {1, 3})).to_vector() == std::vector<float>{4.0f, 4.0f});
  Dense g({.in_features = 5, .out_features = 4}, rng);
  CHECK_GRADIENTS("Dense", [&](const Inputs& in) { return g(in[0]); },
                  {testing::param({3, 5}, 3), g.weight(), g.bias()});
  CHECK_THROWS_WITH_AS(
      g(Tensor::ones({64, 784})),
      doctest::Contains("Dense: input has 784 features, layer expects 5 (input [64, 784]"), Error);
  // An unflattened image batch: the whole shape, not a made-up feature count.
  CHECK_THROWS_WITH_AS(g(Tensor::ones({2, 1, 28, 28})),
                       "Dense: expected input [N, 5]; got [2, 1, 28, 28] (flatten it first, e.g. "
                       "with a Flatten layer)",
                       Error);
  CHECK_THROWS_WITH_AS(g(Tensor::ones({5})), "Dense: expected input [N, 5]; got [5]", Error);
}

TEST_CASE("layers.conv2d: forward by hand, gradient checks with stride and padding, errors") {
  Rng rng(3);
  Conv2d ones({.in_channels = 1, .out_channels = 1, .kernel = 3, .padding = 1, .bias = false}, rng);
  ones.weight().fill_(1.0f);
  Tensor y = ones(Tensor::ones({1, 1, 3, 3}));
  // A 3x3 box sum of ones with zero padding: corners 4, edges 6, centre 9.
  CHECK(y.to_vector() == std::vector<float>{4, 6, 4, 6, 9, 6, 4, 6, 4});

  Conv2d c({.in_channels = 2, .out_channels = 3, .kernel = 3, .stride = 2, .padding = 1}, rng);
  CHECK(c(Tensor::zeros({2, 2, 5, 5})).shape() == Shape{2, 3, 3, 3});
  CHECK_GRADIENTS("Conv2d", [&](const Inputs& in) { return c(in[0]); },
                  {testing::param({2, 2, 5, 5}, 4), c.weight(), c.bias()});
  CHECK_THROWS_WITH_AS(c(Tensor::ones({1, 3, 5, 5})),
                       doctest::Contains("Conv2d: expected input [N, 2, H, W]; got [1, 3, 5, 5]"),
                       Error);
}

TEST_CASE("layers: Conv2d -> Flatten -> Dense takes an empty batch, as in PyTorch") {
  // Each layer took it alone, but Flatten gave [0, 0] for [0, 2, 2, 2], so Dense refused it.
  Rng rng(4);
  Conv2d conv({.in_channels = 1, .out_channels = 2, .kernel = 3}, rng);
  Flatten flat;
  Dense dense({.in_features = 8, .out_features = 3}, rng);
  CHECK(dense(flat(conv(Tensor::zeros({0, 1, 4, 4})))).shape() == Shape{0, 3});
}

TEST_CASE("layers.init: bad ranges and std are refused, and fan_in 0 gives a zero bias, not NaN") {
  // uniform_ and normal_ accepted what PyTorch refuses, and torch_default_'s bias bound was
  // 1/sqrt(0): NaN in every bias element. PyTorch's reset_parameters uses bound 0 there.
  Rng rng(5);
  Tensor t = Tensor::ones({2});
  CHECK_THROWS_WITH_AS(init::uniform_(t, rng, 1, 0),
                       "init::uniform_: expects a [low, high) range, but found low=1 > high=0",
                       Error);
  CHECK_THROWS_WITH_AS(init::normal_(t, rng, 0, -1),
                       "init::normal_: expects std >= 0, but found std=-1", Error);
  CHECK(t.to_vector() == std::vector<float>{1, 1});  // refused before anything was written
  Tensor w = Tensor::ones({2, 0});
  Tensor b = Tensor::ones({2});
  init::torch_default_(w, b, rng);
  CHECK(b.to_vector() == std::vector<float>{0, 0});
  // Zero-element weights are left alone, as PyTorch (their fan, 0, would make the bound inf).
  CHECK_NOTHROW(init::kaiming_uniform_(Tensor::ones({3, 0, 2, 2}), rng));
  CHECK_NOTHROW(init::kaiming_normal_(Tensor::ones({0, 3}), rng, 0.0f, true));
}

TEST_CASE("layers.init: schemes give the documented spreads") {
  Rng rng(4);
  Tensor w = Tensor::empty({256, 512});
  Tensor b = Tensor::ones({256});
  auto stdev = [](const Tensor& t) {
    double s = 0;
    for (float v : t.to_vector()) s += double(v) * v;
    return std::sqrt(s / t.numel());
  };
  init::apply_scheme("kaiming-normal", w, b, rng);
  CHECK(stdev(w) == doctest::Approx(std::sqrt(2.0 / 512)).epsilon(0.03));
  CHECK(b.to_vector() == std::vector<float>(256, 0.0f));
  init::apply_scheme("xavier-uniform", w, b, rng);
  CHECK(stdev(w) == doctest::Approx(std::sqrt(2.0 / (512 + 256))).epsilon(0.03));
  init::apply_scheme("normal:0.01", w, b, rng);
  CHECK(stdev(w) == doctest::Approx(0.01).epsilon(0.03));
  CHECK(init::fans(Tensor::empty({16, 3, 5, 5})).in == 75);
  CHECK_THROWS_WITH_AS(init::apply_scheme("glorot", w, b, rng),
                       doctest::Contains("unknown scheme 'glorot'"), Error);
  // Text after the std used to be dropped: "normal:0.01abc" initialized with std 0.01.
  for (const char* bad : {"normal:0.01abc", "normal:", "normal:0.1 "}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(init::apply_scheme(bad, w, b, rng),
                         doctest::Contains("init: cannot read the std in"), Error);
  }
}

TEST_CASE("layers.init: gain takes torch.nn.init.calculate_gain's names") {
  // torch: calculate_gain('conv_transpose2d') = 1, calculate_gain('selu') = 0.75.
  for (const char* linear : {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                             "conv_transpose2d", "conv_transpose3d", "sigmoid"}) {
    CAPTURE(linear);
    CHECK(init::gain(linear) == 1.0f);
  }
  CHECK(init::gain("selu") == 0.75f);
  CHECK(init::gain("tanh") == 5.0f / 3.0f);
  CHECK(init::gain("leaky_relu") == doctest::Approx(1.4141428569978354));
  CHECK_THROWS_WITH_AS(init::gain("swish"), doctest::Contains("leaky_relu or selu"), Error);
}

TEST_CASE("layers.conv2d: groups give PyTorch's weight shape [K, C/groups, k, k] and state_dict") {
  Rng rng(9);
  Conv2d dw({.in_channels = 6, .out_channels = 12, .kernel = 3, .padding = 1, .groups = 6}, rng);
  CHECK(dw.weight().shape() == Shape{12, 1, 3, 3});
  auto sd = dw.state_dict();  // the keys and shapes a torch.nn.Conv2d(6, 12, 3, groups=6) has
  REQUIRE(sd.size() == 2);
  CHECK(sd[0].name == "weight");
  CHECK(sd[0].tensor.shape() == Shape{12, 1, 3, 3});
  CHECK(sd[1].name == "bias");
  CHECK(sd[1].tensor.shape() == Shape{12});
  // PyTorch's default init bound uses fan_in = C/groups * k * k = 9.
  float max_abs = 0;
  for (float v : dw.weight().to_vector()) max_abs = std::max(max_abs, std::abs(v));
  CHECK(max_abs <= 1.0f / 3.0f);
  CHECK(dw.to_string().find("6 -> 12, 3x3, pad 1, groups 6") != std::string::npos);
  Tensor x = Tensor::normal({2, 6, 5, 5}, rng);
  CHECK(dw(x).to_vector() == conv2d(x, dw.weight(), dw.bias(), 1, 1, 6).to_vector());
  Conv2d g2({.in_channels = 4, .out_channels = 2, .kernel = 3, .stride = 2, .groups = 2}, rng);
  CHECK_GRADIENTS("Conv2d groups 2", [&](const Inputs& in) { return g2(in[0]); },
                  {testing::param({2, 4, 5, 5}, 3), g2.weight(), g2.bias()});
  CHECK_THROWS_WITH_AS(Conv2d({.in_channels = 6, .out_channels = 4, .groups = 4}, rng),
                       doctest::Contains("Conv2d: groups=4 must divide in_channels=6"), Error);
}

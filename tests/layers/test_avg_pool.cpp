// AvgPool2d and AdaptiveAvgPool2d layers: forward to their ops, no parameters or state, a
// gradient check through each, printing, and errors naming the layer and the shape.
#include <doctest/doctest.h>

#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("layers.avg_pool: AvgPool2d and AdaptiveAvgPool2d forward to their ops") {
  Rng rng(4);
  Tensor x = Tensor::normal({2, 3, 6, 5}, rng);
  AvgPool2d pool(3, 2, 1, false);
  CHECK(pool(x).to_vector() == avg_pool2d(x, 3, 2, 1, false).to_vector());
  CHECK(AvgPool2d(2)(x).shape() == Shape{2, 3, 3, 2});
  AdaptiveAvgPool2d gap(1);
  CHECK(gap(x).shape() == Shape{2, 3, 1, 1});
  CHECK(gap(x).to_vector() == adaptive_avg_pool2d(x, 1).to_vector());
  CHECK(AdaptiveAvgPool2d({4, 2})(x).to_vector() == adaptive_avg_pool2d(x, {4, 2}).to_vector());
  // Stateless, as their PyTorch twins: nothing in state_dict, so checkpoints are unaffected.
  CHECK(pool.parameters().empty());
  CHECK(gap.state_dict().empty());
  CHECK_GRADIENTS("AvgPool2d", [&](const Inputs& in) { return pool(in[0]); },
                  {testing::param({2, 2, 5, 5}, 1)});
  CHECK_GRADIENTS("AdaptiveAvgPool2d", [](const Inputs& in) { return AdaptiveAvgPool2d(2)(in[0]); },
                  {testing::param({2, 2, 5, 3}, 2)});
}

TEST_CASE("layers.avg_pool: printing and errors") {
  Sequential net;
  net.add(std::make_shared<AvgPool2d>(3, 2, 1));
  net.add(std::make_shared<AdaptiveAvgPool2d>(1));
  std::string printed = net.to_string();
  CHECK(printed.find("AvgPool2d(3x3, stride 2, pad 1)") != std::string::npos);
  CHECK(printed.find("AdaptiveAvgPool2d(output 1x1)") != std::string::npos);
  CHECK(summary(net, {2, 4, 8, 8}).find("[2, 4, 1, 1]") != std::string::npos);
  CHECK_THROWS_WITH_AS(AvgPool2d(2)(Tensor::ones({4, 4})),
                       doctest::Contains("AvgPool2d: expected input [N, C, H, W]; got [4, 4]"),
                       Error);
  CHECK_THROWS_WITH_AS(
      AdaptiveAvgPool2d(1)(Tensor::ones({3, 4, 4})),
      doctest::Contains("AdaptiveAvgPool2d: expected input [N, C, H, W]; got [3, 4, 4]"), Error);
  CHECK_THROWS_WITH_AS(AvgPool2d(2, 2, 2), doctest::Contains("AvgPool2d: invalid kernel=2"), Error);
  CHECK_THROWS_WITH_AS(AdaptiveAvgPool2d(0), doctest::Contains("output size must be at least 1x1"),
                       Error);
}

// Elementwise ops: hand-computed values, broadcasting, gradient checks, kinks, errors.
#include <doctest/doctest.h>

#include <cmath>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("ops.elementwise: forward values by hand") {
  Tensor a = Tensor::from({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from({10, 20}, {2});
  CHECK((a + b).to_vector() == std::vector<float>{11, 22, 13, 24});
  CHECK((a - b).to_vector() == std::vector<float>{-9, -18, -7, -16});
  CHECK((a * b).to_vector() == std::vector<float>{10, 40, 30, 80});
  CHECK((b / a).to_vector() == std::vector<float>{10, 10, 10.0f / 3.0f, 5});
  CHECK((-a).to_vector() == std::vector<float>{-1, -2, -3, -4});
  CHECK((2.0f - a).to_vector() == std::vector<float>{1, 0, -1, -2});
  CHECK(relu(Tensor::from({-1, 0, 2}, {3})).to_vector() == std::vector<float>{0, 0, 2});
  // NaN stays NaN, as in torch.relu (a relu that maps NaN to 0 would hide a divergence).
  CHECK(std::isnan(relu(Tensor::from({std::nanf("")}, {1})).item()));
  CHECK(leaky_relu(Tensor::from({-1, 2}, {2}), 0.1f).to_vector() == std::vector<float>{-0.1f, 2});
  CHECK(sigmoid(Tensor::from({0}, {1})).item() == 0.5f);
  std::vector<float> saturated = sigmoid(Tensor::from({-100, 100}, {2})).to_vector();
  CHECK(saturated[0] >= 0.0f);
  CHECK(saturated[0] < 1e-30f);  // e^-100, no overflow in the negative branch
  CHECK(saturated[1] == 1.0f);
  CHECK(pow(Tensor::from({3}, {1}), 2.0f).item() == doctest::Approx(9.0f));
  CHECK(sqrt(Tensor::from({16}, {1})).item() == 4.0f);
}

TEST_CASE("ops.elementwise: broadcasting [N,C,H,W] with per-channel [C,1,1] and scalars") {
  Tensor x = Tensor::zeros({2, 3, 2, 2});
  Tensor c = Tensor::from({1, 2, 3}, {3, 1, 1});
  Tensor y = x + c;
  CHECK(y.shape() == Shape{2, 3, 2, 2});
  CHECK(y.data()[0] == 1.0f);
  CHECK(y.data()[4] == 2.0f);
  CHECK(y.data()[12 + 8] == 3.0f);
  Tensor s = x + Tensor::scalar(5.0f);
  CHECK(s.data()[23] == 5.0f);
  Tensor col = Tensor::from({1, 2}, {2, 1});
  Tensor row = Tensor::from({10, 20, 30}, {3});
  CHECK((col + row).to_vector() == std::vector<float>{11, 21, 31, 12, 22, 32});
}

TEST_CASE("ops.elementwise: sum_to_shape reduces broadcast dims") {
  Tensor g = Tensor::ones({2, 3, 4});
  CHECK(sum_to_shape(g, {3, 1}).to_vector() == std::vector<float>{8, 8, 8});
  CHECK(sum_to_shape(g, {4}).to_vector() == std::vector<float>{6, 6, 6, 6});
  CHECK(sum_to_shape(g, {}).item() == 24.0f);
}

TEST_CASE("ops.elementwise: gradient checks") {
  SUBCASE("add/sub/mul/div, same shape") {
    for (auto [name, f] :
         std::vector<std::pair<const char*, Tensor (*)(const Tensor&, const Tensor&)>>{
             {"add", add}, {"sub", sub}, {"mul", mul}}) {
      CHECK_GRADIENTS(name, [f](const Inputs& in) { return f(in[0], in[1]); },
                      {param({3, 4}, 1), param({3, 4}, 2)});
    }
    CHECK_GRADIENTS("div", [](const Inputs& in) { return div(in[0], in[1]); },
                    {param({3, 4}, 1), param({3, 4}, 2, 0.5f, 2.0f)});
  }
  SUBCASE("[N,D] with [D]") {
    CHECK_GRADIENTS("add", [](const Inputs& in) { return in[0] + in[1]; },
                    {param({4, 5}, 3), param({5}, 4)});
    CHECK_GRADIENTS("mul", [](const Inputs& in) { return in[0] * in[1]; },
                    {param({4, 5}, 3), param({5}, 4)});
    CHECK_GRADIENTS("sub", [](const Inputs& in) { return in[1] - in[0]; },
                    {param({4, 5}, 3), param({5}, 4)});
    CHECK_GRADIENTS("div", [](const Inputs& in) { return in[0] / in[1]; },
                    {param({4, 5}, 3), param({5}, 4, 0.5f, 2.0f)});
  }
  SUBCASE("[N,C,H,W] with per-channel [C,1,1]") {
    CHECK_GRADIENTS("mul", [](const Inputs& in) { return in[0] * in[1]; },
                    {param({2, 3, 2, 2}, 5), param({3, 1, 1}, 6)});
    CHECK_GRADIENTS("add", [](const Inputs& in) { return in[0] + in[1]; },
                    {param({2, 3, 2, 2}, 5), param({3, 1, 1}, 6)});
  }
  SUBCASE("both sides broadcast") {
    CHECK_GRADIENTS("mul", [](const Inputs& in) { return in[0] * in[1]; },
                    {param({3, 1}, 7), param({1, 4}, 8)});
  }
  SUBCASE("unary") {
    CHECK_GRADIENTS("neg", [](const Inputs& in) { return -in[0]; }, {param({6}, 9)});
    CHECK_GRADIENTS("add_scalar", [](const Inputs& in) { return in[0] + 2.0f; }, {param({6}, 9)});
    CHECK_GRADIENTS("mul_scalar", [](const Inputs& in) { return in[0] * -3.0f; }, {param({6}, 9)});
    CHECK_GRADIENTS("exp", [](const Inputs& in) { return exp(in[0]); }, {param({6}, 9)});
    CHECK_GRADIENTS("log", [](const Inputs& in) { return log(in[0]); },
                    {param({6}, 9, 0.5f, 3.0f)});
    CHECK_GRADIENTS("sqrt", [](const Inputs& in) { return sqrt(in[0]); },
                    {param({6}, 9, 0.5f, 3.0f)});
    CHECK_GRADIENTS("pow", [](const Inputs& in) { return pow(in[0], 3.0f); }, {param({6}, 9)});
    CHECK_GRADIENTS("pow", [](const Inputs& in) { return pow(in[0], -0.5f); },
                    {param({6}, 9, 0.5f, 3.0f)});
    CHECK_GRADIENTS("sigmoid", [](const Inputs& in) { return sigmoid(in[0]); },
                    {param({6}, 9, -4.0f, 4.0f)});
    CHECK_GRADIENTS("tanh", [](const Inputs& in) { return tanh(in[0]); },
                    {param({6}, 9, -2.0f, 2.0f)});
    // Away from the kink at 0: values in [0.1, 1) and their negatives.
    Tensor x = Tensor::from({-0.9f, -0.5f, -0.1f, 0.1f, 0.5f, 0.9f}, {6});
    x.set_requires_grad();
    CHECK_GRADIENTS("relu", [](const Inputs& in) { return relu(in[0]); }, {x});
    CHECK_GRADIENTS("leaky_relu", [](const Inputs& in) { return leaky_relu(in[0], 0.2f); }, {x});
  }
}

TEST_CASE("ops.elementwise: subgradients at the kink are pinned exactly") {
  Tensor x = Tensor::from({0.0f}, {1});
  x.set_requires_grad();
  sum(relu(x)).backward();
  CHECK(x.grad().item() == 0.0f);  // relu'(0) = 0
  x.zero_grad();
  sum(leaky_relu(x, 0.2f)).backward();
  CHECK(x.grad().item() == doctest::Approx(0.2f));
}

TEST_CASE("ops.elementwise: incompatible shapes name the op and both shapes") {
  CHECK_THROWS_WITH_AS(add(Tensor::ones({2, 3}), Tensor::ones({4})),
                       doctest::Contains("add: shapes [2, 3] and [4] cannot be broadcast together"),
                       Error);
  CHECK_THROWS_WITH_AS(mul(Tensor::ones({2, 3, 4, 4}), Tensor::ones({2, 1})),
                       doctest::Contains("mul: shapes [2, 3, 4, 4] and [2, 1]"), Error);
}

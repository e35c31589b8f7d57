// Elementwise ops: hand-computed values, broadcasting, gradient checks, kinks, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

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
  SUBCASE("relu's backward selects, as PyTorch's threshold_backward") {
    // torch: x = tensor([-1., 2., 0., nan, nan, -0., -inf, inf]); relu(x).backward(tensor([nan,
    // 1., inf, nan, 2., inf, 3., -4.])) -> x.grad = [0, 1, 0, nan, 2, 0, 0, -4]: dout passes where
    // x > 0 or x is NaN, and is +0 elsewhere even when it is NaN or inf.
    const float nan = std::nanf(""), inf = INFINITY;
    Tensor x = Tensor::from({-1, 2, 0, nan, nan, -0.0f, -inf, inf}, {8}).set_requires_grad();
    relu(x).backward(Tensor::from({nan, 1, inf, nan, 2, inf, 3, -4}, {8}));
    std::vector<float> dx = x.grad().to_vector();
    CHECK(std::isnan(dx[3]));
    dx[3] = 7.0f;  // NaN != NaN; the rest compared exactly, +0 bits included
    const std::vector<float> want{0, 1, 0, 7, 2, 0, 0, -4};
    CHECK(std::memcmp(dx.data(), want.data(), sizeof(float) * want.size()) == 0);
  }
  CHECK(leaky_relu(Tensor::from({-1, 2}, {2}), 0.1f).to_vector() == std::vector<float>{-0.1f, 2});
  CHECK(sigmoid(Tensor::from({0}, {1})).item() == 0.5f);
  std::vector<float> saturated = sigmoid(Tensor::from({-100, 100}, {2})).to_vector();
  CHECK(saturated[0] >= 0.0f);
  CHECK(saturated[0] < 1e-30f);  // e^-100, no overflow in the negative branch
  CHECK(saturated[1] == 1.0f);
  CHECK(pow(Tensor::from({3}, {1}), 2.0f).item() == doctest::Approx(9.0f));
  CHECK(sqrt(Tensor::from({16}, {1})).item() == 4.0f);
}

TEST_CASE("ops.elementwise: pow at 0, -inf and the exponent 0 as PyTorch") {
  const float inf = std::numeric_limits<float>::infinity();
  // torch: x = tensor([0., -0., 1e-45, 2.]); x.pow(0).backward(ones) -> y = 1, x.grad = 0.
  Tensor x = Tensor::from({0.0f, -0.0f, 1e-45f, 2.0f}, {4});
  x.set_requires_grad();
  Tensor y = pow(x, 0.0f);
  CHECK(y.to_vector() == std::vector<float>{1, 1, 1, 1});
  y.sum().backward();
  CHECK(x.grad().to_vector() == std::vector<float>{0, 0, 0, 0});
  // torch: tensor([-inf]).pow(0.5) -> nan (computed as sqrt), .pow(-0.5) -> nan (rsqrt); the
  // gradient of pow(1.5) at -inf is 1.5 * (-inf)^0.5 -> nan. C's pow(-inf, 0.5) is +inf.
  Tensor m = Tensor::from({-inf}, {1});
  m.set_requires_grad();
  CHECK(std::isnan(pow(m, 0.5f).item()));
  CHECK(std::isnan(pow(m, -0.5f).item()));
  pow(m, 1.5f).sum().backward();
  CHECK(std::isnan(m.grad().item()));
  CHECK(pow(Tensor::from({4}, {1}), 0.5f).item() == 2.0f);
  CHECK(pow(Tensor::from({4}, {1}), -0.5f).item() == 0.5f);
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

TEST_CASE("ops.elementwise: PyTorch's other pointwise ops, values") {
  Tensor x = Tensor::from({-2, -0.5f, 0, 0.5f, 4}, {5});
  CHECK(abs(x).to_vector() == std::vector<float>{2, 0.5f, 0, 0.5f, 4});
  CHECK(sign(x).to_vector() == std::vector<float>{-1, -1, 0, 1, 1});
  CHECK(square(x).to_vector() == std::vector<float>{4, 0.25f, 0, 0.25f, 16});
  CHECK(reciprocal(Tensor::from({-2, 0.5f}, {2})).to_vector() == std::vector<float>{-0.5f, 2});
  CHECK(rsqrt(Tensor::from({4, 0.25f}, {2})).to_vector() == std::vector<float>{0.5f, 2});
  CHECK(sin(Tensor::from({0.5f}, {1})).item() == std::sin(0.5f));
  CHECK(cos(Tensor::from({0.5f}, {1})).item() == std::cos(0.5f));
  // Near 0, where log(1 + x) and exp(x) - 1 would cancel.
  CHECK(log1p(Tensor::from({1e-7f}, {1})).item() == doctest::Approx(1e-7f).epsilon(1e-6));
  CHECK(expm1(Tensor::from({1e-7f}, {1})).item() == doctest::Approx(1e-7f).epsilon(1e-6));
  CHECK(expm1(Tensor::from({2}, {1})).item() == doctest::Approx(std::expm1(2.0f)).epsilon(1e-6));
  CHECK(clamp(x, -1.0f, 1.0f).to_vector() == std::vector<float>{-1, -0.5f, 0, 0.5f, 1});
  CHECK(clamp_min(x, 0.0f).to_vector() == std::vector<float>{0, 0, 0, 0.5f, 4});
  CHECK(clamp_max(x, 0.0f).to_vector() == std::vector<float>{-2, -0.5f, 0, 0, 0});
  // min > max: every output is max (torch.clamp).
  CHECK(clamp(x, 3.0f, 2.0f).to_vector() == std::vector<float>(5, 2.0f));
}

TEST_CASE("ops.elementwise: maximum, minimum and where broadcast") {
  Tensor a = Tensor::from({1, 5, 3, 2}, {2, 2});
  Tensor b = Tensor::from({2, 2}, {2});
  CHECK(maximum(a, b).to_vector() == std::vector<float>{2, 5, 3, 2});
  CHECK(minimum(a, b).to_vector() == std::vector<float>{1, 2, 2, 2});
  Tensor cond = Tensor::from({1, 0}, {2, 1});  // one choice per row
  CHECK(where(cond, a, b).to_vector() == std::vector<float>{1, 5, 2, 2});
  CHECK(where(Tensor::scalar(0.0f), a, Tensor::scalar(7.0f)).to_vector() ==
        std::vector<float>(4, 7.0f));
}

TEST_CASE("ops.elementwise: NaN propagates through clamp, maximum, minimum, abs, sign") {
  const float nan = std::nanf("");
  Tensor x = Tensor::from({nan, 1}, {2});
  Tensor y = Tensor::from({0, nan}, {2});
  for (const Tensor& t : {maximum(x, y), minimum(x, y), maximum(y, x), minimum(y, x)}) {
    CHECK(std::isnan(t.data()[0]));
    CHECK(std::isnan(t.data()[1]));
  }
  CHECK(std::isnan(clamp(x, -1.0f, 0.5f).data()[0]));
  CHECK(std::isnan(abs(x).data()[0]));
  CHECK(std::isnan(sign(x).data()[0]));  // torch gives 0 here (pytorch/pytorch#41245)
  // where selects, so a NaN on the side not taken does not leak.
  CHECK(where(Tensor::from({0, 1}, {2}), x, y).to_vector()[0] == 0.0f);
}

TEST_CASE("ops.elementwise: gradient checks of the pointwise additions") {
  // Away from kinks (abs at 0, clamp at its bounds) and from poles (reciprocal, rsqrt at 0).
  Tensor away = Tensor::from({-1.7f, -0.9f, -0.35f, 0.3f, 0.8f, 1.6f}, {2, 3});
  away.set_requires_grad();
  CHECK_GRADIENTS("abs", [](const Inputs& in) { return abs(in[0]); }, {away});
  CHECK_GRADIENTS("square", [](const Inputs& in) { return square(in[0]); }, {param({6}, 1)});
  CHECK_GRADIENTS("reciprocal", [](const Inputs& in) { return reciprocal(in[0]); }, {away});
  CHECK_GRADIENTS("rsqrt", [](const Inputs& in) { return rsqrt(in[0]); },
                  {param({6}, 2, 0.5f, 3.0f)});
  CHECK_GRADIENTS("sin", [](const Inputs& in) { return sin(in[0]); }, {param({6}, 3, -3, 3)});
  CHECK_GRADIENTS("cos", [](const Inputs& in) { return cos(in[0]); }, {param({6}, 4, -3, 3)});
  CHECK_GRADIENTS("log1p", [](const Inputs& in) { return log1p(in[0]); },
                  {param({6}, 5, -0.5f, 3.0f)});
  CHECK_GRADIENTS("expm1", [](const Inputs& in) { return expm1(in[0]); }, {param({6}, 6, -2, 2)});
  CHECK_GRADIENTS("clamp", [](const Inputs& in) { return clamp(in[0], -1.0f, 0.5f); }, {away});
  CHECK_GRADIENTS("clamp_min", [](const Inputs& in) { return clamp_min(in[0], 0.0f); }, {away});
  CHECK_GRADIENTS("sign", [](const Inputs& in) { return sign(in[0]); }, {away});
  // Binary ops with broadcasting; the inputs never tie.
  Tensor b = Tensor::from({0.1f, -0.6f, 1.1f}, {3});
  b.set_requires_grad();
  CHECK_GRADIENTS("maximum", [](const Inputs& in) { return maximum(in[0], in[1]); }, {away, b});
  CHECK_GRADIENTS("minimum", [](const Inputs& in) { return minimum(in[1], in[0]); }, {away, b});
  Tensor cond = Tensor::from({1, 0, 1}, {3});
  CHECK_GRADIENTS("where", [&](const Inputs& in) { return where(cond, in[0], in[1]); }, {away, b});
  CHECK_GRADIENTS("where",
                  [](const Inputs& in) {
                    return where(Tensor::from({0, 1}, {2, 1}), in[0], in[1]);
                  },
                  {param({2, 3}, 7), param({1}, 8)});
}

TEST_CASE("ops.elementwise: subgradients of the pointwise additions, as PyTorch") {
  const float nan = std::nanf("");
  // Values from torch 1.13 (x.grad after sum(f(x)).backward()).
  auto grad = [](auto f, std::vector<float> at) {
    Tensor x = Tensor::from(at, {static_cast<int64_t>(at.size())});
    x.set_requires_grad();
    sum(f(x)).backward();
    return x.grad().to_vector();
  };
  CHECK(grad([](const Tensor& t) { return abs(t); }, {0, nan}) == std::vector<float>{0, 0});
  CHECK(grad([](const Tensor& t) { return sign(t); }, {-1, 0, 2}) == std::vector<float>{0, 0, 0});
  // clamp passes the gradient AT its bounds, not beyond, and not through NaN.
  CHECK(grad([](const Tensor& t) { return clamp(t, -1.0f, 1.0f); }, {0, nan, -1, 1, 2}) ==
        std::vector<float>{1, 0, 1, 1, 0});
  CHECK(grad([](const Tensor& t) { return clamp(t, 3.0f, 2.0f); }, {1, 2.5f, 5}) ==
        std::vector<float>{0, 0, 0});
  // maximum/minimum: ties split the gradient; a NaN on either side gives both inputs all of it.
  Tensor a = Tensor::from({1, 2, nan, 3}, {4});
  Tensor b = Tensor::from({1, 3, 1, nan}, {4});
  a.set_requires_grad();
  b.set_requires_grad();
  sum(maximum(a, b)).backward();
  CHECK(a.grad().to_vector() == std::vector<float>{0.5f, 0, 1, 1});
  CHECK(b.grad().to_vector() == std::vector<float>{0.5f, 1, 1, 1});
  a.zero_grad();
  b.zero_grad();
  sum(minimum(a, b)).backward();
  CHECK(a.grad().to_vector() == std::vector<float>{0.5f, 1, 1, 1});
  CHECK(b.grad().to_vector() == std::vector<float>{0.5f, 0, 1, 1});
  // where: the gradient goes to the chosen side only, reduced over broadcast dims; none to cond.
  Tensor x = Tensor::from({1, 2, 3, 4}, {2, 2});
  Tensor s = Tensor::from({5}, {1});
  x.set_requires_grad();
  s.set_requires_grad();
  sum(where(Tensor::from({1, 0}, {2}), x, s)).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{1, 0, 1, 0});
  CHECK(s.grad().item() == 2.0f);
}

TEST_CASE("ops.elementwise: bad arguments of the pointwise additions") {
  Tensor x = Tensor::ones({2, 3});
  CHECK_THROWS_WITH_AS(clamp(x, std::nullopt, std::nullopt),
                       doctest::Contains("clamp: at least one of min and max"), Error);
  CHECK_THROWS_WITH_AS(clamp(x, std::nanf(""), 1.0f), doctest::Contains("clamp: a bound is NaN"),
                       Error);
  CHECK_THROWS_WITH_AS(maximum(x, Tensor::ones({4})),
                       doctest::Contains("maximum: shapes [2, 3] and [4] cannot be broadcast"),
                       Error);
  CHECK_THROWS_WITH_AS(
      where(Tensor::ones({4}), x, x),
      doctest::Contains("where: condition [4], input [2, 3] and other [2, 3] cannot be broadcast"),
      Error);
  CHECK_THROWS_WITH_AS(
      where(Tensor::from({0.5f}, {1}), x, x),
      doctest::Contains("where: condition must hold 0 or 1; got 0.5 at flat index 0"), Error);
}

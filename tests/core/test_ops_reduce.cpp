// Reductions, max/argmax, softmax, log_softmax, and the shape ops.
#include <doctest/doctest.h>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("ops.reduce: forward values by hand") {
  Tensor x = Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(sum(x).item() == 21.0f);
  CHECK(mean(x).item() == 3.5f);
  CHECK(sum(x, 0).to_vector() == std::vector<float>{5, 7, 9});
  CHECK(sum(x, 1).to_vector() == std::vector<float>{6, 15});
  CHECK(sum(x, 1, true).shape() == Shape{2, 1});
  CHECK(mean(x, -1).to_vector() == std::vector<float>{2, 5});
  CHECK(max(x, 1).values.to_vector() == std::vector<float>{3, 6});
  CHECK(argmax(x, 0) == std::vector<int64_t>{1, 1, 1});
  CHECK(argmax(Tensor::from({5, 1, 5}, {1, 3}), 1) == std::vector<int64_t>{0});  // first of ties
  Tensor p = softmax(Tensor::from({0, 0, 0, 1000, 1000, 0}, {2, 3}));
  CHECK(p.data()[0] == doctest::Approx(1.0f / 3));
  CHECK(p.data()[3] == doctest::Approx(0.5f));  // no overflow at 1000
  Tensor lp = log_softmax(Tensor::from({0, 0}, {1, 2}));
  CHECK(lp.data()[0] == doctest::Approx(std::log(0.5f)));
}

// log_softmax subtracted m + log z, rounded to m's ulp: a three-way tie at 1e6 gave -1.125, at 1e8
// 0 (and so its gradient through nll_loss was 0 where it should be -2/3).
TEST_CASE("ops.reduce: log_softmax keeps log z at large logits, as PyTorch") {
  for (const float big : {1e6f, 1e8f, 1e30f}) {
    CAPTURE(big);
    Tensor lp = log_softmax(Tensor::from({big, big, big, big - 1, big, big}, {2, 3}), 1);
    CHECK(lp.data()[0] == doctest::Approx(-std::log(3.0)).epsilon(1e-6));
    CHECK(lp.data()[2] == doctest::Approx(-std::log(3.0)).epsilon(1e-6));
    // big - 1 is big as a float from 1e8 on: a tie again.
    const double z = big - 1 == big ? 3.0 : std::exp(-1.0) + 2.0;
    CHECK(lp.data()[4] == doctest::Approx(-std::log(z)).epsilon(1e-6));
  }
}

TEST_CASE("ops.reduce: gradient checks") {
  CHECK_GRADIENTS("sum", [](const Inputs& in) { return sum(in[0]); }, {param({3, 4}, 1)});
  CHECK_GRADIENTS("mean", [](const Inputs& in) { return mean(in[0]); }, {param({3, 4}, 1)});
  for (int64_t d : {0, 1, 2, -1}) {
    CHECK_GRADIENTS("sum(dim)", [d](const Inputs& in) { return sum(in[0], d); },
                    {param({2, 3, 4}, 2)});
    CHECK_GRADIENTS("mean(dim)", [d](const Inputs& in) { return mean(in[0], d, true); },
                    {param({2, 3, 4}, 2)});
    CHECK_GRADIENTS("max(dim)", [d](const Inputs& in) { return max(in[0], d).values; },
                    {param({2, 3, 4}, 3)});
    CHECK_GRADIENTS("softmax", [d](const Inputs& in) { return softmax(in[0], d); },
                    {param({2, 3, 4}, 4)});
    CHECK_GRADIENTS("log_softmax", [d](const Inputs& in) { return log_softmax(in[0], d); },
                    {param({2, 3, 4}, 4)});
  }
  CHECK_GRADIENTS("reshape",
                  [](const Inputs& in) {
                    return reshape(in[0], {4, -1}) * 2.0f;
                  },
                  {param({2, 3, 2}, 5)});
  CHECK_GRADIENTS("flatten", [](const Inputs& in) { return flatten(in[0]) * 2.0f; },
                  {param({2, 3, 2}, 5)});
  CHECK_GRADIENTS("clone", [](const Inputs& in) { return clone(in[0]) * 2.0f; }, {param({5}, 5)});
}

TEST_CASE("ops.reduce: max gradient goes to the first of tied maxima") {
  Tensor x = Tensor::from({2, 2, 1}, {1, 3});
  x.set_requires_grad();
  sum(max(x, 1).values).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{1, 0, 0});
}

TEST_CASE("ops.reduce: errors name the op, dim and shape") {
  CHECK_THROWS_WITH_AS(sum(Tensor::ones({2, 3}), 2),
                       doctest::Contains("sum: dim 2 out of range for shape [2, 3]"), Error);
  CHECK_THROWS_WITH_AS(softmax(Tensor::ones({2}), -2), doctest::Contains("softmax"), Error);
  CHECK_THROWS_WITH_AS(reshape(Tensor::ones({2, 3}), {-1, -1}),
                       doctest::Contains("more than one -1"), Error);
}

// matmul with every transpose combination, and the fused linear op.
#include <doctest/doctest.h>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("ops.matmul: forward values by hand, transposes as flags") {
  Tensor a = Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from({1, 0, 0, 1, 1, 1}, {3, 2});
  CHECK(matmul(a, b).to_vector() == std::vector<float>{4, 5, 10, 11});
  // a^T [3,2] x a [2,3]
  CHECK(matmul(a, a, true, false).to_vector() ==
        std::vector<float>{17, 22, 27, 22, 29, 36, 27, 36, 45});
  // a [2,3] x a^T [3,2]
  CHECK(matmul(a, a, false, true).to_vector() == std::vector<float>{14, 32, 32, 77});
  // b^T [2,3] x a^T [3,2]
  CHECK(matmul(b, a, true, true).to_vector() == std::vector<float>{4, 10, 5, 11});
}

TEST_CASE("ops.matmul: gradient checks for all transpose combinations") {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = ta ? param({4, 3}, 1) : param({3, 4}, 1);
      Tensor b = tb ? param({5, 4}, 2) : param({4, 5}, 2);
      CHECK_GRADIENTS("matmul", [ta, tb](const Inputs& in) { return matmul(in[0], in[1], ta, tb); },
                      {a, b});
    }
  }
}

TEST_CASE("ops.linear: equals x W^T + b and gradient-checks, with and without bias") {
  Tensor x = Tensor::from({1, 2, 3, 4}, {2, 2});
  Tensor w = Tensor::from({1, 0, 0, 1, 1, 1}, {3, 2});
  Tensor b = Tensor::from({10, 20, 30}, {3});
  CHECK(linear(x, w, b).to_vector() == std::vector<float>{11, 22, 33, 13, 24, 37});
  CHECK(linear(x, w, Tensor()).to_vector() == std::vector<float>{1, 2, 3, 3, 4, 7});
  CHECK_GRADIENTS("linear", [](const Inputs& in) { return linear(in[0], in[1], in[2]); },
                  {param({4, 5}, 1), param({3, 5}, 2), param({3}, 3)});
  CHECK_GRADIENTS("linear", [](const Inputs& in) { return linear(in[0], in[1], Tensor()); },
                  {param({4, 5}, 1), param({3, 5}, 2)});
}

TEST_CASE("ops.matmul: shape errors carry both shapes") {
  CHECK_THROWS_WITH_AS(matmul(Tensor::ones({2, 3}), Tensor::ones({4, 5})),
                       doctest::Contains("matmul: inner dimensions differ; [2, 3] x [4, 5]"),
                       Error);
  CHECK_THROWS_WITH_AS(linear(Tensor::ones({64, 784}), Tensor::ones({10, 512}), Tensor()),
                       doctest::Contains("linear: input has 784 features, weight expects 512"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul(Tensor::ones({2}), Tensor::ones({2, 2})), doctest::Contains("2-D"),
                       Error);
}

// Creation functions under PyTorch's names (arange, randn, rand, full, zeros_like, ones_like,
// full_like) and Shape printing.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "core/ops.h"

using namespace bnlab;

namespace {
using Floats = std::vector<float>;
}

TEST_CASE("tensor.creation: arange follows torch.arange") {
  CHECK(Tensor::arange(5).shape() == Shape{5});
  CHECK(Tensor::arange(5).to_vector() == Floats{0, 1, 2, 3, 4});
  CHECK(Tensor::arange(2, 5).to_vector() == Floats{2, 3, 4});
  CHECK(Tensor::arange(1, 2.5, 0.5).to_vector() == Floats{1, 1.5, 2});  // end exclusive
  CHECK(Tensor::arange(1, 2.6, 0.5).to_vector() == Floats{1, 1.5, 2, 2.5});
  CHECK(Tensor::arange(3, 0, -1).to_vector() == Floats{3, 2, 1});
  CHECK(Tensor::arange(0).shape() == Shape{0});
  CHECK(Tensor::arange(2, 2).numel() == 0);
  // Each value is start + i * step in double, so a long range does not drift: the last of 0, 0.1,
  // ... (10^5 values) is the float nearest 9999.9, not a sum of 99999 rounded steps.
  Tensor r = Tensor::arange(0, 10000, 0.1);
  REQUIRE(r.numel() == 100000);
  CHECK(r.data()[99999] == static_cast<float>(99999 * 0.1));
  CHECK_THROWS_WITH_AS(Tensor::arange(0, 1, 0), "arange: step must be nonzero", Error);
  CHECK_THROWS_WITH_AS(Tensor::arange(0, 5, -1),
                       doctest::Contains("arange: step -1 does not lead from start 0 to end 5"),
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::arange(0, INFINITY), doctest::Contains("must be finite"), Error);
}

TEST_CASE("tensor.creation: randn and rand draw from the given Rng") {
  Rng a(7), b(7), c(7);
  Tensor n = Tensor::randn({1000}, a);
  CHECK(n.to_vector() == Tensor::normal({1000}, b, 0.0f, 1.0f).to_vector());  // same stream
  double mean = 0, sq = 0;
  for (float v : n.to_vector()) {
    mean += v;
    sq += double(v) * v;
  }
  mean /= 1000;
  CHECK(std::abs(mean) < 0.15);                         // 4.7 standard errors
  CHECK(std::abs(sq / 1000 - mean * mean - 1) < 0.15);  // var of N(0, 1)
  Tensor u = Tensor::rand({2, 500}, c);
  CHECK(u.shape() == Shape{2, 500});
  for (float v : u.to_vector()) CHECK((v >= 0.0f && v < 1.0f));
  Rng d(7);
  CHECK(u.to_vector() == Tensor::uniform({2, 500}, d).to_vector());
}

TEST_CASE("tensor.creation: full and the _like functions take the shape, not the data") {
  Tensor t = Tensor::full({2, 3}, 1.5f);
  CHECK(t.to_vector() == Floats(6, 1.5f));
  Tensor z = zeros_like(t), o = ones_like(t), f = full_like(t, -2.0f);
  CHECK(z.shape() == t.shape());
  CHECK(z.to_vector() == Floats(6, 0.0f));
  CHECK(o.to_vector() == Floats(6, 1.0f));
  CHECK(f.to_vector() == Floats(6, -2.0f));
  CHECK(z.data() != t.data());
  Tensor p = Tensor::ones({2}).set_requires_grad();
  CHECK_FALSE(zeros_like(p).requires_grad());  // a fresh leaf, as torch.zeros_like
}

TEST_CASE("tensor.creation: Shape prints as PyTorch's [2, 3]") {
  std::ostringstream os;
  os << Shape{2, 3} << " " << Shape{} << " " << Tensor::zeros({4, 1, 2}).shape();
  CHECK(os.str() == "[2, 3] [] [4, 1, 2]");
}

// dropout: the identity in eval mode and at p = 0 (same handle), kept fraction and 1/(1-p) scaling,
// p = 1, reproducibility from the seed, a gradient check with a frozen mask, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("ops.dropout: eval mode and p = 0 return x itself") {
  Rng rng(1);
  Tensor x = param({3, 4}, 1);
  Rng::State before = rng.state();
  CHECK(dropout(x, 0.5f, false, rng).is_same(x));
  CHECK(dropout(x, 0.0f, true, rng).is_same(x));
  CHECK(dropout(x, 1.0f, false, rng).is_same(x));
  CHECK(rng.state().state == before.state);  // no draws when nothing is dropped
}

TEST_CASE("ops.dropout: keeps a fraction 1-p of the elements, scaled by 1/(1-p)") {
  for (float p : {0.1f, 0.3f, 0.5f, 0.9f}) {
    CAPTURE(p);
    Rng rng(42);
    const int64_t n = 30000;
    Tensor y = dropout(Tensor::ones({n}), p, true, rng);
    const float scale = 1.0f / (1.0f - p);
    int64_t kept = 0;
    bool values_ok = true;
    for (float v : y.to_vector()) {
      if (v != 0.0f) {
        ++kept;
        values_ok = values_ok && v == scale;
      }
    }
    CHECK(values_ok);
    double fraction = static_cast<double>(kept) / static_cast<double>(n);
    CHECK(std::fabs(fraction - (1.0 - p)) < 0.015);  // > 5 sigma at n = 3e4
    CHECK(static_cast<double>(sum(y).item()) / n ==
          doctest::Approx(1.0).epsilon(0.02));  // E[y] = x
  }
}

TEST_CASE("ops.dropout: p = 1 zeroes everything, with a zero gradient") {
  Rng rng(3);
  Tensor x = param({4, 5}, 2);
  Tensor y = dropout(x, 1.0f, true, rng);
  for (float v : y.to_vector()) CHECK(v == 0.0f);
  sum(y).backward();
  for (float g : x.grad().to_vector()) CHECK(g == 0.0f);
}

TEST_CASE("ops.dropout: the mask comes from the rng and drives backward") {
  Tensor x = Tensor::ones({6, 7});
  x.set_requires_grad();
  Rng a(9), b(9);
  Tensor ya = dropout(x, 0.4f, true, a);
  Tensor yb = dropout(x, 0.4f, true, b);
  CHECK(ya.to_vector() == yb.to_vector());  // same seed, same mask
  Tensor yc = dropout(x, 0.4f, true, a);
  CHECK(yc.to_vector() != ya.to_vector());  // the rng advanced
  // With x = 1, the output is the mask itself, and so is the gradient of sum(y).
  sum(ya).backward();
  CHECK(x.grad().to_vector() == ya.to_vector());
}

TEST_CASE("ops.dropout: element i is dropped when the i-th draw of uniform() is below p") {
  // The documented rule, against the draws made one at a time: the mask is drawn in bulk
  // (Rng::fill_uniform), which must not change which elements drop. 1037 elements: not a multiple
  // of the bulk draw's 8 chains.
  const float p = 0.3f;
  Rng rng(5), draws(5);
  Tensor y = dropout(Tensor::ones({1037}), p, true, rng);
  std::vector<float> expected(1037);
  for (float& v : expected) v = draws.uniform() < p ? 0.0f : 1.0f / (1.0f - p);
  CHECK(y.to_vector() == expected);
  CHECK(rng.next_u32() == draws.next_u32());  // and the rng advanced by exactly 1037 draws
}

TEST_CASE("ops.dropout: gradient check with a frozen mask") {
  for (float p : {0.2f, 0.5f}) {
    CAPTURE(p);
    CHECK_GRADIENTS("dropout",
                    [p](const Inputs& in) {
                      Rng rng(7);  // reseeded on every call: the same mask each time
                      return dropout(in[0], p, true, rng);
                    },
                    {param({4, 5, 3}, 3)});
  }
}

TEST_CASE("ops.dropout: p outside [0, 1] throws") {
  Rng rng(1);
  CHECK_THROWS_WITH_AS(dropout(Tensor::ones({2, 3}), 1.5f, true, rng),
                       doctest::Contains("dropout: p must be in [0, 1]; got 1.5 (input [2, 3])"),
                       Error);
  CHECK_THROWS_WITH_AS(dropout(Tensor::ones({2, 3}), -0.1f, false, rng),
                       doctest::Contains("dropout: p must be in [0, 1]"), Error);
  CHECK_THROWS_WITH_AS(dropout(Tensor::ones({2, 3}), std::nanf(""), true, rng),
                       doctest::Contains("dropout: p must be in [0, 1]"), Error);
}

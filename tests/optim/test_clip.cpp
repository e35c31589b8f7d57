// clip_grad_norm: the total norm over all gradients, torch's scaling rule, skipped parameters,
// errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/blas.h"
#include "optim/clip.h"
#include "optim_helpers.h"

using namespace bnlab;
using namespace bnlab::testing;
using doctest::Approx;

TEST_CASE("optim.clip: scales all gradients together when the total norm exceeds max_norm") {
  // Gradients [3, 4] and [12]: total = sqrt(9 + 16 + 144) = 13. max_norm 6.5: coef = 6.5 / (13 +
  // 1e-6) ~ 0.5, so the gradients become ~[1.5, 2] and ~[6] and the new total is just under 6.5.
  Tensor a = param({0.0f, 0.0f}), b = param({0.0f}), c = param({0.0f});  // c has no gradient
  set_grad(a, {3.0f, 4.0f});
  set_grad(b, {12.0f});
  float total = clip_grad_norm({a, b, c}, 6.5f);
  CHECK(total == Approx(13.0));
  CHECK(a.grad().to_vector()[0] == Approx(1.5));
  CHECK(a.grad().to_vector()[1] == Approx(2.0));
  CHECK(b.grad().item() == Approx(6.0));
  CHECK_FALSE(c.has_grad());
  // The clipped total norm is max_norm, up to the 1e-6.
  CHECK(clip_grad_norm({a, b, c}, 100.0f) == Approx(6.5));
}

TEST_CASE("optim.clip: below max_norm the gradients are untouched") {
  Tensor a = param({0.0f, 0.0f});
  set_grad(a, {3.0f, 4.0f});
  CHECK(clip_grad_norm({a}, 20.0f) == Approx(5.0));
  CHECK(a.grad().to_vector() == std::vector<float>{3.0f, 4.0f});
}

TEST_CASE("optim.clip: no gradients at all gives 0 - max_norm 0 zeroes the gradients") {
  Tensor a = param({1.0f});
  CHECK(clip_grad_norm({a}, 1.0f) == 0.0f);
  set_grad(a, {2.0f});
  CHECK(clip_grad_norm({a}, 0.0f) == Approx(2.0));
  CHECK(a.grad().item() == 0.0f);
}

TEST_CASE("optim.clip: a non-finite norm is returned so the caller can skip the step") {
  Tensor a = param({0.0f, 0.0f});
  set_grad(a, {INFINITY, 1.0f});
  CHECK(std::isinf(clip_grad_norm({a}, 1.0f)));
}

TEST_CASE("optim.clip: max_norm must be finite and >= 0") {
  Tensor a = param({0.0f});
  CHECK_THROWS_WITH_AS(
      clip_grad_norm({a}, -1.0f),
      doctest::Contains("clip_grad_norm: max_norm must be finite and >= 0; got -1"), Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm({a}, NAN), doctest::Contains("got nan"), Error);
}

TEST_CASE("optim.clip: the squared norm has the same bits at 1, 2 and 3 threads") {
  // 5 chunks and a part of one, so that every thread count splits the work differently.
  Rng rng(11);
  const int64_t n = 5 * 65536 + 123;
  Tensor a = Tensor::normal({n}, rng).set_requires_grad();
  Tensor b = param({0.5f, -2.0f});
  set_grad(a, Tensor::normal({n}, rng).to_vector());
  set_grad(b, {0.5f, -2.0f});
  long double reference = 0.0L;
  for (const Tensor& p : {a, b}) {
    for (const float v : p.grad().to_vector()) reference += static_cast<long double>(v) * v;
  }
  const int before = num_threads();
  std::vector<double> by_threads;
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    by_threads.push_back(detail::grad_squared_norm({a, b}));
  }
  set_num_threads(before);
  CHECK(by_threads[0] == Approx(static_cast<double>(reference)).epsilon(1e-12));
  CHECK(std::memcmp(&by_threads[0], &by_threads[1], sizeof(double)) == 0);
  CHECK(std::memcmp(&by_threads[0], &by_threads[2], sizeof(double)) == 0);
}

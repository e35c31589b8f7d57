// Autograd engine: node recording, accumulation, graph release, NoGradGuard, shape checks, deep
// graphs.
#include <doctest/doctest.h>
#include <pthread.h>

#include <functional>

#include "core/autograd.h"
#include "core/ops.h"

using namespace bnlab;

TEST_CASE("autograd: ops record a node only when an input requires grad") {
  Tensor a = Tensor::ones({3});
  Tensor b = Tensor::ones({3});
  CHECK_FALSE((a * b).requires_grad());
  CHECK((a * b).grad_fn() == nullptr);
  b.set_requires_grad();
  Tensor c = a * b;
  CHECK(c.requires_grad());
  REQUIRE(c.grad_fn() != nullptr);
  CHECK(std::string(c.grad_fn()->op) == "mul");
  {
    NoGradGuard guard;
    CHECK_FALSE((a * b).requires_grad());
  }
  CHECK((a * b).requires_grad());
}

TEST_CASE(
    "autograd: a tensor used twice gets both contributions - leaves accumulate across calls") {
  Tensor x = Tensor::from({3.0f}, {1});
  x.set_requires_grad();
  Tensor y = sum(x * x + x);  // dy/dx = 2x + 1 = 7
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(7.0f));
  sum(x * x + x).backward();
  CHECK(x.grad().item() == doctest::Approx(14.0f));  // accumulated, as in PyTorch
  x.zero_grad();
  CHECK_FALSE(x.has_grad());
}

TEST_CASE("autograd: a second backward through a freed graph throws instead of double counting") {
  Tensor x = Tensor::from({1.0f, 2.0f}, {2});
  x.set_requires_grad();
  Tensor loss = sum(exp(x));
  loss.backward();
  CHECK_THROWS_WITH_AS(loss.backward(), doctest::Contains("already freed"), Error);
}

TEST_CASE("autograd: non-scalar backward needs a seed of the right shape") {
  Tensor x = Tensor::ones({2, 2});
  x.set_requires_grad();
  Tensor y = x * 3.0f;
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("[2, 2]"), Error);
  CHECK_THROWS_WITH_AS(y.backward(Tensor::ones({3})), doctest::Contains("[3]"), Error);
  y.backward(Tensor::ones({2, 2}));
  CHECK(x.grad().to_vector() == std::vector<float>{3, 3, 3, 3});
}

TEST_CASE("autograd: backward on a tensor that needs no grad explains why") {
  Tensor x = Tensor::ones({1});
  CHECK_THROWS_WITH_AS(sum(x).backward(), doctest::Contains("does not require grad"), Error);
}

TEST_CASE("autograd: intermediate gradients are freed, leaf gradients kept") {
  Tensor x = Tensor::ones({4});
  x.set_requires_grad();
  Tensor h = x * 2.0f;
  Tensor loss = sum(h);
  loss.backward();
  CHECK(x.has_grad());
  CHECK_FALSE(h.has_grad());
  CHECK_THROWS_AS(x.reshape({2, 2}).set_requires_grad(), Error);  // not a leaf
}

TEST_CASE("autograd: a 20000-op chain backpropagates without recursion") {
  Tensor x = Tensor::from({1.0f}, {1});
  x.set_requires_grad();
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = y * 1.0f;
  sum(y).backward();
  CHECK(x.grad().item() == doctest::Approx(1.0f));
}

TEST_CASE("autograd: a leaf frozen between forward and backward gets no gradient, no crash") {
  // torch: x.requires_grad_(False) after the forward; backward() still runs, x.grad stays None
  // and w, still trainable, gets its gradient.
  Tensor x = Tensor::from({1, -2, 3, 4}, {1, 1, 2, 2});
  Tensor w = Tensor::from({0.5f, 2, -1, 3}, {1, 1, 2, 2});
  x.set_requires_grad();
  w.set_requires_grad();
  // Single-input nodes on x alone (their closures assume x wants a gradient), and x * w.
  Tensor loss = sum(relu(x)) + sum(max_pool2d(x, 2)) + cross_entropy(x.reshape({1, 4}), {2}) +
                sum(exp(x * 0.5f)) + sum(x * w);
  x.set_requires_grad(false);
  loss.backward();
  CHECK_FALSE(x.has_grad());
  REQUIRE(w.has_grad());
  CHECK(w.grad().to_vector() == std::vector<float>{1, -2, 3, 4});
}

namespace {

// Runs f on a thread with a 1 MiB stack (the main thread has 8 MiB), so that freeing that
// recursed once per graph link fails at a depth the test reaches quickly.
void run_on_small_stack(std::function<void()> f) {
  pthread_attr_t attr;
  REQUIRE(pthread_attr_init(&attr) == 0);
  REQUIRE(pthread_attr_setstacksize(&attr, size_t{1} << 20) == 0);
  pthread_t thread;
  auto body = [](void* arg) -> void* {
    (*static_cast<std::function<void()>*>(arg))();
    return nullptr;
  };
  REQUIRE(pthread_create(&thread, &attr, body, &f) == 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
}

}  // namespace

TEST_CASE("autograd: a 70000-op graph dropped without backward is freed without recursion") {
  // A running loss summed without detach(), and a recurrent chain, never backpropagated: dropping
  // the last tensor frees every node. Each freeing used to recurse into the next node.
  int64_t freed = 0;
  run_on_small_stack([&freed] {
    Tensor w = Tensor::from({0.5f}, {1});
    w.set_requires_grad();
    {
      Tensor total = Tensor::zeros({1});
      for (int i = 0; i < 50000; ++i) total = total + sum(w * 0.5f);
    }
    {
      Tensor h = Tensor::from({1.0f}, {1});
      for (int i = 0; i < 20000; ++i) h = tanh(h * w + 1.0f);
    }
    freed = w.impl().use_count();  // every node that held w is gone
  });
  CHECK(freed == 1);
}

TEST_CASE("autograd: accumulate_grad rejects a gradient of the wrong shape, naming both") {
  Tensor x = Tensor::ones({2, 3});
  x.set_requires_grad();
  CHECK_THROWS_WITH_AS(
      accumulate_grad("myop", x, Tensor::ones({3, 2})),
      doctest::Contains("myop backward: gradient of shape [3, 2] for an input of shape [2, 3]"),
      Error);
}

TEST_CASE("autograd: a view hands its gradient on, and other contributions still add") {
  const std::vector<float> wa{1, 2, 3, 4, 5, 6}, wb{10, 20, 30, 40, 50, 60},
      wx{100, 200, 300, 400, 500, 600};
  auto expect_sum = [](const Tensor& g, std::vector<std::vector<float>> parts) {
    std::vector<float> want(6, 0.0f);
    for (const auto& p : parts)
      for (size_t i = 0; i < 6; ++i) want[i] += p[i];
    CHECK(g.to_vector() == want);
  };
  SUBCASE("two views of one leaf and the leaf itself, in either order of use") {
    for (bool views_first : {true, false}) {
      Tensor x = Tensor::from({1, 1, 1, 1, 1, 1}, {2, 3});
      x.set_requires_grad();
      Tensor direct = sum(x * Tensor::from(wx, {2, 3}));
      Tensor via_a = sum(x.reshape({3, 2}) * Tensor::from(wa, {3, 2}));
      Tensor via_b = sum(x.reshape({6}) * Tensor::from(wb, {6}));
      Tensor loss = views_first ? via_a + via_b + direct : direct + via_b + via_a;
      loss.backward();
      expect_sum(x.grad(), {wa, wb, wx});
    }
  }
  SUBCASE("a chain of views, and a leaf's gradient accumulating over two backward calls") {
    Tensor x = Tensor::from({1, 1, 1, 1, 1, 1}, {2, 3});
    x.set_requires_grad();
    const Tensor w = Tensor::from(wa, {2, 3});
    sum(x.reshape({6}).reshape({3, 2}).reshape({2, 3}) * w).backward();
    expect_sum(x.grad(), {wa});
    // Buffers of the same size made and freed in between must not be the leaf's.
    Tensor t = Tensor::ones({6});
    t.set_requires_grad();
    sum(t.reshape({2, 3}) * Tensor::from(wb, {2, 3})).backward();
    expect_sum(x.grad(), {wa});
    sum(x.reshape({3, 2}) * Tensor::from(wa, {3, 2})).backward();
    expect_sum(x.grad(), {wa, wa});
  }
  SUBCASE("a view as the root: its seed is copied, not taken") {
    Tensor x = Tensor::ones({2, 3});
    x.set_requires_grad();
    Tensor seed = Tensor::from(wa, {6});
    x.reshape({6}).backward(seed);
    seed.fill_(0.0f);
    expect_sum(x.grad(), {wa});
  }
}

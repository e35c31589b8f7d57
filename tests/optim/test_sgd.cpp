// Sgd: single steps against hand arithmetic, momentum variants over three steps, skipping
// parameters without a gradient, convergence on a quadratic, option errors, and exact resume from
// saved state.
#include <doctest/doctest.h>

#include "optim_helpers.h"

using namespace bnlab;
using namespace bnlab::testing;
using doctest::Approx;

TEST_CASE("optim.sgd: a plain step is p - lr * g") {
  // p = [1, -2], g = [0.5, 1], lr = 0.1: p = [1 - 0.05, -2 - 0.1] = [0.95, -2.1]
  Tensor p = param({1.0f, -2.0f});
  Sgd opt({p}, {.lr = 0.1f});
  set_grad(p, {0.5f, 1.0f});
  opt.step();
  CHECK(p.to_vector()[0] == Approx(0.95));
  CHECK(p.to_vector()[1] == Approx(-2.1));
  CHECK(opt.step_count() == 1);
  CHECK(opt.state_tensors().empty());  // no momentum, no state (as torch)
}

TEST_CASE("optim.sgd: weight decay adds wd * p to the gradient") {
  // g' = g + 0.1 p = [0.5 + 0.1, 1 - 0.2] = [0.6, 0.8]; p = [1 - 0.06, -2 - 0.08] = [0.94, -2.08]
  Tensor p = param({1.0f, -2.0f});
  Sgd opt({p}, {.lr = 0.1f, .weight_decay = 0.1f});
  set_grad(p, {0.5f, 1.0f});
  opt.step();
  CHECK(p.to_vector()[0] == Approx(0.94));
  CHECK(p.to_vector()[1] == Approx(-2.08));
  CHECK(p.grad().to_vector() ==
        std::vector<float>{0.5f, 1.0f});  // the gradient itself is untouched
}

TEST_CASE("optim.sgd: momentum, dampening and nesterov over three steps") {
  // p0 = 0, lr = 0.1, momentum 0.9, gradients 1, 2, -1.
  const std::vector<float> grads{1.0f, 2.0f, -1.0f};
  auto run = [&](SgdOptions options) {
    Tensor p = param({0.0f});
    Sgd opt({p}, options);
    std::vector<double> out;
    for (float g : grads) {
      set_grad(p, {g});
      opt.step();
      out.push_back(p.item());
    }
    return out;
  };
  SUBCASE("momentum") {
    // b = 1 (first step: b = g)          p = -0.1
    // b = 0.9 * 1 + 2 = 2.9              p = -0.1 - 0.29 = -0.39
    // b = 0.9 * 2.9 - 1 = 1.61           p = -0.39 - 0.161 = -0.551
    auto p = run({.lr = 0.1f, .momentum = 0.9f});
    CHECK(p[0] == Approx(-0.1));
    CHECK(p[1] == Approx(-0.39));
    CHECK(p[2] == Approx(-0.551));
  }
  SUBCASE("dampening") {
    // b = 1 (the first step is NOT dampened)      p = -0.1
    // b = 0.9 * 1 + 0.5 * 2 = 1.9                  p = -0.1 - 0.19 = -0.29
    // b = 0.9 * 1.9 + 0.5 * -1 = 1.21              p = -0.29 - 0.121 = -0.411
    auto p = run({.lr = 0.1f, .momentum = 0.9f, .dampening = 0.5f});
    CHECK(p[0] == Approx(-0.1));
    CHECK(p[1] == Approx(-0.29));
    CHECK(p[2] == Approx(-0.411));
  }
  SUBCASE("nesterov") {
    // b = 1,    g' = 1 + 0.9 * 1 = 1.9          p = -0.19
    // b = 2.9,  g' = 2 + 0.9 * 2.9 = 4.61       p = -0.19 - 0.461 = -0.651
    // b = 1.61, g' = -1 + 0.9 * 1.61 = 0.449    p = -0.651 - 0.0449 = -0.6959
    auto p = run({.lr = 0.1f, .momentum = 0.9f, .nesterov = true});
    CHECK(p[0] == Approx(-0.19));
    CHECK(p[1] == Approx(-0.651));
    CHECK(p[2] == Approx(-0.6959));
  }
  SUBCASE("momentum with weight decay: the decay enters the buffer") {
    // wd = 0.5, p0 = 0 so step 1 is unchanged: b = 1, p = -0.1
    // g' = 2 + 0.5 * -0.1 = 1.95, b = 0.9 + 1.95 = 2.85, p = -0.1 - 0.285 = -0.385
    auto p = run({.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.5f});
    CHECK(p[0] == Approx(-0.1));
    CHECK(p[1] == Approx(-0.385));
  }
}

TEST_CASE("optim.sgd: parameters without a gradient are skipped, momentum included") {
  Tensor a = param({1.0f}), b = param({1.0f});
  Sgd opt({a, b}, {.lr = 0.1f, .momentum = 0.9f, .dampening = 0.5f});
  set_grad(a, {1.0f});  // b has no gradient at all
  opt.step();
  CHECK(a.item() == Approx(0.9));
  CHECK(b.item() == 1.0f);
  auto state = opt.state_tensors();
  REQUIRE(state.size() == 4);
  CHECK(state[2].first == "state.1.step");
  CHECK(state[2].second.item() == 0.0f);
  // b's first update comes at the optimizer's second step: its buffer starts as g, undamped.
  opt.zero_grad();
  set_grad(b, {2.0f});
  opt.step();
  CHECK(a.item() == Approx(0.9));  // a had no gradient this time
  CHECK(b.item() == Approx(1.0 - 0.1 * 2.0));
}

TEST_CASE("optim.sgd: groups keep their own lr and weight decay") {
  Tensor w = param({1.0f, 1.0f}, {1, 2}), bias = param({1.0f});
  Sgd opt(split_weight_decay({{"fc.weight", w}, {"fc.bias", bias}}, 0.1f, 0.5f), {});
  opt.param_groups()[1].lr = 0.2f;
  set_grad(w, {1.0f, 0.0f});
  set_grad(bias, {1.0f});
  opt.step();
  // weight: g' = g + 0.5 * 1 = [1.5, 0.5], p = 1 - 0.1 g' = [0.85, 0.95]; bias: no decay, lr 0.2:
  // 0.8
  CHECK(w.to_vector()[0] == Approx(0.85));
  CHECK(w.to_vector()[1] == Approx(0.95));
  CHECK(bias.item() == Approx(0.8));
}

TEST_CASE("optim.sgd: converges on a quadratic") {
  Rng rng(3);
  std::vector<Tensor> params{Tensor::normal({4, 5}, rng).set_requires_grad(),
                             Tensor::normal({5}, rng).set_requires_grad()};
  Quadratic problem(params, 5);
  SUBCASE("plain") {
    Sgd opt(params, {.lr = 0.1f});
    for (int i = 0; i < 200; ++i) {
      problem.backward(opt, params);
      opt.step();
    }
    CHECK(problem.max_error(params) < 1e-3f);
  }
  SUBCASE("nesterov") {
    Sgd opt(params, {.lr = 0.05f, .momentum = 0.9f, .nesterov = true});
    for (int i = 0; i < 200; ++i) {
      problem.backward(opt, params);
      opt.step();
    }
    CHECK(problem.max_error(params) < 1e-3f);
  }
}

TEST_CASE("optim.sgd: bad options and parameters throw with the value") {
  Tensor p = param({1.0f});
  CHECK_THROWS_WITH_AS(
      Sgd({p}, {.lr = -0.1f}),
      doctest::Contains("sgd: invalid learning rate -0.1; expected a finite value >= 0"), Error);
  CHECK_THROWS_WITH_AS(Sgd({p}, {.lr = std::nanf("")}),
                       doctest::Contains("sgd: invalid learning rate nan"), Error);
  CHECK_THROWS_WITH_AS(Sgd({p}, {.momentum = -0.5f}),
                       doctest::Contains("sgd: invalid momentum -0.5"), Error);
  CHECK_THROWS_WITH_AS(Sgd({p}, {.weight_decay = -1.0f}),
                       doctest::Contains("sgd: invalid weight_decay -1"), Error);
  CHECK_THROWS_WITH_AS(
      Sgd({p}, {.nesterov = true}),
      doctest::Contains("nesterov momentum requires momentum > 0 and dampening == 0; "
                        "got momentum 0, dampening 0"),
      Error);
  CHECK_THROWS_WITH_AS(Sgd({p}, {.momentum = 0.9f, .dampening = 0.1f, .nesterov = true}),
                       doctest::Contains("got momentum 0.9, dampening 0.1"), Error);
  CHECK_THROWS_WITH_AS(Sgd(std::vector<Tensor>{}),
                       doctest::Contains("sgd: got an empty parameter list"), Error);
  CHECK_THROWS_WITH_AS(Sgd({p, p}),
                       doctest::Contains("parameter 1 is the same tensor as parameter 0"), Error);
  Tensor not_leaf = p * 2.0f;
  CHECK_THROWS_WITH_AS(Sgd({not_leaf}), doctest::Contains("is not a leaf"), Error);
  Sgd opt({p});
  CHECK_THROWS_WITH_AS(opt.set_lr(-1.0f), doctest::Contains("sgd: invalid learning rate -1"),
                       Error);
}

TEST_CASE("optim.sgd: state round trip resumes bit for bit") {
  SUBCASE("momentum with dampening") {
    check_resume([](const std::vector<Tensor>& p) {
      return std::make_unique<Sgd>(p, SgdOptions{.lr = 0.05f, .momentum = 0.9f, .dampening = 0.3f});
    });
  }
  SUBCASE("nesterov with weight decay, two groups") {
    check_resume([](const std::vector<Tensor>& p) {
      return std::make_unique<Sgd>(split_weight_decay({{"w", p[0]}, {"b", p[1]}}, 0.05f, 0.01f),
                                   SgdOptions{.momentum = 0.9f, .nesterov = true});
    });
  }
}

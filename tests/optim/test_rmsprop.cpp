// Rmsprop: two steps by hand (plain, centered, momentum, weight decay), convergence, option errors,
// and exact resume from saved state.
#include <doctest/doctest.h>

#include "optim_helpers.h"

using namespace bnlab;
using namespace bnlab::testing;
using doctest::Approx;

TEST_CASE("optim.rmsprop: defaults are torch's") {
  RmspropOptions o;
  CHECK(o.lr == 1e-2f);
  CHECK(o.alpha == 0.99f);
  CHECK(o.eps == 1e-8f);
  CHECK(o.weight_decay == 0.0f);
  CHECK(o.momentum == 0.0f);
  CHECK_FALSE(o.centered);
}

TEST_CASE("optim.rmsprop: two steps by hand") {
  // lr 0.01, alpha 0.99, eps 1e-8, p0 = 1, gradients 2 then 1.
  auto run = [](RmspropOptions options) {
    Tensor p = param({1.0f});
    Rmsprop opt({p}, options);
    std::vector<double> out;
    for (float g : {2.0f, 1.0f}) {
      set_grad(p, {g});
      opt.step();
      out.push_back(p.item());
    }
    return out;
  };
  SUBCASE("plain") {
    // s = 0.01 * 4 = 0.04, r = 0.2:                    p = 1 - 0.01 * 2 / 0.2 = 0.9
    // s = 0.99 * 0.04 + 0.01 = 0.0496, r = 0.2227106:  p = 0.9 - 0.01 / 0.2227106 = 0.8550987
    auto p = run({});
    CHECK(p[0] == Approx(0.9));
    CHECK(p[1] == Approx(0.8550987));
  }
  SUBCASE("centered") {
    // s = 0.04, a = 0.02, r = sqrt(0.04 - 0.0004) = 0.1989975:          p = 1 - 0.02 / r =
    // 0.8994962 s = 0.0496, a = 0.0298, r = sqrt(0.0496 - 0.00088804) = 0.2207079: p = 0.8541875
    auto p = run({.centered = true});
    CHECK(p[0] == Approx(0.8994962));
    CHECK(p[1] == Approx(0.8541875));
  }
  SUBCASE("momentum") {
    // b = 0.9 * 0 + 2 / 0.2 = 10:                 p = 1 - 0.01 * 10 = 0.9
    // b = 0.9 * 10 + 1 / 0.2227106 = 13.4901319:  p = 0.9 - 0.134901319 = 0.7650987
    auto p = run({.momentum = 0.9f});
    CHECK(p[0] == Approx(0.9));
    CHECK(p[1] == Approx(0.7650987));
  }
  SUBCASE("weight decay") {
    // wd 0.5: g' = 2 + 0.5 = 2.5, s = 0.0625, r = 0.25:       p = 1 - 0.01 * 2.5 / 0.25 = 0.9
    // g' = 1 + 0.45 = 1.45, s = 0.0829, r = 0.2879236:        p = 0.9 - 0.0145 / r = 0.8496394
    auto p = run({.weight_decay = 0.5f});
    CHECK(p[0] == Approx(0.9));
    CHECK(p[1] == Approx(0.8496394));
  }
}

TEST_CASE("optim.rmsprop: state names follow torch's") {
  Tensor p = param({1.0f, 2.0f});
  Rmsprop opt({p}, {.momentum = 0.5f, .centered = true});
  auto state = opt.state_tensors();
  REQUIRE(state.size() == 4);
  CHECK(state[0].first == "state.0.step");
  CHECK(state[1].first == "state.0.square_avg");
  CHECK(state[2].first == "state.0.momentum_buffer");
  CHECK(state[3].first == "state.0.grad_avg");
  CHECK(state[3].second.shape() == Shape{2});
}

TEST_CASE("optim.rmsprop: converges on a quadratic") {
  Rng rng(3);
  std::vector<Tensor> params{Tensor::normal({4, 5}, rng).set_requires_grad(),
                             Tensor::normal({5}, rng).set_requires_grad()};
  Quadratic problem(params, 5);
  SUBCASE("plain, with a cosine schedule") {
    Rmsprop opt(params, {});
    CosineAnnealingLR schedule(1000);
    for (int i = 0; i < 1000; ++i) {
      apply(opt, schedule, 0.01f, opt.step_count());
      problem.backward(opt, params);
      opt.step();
    }
    CHECK(problem.max_error(params) < 1e-3f);
  }
  SUBCASE("centered with momentum, with a cosine schedule") {
    Rmsprop opt(params, {.momentum = 0.5f, .centered = true});
    CosineAnnealingLR schedule(1000);
    for (int i = 0; i < 1000; ++i) {
      apply(opt, schedule, 0.01f, opt.step_count());
      problem.backward(opt, params);
      opt.step();
    }
    CHECK(problem.max_error(params) < 1e-3f);
  }
}

TEST_CASE("optim.rmsprop: bad options throw with the value") {
  Tensor p = param({1.0f});
  CHECK_THROWS_WITH_AS(Rmsprop({p}, {.lr = -0.01f}),
                       doctest::Contains("rmsprop: invalid learning rate -0.01"), Error);
  CHECK_THROWS_WITH_AS(Rmsprop({p}, {.alpha = -0.5f}),
                       doctest::Contains("rmsprop: invalid alpha -0.5"), Error);
  // The average would never move (1) or go negative (1.5, NaN after one step).
  CHECK_THROWS_WITH_AS(Rmsprop({p}, {.alpha = 1.0f}),
                       doctest::Contains("rmsprop: invalid alpha 1; expected a value in [0, 1)"),
                       Error);
  CHECK_THROWS_WITH_AS(Rmsprop({p}, {.alpha = 1.5f}),
                       doctest::Contains("rmsprop: invalid alpha 1.5"), Error);
  CHECK_THROWS_WITH_AS(Rmsprop({p}, {.eps = -1.0f}), doctest::Contains("rmsprop: invalid eps -1"),
                       Error);
  CHECK_THROWS_WITH_AS(Rmsprop({p}, {.momentum = -0.9f}),
                       doctest::Contains("rmsprop: invalid momentum -0.9"), Error);
}

TEST_CASE("optim.rmsprop: state round trip resumes bit for bit") {
  SUBCASE("plain") {
    check_resume([](const std::vector<Tensor>& p) {
      return std::make_unique<Rmsprop>(p, RmspropOptions{});
    });
  }
  SUBCASE("centered with momentum and weight decay") {
    check_resume([](const std::vector<Tensor>& p) {
      return std::make_unique<Rmsprop>(
          p, RmspropOptions{.weight_decay = 0.01f, .momentum = 0.9f, .centered = true});
    });
  }
}

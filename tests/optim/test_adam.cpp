// Adam and AdamW: two steps of bias correction by hand, decoupled vs L2 weight decay, amsgrad, the
// per-parameter step count, convergence, option errors, and exact resume from saved state.
#include <doctest/doctest.h>

#include <cmath>

#include "optim_helpers.h"

using namespace bnlab;
using namespace bnlab::testing;
using doctest::Approx;

TEST_CASE("optim.adam: defaults are torch's") {
  AdamOptions adam;
  CHECK(adam.lr == 1e-3f);
  CHECK(adam.beta1 == 0.9f);
  CHECK(adam.beta2 == 0.999f);
  CHECK(adam.eps == 1e-8f);
  CHECK(adam.weight_decay == 0.0f);
  CHECK_FALSE(adam.amsgrad);
  AdamWOptions adamw;
  CHECK(adamw.lr == 1e-3f);
  CHECK(adamw.weight_decay == 1e-2f);
}

TEST_CASE("optim.adam: two steps with bias correction") {
  // lr 0.1, betas (0.9, 0.999), eps 1e-8, p0 = 1, gradients 2 then -1.
  // step 1: m = 0.1 * 2 = 0.2, v = 0.001 * 4 = 0.004, bc1 = 0.1, bc2 = 0.001
  //         p = 1 - (0.1 / 0.1) * 0.2 / (sqrt(0.004) / sqrt(0.001) + 1e-8) = 1 - 0.2 / 2 = 0.9
  // step 2: m = 0.9 * 0.2 - 0.1 = 0.08, v = 0.999 * 0.004 + 0.001 = 0.004996
  //         bc1 = 1 - 0.81 = 0.19, bc2 = 1 - 0.998001 = 0.001999
  //         p = 0.9 - (0.1 / 0.19) * 0.08 / (sqrt(0.004996 / 0.001999) + 1e-8)
  //           = 0.9 - 0.5263158 * 0.08 / 1.5809015 = 0.8733663
  Tensor p = param({1.0f});
  Adam opt({p}, {.lr = 0.1f});
  set_grad(p, {2.0f});
  opt.step();
  CHECK(p.item() == Approx(0.9));
  set_grad(p, {-1.0f});
  opt.step();
  CHECK(p.item() == Approx(0.8733663));
  auto state = opt.state_tensors();
  REQUIRE(state.size() == 3);
  CHECK(state[0].first == "state.0.step");
  CHECK(state[0].second.item() == 2.0f);
  CHECK(state[1].first == "state.0.exp_avg");
  CHECK(state[1].second.item() == Approx(0.08));
  CHECK(state[2].first == "state.0.exp_avg_sq");
  CHECK(state[2].second.item() == Approx(0.004996));
}

TEST_CASE("optim.adam: AdamW decays the weight, Adam adds the decay to the gradient") {
  // lr 0.1, weight_decay 0.1, p0 = 1, gradients 2 then -1 (as above).
  // Adam (L2):   step 1: g' = 2 + 0.1 * 1 = 2.1; Adam's first step is lr * sign: p = 0.9
  //              step 2: g' = -1 + 0.1 * 0.9 = -0.91, m = 0.21 * 0.9 - 0.091 = 0.098,
  //                      v = 0.999 * 0.00441 + 0.001 * 0.8281 = 0.00523369 -> p = 0.8681232
  // AdamW:       step 1: p = 1 * (1 - 0.1 * 0.1) = 0.99, then - 0.1: p = 0.89
  //              step 2: p = 0.89 * 0.99 = 0.8811, then the plain Adam step of the test above
  //                      (-0.0266337): p = 0.8544663
  Tensor a = param({1.0f}), w = param({1.0f});
  Adam adam({a}, {.lr = 0.1f, .weight_decay = 0.1f});
  AdamW adamw({w}, {.lr = 0.1f, .weight_decay = 0.1f});
  for (float g : {2.0f, -1.0f}) {
    set_grad(a, {g});
    set_grad(w, {g});
    adam.step();
    adamw.step();
  }
  CHECK(a.item() == Approx(0.8681232));
  CHECK(w.item() == Approx(0.8544663));
  CHECK(std::string(adamw.name()) == "adamw");
}

TEST_CASE("optim.adam: amsgrad divides by the largest v seen") {
  // beta2 = 0.5 so that v visibly falls: lr 0.1, p0 = 1, gradients 2 then 0.
  // step 1: m = 0.2, v = 0.5 * 4 = 2, bc1 = 0.1, bc2 = 0.5, denom = sqrt(2) / sqrt(0.5) = 2
  //         p = 1 - (0.1 / 0.1) * 0.2 / 2 = 0.9
  // step 2: m = 0.18, v = 1, v_max = 2, bc1 = 0.19, bc2 = 0.75
  //         amsgrad: p = 0.9 - (0.1 / 0.19) * 0.18 / (sqrt(2) / sqrt(0.75)) = 0.8419858
  //         plain:   p = 0.9 - (0.1 / 0.19) * 0.18 / (sqrt(1) / sqrt(0.75)) = 0.8179555
  Tensor a = param({1.0f}), b = param({1.0f});
  Adam ams({a}, {.lr = 0.1f, .beta2 = 0.5f, .amsgrad = true});
  Adam plain({b}, {.lr = 0.1f, .beta2 = 0.5f});
  for (float g : {2.0f, 0.0f}) {
    set_grad(a, {g});
    set_grad(b, {g});
    ams.step();
    plain.step();
  }
  CHECK(a.item() == Approx(0.8419858));
  CHECK(b.item() == Approx(0.8179555));
  auto state = ams.state_tensors();
  REQUIRE(state.size() == 4);
  CHECK(state[3].first == "state.0.max_exp_avg_sq");
  CHECK(state[3].second.item() == Approx(2.0));
}

TEST_CASE("optim.adam: each parameter counts its own steps, and no gradient means no update") {
  // b gets its first gradient at the optimizer's second step: its bias correction is that of step
  // 1, so it moves by exactly lr (Adam's first step is lr * sign(g)).
  Tensor a = param({1.0f}), b = param({1.0f});
  AdamW opt({a, b}, {.lr = 0.1f, .weight_decay = 0.5f});
  set_grad(a, {1.0f});
  opt.step();
  CHECK(b.item() == 1.0f);  // no gradient: not even decayed (torch skips the parameter entirely)
  set_grad(b, {-3.0f});
  opt.step();
  // b: decay 1 * (1 - 0.05) = 0.95, then + lr: 1.05
  CHECK(b.item() == Approx(1.05));
  auto state = opt.state_tensors();
  CHECK(state[0].first == "state.0.step");
  CHECK(state[0].second.item() == 2.0f);
  CHECK(state[3].first == "state.1.step");
  CHECK(state[3].second.item() == 1.0f);
  CHECK(opt.step_count() == 2);
}

TEST_CASE("optim.adam: converges on a quadratic") {
  Rng rng(3);
  std::vector<Tensor> params{Tensor::normal({4, 5}, rng).set_requires_grad(),
                             Tensor::normal({5}, rng).set_requires_grad()};
  Quadratic problem(params, 5);
  SUBCASE("adam with a cosine schedule") {
    Adam opt(params, {.lr = 0.1f});
    CosineAnnealingLR schedule(500);
    for (int i = 0; i < 500; ++i) {
      apply(opt, schedule, 0.1f, opt.step_count());
      problem.backward(opt, params);
      opt.step();
    }
    CHECK(problem.max_error(params) < 1e-3f);
  }
  SUBCASE("adamw without decay, amsgrad") {
    AdamW opt(params, {.lr = 0.05f, .weight_decay = 0.0f, .amsgrad = true});
    for (int i = 0; i < 1000; ++i) {
      problem.backward(opt, params);
      opt.step();
    }
    CHECK(problem.max_error(params) < 1e-3f);
  }
}

TEST_CASE("optim.adam: bad options throw with the value") {
  Tensor p = param({1.0f});
  CHECK_THROWS_WITH_AS(Adam({p}, {.lr = INFINITY}),
                       doctest::Contains("adam: invalid learning rate inf"), Error);
  CHECK_THROWS_WITH_AS(Adam({p}, {.beta1 = 1.0f}),
                       doctest::Contains("adam: invalid beta1 1; expected a value in [0, 1)"),
                       Error);
  CHECK_THROWS_WITH_AS(AdamW({p}, {.beta2 = -0.1f}), doctest::Contains("adamw: invalid beta2 -0.1"),
                       Error);
  CHECK_THROWS_WITH_AS(Adam({p}, {.eps = -1e-8f}), doctest::Contains("adam: invalid eps"), Error);
  CHECK_THROWS_WITH_AS(AdamW({p}, {.weight_decay = -0.01f}),
                       doctest::Contains("adamw: invalid weight_decay -0.01"), Error);
}

TEST_CASE("optim.adam: state round trip resumes bit for bit") {
  SUBCASE("adam, L2") {
    check_resume([](const std::vector<Tensor>& p) {
      return std::make_unique<Adam>(p, AdamOptions{.lr = 0.05f, .weight_decay = 0.01f});
    });
  }
  SUBCASE("adamw, amsgrad, two groups") {
    check_resume([](const std::vector<Tensor>& p) {
      return std::make_unique<AdamW>(split_weight_decay({{"w", p[0]}, {"b", p[1]}}, 0.05f, 0.1f),
                                     AdamWOptions{.amsgrad = true});
    });
  }
}

// The Optimizer base: zero_grad, lr, step counting, split_weight_decay, state names, and the
// validation of load_state_tensors (names, shapes, steps; nothing changes on error).
#include <doctest/doctest.h>

#include "optim_helpers.h"

using namespace bnlab;
using namespace bnlab::testing;
using doctest::Approx;

TEST_CASE("optim.optimizer: zero_grad drops every gradient - step counts calls") {
  Tensor a = param({1.0f}), b = param({1.0f, 2.0f});
  Sgd opt({a, b}, {.lr = 0.1f});
  set_grad(a, {1.0f});
  set_grad(b, {1.0f, 1.0f});
  opt.zero_grad();
  CHECK_FALSE(a.has_grad());
  CHECK_FALSE(b.has_grad());
  opt.step();  // nothing has a gradient: nothing moves, the step still counts
  CHECK(a.item() == 1.0f);
  CHECK(opt.step_count() == 1);
  opt.set_step_count(41);
  opt.step();
  CHECK(opt.step_count() == 42);
  CHECK_THROWS_WITH_AS(opt.set_step_count(-1), doctest::Contains("step count must be >= 0; got -1"),
                       Error);
  CHECK(opt.num_params() == 2);
  CHECK(opt.lr() == 0.1f);
  opt.set_lr(0.5f);
  CHECK(opt.param_groups()[0].lr == 0.5f);
}

TEST_CASE("optim.optimizer: split_weight_decay exempts rank <= 1 parameters from decay") {
  Tensor w = Tensor::zeros({4, 3}).set_requires_grad(),
         bias = Tensor::zeros({4}).set_requires_grad();
  Tensor conv = Tensor::zeros({8, 3, 3, 3}).set_requires_grad(),
         gamma = Tensor::ones({8}).set_requires_grad();
  auto groups = split_weight_decay(
      {{"fc.weight", w}, {"fc.bias", bias}, {"conv.weight", conv}, {"bn.weight", gamma}}, 0.1f,
      5e-4f);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].params.size() == 2);
  CHECK(groups[0].params[0].is_same(w));
  CHECK(groups[0].params[1].is_same(conv));
  CHECK(groups[0].weight_decay == 5e-4f);
  CHECK(groups[1].params.size() == 2);
  CHECK(groups[1].params[0].is_same(bias));
  CHECK(groups[1].params[1].is_same(gamma));
  CHECK(groups[1].weight_decay == 0.0f);
  CHECK(groups[0].lr == 0.1f);
  CHECK(groups[1].lr == 0.1f);
  CHECK(split_weight_decay({{"b", bias}}, 0.1f, 0.1f).size() == 1);  // no empty group
  CHECK_THROWS_WITH_AS(split_weight_decay({{"fc.bias", Tensor()}}, 0.1f, 0.1f),
                       doctest::Contains("parameter 'fc.bias' is undefined"), Error);
}

TEST_CASE("optim.optimizer: state tensors are numbered across groups with torch's names") {
  Tensor w = Tensor::zeros({2, 3}).set_requires_grad(), b = Tensor::zeros({2}).set_requires_grad();
  Adam opt(split_weight_decay({{"w", w}, {"b", b}}, 0.1f, 0.0f), {});
  auto state = opt.state_tensors();
  std::vector<std::string> names;
  for (const auto& [name, t] : state) names.push_back(name);
  CHECK(names == std::vector<std::string>{"state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq",
                                          "state.1.step", "state.1.exp_avg", "state.1.exp_avg_sq"});
  CHECK(state[0].second.shape() == Shape{});
  CHECK(state[1].second.shape() == Shape{2, 3});
  CHECK(state[4].second.shape() == Shape{2});
}

TEST_CASE("optim.optimizer: load_state_tensors validates names, shapes and steps, all or nothing") {
  Tensor w = Tensor::zeros({10, 100}).set_requires_grad(),
         b = Tensor::zeros({10}).set_requires_grad();
  Adam opt({w, b}, {});
  auto good = [] {
    return std::vector<std::pair<std::string, Tensor>>{
        {"state.0.step", Tensor::scalar(3.0f)},
        {"state.0.exp_avg", Tensor::full({10, 100}, 1.0f)},
        {"state.0.exp_avg_sq", Tensor::full({10, 100}, 2.0f)},
        {"state.1.step", Tensor::scalar(3.0f)},
        {"state.1.exp_avg", Tensor::full({10}, 1.0f)},
        {"state.1.exp_avg_sq", Tensor::full({10}, 2.0f)}};
  };
  SUBCASE("a shape mismatch names the key and both shapes") {
    auto bad = good();
    bad[4].second = Tensor::zeros({10, 100});
    CHECK_THROWS_WITH_AS(
        opt.load_state_tensors(bad),
        doctest::Contains(
            "optimizer state: state.1.exp_avg has shape [10, 100], parameter 1 has shape [10]"),
        Error);
  }
  SUBCASE("missing and unexpected keys are listed") {
    auto bad = good();
    bad.erase(bad.begin() + 5);
    bad.erase(bad.begin() + 2);
    bad.emplace_back("state.2.exp_avg", Tensor::zeros({1}));
    bad.emplace_back("state.0.momentum_buffer", Tensor::zeros({10, 100}));
    CHECK_THROWS_WITH_AS(
        opt.load_state_tensors(bad),
        doctest::Contains("missing keys: state.0.exp_avg_sq, state.1.exp_avg_sq; "
                          "unexpected keys: state.2.exp_avg, state.0.momentum_buffer"),
        Error);
  }
  SUBCASE("an SGD state does not load into Adam") {
    Sgd sgd({w, b}, {.momentum = 0.9f});
    CHECK_THROWS_WITH_AS(opt.load_state_tensors(sgd.state_tensors()),
                         doctest::Contains("unexpected keys: state.0.momentum_buffer"), Error);
  }
  SUBCASE("steps must be non-negative integer scalars") {
    auto bad = good();
    bad[0].second = Tensor::scalar(2.5f);
    CHECK_THROWS_WITH_AS(opt.load_state_tensors(bad),
                         doctest::Contains("state.0.step must be a non-negative integer; got 2.5"),
                         Error);
    bad[0].second = Tensor::zeros({2});
    CHECK_THROWS_WITH_AS(opt.load_state_tensors(bad),
                         doctest::Contains("state.0.step must be a scalar; got shape [2]"), Error);
  }
  SUBCASE("steps must fit an int64") {
    // Found by the API attack: 1e30 loaded, its conversion to int64 was undefined, and one Adam
    // step then made the weights NaN.
    auto bad = good();
    bad[3].second = Tensor::scalar(1e30f);
    CHECK_THROWS_WITH_AS(
        opt.load_state_tensors(bad),
        doctest::Contains("adam optimizer state: state.1.step must be below 2^63, an int64 step "
                          "count; got 1e+30"),
        Error);
    bad[3].second = Tensor::scalar(9223372036854775808.0f);  // 2^63, one past int64's range
    CHECK_THROWS_WITH_AS(opt.load_state_tensors(bad), doctest::Contains("state.1.step"), Error);
    // Past 2^24 float no longer counts exactly, but such steps are what state_tensors() writes
    // after that many updates: they load, and Adam's bias correction is then 1.
    Tensor p = Tensor::zeros({2}).set_requires_grad();
    Adam resumed({p}, {.lr = 0.5f});
    resumed.load_state_tensors({{"state.0.step", Tensor::scalar(1e18f)},
                                {"state.0.exp_avg", Tensor::zeros({2})},
                                {"state.0.exp_avg_sq", Tensor::zeros({2})}});
    p.sum().backward();
    resumed.step();
    // lr * m / sqrt(v) with m = 0.1 g and v = 0.001 g^2, the bias corrections being 1.
    for (float v : p.to_vector()) CHECK(v == doctest::Approx(-0.5 * 0.1 / std::sqrt(0.001)));
  }
  SUBCASE("duplicates are rejected") {
    auto bad = good();
    bad.push_back(bad[1]);
    CHECK_THROWS_WITH_AS(opt.load_state_tensors(bad),
                         doctest::Contains("state.0.exp_avg appears more than once"), Error);
  }
  // A failed load changed nothing; a good one copies the values in.
  CHECK(opt.state_tensors()[1].second.to_vector()[0] == 0.0f);
  opt.load_state_tensors(good());
  auto state = opt.state_tensors();
  CHECK(state[0].second.item() == 3.0f);
  CHECK(state[1].second.to_vector()[999] == 1.0f);
  CHECK(state[5].second.to_vector()[9] == 2.0f);
  opt.load_state_tensors(opt.state_tensors());  // loading its own state is a no-op
  CHECK(opt.state_tensors()[2].second.to_vector()[0] == 2.0f);
}

TEST_CASE("optim.optimizer: changing a group's parameters after construction throws at step") {
  Tensor a = param({1.0f}), b = param({1.0f});
  Adam opt({a}, {});
  opt.param_groups()[0].params.push_back(b);
  CHECK_THROWS_WITH_AS(opt.step(),
                       doctest::Contains("adam: the parameter groups changed after construction"),
                       Error);
  opt.param_groups()[0].params.pop_back();
  opt.param_groups()[0].lr = -1.0f;
  CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("adam: invalid learning rate -1"), Error);
}

// LR schedules: values at chosen steps against torch.optim.lr_scheduler's closed forms (written out
// in the comments), warm-up composition, apply(), and parse_schedule's accepted forms and errors.
#include <doctest/doctest.h>

#include <cmath>

#include "optim_helpers.h"

using namespace bnlab;
using namespace bnlab::testing;
using doctest::Approx;

TEST_CASE("optim.schedule: closed forms at chosen steps") {
  SUBCASE("StepLR: base * gamma^floor(t / step_size)") {
    StepLR s(3, 0.1);
    CHECK(s.lr(0.5, 0) == Approx(0.5));
    CHECK(s.lr(0.5, 2) == Approx(0.5));
    CHECK(s.lr(0.5, 3) == Approx(0.05));
    CHECK(s.lr(0.5, 5) == Approx(0.05));
    CHECK(s.lr(0.5, 6) == Approx(0.005));
  }
  SUBCASE("MultiStepLR: base * gamma^bisect_right(milestones, t)") {
    MultiStepLR s({2, 5}, 0.5);
    CHECK(s.lr(1.0, 1) == Approx(1.0));
    CHECK(s.lr(1.0, 2) == Approx(0.5));  // a milestone takes effect at its own step
    CHECK(s.lr(1.0, 4) == Approx(0.5));
    CHECK(s.lr(1.0, 5) == Approx(0.25));
    CHECK(s.lr(1.0, 100) == Approx(0.25));
  }
  SUBCASE("ExponentialLR: base * gamma^t") {
    ExponentialLR s(0.9);
    CHECK(s.lr(2.0, 0) == Approx(2.0));
    CHECK(s.lr(2.0, 3) == Approx(1.458));  // 2 * 0.729
  }
  SUBCASE("CosineAnnealingLR: eta_min + (base - eta_min) * (1 + cos(pi t / T)) / 2") {
    CosineAnnealingLR s(10, 0.1);
    CHECK(s.lr(1.0, 0) == Approx(1.0));
    CHECK(s.lr(1.0, 2) ==
          Approx(0.9140576));  // 0.1 + 0.45 * (1 + cos(0.2 pi)) = 0.1 + 0.45 * 1.8090170
    CHECK(s.lr(1.0, 5) == Approx(0.55));
    CHECK(s.lr(1.0, 10) == Approx(0.1));
    CHECK(s.lr(1.0, 15) == Approx(0.55));  // torch's closed form is periodic past T_max
  }
  SUBCASE("ConstantSchedule") {
    ConstantSchedule s;
    CHECK(s.lr(0.3, 0) == Approx(0.3));
    CHECK(s.lr(0.3, 12345) == Approx(0.3));
  }
  CHECK_THROWS_WITH_AS(ConstantSchedule().lr(0.1, -1),
                       doctest::Contains("step must be >= 0; got -1"), Error);
}

TEST_CASE(
    "optim.schedule: a linear warm-up, then the inner schedule counted from the warm-up's end") {
  // LinearLR(start_factor 0.25, total_iters 4) then CosineAnnealingLR(T_max 8), as torch's
  // SequentialLR with milestones [4]; base 2.
  LinearWarmup s(4, std::make_unique<CosineAnnealingLR>(8), 0.25);
  CHECK(s.lr(2.0, 0) == Approx(0.5));    // 2 * 0.25
  CHECK(s.lr(2.0, 2) == Approx(1.25));   // 2 * (0.25 + 0.75 * 2 / 4)
  CHECK(s.lr(2.0, 3) == Approx(1.625));  // 2 * (0.25 + 0.75 * 3 / 4)
  CHECK(s.lr(2.0, 4) == Approx(2.0));    // cosine at its step 0
  CHECK(s.lr(2.0, 8) == Approx(1.0));    // cosine at 4 of 8: (1 + cos(pi / 2)) / 2 = 0.5
  CHECK(s.lr(2.0, 12) == Approx(0.0).epsilon(1e-12));
  LinearWarmup alone(4);  // start_factor 0, then constant
  CHECK(alone.lr(1.0, 0) == 0.0);
  CHECK(alone.lr(1.0, 1) == Approx(0.25));
  CHECK(alone.lr(1.0, 10) == Approx(1.0));
  CHECK_THROWS_WITH_AS(LinearWarmup(0), doctest::Contains("warmup_steps must be >= 1; got 0"),
                       Error);
  CHECK_THROWS_WITH_AS(LinearWarmup(5, nullptr, 1.5),
                       doctest::Contains("start_factor must be in [0, 1]"), Error);
}

TEST_CASE("optim.schedule: apply sets every group's learning rate") {
  Tensor w = param({1.0f, 1.0f}, {1, 2}), b = param({1.0f});
  Sgd opt(split_weight_decay({{"w", w}, {"b", b}}, 0.4f, 0.1f), {});
  StepLR s(2, 0.5);
  apply(opt, s, 0.4f, 2);
  CHECK(opt.lr() == Approx(0.2));
  CHECK(opt.param_groups()[1].lr == Approx(0.2));
  CHECK(opt.param_groups()[0].weight_decay == 0.1f);  // only the lr changes
}

TEST_CASE("optim.schedule: parse_schedule accepts the documented forms") {
  CHECK(parse_schedule("constant", 100)->lr(0.1, 50) == Approx(0.1));
  auto step = parse_schedule("step:1000:0.1", 5000);
  CHECK(step->lr(1.0, 999) == Approx(1.0));
  CHECK(step->lr(1.0, 1000) == Approx(0.1));
  CHECK(parse_schedule("step:10", 0)->lr(1.0, 10) == Approx(0.1));  // torch's default gamma 0.1
  auto multi = parse_schedule("multistep:2000,4000:0.1", 5000);
  CHECK(multi->lr(1.0, 3999) == Approx(0.1));
  CHECK(multi->lr(1.0, 4000) == Approx(0.01));
  CHECK(parse_schedule("exp:0.999", 0)->lr(1.0, 1000) == Approx(std::pow(0.999, 1000)));
  auto cosine = parse_schedule("cosine", 100);  // T_max = total_steps
  CHECK(cosine->lr(1.0, 50) == Approx(0.5));
  CHECK(cosine->lr(1.0, 100) == Approx(0.0).epsilon(1e-12));
  CHECK(parse_schedule("cosine:0.0001", 100)->lr(0.1, 100) == Approx(1e-4));  // eta_min is absolute
  auto warm = parse_schedule("warmup:500+cosine", 1500);  // cosine over the remaining 1000 steps
  CHECK(warm->lr(1.0, 0) == 0.0);
  CHECK(warm->lr(1.0, 250) == Approx(0.5));
  CHECK(warm->lr(1.0, 500) == Approx(1.0));
  CHECK(warm->lr(1.0, 1000) == Approx(0.5));
  CHECK(warm->lr(1.0, 1500) == Approx(0.0).epsilon(1e-12));
  auto warm_const = parse_schedule("warmup:10:0.1", 0);
  CHECK(warm_const->lr(1.0, 0) == Approx(0.1));
  CHECK(warm_const->lr(1.0, 20) == Approx(1.0));
  auto warm_step = parse_schedule("warmup:10+step:5:0.5", 0);
  CHECK(warm_step->lr(1.0, 14) == Approx(1.0));
  CHECK(warm_step->lr(1.0, 15) == Approx(0.5));
}

TEST_CASE("optim.schedule: parse_schedule errors name the spec and list the accepted forms") {
  auto check = [](const std::string& spec, int64_t total, const std::string& why) {
    CAPTURE(spec);
    const std::string expected = "parse_schedule: bad schedule '" + spec + "': " + why;
    CHECK_THROWS_WITH_AS(parse_schedule(spec, total), doctest::Contains(expected.c_str()), Error);
    CHECK_THROWS_WITH_AS(parse_schedule(spec, total),
                         doctest::Contains("accepted forms: constant | step:<step_size>[:<gamma>]"),
                         Error);
  };
  check("cosin", 100, "unknown schedule 'cosin'");
  check("", 100, "unknown schedule ''");
  check("step:abc:0.1", 100, "step_size 'abc' is not an integer");
  check("step:10:x", 100, "gamma 'x' is not a number");
  check("step:0", 100, "StepLR: step_size must be >= 1; got 0");
  check("exp", 100, "'exp' takes 1 argument(s), got 0");
  check("constant:1", 100, "'constant' takes 0 argument(s), got 1");
  check("multistep:5,3:0.1", 100,
        "MultiStepLR: milestones must be strictly increasing; got 5 then 3");
  check("multistep:5,,7", 100, "milestone '' is not an integer");
  check("cosine", 0, "cosine needs total_steps (0) greater than the warm-up steps (0)");
  check("warmup:500+cosine", 400,
        "cosine needs total_steps (400) greater than the warm-up steps (500)");
  check("warmup:100+warmup:10", 1000, "a warm-up can only come first, once");
  check("warmup:abc+cosine", 1000, "warm-up steps 'abc' is not an integer");
  check("warmup:0", 1000, "warm-up steps must be >= 1");
  check("warmup:10:2", 1000, "start_factor must be in [0, 1]");
  check("warmup:10+", 1000, "unknown schedule ''");
  check("warmups:10", 1000, "unknown schedule 'warmups'");
}

// A rate that overflows float stopped the run at that step ("sgd: invalid learning rate inf"):
// first_step_above finds the step without walking the run, so check_schedule_fits can refuse it.
TEST_CASE("optim.schedule: first_step_above finds the first step past a limit in every form") {
  const double limit = 1e6;
  const int64_t steps = 60;
  const char* specs[] = {"constant",
                         "step:1:10",
                         "step:4:3",
                         "step:2:0.5",
                         "multistep:5,20,40:100",
                         "multistep:5:0.1",
                         "exp:1.5",
                         "exp:0.9",
                         "exp:0",
                         "cosine:1e9",
                         "cosine:1e-3",
                         "warmup:10+exp:2",
                         "warmup:30:0.5",
                         "warmup:10+cosine:1e9",
                         "warmup:8+step:3:0.1"};
  for (const char* spec : specs) {
    for (double base : {0.0, 0.5, 2e6}) {
      CAPTURE(spec);
      CAPTURE(base);
      auto s = parse_schedule(spec, steps);
      int64_t expected = -1;  // every step in turn
      for (int64_t t = 0; t < steps && expected < 0; ++t)
        if (!(s->lr(base, t) <= limit)) expected = t;
      CHECK(s->first_step_above(base, limit, steps) == expected);
      CHECK(s->first_step_above(base, limit, 0) == -1);
    }
  }
  // Runs of 1e12 steps are searched, not walked: exp:1.0001 at 0.1 passes float's range after
  // ln(3.4e39) / ln(1.0001), about 903 400 steps.
  auto slow = parse_schedule("exp:1.0001", 1'000'000'000'000);
  const double float_max = 3.4028234663852886e38;
  const int64_t over = slow->first_step_above(0.1, float_max, 1'000'000'000'000);
  CHECK(over > 900'000);
  CHECK(over < 920'000);
  CHECK(slow->lr(0.1, over) > float_max);
  CHECK(slow->lr(0.1, over - 1) <= float_max);
  CHECK_THROWS_WITH_AS(slow->first_step_above(-1, float_max, 10),
                       doctest::Contains("base learning rate must be finite and >= 0"), Error);
}

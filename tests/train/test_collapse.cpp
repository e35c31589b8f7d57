// Failure that is not a NaN: the collapse rule on metrics rows, and how the ablation table counts
// collapsed and diverged runs and keeps them out of its means.
#include <doctest/doctest.h>

#include <cmath>

#include "train/ablation.h"
#include "train/trainer.h"

using namespace bnlab;

namespace {

// Rows every 100 steps up to `last`, evaluation accuracy from `acc(step)`, training loss 1.
std::vector<MetricsRow> rows_with(int64_t last, double (*acc)(int64_t)) {
  std::vector<MetricsRow> rows;
  for (int64_t step = 0; step <= last; step += 100) {
    MetricsRow r;
    r.step = step;
    r.train_loss = step == 0 ? NAN : 1.0;
    r.eval_acc = acc(step);
    rows.push_back(r);
  }
  return rows;
}

}  // namespace

TEST_CASE("train.collapse: stuck at chance from the given fraction on, or an exploding loss") {
  const double chance = 0.1135;
  // At chance throughout: collapsed, naming the first evaluation of the judged half.
  auto stuck = rows_with(1000, [](int64_t) { return 0.11; });
  CHECK(collapse_reason(stuck, chance, 10, 0.5, 0.05) ==
        "accuracy within 0.05 of chance (0.1135) from step 500 on");
  // Learned late: one judged evaluation above chance + margin is enough not to be collapsed.
  auto late = rows_with(1000, [](int64_t s) { return s == 1000 ? 0.9 : 0.11; });
  CHECK(collapse_reason(late, chance, 10, 0.5, 0.05) == "");
  // Learned early and then fell back to chance: collapsed (judged from the fraction on only).
  auto fell = rows_with(1000, [](int64_t s) { return s < 500 ? 0.9 : 0.12; });
  CHECK(collapse_reason(fell, chance, 10, 0.5, 0.05) != "");
  CHECK(collapse_reason(fell, chance, 10, 0.3, 0.05) == "");
  // The margin is inclusive: chance + margin itself counts as chance.
  auto edge = rows_with(1000, [](int64_t) { return 0.1635; });
  CHECK(collapse_reason(edge, chance, 10, 0.5, 0.05) != "");
  CHECK(collapse_reason(edge, chance, 10, 0.5, 0.04) == "");
  // A finite but exploded training loss: past 10 ln(10) = 23.0.
  auto exploded = rows_with(1000, [](int64_t) { return 0.9; });
  exploded[3].train_loss = 30.0;
  CHECK(collapse_reason(exploded, chance, 10, 0.5, 0.05) ==
        "training loss 30 exceeded 23 (10 ln 10) at step 300");
  exploded[3].train_loss = 20.0;
  CHECK(collapse_reason(exploded, chance, 10, 0.5, 0.05) == "");
  // Unknown chance (an old summary): only the loss rule applies. Row 0 alone: nothing to judge.
  CHECK(collapse_reason(stuck, NAN, 10, 0.5, 0.05) == "");
  CHECK(collapse_reason(rows_with(0, [](int64_t) { return 0.1; }), chance, 10, 0.5, 0.05) == "");
}

TEST_CASE("train.collapse: the summary table counts failed runs and averages the healthy ones") {
  std::vector<Arm> arms(1);
  arms[0].name = "norm=none";
  auto healthy = rows_with(1000, [](int64_t s) { return s >= 500 ? 0.96 : 0.5; });
  auto stuck = rows_with(1000, [](int64_t) { return 0.11; });
  std::vector<RunOutcome> outcomes(3);
  for (size_t i = 0; i < outcomes.size(); ++i) {
    outcomes[i].arm = &arms[0];
    outcomes[i].seed = i + 1;
    outcomes[i].result.eval_split = "test";
  }
  outcomes[0].result.rows = healthy;
  outcomes[1].result.rows = stuck;
  outcomes[1].result.collapsed = true;
  outcomes[2].result.rows = stuck;
  outcomes[2].result.rows.resize(3);
  outcomes[2].result.diverged = true;
  outcomes[2].result.diverged_step = 201;
  std::string table = summary_table(arms, outcomes, {0.95});
  CAPTURE(table);
  // Mean and best over the one healthy run; both failures counted.
  CHECK(table.find("| norm=none | 3 | 0.9600 | 0.9600 | 1/3 diverged at step 201, 1/3 "
                   "collapsed |") != std::string::npos);
  CHECK(table.find("| failed |") != std::string::npos);
}

TEST_CASE("train.collapse: failed runs reach no threshold, and the speed-up is at the highest") {
  // A diverged or collapsed run used to count for "steps to" wherever it touched the threshold
  // before failing, so an arm whose runs all failed showed steps and a speed-up; and the speed-up
  // was taken at the last threshold listed that the baseline met, not the highest.
  std::vector<Arm> arms(3);
  arms[0].name = "base";
  arms[1].name = "all-failed";
  arms[2].name = "one-failed";
  auto slow = rows_with(1000, [](int64_t s) { return s >= 400 ? 0.8 : s >= 200 ? 0.4 : 0.1; });
  auto fast = rows_with(1000, [](int64_t s) { return s >= 100 ? 0.8 : 0.1; });
  std::vector<RunOutcome> outcomes(6);
  for (size_t i = 0; i < outcomes.size(); ++i) {
    outcomes[i].arm = &arms[i / 2];
    outcomes[i].seed = i % 2 + 1;
    outcomes[i].result.eval_split = "test";
    outcomes[i].result.rows = i < 2 ? slow : fast;
  }
  outcomes[2].result.collapsed = true;
  outcomes[3].result.diverged = true;
  outcomes[3].result.diverged_step = 700;
  outcomes[5].result.collapsed = true;
  std::string table = summary_table(arms, outcomes, {0.7, 0.3});
  CAPTURE(table);
  CHECK(table.find("speed-up to 70% |") != std::string::npos);
  CHECK(table.find(" | 400 | 200 | 1.00x |") != std::string::npos);                   // base
  CHECK(table.find("collapsed | — | — | — |") != std::string::npos);                  // all-failed
  CHECK(table.find("collapsed | 100 (1/2) | 100 (1/2) | — |") != std::string::npos);  // one-failed
}

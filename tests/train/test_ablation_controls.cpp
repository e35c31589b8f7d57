// The controls an ablation needs to answer its question: equal training images across batch sizes,
// the linear learning-rate rule next to the unscaled one, and progress measured in epochs.
#include <doctest/doctest.h>

#include "train/ablation.h"

using namespace bnlab;

namespace {

const Arm& arm_named(const std::vector<Arm>& arms, const std::string& name) {
  for (const Arm& a : arms)
    if (a.name == name) return a;
  FAIL("no arm " << name);
  return arms.front();
}

}  // namespace

TEST_CASE("train.ablation: batch-size arms see equal samples and scale lr linearly on request") {
  AblationSpec spec;
  spec.base.batch_size = 60;
  spec.base.lr = 0.5f;
  spec.base.steps = 1000;
  spec.base.eval_every = 100;
  apply_preset(spec, "batch-size");
  CHECK(spec.equal_samples);
  std::vector<Arm> arms = expand_arms(spec);
  CHECK(arms.size() == 4 * 3 * 2);
  const Arm& small = arm_named(arms, "norm=batch,batch-size=2,lr-scaling=linear");
  CHECK(small.config.batch_size == 2);
  CHECK(small.config.steps == 30000);  // 1000 x 60 / 2: the same 60 000 images
  CHECK(small.config.eval_every == 3000);
  CHECK(small.config.lr == doctest::Approx(0.5 * 2 / 60.0));  // 0.0167, the linear rule
  const Arm& unscaled = arm_named(arms, "norm=batch,batch-size=2,lr-scaling=none");
  CHECK(unscaled.config.lr == 0.5f);
  CHECK(unscaled.config.steps == 30000);
  const Arm& base = arm_named(arms, "norm=none,batch-size=60,lr-scaling=linear");
  CHECK(base.config.steps == 1000);
  CHECK(base.config.lr == 0.5f);

  // Without equal_samples the steps stay; an epoch-based run needs no scaling.
  spec.equal_samples = false;
  CHECK(arm_named(expand_arms(spec), "norm=batch,batch-size=8,lr-scaling=none").config.steps ==
        1000);
  spec.equal_samples = true;
  spec.base.steps = 0;
  spec.base.epochs = 2;
  CHECK(arm_named(expand_arms(spec), "norm=batch,batch-size=8,lr-scaling=none").config.steps == 0);

  AblationSpec bad;
  bad.factors = {parse_factor("lr-scaling=sqrt")};
  CHECK_THROWS_WITH(expand_arms(bad), doctest::Contains("must be none or linear"));
}

TEST_CASE("train.ablation: arms of different batch sizes are compared in epochs") {
  std::vector<Arm> arms(2);
  arms[0].name = "batch-size=60";
  arms[1].name = "batch-size=2";
  std::vector<RunOutcome> outcomes(2);
  for (size_t i = 0; i < 2; ++i) {
    outcomes[i].arm = &arms[i];
    outcomes[i].seed = 1;
    outcomes[i].result.eval_split = "test";
    for (int k = 0; k <= 4; ++k) {
      MetricsRow r;
      r.step = k * (i == 0 ? 100 : 3000);
      r.epoch = k * 0.25;
      r.eval_acc = k >= (i == 0 ? 2 : 3) ? 0.96 : 0.5;
      outcomes[i].result.rows.push_back(r);
    }
  }
  std::string table = summary_table(arms, outcomes, {0.95}, /*by_epoch=*/true);
  CAPTURE(table);
  CHECK(table.find("epochs to 95% |") != std::string::npos);
  CHECK(table.find("| batch-size=60 | 1 | 0.9600 | 0.9600 | 0 | 0.50 | 1.00x | — |") !=
        std::string::npos);
  CHECK(table.find("| batch-size=2 | 1 | 0.9600 | 0.9600 | 0 | 0.75 | 0.67x | — |") !=
        std::string::npos);
  // A second run: now there is a spread to report.
  outcomes.push_back(outcomes[0]);
  outcomes.back().seed = 2;
  outcomes.back().result.rows.back().eval_acc = 0.94;
  table = summary_table(arms, outcomes, {0.95}, /*by_epoch=*/true);
  CHECK(table.find("| batch-size=60 | 2 | 0.9500 ± 0.0141 | 0.9600 |") != std::string::npos);
  outcomes.pop_back();
  // The cost column: training seconds per step, mean over the arm's runs.
  outcomes[0].result.seconds = 2.0;
  outcomes[0].result.steps_done = 400;
  table = summary_table(arms, outcomes, {0.95}, /*by_epoch=*/true);
  CHECK(table.find("| 0.50 | 1.00x | 5.00 |") != std::string::npos);
  CHECK(table.find("| ms/step |") != std::string::npos);
}

// The evaluation at step 0 is the untrained model's: a threshold at or below chance counted as
// reached in 0 steps, and the speed-up was then 0/0 ("-nanx").
TEST_CASE("train.ablation: the untrained model's evaluation reaches no threshold") {
  std::vector<Arm> arms(2);
  arms[0].name = "norm=none";
  arms[1].name = "norm=batch";
  const std::vector<std::vector<double>> acc = {{0.10, 0.30, 0.60}, {0.10, 0.60, 0.70}};
  std::vector<RunOutcome> outcomes(2);
  for (size_t i = 0; i < 2; ++i) {
    outcomes[i].arm = &arms[i];
    outcomes[i].seed = 1;
    outcomes[i].result.eval_split = "test";
    for (size_t k = 0; k < acc[i].size(); ++k) {
      MetricsRow r;
      r.step = static_cast<int64_t>(k) * 10;
      r.eval_acc = acc[i][k];
      outcomes[i].result.rows.push_back(r);
    }
  }
  std::string table = summary_table(arms, outcomes, {0.05, 0.5});
  CAPTURE(table);
  CHECK(table.find(" | 0 | 10 | 20 | 1.00x | — |\n") != std::string::npos);  // norm=none
  CHECK(table.find(" | 0 | 10 | 10 | 2.00x | — |\n") != std::string::npos);  // norm=batch
  // A threshold every run met at step 0 alone: at 10 steps, a speed-up of 1, no NaN.
  table = summary_table(arms, outcomes, {0.05});
  CAPTURE(table);
  CHECK(table.find("speed-up to 5% |") != std::string::npos);
  CHECK(table.find(" | 0 | 10 | 1.00x | — |\n") != std::string::npos);
  CHECK(table.find("nan") == std::string::npos);
  // Met at step 0 and never after: not reached, and no speed-up at all.
  for (RunOutcome& o : outcomes) o.result.rows[1].eval_acc = o.result.rows[2].eval_acc = 0.05;
  table = summary_table(arms, outcomes, {0.08});
  CAPTURE(table);
  CHECK(table.find(" | 0 | — | — | — |\n") != std::string::npos);
  CHECK(table.find("nan") == std::string::npos);
  CHECK(table.find("inf") == std::string::npos);
}

TEST_CASE("train.ablation: every preset's arms train distinct settings") {
  // The duplicate-setting refusal must leave the presets alone: batch-size's lr-scaling=linear and
  // none are one setting at the base batch, by design (the unscaled rule beside the linear one).
  for (const std::string& preset : preset_names()) {
    CAPTURE(preset);
    AblationSpec spec;
    spec.base.lr = 0.5f;
    spec.base.batch_size = 60;
    spec.base.steps = 100;
    spec.lr_from_model = true;
    apply_preset(spec, preset);
    CHECK_NOTHROW(expand_arms(spec));
  }
}

// Without --lr every arm took its model's SGD rate, whatever the optimizer: paper-mlp's 0.5 for
// Adam, which collapses there, so an optimizer ablation compared a tuned SGD with a broken Adam.
TEST_CASE("train.ablation: without a rate, a non-SGD arm trains at its optimizer's default") {
  AblationSpec spec;
  spec.base.model.name = "lenet";  // SGD default 0.05
  spec.lr_from_model = true;
  spec.factors = {parse_factor("lr-mult=1,5"), parse_factor("optimizer=sgd,adam,adamw,rmsprop")};
  std::vector<Arm> arms = expand_arms(spec);
  CHECK(arm_named(arms, "lr-mult=1,optimizer=sgd").config.lr == 0.05f);
  CHECK(arm_named(arms, "lr-mult=1,optimizer=adam").config.lr == 1e-3f);  // torch.optim.Adam's
  CHECK(arm_named(arms, "lr-mult=1,optimizer=adamw").config.lr == 1e-3f);
  CHECK(arm_named(arms, "lr-mult=1,optimizer=rmsprop").config.lr == 1e-2f);
  // An lr-mult applied before stays applied.
  CHECK(arm_named(arms, "lr-mult=5,optimizer=sgd").config.lr == doctest::Approx(0.25));
  CHECK(arm_named(arms, "lr-mult=5,optimizer=adam").config.lr == doctest::Approx(5e-3));

  // The base optimizer (ablate --optimizer adam); a model factor keeps Adam's rate.
  spec.base.optimizer = "adam";
  spec.factors = {parse_factor("model=paper-mlp,mlp")};
  for (const Arm& a : expand_arms(spec)) {
    CAPTURE(a.name);
    CHECK(a.config.lr == 1e-3f);
  }
  // Back to SGD by a factor: the model's own rate again.
  spec.factors = {parse_factor("optimizer=adam,sgd")};
  CHECK(arm_named(expand_arms(spec), "optimizer=sgd").config.lr == 0.05f);

  // A given rate (--lr) or an lr factor is every optimizer's.
  spec.factors = {parse_factor("optimizer=sgd,adam"), parse_factor("lr=0.2")};
  for (const Arm& a : expand_arms(spec)) CHECK(a.config.lr == 0.2f);
  spec.lr_from_model = false;
  spec.base.lr = 0.3f;
  spec.factors = {parse_factor("optimizer=sgd,adam")};
  for (const Arm& a : expand_arms(spec)) CHECK(a.config.lr == 0.3f);
}

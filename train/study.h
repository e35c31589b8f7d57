// `bnlab study`: every claim about batch normalization that bnlab can test, each answered by the
// preset built to control for it, with a verdict decided by one written rule.
//
// A study is a list of experiments (ablation presets on a model and dataset) and a list of claims;
// each claim reads one experiment's runs and reduces them to one number per seed (a paired
// difference between two arms of the same seed, signed so that a positive value supports the
// claim). The verdict rule (verdict_of) is a two-sided 95 % t interval over those seeds: supported
// when it lies above 0, not supported when it lies below 0, inconclusive when it contains 0 or
// fewer than two seeds finished. The report (report.md, verdicts.csv) states the rule.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/ablation.h"

namespace bnlab {

/// How long a study's runs are: steps and evaluation spacing per kind of experiment, and seeds.
struct StudyBudget {
  std::string name = "quick";  ///< quick | standard | full, or a name of your own
  int64_t seeds = 2;           ///< runs per arm
  int64_t mnist_steps = 1000;  ///< steps of the MNIST / Fashion-MNIST MLP experiments (batch 60)
  int64_t mnist_eval_every = 100;  ///< their evaluation spacing
  /// The regularization experiment's steps (2 000 training images: 30 steps are one epoch).
  int64_t overfit_steps = 1500;
  int64_t cifar_steps = 200;      ///< steps of the CIFAR-10 cifar-cnn experiment (batch 64)
  int64_t cifar_eval_every = 50;  ///< its evaluation spacing
  int64_t val_split = 5000;       ///< MNIST-family validation split (where a preset needs one)
  /// The recurrent experiment's steps at batch 60 (its batch-4 arms train on the same images, so
  /// they take 15 times as many); evaluated as the MNIST experiments are.
  int64_t recurrent_steps = 1000;
};

/// The named budgets: quick (a few minutes on 2 cores), standard, full (the publishable one).
/// Throws naming the known budgets for another name.
StudyBudget study_budget(const std::string& name);

/// What run_study runs.
struct StudySpec {
  StudyBudget budget;                  ///< study_budget("quick") by default
  std::string out_dir = "runs/study";  ///< OUT: OUT/EXPERIMENT/..., OUT/report.md, verdicts.csv
  std::string data_dir;                ///< "" = find_data_dir's default
  std::vector<std::string> claims;     ///< claim ids to answer; empty: all
  int jobs = 0;                        ///< runs trained at once (AblationSpec::jobs)
  uint64_t seed = 1;                   ///< the first seed
  std::string command;                 ///< the command line, quoted in the report
};

/// A claim the study can answer.
struct ClaimInfo {
  std::string id;          ///< "higher-lr"
  std::string claim;       ///< what the literature says
  std::string experiment;  ///< the experiment whose runs answer it
  std::string measure;     ///< the per-seed number, signed so that > 0 supports the claim
};

/// Every claim, in report order.
const std::vector<ClaimInfo>& study_claims();

/// A paired effect over seeds and the verdict the rule gives it.
struct Verdict {
  int64_t n = 0;        ///< seeds with a value
  double mean = 0;      ///< mean of the per-seed values
  double std = 0;       ///< their sample standard deviation
  double ci_low = 0;    ///< 95 % t interval of the mean
  double ci_high = 0;   ///< upper end
  std::string verdict;  ///< supported | not supported | inconclusive | not run
  std::string note;     ///< what else the reader should know (the arms, the threshold, ...)
};

/// The rule: the two-sided 95 % t interval of the mean of `values` (NaNs dropped); supported when
/// it lies above 0, not supported when below, inconclusive otherwise or with fewer than two values.
Verdict verdict_of(const std::vector<double>& values);

/// One claim's answer.
struct ClaimResult {
  ClaimInfo info;   ///< which claim
  Verdict verdict;  ///< its effect and verdict
};

/// What run_study wrote.
struct StudyReport {
  std::vector<ClaimResult> claims;  ///< in study_claims() order (the selected ones)
  std::string report_md;            ///< OUT/report.md
  std::string verdicts_csv;         ///< OUT/verdicts.csv
  /// The signal (SIGINT, SIGTERM) that stopped it, 0 if none; rerunning resumes.
  int interrupted_by = 0;
};

/// Runs (or reuses) the experiments the selected claims need and writes report.md (verdicts, the
/// rule, each experiment's tables and plots) and verdicts.csv. An experiment whose dataset cannot
/// be loaded is skipped and its claims are reported as "not run" with the reason; when none can
/// run, it throws naming each missing dataset and why, and writes no report. Each experiment's
/// directory is locked (RunDirLock, as bnlab ablate locks its --out) from its start to the return.
StudyReport run_study(const StudySpec& spec);

}  // namespace bnlab

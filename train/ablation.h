// Ablations: matched runs that differ in one factor only (same seed, same initial weights where
// shapes allow, same data order), their long-format results, the summary table and the plots.
//
// A factor is a named knob with values ("norm=none,batch", "lr-mult=1,5,30"); several factors form
// a grid. Every (arm, seed) run lives in OUT/runs/<arm>/seed-<s>/ and is skipped when it already
// finished there (its summary.json exists), so an interrupted sweep resumes where it stopped.
#pragma once

#include <string>
#include <vector>

#include "train/models.h"
#include "train/trainer.h"

namespace bnlab {

/// One knob varied across arms.
struct Factor {
  std::string name;                 ///< a factor_help() name: "norm", "lr-mult", ...
  std::vector<std::string> values;  ///< one arm per value, in order
};

/// What run_ablation runs.
struct AblationSpec {
  TrainConfig base;                     ///< the settings every arm starts from
  std::vector<Factor> factors;          ///< their grid is the arms; the first arm is the baseline
  int64_t seeds = 1;                    ///< runs per arm, seeds base.seed, base.seed + 1, ...
  std::string out_dir = "runs/ablate";  ///< OUT: OUT/runs/ARM/seed-S/, results, plots
  int jobs = 0;       ///< runs trained at once, each with threads / jobs threads; 0 = one per core
  std::string title;  ///< summary.md's heading ("" = "bnlab ablation")
  /// Each arm trains at default_lr(model, optimizer) (times its lr-mult) instead of base.lr:
  /// its model's SGD rate, or a non-SGD optimizer's own; unless an `lr` factor sets it. A grid
  /// over models or optimizers then compares each at a rate that suits it.
  bool lr_from_model = false;
  /// Accuracies for the "steps to X" columns; empty: the dataset's (default_thresholds).
  std::vector<double> thresholds;
  /// Arms whose batch size differs from base's train on as many images as base: steps and
  /// eval_every scale by base.batch_size / batch_size, and the table and plots measure progress
  /// in epochs instead of steps.
  bool equal_samples = false;
  /// After training, evaluate each run's final model on the test split (the evaluation split
  /// without a --val-split) with the running averages and with batch statistics at each of these
  /// evaluation batch sizes: the inference table (the inference preset). Empty: skipped.
  std::vector<int64_t> inference_batches;
  /// What chose base.val_split when no flag did ("--preset lr", set by apply_preset), for the
  /// error when the training set is too small for it; "" when the user chose it.
  std::string val_split_set_by;
};

/// One cell of the grid.
struct Arm {
  std::string name;                                           ///< "norm=batch,lr-mult=5"
  std::vector<std::pair<std::string, std::string>> settings;  ///< factor -> value
  TrainConfig config;  ///< base with the settings applied (seed unset)
};

/// One (arm, seed) run's result.
struct RunOutcome {
  const Arm* arm;       ///< which arm
  uint64_t seed;        ///< which seed
  TrainResult result;   ///< what it did
  bool reused = false;  ///< loaded from a finished run directory
  /// With AblationSpec::inference_batches: accuracy with the running averages, then with batch
  /// statistics at each of those batch sizes (empty for a diverged run).
  std::vector<double> inference_acc;
  std::string run_dir;  ///< OUT/runs/ARM/seed-S: the run's files (metrics.csv, ics.csv, ...)
};

/// Factor names and what they change; values are validated when applied.
const std::vector<std::pair<std::string, std::string>>& factor_help();
/// "norm=none,batch" -> Factor; throws naming the spec and the known factors.
Factor parse_factor(const std::string& spec);
/// Named presets: fig1 (default), lr, batch-size, init, placement, norm, dropout, dataset,
/// regularization, inference, gradient-flow, recurrent.
std::vector<Factor> preset_factors(const std::string& preset);
/// Sets spec's factors, and the controls the preset needs to answer its question (batch-size: equal
/// samples seen and the linear learning-rate rule next to the unscaled one).
void apply_preset(AblationSpec& spec, const std::string& preset);
/// The preset names preset_factors accepts.
std::vector<std::string> preset_names();
/// Applies factor=value to a config (e.g. lr-mult multiplies the base lr). lr-scaling=linear is
/// applied by expand_arms once the arm's batch size is known (lr x batch / base batch).
void apply_factor(TrainConfig& cfg, const std::string& factor, const std::string& value);
/// The most arms a grid may have (each arm is at least one training run).
constexpr size_t kMaxArms = 10000;
/// The cartesian product of the factors, in order (the first arm is the baseline). Throws for a
/// factor given twice, a grid over kMaxArms arms, two arms whose names map to one run directory,
/// `lr` and `lr-mult` in one grid, two values of a factor that give one setting (lr=0.1,0.10), or
/// seeds past 2^64 - 1 (base.seed + seeds - 1).
std::vector<Arm> expand_arms(const AblationSpec& spec);

/// What run_ablation wrote.
struct AblationReport {
  std::string results_csv;      ///< OUT/results.csv: one row per (arm, seed, evaluation)
  std::string summary_md;       ///< OUT/summary.md: the table below with the settings
  std::string accuracy_png;     ///< OUT/accuracy.png ("" when not drawn: no gnuplot, or it failed)
  std::string percentiles_png;  ///< OUT/percentiles.png ("" without probe values, or not drawn)
  std::string table;            ///< the Markdown summary table
  /// Per arm in grid order: its name and its last evaluation's accuracy, averaged over the seeds
  /// whose runs did not fail (the table's column); NaN when every run diverged or collapsed.
  std::vector<std::pair<std::string, double>> final_accuracy;
  std::vector<Arm> arms;  ///< the grid, in order
  /// Every (arm, seed) run, by arm: outcomes[a] are arms[a]'s runs in seed order (their `arm`
  /// pointers refer to run_ablation's copy and are null here).
  std::vector<std::vector<RunOutcome>> outcomes;
  /// Figures beyond accuracy and percentiles (the mechanism preset's), relative to the output
  /// directory.
  std::vector<std::string> extra_pngs;
  std::vector<std::string> messages;  ///< plot status lines
  /// SIGINT/SIGTERM: the running arms stopped at a step boundary with a checkpoint, no report was
  /// written, and `unfinished` runs remain; rerunning the same command resumes them.
  int interrupted_by = 0;
  int64_t unfinished = 0;  ///< runs left to finish after an interruption
};

/// "lenet, cifar-cnn on mnist": the distinct models and datasets the arms train, in order.
std::string arms_models_and_data(const std::vector<Arm>& arms);

/// The "steps to X" accuracies that suit a dataset's difficulty: mnist 0.90 0.95 0.97 0.98,
/// fashion-mnist 0.80 0.85 0.88 0.90, cifar10 0.40 0.50 0.60 0.70, cifar100 0.20 0.30 0.40 0.50,
/// others 0.50 0.70 0.80 0.90.
std::vector<double> default_thresholds(const std::string& dataset);

/// Throws naming --thresholds unless every threshold is a number in [0, 1] given once: a value
/// given twice would be two identical "steps to X" columns.
void check_thresholds(const std::vector<double>& thresholds);

/// What run_ablation throws for a setting that only the data shows to be wrong (an arm's batch
/// larger than its training set), before any arm trains: a bad flag or `--vary` value, which
/// `bnlab ablate` reports with exit 2 like the values it checks before reading data.
class AblationSettingError : public Error {
 public:
  using Error::Error;
};

/// Runs (or reuses) every arm x seed and writes results.csv, summary.md and the plots into
/// spec.out_dir. Throws AblationSettingError for an arm whose batch exceeds its training set.
AblationReport run_ablation(const AblationSpec& spec);

/// An ablation as a library call: matched runs of one registered model (the zoo's or your own)
/// that differ only in the factors varied, written as `bnlab ablate` writes them (OUT/runs/...,
/// results.csv, summary.md, accuracy.png). A finished run is reused and an interrupted one resumed
/// when the same experiment runs again.
///
///     Experiment exp("runs/my-ablation");
///     exp.model("my-net", my_factory).vary("norm", {"none", "batch"}).seeds(2);
///     exp.base().steps = 2000;
///     AblationReport report = exp.run();
class Experiment {
 public:
  /// An experiment writing into `out_dir`, with TrainConfig's defaults as the base settings.
  explicit Experiment(std::string out_dir);
  /// Registers `factory` as model `name` (register_model) and trains it in every arm.
  Experiment& model(const std::string& name, ModelFactory factory);
  /// Trains the registered model `name` in every arm.
  Experiment& model(const std::string& name);
  /// Adds a factor: one arm per value, in order (the first value of the first factor is the
  /// baseline). Several factors form a grid. The names are factor_help()'s; values are checked
  /// as `--vary name=v1,v2` would be.
  Experiment& vary(const std::string& factor, const std::vector<std::string>& values);
  /// Runs every arm with seeds base().seed .. base().seed + n - 1.
  Experiment& seeds(int64_t n);
  /// The summary's title.
  Experiment& title(std::string text);
  /// Trains each arm at its model's (or optimizer's) default rate (AblationSpec::lr_from_model).
  Experiment& lr_from_model(bool on = true);
  /// The settings every arm starts from (dataset, data_dir, steps, lr, batch size, ...).
  TrainConfig& base() { return spec_.base; }
  /// The whole specification (jobs, seeds, factors) for what the shortcuts above do not cover.
  AblationSpec& spec() { return spec_; }
  /// Runs (or reuses) every arm x seed and writes the report: run_ablation(spec()).
  AblationReport run() const;

 private:
  AblationSpec spec_;
};

/// The summary table from outcomes (exposed for tests).
/// by_epoch: "epochs to X" instead of "steps to X" (arms with different batch sizes).
std::string summary_table(const std::vector<Arm>& arms, const std::vector<RunOutcome>& outcomes,
                          const std::vector<double>& thresholds, bool by_epoch = false);

}  // namespace bnlab

// Ablations: matched runs that differ in one factor only (same seed, same initial weights where
// shapes allow, same data order), their long-format results, the summary table and the plots.
//
// A factor is a named knob with values ("norm=none,batch", "lr-mult=1,5,30"); several factors form
// a grid. Every (arm, seed) run lives in OUT/runs/<arm>/seed-<s>/ and is skipped when it already
// finished there (its summary.json exists), so an interrupted sweep resumes where it stopped.
#pragma once

#include <string>
#include <vector>

#include "apps/trainer.h"

namespace bnlab::apps {

struct Factor {
  std::string name;
  std::vector<std::string> values;
};

struct AblationSpec {
  TrainConfig base;
  std::vector<Factor> factors;
  int64_t seeds = 1;
  std::string out_dir = "runs/ablate";
  int jobs = 0;  // runs trained at once, each with threads / jobs threads; 0 = one per core
  std::string title;
};

struct Arm {
  std::string name;                                           // "norm=batch,lr-mult=5"
  std::vector<std::pair<std::string, std::string>> settings;  // factor -> value
  TrainConfig config;  // base with the settings applied (seed unset)
};

struct RunOutcome {
  const Arm* arm;
  uint64_t seed;
  TrainResult result;
  bool reused = false;  // loaded from a finished run directory
};

// Factor names and what they change; values are validated when applied.
const std::vector<std::pair<std::string, std::string>>& factor_help();
// "norm=none,batch" -> Factor; throws naming the spec and the known factors.
Factor parse_factor(const std::string& spec);
// Named presets: fig1 (default), lr, batch-size, init, placement, norm, dropout, dataset.
std::vector<Factor> preset_factors(const std::string& preset);
std::vector<std::string> preset_names();
// Applies factor=value to a config (e.g. lr-mult multiplies the base lr).
void apply_factor(TrainConfig& cfg, const std::string& factor, const std::string& value);
// The most arms a grid may have (each arm is at least one training run).
constexpr size_t kMaxArms = 10000;
// The cartesian product of the factors, in order (the first arm is the baseline). Throws for a
// factor given twice, a grid over kMaxArms arms, or two arms whose names map to one run directory.
std::vector<Arm> expand_arms(const AblationSpec& spec);

struct AblationReport {
  std::string results_csv, summary_md, accuracy_png, percentiles_png;
  std::string table;                  // the Markdown summary table
  std::vector<std::string> messages;  // plot status lines
  // SIGINT/SIGTERM: the running arms stopped at a step boundary with a checkpoint, no report was
  // written, and `unfinished` runs remain; rerunning the same command resumes them.
  int interrupted_by = 0;
  int64_t unfinished = 0;
};

// Runs (or reuses) every arm x seed and writes results.csv, summary.md and the plots into
// spec.out_dir.
AblationReport run_ablation(const AblationSpec& spec);

// The summary table from outcomes (exposed for tests).
std::string summary_table(const std::vector<Arm>& arms, const std::vector<RunOutcome>& outcomes,
                          const std::vector<double>& thresholds);

}  // namespace bnlab::apps

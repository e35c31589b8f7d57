// The mechanism preset's analysis (issue 18): what each run measured about internal covariate shift
// (ICS), the loss landscape along the gradient and one unit's input distribution during training
// (train/mechanism.h writes ics.csv and mechanism.csv into the run directory), reduced to the
// tables, the figures and the per-seed numbers that `bnlab study` turns into verdicts.
//
// Everything here reads the run directories, never the live Trainer, so a finished run that an
// ablation reuses is analysed exactly like one it just trained. docs/mechanism.md states the
// formulas.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/ablation.h"
#include "train/trainer.h"

namespace bnlab {

/// One run's mechanism measurements, as read back from its directory.
struct MechanismRun {
  std::vector<MechanismRow> steps;              ///< mechanism.csv: one row per measured step
  std::vector<IcsRow> ics;                      ///< ics.csv: one row per measured step and weight
  bool empty() const { return steps.empty(); }  ///< the run measured nothing
};

/// Reads `dir`/mechanism.csv and `dir`/ics.csv; an empty result when the run measured nothing.
/// Throws naming the file for a malformed one.
MechanismRun read_mechanism_run(const std::string& dir);

/// Mean cosine between a layer's gradient before and after the preceding layers' update, over the
/// measured steps and every layer but the first (which has no preceding layer): 1 = no ICS.
double mean_ics_cosine(const MechanismRun& run);
/// Mean ICS l2 distance relative to the gradient's norm, over the same cells as mean_ics_cosine.
double mean_ics_relative_l2(const MechanismRun& run);
/// Mean over the measured steps of log10 of the effective beta-smoothness.
double mean_log10_beta(const MechanismRun& run);
/// How far the probe unit's input distribution moves between consecutive measured steps: the
/// root mean square of the change of its (mean, std) in train mode.
double activation_drift(const MechanismRun& run);

/// The mechanism section of an ablation's summary: per-arm table (mean ± std over seeds) and the
/// figures mechanism.png (training accuracy, effective beta-smoothness, the loss and the gradient
/// change along the gradient), ics.png (per layer) and drift.png (the probe unit's input in train
/// mode), written into spec.out_dir; the names of those rendered go to `pngs` (relative to
/// spec.out_dir), the plots' status lines to `messages`. "" when no run measured anything.
std::string mechanism_section(const AblationSpec& spec, const AblationReport& report,
                              std::vector<std::string>* pngs, std::vector<std::string>* messages);

}  // namespace bnlab

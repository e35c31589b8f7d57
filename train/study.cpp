// `bnlab study`: experiments (presets on a model and dataset), claims that read them, the verdict
// rule, and the report. See train/study.h for the rule.
#include "train/study.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/io.h"
#include "core/version.h"
#include "data/datasets.h"
#include "train/interrupt.h"
#include "train/mechanism_report.h"
#include "train/report_text.h"
#include "train/run_dir.h"

namespace bnlab {

namespace fs = std::filesystem;

namespace {

using detail::csv_escape;
using detail::fmt;

// How long an experiment's runs are, in the budget's terms.
enum class Length { kMnist, kOverfit, kCifar, kRecurrent };

struct ExperimentDef {
  std::string id;       // its directory under OUT
  std::string preset;   // train/ablation.h presets
  std::string dataset;  // mnist | fashion-mnist | cifar10
  std::string model;    // the base model (a preset's model factor wins)
  Length length;
};

const std::vector<ExperimentDef>& experiments() {
  static const std::vector<ExperimentDef> defs{
      {"fig1", "fig1", "mnist", "paper-mlp", Length::kMnist},
      {"lr", "lr", "mnist", "paper-mlp", Length::kMnist},
      {"init", "init", "mnist", "paper-mlp", Length::kMnist},
      {"batch-size", "batch-size", "mnist", "paper-mlp", Length::kMnist},
      {"placement", "placement", "mnist", "paper-mlp", Length::kMnist},
      {"regularization", "regularization", "mnist", "mlp", Length::kOverfit},
      {"gradient-flow", "gradient-flow", "mnist", "paper-mlp", Length::kMnist},
      {"inference", "inference", "mnist", "paper-mlp", Length::kMnist},
      {"fashion-mnist", "fig1", "fashion-mnist", "paper-mlp", Length::kMnist},
      {"cifar10", "fig1", "cifar10", "cifar-cnn", Length::kCifar},
      {"recurrent", "recurrent", "mnist", "row-rnn", Length::kRecurrent},
      {"mechanism", "mechanism", "mnist", "paper-mlp", Length::kMnist},
      {"mechanism-cifar10", "mechanism", "cifar10", "cifar-cnn", Length::kCifar},
  };
  return defs;
}

const ExperimentDef& experiment_named(const std::string& id) {
  for (const ExperimentDef& e : experiments())
    if (e.id == id) return e;
  BNLAB_FAIL("study: no experiment '", id, "'");
}

AblationSpec spec_for(const ExperimentDef& e, const StudySpec& study) {
  const StudyBudget& b = study.budget;
  AblationSpec spec;
  TrainConfig& base = spec.base;
  base.model.name = e.model;
  base.dataset = e.dataset;
  base.data_dir = study.data_dir;
  base.optimizer = "sgd";
  base.seed = study.seed;
  base.batch_size = e.length == Length::kCifar ? 64 : 60;
  base.steps = e.length == Length::kCifar       ? b.cifar_steps
               : e.length == Length::kOverfit   ? b.overfit_steps
               : e.length == Length::kRecurrent ? b.recurrent_steps
                                                : b.mnist_steps;
  base.eval_every = e.length == Length::kCifar     ? b.cifar_eval_every
                    : e.length == Length::kOverfit ? std::max<int64_t>(1, b.overfit_steps / 10)
                                                   : b.mnist_eval_every;
  spec.lr_from_model = true;  // each model at its own default rate (cifar-cnn 0.05, not 0.5)
  base.lr = default_lr(e.model);
  spec.seeds = b.seeds;
  spec.jobs = study.jobs;
  spec.out_dir = (fs::path(study.out_dir) / e.id).string();
  apply_preset(spec, e.preset);
  if (spec.base.val_split > 0) spec.base.val_split = b.val_split;
  spec.title = "study " + e.id;
  return spec;
}

// ---- reading an experiment's runs ----

using Settings = std::vector<std::pair<std::string, std::string>>;

// The arm whose settings include every pair of `want`; -1 when none does.
int find_arm(const AblationReport& r, const Settings& want) {
  for (size_t a = 0; a < r.arms.size(); ++a) {
    bool all = true;
    for (const auto& w : want)
      all &= std::find(r.arms[a].settings.begin(), r.arms[a].settings.end(), w) !=
             r.arms[a].settings.end();
    if (all) return static_cast<int>(a);
  }
  return -1;
}

double chance_of(const TrainResult& r) { return std::isnan(r.chance_acc) ? 0.1 : r.chance_acc; }

// A diverged run scores chance: it ended with no usable model.
double final_acc(const TrainResult& r, const TrainConfig&) {
  if (r.rows.empty()) return NAN;
  return r.diverged ? chance_of(r) : r.rows.back().eval_acc;
}

// Convergence speed as the mean evaluation accuracy over the run's scheduled evaluations (the area
// under the accuracy curve): defined for every run, unlike "steps to X %", which a slow arm may
// never reach. Evaluations a diverged run did not get to count as chance.
double curve_area(const TrainResult& r, const TrainConfig& cfg) {
  if (r.rows.empty() || cfg.eval_every <= 0 || cfg.steps <= 0) return NAN;
  const int64_t expected = (cfg.steps + cfg.eval_every - 1) / cfg.eval_every;
  double sum = 0;
  int64_t present = 0;
  for (const MetricsRow& row : r.rows) {
    if (row.step == 0 || present == expected) continue;
    sum += row.eval_acc;
    ++present;
  }
  return (sum + chance_of(r) * static_cast<double>(expected - present)) /
         static_cast<double>(expected);
}

double ms_per_step(const TrainResult& r, const TrainConfig&) {
  return r.steps_done > 0 && r.seconds > 0 ? 1e3 * r.seconds / static_cast<double>(r.steps_done)
                                           : NAN;
}

double gap(const TrainResult& r, const TrainConfig&) {
  if (r.rows.empty() || r.diverged) return NAN;
  return r.train_eval_acc - r.rows.back().eval_acc;
}

template <typename Score>
double score(const AblationReport& r, int arm, size_t seed, Score f) {
  const auto& runs = r.outcomes[static_cast<size_t>(arm)];
  if (seed >= runs.size()) return NAN;
  return f(runs[seed].result, r.arms[static_cast<size_t>(arm)].config);
}

size_t seeds_of(const AblationReport& r) {
  size_t n = 0;
  for (const auto& runs : r.outcomes) n = std::max(n, runs.size());
  return n;
}

// Per seed: f(plus) - f(minus). Empty (with `why`) when an arm is missing.
template <typename Score>
std::vector<double> paired(const AblationReport& r, const Settings& plus, const Settings& minus,
                           Score f, std::string* why) {
  int p = find_arm(r, plus), m = find_arm(r, minus);
  if (p < 0 || m < 0) {
    *why = "the experiment has no arm " + std::string(p < 0 ? "for the first" : "for the second") +
           " side";
    return {};
  }
  std::vector<double> out;
  for (size_t s = 0; s < seeds_of(r); ++s) out.push_back(score(r, p, s, f) - score(r, m, s, f));
  return out;
}

// The lr-mult an arm does best at (mean final accuracy of its healthy runs), as best_rate_table
// picks it.
std::string best_multiplier(const AblationReport& r, const std::string& norm) {
  std::string best;
  double best_acc = -1;
  for (size_t a = 0; a < r.arms.size(); ++a) {
    const Settings& s = r.arms[a].settings;
    if (std::find(s.begin(), s.end(), std::make_pair(std::string("norm"), norm)) == s.end())
      continue;
    double sum = 0;
    int64_t n = 0;
    for (const RunOutcome& o : r.outcomes[a]) {
      if (o.result.diverged || o.result.collapsed || o.result.rows.empty()) continue;
      sum += o.result.rows.back().eval_acc;
      ++n;
    }
    for (const auto& [name, value] : s)
      if (name == "lr-mult" && n > 0 && sum / static_cast<double>(n) > best_acc) {
        best_acc = sum / static_cast<double>(n);
        best = value;
      }
  }
  return best;
}

// The evaluation batch sizes of the inference preset.
std::vector<int64_t> inference_batches() {
  AblationSpec spec;
  apply_preset(spec, "inference");
  return spec.inference_batches;
}

// One claim's per-seed values from its experiment's report, and a note.
std::vector<double> measure_claim(const std::string& id, const AblationReport& r,
                                  std::string* note) {
  const Settings none{{"norm", "none"}}, batch{{"norm", "batch"}};
  if (id == "higher-lr") {
    *note =
        "final validation accuracy at 30x the base rate; failed runs score their accuracy, "
        "diverged ones chance";
    return paired(r, {{"norm", "batch"}, {"lr-mult", "30"}}, {{"norm", "none"}, {"lr-mult", "30"}},
                  final_acc, note);
  }
  if (id == "faster-own-lr") {
    const std::string bn = best_multiplier(r, "batch"), plain = best_multiplier(r, "none");
    if (bn.empty() || plain.empty()) {
      *note = "every rate of an arm failed";
      return {};
    }
    *note = "best lr-mult on validation: batch " + bn + "x, none " + plain + "x";
    return paired(r, {{"norm", "batch"}, {"lr-mult", bn}}, {{"norm", "none"}, {"lr-mult", plain}},
                  curve_area, note);
  }
  if (id == "faster-shared-lr" || id == "fashion-mnist" || id == "cifar10")
    return paired(r, batch, none, curve_area, note);
  if (id == "init") {
    // Per seed: the spread of final accuracy over the three initial scales, none minus batch.
    std::vector<double> out;
    for (size_t s = 0; s < seeds_of(r); ++s) {
      double spread[2] = {0, 0};
      for (int k = 0; k < 2; ++k) {
        double lo = 2, hi = -1;
        for (const char* init : {"normal:0.01", "normal:0.1", "normal:1"}) {
          int a = find_arm(r, {{"norm", k == 0 ? "none" : "batch"}, {"init", init}});
          double v = a < 0 ? NAN : score(r, a, s, final_acc);
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        spread[k] = hi - lo;
      }
      out.push_back(spread[0] - spread[1]);
    }
    *note = "spread (max - min) of final accuracy over init N(0, 0.01), N(0, 0.1), N(0, 1)";
    return out;
  }
  if (id == "small-batch-bn") {
    *note = "equal training images, lr scaled linearly with the batch";
    return paired(r, {{"norm", "batch"}, {"batch-size", "60"}, {"lr-scaling", "linear"}},
                  {{"norm", "batch"}, {"batch-size", "2"}, {"lr-scaling", "linear"}}, final_acc,
                  note);
  }
  if (id == "small-batch-gn") {
    *note = "batch 2, equal training images, lr scaled linearly";
    return paired(r, {{"norm", "group"}, {"batch-size", "2"}, {"lr-scaling", "linear"}},
                  {{"norm", "batch"}, {"batch-size", "2"}, {"lr-scaling", "linear"}}, final_acc,
                  note);
  }
  if (id == "placement") {
    return paired(r, {{"placement", "before"}}, {{"placement", "after"}}, curve_area, note);
  }
  if (id == "regularization") {
    *note = "mlp on 2 000 training images, no dropout; gap = train accuracy (eval mode) - test";
    return paired(r, {{"norm", "none"}, {"dropout", "0"}}, {{"norm", "batch"}, {"dropout", "0"}},
                  gap, note);
  }
  if (id == "gradient-flow") return paired(r, batch, none, final_acc, note);
  if (id == "recurrent") {
    *note = "row-rnn (28 rows as time steps), batch 4, equal training images, lr scaled linearly";
    return paired(r, {{"norm", "layer"}, {"batch-size", "4"}},
                  {{"norm", "batch"}, {"batch-size", "4"}}, final_acc, note);
  }
  if (id == "inference-discrepancy" || id == "batch-renorm") {
    // inference_acc: [running averages, batch statistics at each inference batch].
    const std::vector<int64_t> batches = inference_batches();
    const auto at = std::find(batches.begin(), batches.end(), 4);
    const size_t column = 1 + static_cast<size_t>(at - batches.begin());
    if (id == "inference-discrepancy") {
      int a = find_arm(r, {{"norm", "batch"}, {"batch-size", "4"}});
      if (a < 0) return {};
      *note =
          "trained at batch 4: test accuracy with batch statistics (batches of 4) minus with "
          "the running averages";
      std::vector<double> out;
      for (const RunOutcome& o : r.outcomes[static_cast<size_t>(a)])
        out.push_back(o.inference_acc.size() > column ? o.inference_acc[column] - o.inference_acc[0]
                                                      : NAN);
      return out;
    }
    int brn = find_arm(r, {{"norm", "batch-renorm"}, {"batch-size", "4"}});
    int bn = find_arm(r, {{"norm", "batch"}, {"batch-size", "4"}});
    if (brn < 0 || bn < 0) {
      *note = "needs the batch-renorm arm (--norm batch-renorm)";
      return {};
    }
    *note = "trained at batch 4: test accuracy with the running averages, Batch Renorm minus BN";
    std::vector<double> out;
    for (size_t s = 0; s < seeds_of(r); ++s) {
      const auto& x = r.outcomes[static_cast<size_t>(brn)];
      const auto& y = r.outcomes[static_cast<size_t>(bn)];
      out.push_back(s < x.size() && s < y.size() && !x[s].inference_acc.empty() &&
                            !y[s].inference_acc.empty()
                        ? x[s].inference_acc[0] - y[s].inference_acc[0]
                        : NAN);
    }
    return out;
  }
  // The mechanism claims (issue 18): arms none, batch and noisy-batch, each run's measurements
  // read back from its directory (train/mechanism_report.h).
  const std::string base_id = id.size() > 8 && id.compare(id.size() - 8, 8, "-cifar10") == 0
                                  ? id.substr(0, id.size() - 8)
                                  : id;
  if (base_id == "noisy-bn-speed") {
    *note = "BN with a random shift of mean and variance injected after every BN layer each step";
    return paired(r, {{"norm", "noisy-batch"}}, none, curve_area, note);
  }
  if (base_id == "noisy-bn-shift" || base_id == "ics-reduced" || base_id == "smoother") {
    auto mech = [&](const Settings& arm, double (*f)(const MechanismRun&)) {
      std::vector<double> out;
      int a = find_arm(r, arm);
      if (a < 0) return out;
      for (const RunOutcome& o : r.outcomes[static_cast<size_t>(a)])
        out.push_back(f(read_mechanism_run(o.run_dir)));
      return out;
    };
    std::vector<double> plus, minus;
    if (base_id == "noisy-bn-shift") {
      *note = "RMS change of the probe unit's input (mean, std) between measured steps, train mode";
      plus = mech({{"norm", "noisy-batch"}}, activation_drift);
      minus = mech(none, activation_drift);
    } else if (base_id == "ics-reduced") {
      *note =
          "mean cosine between a layer's weight gradient before and after the preceding "
          "layers' update (layers 2..L)";
      plus = mech(batch, mean_ics_cosine);
      minus = mech(none, mean_ics_cosine);
    } else {
      *note = "mean log10 of the effective beta-smoothness along the gradient";
      plus = mech(none, mean_log10_beta);
      minus = mech(batch, mean_log10_beta);
    }
    if (plus.empty() || minus.empty()) {
      *note = "the experiment has no measured runs for one side";
      return {};
    }
    std::vector<double> out;
    for (size_t k = 0; k < std::min(plus.size(), minus.size()); ++k)
      out.push_back(plus[k] - minus[k]);
    return out;
  }
  if (id == "cost") {
    std::vector<double> out = paired(r, batch, none, ms_per_step, note);
    int a = find_arm(r, none);
    for (size_t s = 0; s < out.size(); ++s) out[s] /= score(r, a, s, ms_per_step);  // relative
    *note = "runs trained side by side share the cores: compare with `bnlab bench`";
    return out;
  }
  BNLAB_FAIL("study: no measure for claim '", id, "'");
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos)
      return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

std::string utc_now() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

// Why an experiment cannot run here ("" when it can): its dataset is not there. A dataset that is
// there but corrupt is an error the study stops on, not a reason to skip quietly (exit 0).
std::string data_problem(const std::string& dataset, const std::string& data_dir) {
  try {
    load_dataset(dataset, "train", find_data_dir(data_dir));
  } catch (const DataNotFound& e) {
    return e.what();
  }
  return "";
}

}  // namespace

const std::vector<ClaimInfo>& study_claims() {
  static const std::vector<ClaimInfo> claims{
      {"higher-lr", "BN allows much higher learning rates", "lr",
       "accuracy at 30x the rate: BN - none"},
      {"faster-own-lr", "BN converges faster, each arm at its own best learning rate", "lr",
       "area under the validation accuracy curve: BN - none"},
      {"faster-shared-lr", "BN converges faster at the paper's shared rate (Figure 1)", "fig1",
       "area under the test accuracy curve: BN - none"},
      {"init", "BN makes training less sensitive to the initial weight scale", "init",
       "spread of final accuracy over init scales: none - BN"},
      {"small-batch-bn", "BN degrades at small batches", "batch-size",
       "final accuracy: BN at batch 60 - BN at batch 2"},
      {"small-batch-gn", "GroupNorm does not degrade at small batches as BN does", "batch-size",
       "final accuracy at batch 2: GroupNorm - BN"},
      {"placement", "BN before the nonlinearity (the paper's placement) trains faster than after",
       "placement", "area under the accuracy curve: before - after"},
      {"regularization", "BN regularizes: a smaller generalization gap", "regularization",
       "train (eval mode) - test gap: none - BN"},
      {"gradient-flow", "BN lets a deep (12-layer sigmoid) network train", "gradient-flow",
       "final accuracy: BN - none"},
      {"inference-discrepancy",
       "Trained at small batches, BN's running averages do worse at inference than batch "
       "statistics",
       "inference", "test accuracy: batch statistics - running averages"},
      {"batch-renorm", "Batch Renormalization reduces that train/inference discrepancy",
       "inference", "test accuracy with running averages: Batch Renorm - BN"},
      {"fashion-mnist", "BN's faster convergence carries over to Fashion-MNIST", "fashion-mnist",
       "area under the test accuracy curve: BN - none"},
      {"cifar10", "BN's faster convergence carries over to CIFAR-10 (a VGG-style CNN)", "cifar10",
       "area under the validation accuracy curve: BN - none"},
      {"recurrent",
       "In a recurrent network at small batches, LayerNorm works where per-time-step BN degrades",
       "recurrent", "final accuracy at batch 4: LayerNorm - BN"},
      {"cost", "BN costs time per training step", "fig1",
       "ms per step: BN / none - 1 (from the runs themselves)"},
      {"ics-reduced", "BN reduces internal covariate shift (Ioffe and Szegedy's explanation)",
       "mechanism", "ICS cosine: BN - none"},
      {"noisy-bn-shift",
       "Noisy BN's layer inputs shift more during training than a plain network's", "mechanism",
       "input drift of the probe unit: noisy BN - none"},
      {"noisy-bn-speed", "Noisy BN still converges faster than no BN (Santurkar et al.)",
       "mechanism", "area under the test accuracy curve: noisy BN - none"},
      {"smoother", "BN makes the loss landscape smoother (Santurkar et al.)", "mechanism",
       "log10 effective beta-smoothness: none - BN"},
      {"ics-reduced-cifar10", "On CIFAR-10: BN reduces internal covariate shift",
       "mechanism-cifar10", "ICS cosine: BN - none"},
      {"noisy-bn-shift-cifar10",
       "On CIFAR-10: noisy BN's layer inputs shift more than a plain network's",
       "mechanism-cifar10", "input drift of the probe unit: noisy BN - none"},
      {"noisy-bn-speed-cifar10", "On CIFAR-10: noisy BN still converges faster than no BN",
       "mechanism-cifar10", "area under the validation accuracy curve: noisy BN - none"},
      {"smoother-cifar10", "On CIFAR-10: BN makes the loss landscape smoother", "mechanism-cifar10",
       "log10 effective beta-smoothness: none - BN"},
  };
  return claims;
}

StudyBudget study_budget(const std::string& name) {
  // name, seeds, MNIST steps and eval spacing, regularization steps, CIFAR steps and eval spacing,
  // validation split, recurrent steps. The full budget is what two cores finish in about two and a
  // half hours: CIFAR-10 and the recurrent network (whose batch-4 arms take 15 times the steps) are
  // the expensive runs, so they train shorter than the MLPs.
  static const StudyBudget kBudgets[] = {
      {"quick", 2, 1000, 100, 1500, 200, 50, 5000, 1000},
      {"standard", 3, 5000, 250, 6000, 1500, 150, 5000, 5000},
      {"full", 5, 20000, 500, 15000, 2000, 200, 5000, 3000},
  };
  for (const StudyBudget& b : kBudgets)
    if (b.name == name) return b;
  BNLAB_FAIL("study: unknown budget '", name, "'; expected quick, standard or full");
}

Verdict verdict_of(const std::vector<double>& values) {
  // Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom; beyond, the
  // Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5), within 1e-4 from df 30 on
  // (the normal's 1.96 made the interval 4 % too narrow at df 31).
  static const double kT[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                              2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
                              2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                              2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  Verdict v;
  std::vector<double> x;
  for (double d : values)
    if (std::isfinite(d)) x.push_back(d);
  v.n = static_cast<int64_t>(x.size());
  if (x.empty()) {
    v.mean = v.std = v.ci_low = v.ci_high = NAN;
    v.verdict = "inconclusive";
    return v;
  }
  double sum = 0;
  for (double d : x) sum += d;
  v.mean = sum / static_cast<double>(x.size());
  if (x.size() < 2) {
    v.std = v.ci_low = v.ci_high = NAN;
    v.verdict = "inconclusive";
    return v;
  }
  double ss = 0;
  for (double d : x) ss += (d - v.mean) * (d - v.mean);
  v.std = std::sqrt(ss / static_cast<double>(x.size() - 1));
  const size_t df = x.size() - 1;
  const double t = df <= 30 ? kT[df - 1] : [df] {
    const double z = 1.959963984540054, z2 = z * z, nu = static_cast<double>(df);
    const double g1 = (z2 + 1) * z / 4;
    const double g2 = ((5 * z2 + 16) * z2 + 3) * z / 96;
    const double g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384;
    const double g4 = ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160;
    return z + g1 / nu + g2 / (nu * nu) + g3 / (nu * nu * nu) + g4 / (nu * nu * nu * nu);
  }();
  const double half = t * v.std / std::sqrt(static_cast<double>(x.size()));
  v.ci_low = v.mean - half;
  v.ci_high = v.mean + half;
  v.verdict = v.ci_low > 0 ? "supported" : v.ci_high < 0 ? "not supported" : "inconclusive";
  return v;
}

StudyReport run_study(const StudySpec& spec) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<ClaimInfo> selected;
  for (const ClaimInfo& c : study_claims())
    if (spec.claims.empty() ||
        std::find(spec.claims.begin(), spec.claims.end(), c.id) != spec.claims.end())
      selected.push_back(c);
  for (const std::string& id : spec.claims) {
    bool known = false;
    std::string names;
    for (const ClaimInfo& c : study_claims()) {
      known |= c.id == id;
      names += (names.empty() ? "" : ", ") + c.id;
    }
    BNLAB_CHECK(known, "study: unknown claim '", id, "'; known claims: ", names);
  }
  ensure_directory(spec.out_dir);

  // Each experiment once, in the order the claims need them.
  std::map<std::string, AblationReport> reports;
  std::map<std::string, std::string> skipped;  // experiment -> why
  std::vector<std::string> order;
  // Each experiment's directory stays locked until the report is written, as `bnlab ablate`
  // locks its --out: an `ablate --out OUT/fig1` beside the study would otherwise pass the lock on
  // OUT and write results.csv, summary.md and the plots there at the same time as the study.
  std::vector<RunDirLock> locks;
  StudyReport out;
  for (const ClaimInfo& c : selected) {
    if (reports.count(c.experiment) || skipped.count(c.experiment)) continue;
    const ExperimentDef& e = experiment_named(c.experiment);
    std::string problem = data_problem(e.dataset, spec.data_dir);
    if (!problem.empty()) {
      skipped[e.id] = problem;
      std::printf("== study: %s skipped: %s\n", e.id.c_str(), problem.c_str());
      continue;
    }
    std::printf("== study: experiment %s (preset %s, %s on %s)\n", e.id.c_str(), e.preset.c_str(),
                e.model.c_str(), e.dataset.c_str());
    std::fflush(stdout);
    const AblationSpec ablation = spec_for(e, spec);
    locks.emplace_back(ablation.out_dir);
    AblationReport r = run_ablation(ablation);
    if (r.interrupted_by) {
      out.interrupted_by = r.interrupted_by;
      return out;
    }
    reports[e.id] = std::move(r);
    order.push_back(e.id);
  }
  if (reports.empty()) {
    // A report of nothing but "not run" rows is no study: say which data is missing instead.
    std::map<std::string, std::string> missing;  // dataset -> the loader's reason
    for (const auto& [id, why] : skipped) missing.emplace(experiment_named(id).dataset, why);
    std::string lines;
    for (const auto& [dataset, why] : missing)
      lines += "\n  " + (why.rfind(dataset + ":", 0) == 0 ? why : dataset + ": " + why);
    BNLAB_FAIL("study: no experiment could run: the datasets they need are missing", lines);
  }

  std::ostringstream csv, table;
  csv << "claim_id,claim,experiment,measure,n,mean,std,ci_low,ci_high,verdict,note\n";
  table << "| claim | evidence | measured effect (mean ± std over seeds) | 95 % interval | "
           "verdict |\n|---|---|---|---|---|\n";
  for (const ClaimInfo& c : selected) {
    ClaimResult result{c, {}};
    std::string note;
    if (skipped.count(c.experiment)) {
      result.verdict.verdict = "not run";
      result.verdict.mean = result.verdict.std = result.verdict.ci_low = result.verdict.ci_high =
          NAN;
      result.verdict.note = skipped[c.experiment];
    } else {
      std::vector<double> values = measure_claim(c.id, reports.at(c.experiment), &note);
      result.verdict = verdict_of(values);
      if (values.empty()) result.verdict.verdict = "not run";
      result.verdict.note = note;
    }
    const Verdict& v = result.verdict;
    csv << c.id << "," << csv_escape(c.claim) << "," << c.experiment << "," << csv_escape(c.measure)
        << "," << v.n << "," << fmt("%.6g", v.mean) << "," << fmt("%.6g", v.std) << ","
        << fmt("%.6g", v.ci_low) << "," << fmt("%.6g", v.ci_high) << "," << v.verdict << ","
        << csv_escape(v.note) << "\n";
    table << "| " << c.claim << " | " << c.measure << " ([" << c.experiment << "](#" << c.experiment
          << "))" << (v.note.empty() ? "" : "; " + v.note) << " | "
          << (v.n > 0
                  ? fmt("%+.4f", v.mean) + (v.n > 1 ? " ± " + fmt("%.4f", v.std) : std::string()) +
                        " (n = " + std::to_string(v.n) + ")"
                  : std::string("—"))
          << " | "
          << (v.n > 1 ? "[" + fmt("%+.4f", v.ci_low) + ", " + fmt("%+.4f", v.ci_high) + "]"
                      : std::string("—"))
          << " | **" << v.verdict << "** |\n";
    out.claims.push_back(std::move(result));
  }
  // Does reducing ICS explain BN's speed-up? Not a measurement of its own but a rule over the
  // mechanism rows, as Santurkar et al. argue it: the explanation fails when BN does not reduce
  // ICS, or when noisy BN keeps the speed-up although its inputs shift more than a plain
  // network's; it holds when BN reduces ICS and noisy BN loses the speed-up.
  bool any_derived = false;
  for (const std::string suffix : {"", "-cifar10"}) {
    auto verdict = [&](const std::string& id) -> std::string {
      for (const ClaimResult& c : out.claims)
        if (c.info.id == id + suffix) return c.verdict.verdict;
      return "";
    };
    const std::string ics = verdict("ics-reduced"), speed = verdict("noisy-bn-speed"),
                      shift = verdict("noisy-bn-shift");
    if (ics.empty() || speed.empty() || shift.empty() || ics == "not run" || speed == "not run")
      continue;
    std::string answer = "inconclusive";
    if (ics == "not supported" || (speed == "supported" && shift == "supported"))
      answer = "not supported";
    else if (ics == "supported" && speed == "not supported")
      answer = "supported";
    const std::string claim = std::string(suffix.empty() ? "" : "On CIFAR-10: ") +
                              "reducing internal covariate shift explains BN's speed-up";
    const std::string why = "ics-reduced" + suffix + " " + ics + ", noisy-bn-speed" + suffix + " " +
                            speed + ", noisy-bn-shift" + suffix + " " + shift;
    csv << "ics-explains" << suffix << "," << csv_escape(claim) << ",mechanism" << suffix
        << ",derived," << 0 << ",,,,," << answer << "," << csv_escape(why) << "\n";
    table << "| " << claim << " | derived from the rows above: " << why
          << " (the rule is under the table) | — | — | **" << answer << "** |\n";
    any_derived = true;
  }

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const StudyBudget& b = spec.budget;
  std::ostringstream md;
  md << "# What batch normalization does: the bnlab study\n\n"
     << "Budget **" << b.name << "**: " << b.seeds << " seeds per arm; MNIST-family runs "
     << b.mnist_steps << " steps at batch 60 (evaluated every " << b.mnist_eval_every
     << "), the regularization runs " << b.overfit_steps
     << " steps on 2 000 training images, the recurrent network " << b.recurrent_steps
     << " steps' worth of images at batch 60, CIFAR-10 " << b.cifar_steps
     << " steps at batch 64 (evaluated every " << b.cifar_eval_every
     << "). Each model trains at its own default learning rate (paper-mlp and deep-mlp 0.5, mlp "
        "0.1, cifar-cnn 0.05) unless the experiment varies it.\n\n"
     << "Run on " << cpu_model() << " (" << std::thread::hardware_concurrency() << " cores), "
     << utc_now() << ", bnlab " << version() << " (" << git_commit() << "), in "
     << fmt("%.0f", seconds) << " s (reused runs not counted)"
     << (spec.command.empty() ? "" : ", by `" + spec.command + "`") << ".\n\n"
     << "## Verdicts\n\n"
     << "**The rule.** Every claim is reduced to one number per seed: a difference between two "
        "arms trained with the same seed (same initial weights where shapes allow, same data "
        "order), signed so that a positive value supports the claim. Over the seeds we take the "
        "mean and the two-sided 95 % Student t interval of the mean. The claim is **supported** "
        "when the whole interval lies above 0, **not supported** when it lies below 0 (the data "
        "say the opposite), and **inconclusive** when it contains 0 or fewer than two seeds "
        "finished. A run that diverged (NaN/Inf) scores chance accuracy; a collapsed run (stuck "
        "at chance) scores what it measured. Areas under the accuracy curve are the mean "
        "evaluation accuracy over the run's scheduled evaluations, a convergence-speed measure "
        "that is defined even for arms that never reach a threshold.\n\n"
     << table.str()
     << (any_derived
             ? "\n**Does reducing ICS explain BN's speed-up?** (the derived rows) Not supported "
               "when BN does not reduce ICS (`ics-reduced` not supported), or when noisy BN keeps "
               "the speed-up (`noisy-bn-speed` supported) although its inputs shift more than a "
               "plain network's (`noisy-bn-shift` supported), Santurkar et al.'s argument; "
               "supported when BN reduces ICS and noisy BN loses the speed-up; inconclusive "
               "otherwise. See docs/mechanism.md.\n"
             : "")
     << "\nThe same rows, machine-readable: [verdicts.csv](verdicts.csv).\n";
  for (const std::string& id : order) {
    const ExperimentDef& e = experiment_named(id);
    const AblationReport& r = reports.at(id);
    md << "\n## " << id << "\n\nPreset `" << e.preset << "`: " << arms_models_and_data(r.arms)
       << "; details in [" << id << "/summary.md](" << id << "/summary.md).\n\n"
       << r.table;
    if (!r.accuracy_png.empty() && fs::exists(r.accuracy_png))
      md << "\n![" << id << " accuracy](" << id << "/accuracy.png)\n";
    if (!r.percentiles_png.empty() && fs::exists(r.percentiles_png))
      md << "\n![" << id << " percentiles](" << id << "/percentiles.png)\n";
    for (const std::string& png : r.extra_pngs)
      md << "\n![" << id << " " << png << "](" << id << "/" << png << ")\n";
    if (e.preset == "gradient-flow")
      md << "\nEach run's per-layer gradient norms: `" << id
         << "/runs/<arm>/seed-<s>/grad_norms.png` (and .csv).\n";
  }
  for (const auto& [id, why] : skipped) md << "\n## " << id << "\n\nNot run: " << why << "\n";
  out.report_md = (fs::path(spec.out_dir) / "report.md").string();
  out.verdicts_csv = (fs::path(spec.out_dir) / "verdicts.csv").string();
  write_file_atomic(out.verdicts_csv, csv.str());
  write_file_atomic(out.report_md, md.str());
  return out;
}

}  // namespace bnlab

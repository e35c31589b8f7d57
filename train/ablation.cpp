// The ablation runner: expand factors into arms, train (or reuse) every arm x seed, and write the
// long-format results, the summary table and the plots.
#include "train/ablation.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <tuple>

#include "core/blas.h"
#include "core/distributed.h"
#include "core/io.h"
#include "data/datasets.h"
#include "train/checkpoint.h"
#include "train/interrupt.h"
#include "train/knobs.h"
#include "train/mechanism_report.h"
#include "train/plot.h"
#include "train/report_text.h"

namespace bnlab {

namespace fs = std::filesystem;

namespace {

using detail::csv_escape;
using detail::fmt;

// Every field, an empty last one too: getline dropped it, so "norm=none," passed as one value
// where "norm=,none" was refused for its empty one.
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t at = s.find(sep); at != std::string::npos; at = s.find(sep, start)) {
    out.push_back(s.substr(start, at - start));
    start = at + 1;
  }
  out.push_back(s.substr(start));
  return out;
}

// A directory name for an arm: letters, digits, '.', '-' and '_' only.
std::string slug(const std::string& arm) {
  std::string out;
  for (char c : arm) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') {
      out += c;
    } else if (c == '=') {
      out += '-';
    } else if (c == ',') {
      out += "__";
    } else {
      out += '_';
    }
  }
  return out.empty() ? "base" : out;
}

// The first evaluated step (or epoch, by_epoch) at which the evaluation accuracy reached
// `threshold`, or -1. The evaluation at step 0 is the untrained model's: a threshold at or below
// chance is met there by no training at all, so it does not count (it gave "0 steps" and a 0/0
// speed-up).
double progress_to(const TrainResult& r, double threshold, bool by_epoch) {
  for (const MetricsRow& row : r.rows)
    if (row.step > 0 && row.eval_acc >= threshold)
      return by_epoch ? row.epoch : static_cast<double>(row.step);
  return -1;
}

struct Stats {
  double mean = NAN, std = NAN, min = NAN, max = NAN;
  int64_t n = 0;
};

Stats stats_of(const std::vector<double>& v) {
  Stats s;
  s.n = static_cast<int64_t>(v.size());
  if (v.empty()) return s;
  double sum = 0;
  s.min = v[0];
  s.max = v[0];
  for (double x : v) {
    sum += x;
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
  }
  s.mean = sum / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1))
                       : 0.0;  // sample std over seeds
  return s;
}

// Does the run directory hold the same experiment? Thread count, data directory and progress
// output do not define one.
bool same_experiment(const std::string& dir, const TrainConfig& cfg) {
  std::string path = (fs::path(dir) / "config.json").string();
  TrainConfig saved = config_from_json(read_file(path), path);
  saved.threads = cfg.threads;
  saved.data_dir = cfg.data_dir;
  saved.log_every = cfg.log_every;
  saved.collapse_after = cfg.collapse_after;  // judging, not training: re-applied on reuse
  saved.collapse_margin = cfg.collapse_margin;
  return config_to_json(saved) == config_to_json(cfg);
}

// The config.json keys whose values differ between the run in `dir` and `cfg`, as "lr 0.5 -> 0.4"
// (the saved value first), for the message that refuses the run.
std::string config_differences(const std::string& dir, const TrainConfig& cfg) {
  std::string path = (fs::path(dir) / "config.json").string();
  TrainConfig saved = config_from_json(read_file(path), path);
  saved.threads = cfg.threads;  // as same_experiment: these do not define the experiment
  saved.data_dir = cfg.data_dir;
  saved.log_every = cfg.log_every;
  saved.collapse_after = cfg.collapse_after;
  saved.collapse_margin = cfg.collapse_margin;
  // Flattened, so a nested key reads "model.norm": its JSON pointer "/model/norm".
  const nlohmann::json old_json = nlohmann::json::parse(config_to_json(saved)).flatten();
  const nlohmann::json new_json = nlohmann::json::parse(config_to_json(cfg)).flatten();
  std::string out;
  for (const auto& [key, value] : new_json.items()) {
    if (old_json.contains(key) && old_json.at(key) == value) continue;
    std::string name = key.substr(1);
    std::replace(name.begin(), name.end(), '/', '.');
    out += (out.empty() ? "" : ", ") + name + " " +
           (old_json.contains(key) ? old_json.at(key).dump() : std::string("unset")) + " -> " +
           value.dump();
  }
  return out;
}

// A run directory that holds a run of another config is refused, finished or not: training there
// would replace its checkpoint (Trainer::open_run_dir starts a fresh run over it), and a sweep
// rerun with one mistyped flag would throw away every unfinished arm's training.
void check_same_experiment(const std::string& dir, const TrainConfig& cfg) {
  if (!fs::exists(fs::path(dir) / "config.json")) return;
  if (fs::exists(fs::path(dir) / "summary.json")) {
    BNLAB_CHECK(same_experiment(dir, cfg), "ablate: ", dir,
                " holds a finished run with a different config; use another --out or remove that "
                "directory");
  } else if (fs::exists(fs::path(dir) / "train_state.safetensors")) {
    if (same_experiment(dir, cfg)) return;
    const std::optional<int64_t> step = checkpoint_step(dir);
    BNLAB_FAIL("ablate: ", dir, " holds an unfinished run",
               step ? " (checkpoint at step " + std::to_string(*step) + ")" : std::string(),
               " with a different config (", config_differences(dir, cfg),
               "); rerun the command that started it to resume it, or use another --out, or "
               "remove that directory to train it again");
  }
}

bool finished_run(const std::string& dir, const TrainConfig& cfg) {
  if (!fs::exists(fs::path(dir) / "summary.json") || !fs::exists(fs::path(dir) / "config.json"))
    return false;
  BNLAB_CHECK(
      same_experiment(dir, cfg), "ablate: ", dir,
      " holds a finished run with a different config; use another --out or remove that directory");
  return true;
}

// Per arm and evaluated step: accuracy mean/min/max and probe percentiles averaged over seeds.
struct CurvePoint {
  int64_t step;
  Stats acc;
  double p15, p50, p85;
  double epoch;
};

std::vector<CurvePoint> arm_curve(const Arm& arm, const std::vector<RunOutcome>& outcomes) {
  std::map<int64_t, std::vector<const MetricsRow*>> by_step;
  for (const RunOutcome& o : outcomes)
    if (o.arm == &arm)
      for (const MetricsRow& row : o.result.rows) by_step[row.step].push_back(&row);
  std::vector<CurvePoint> curve;
  for (auto& [step, rows] : by_step) {
    std::vector<double> acc;
    double p15 = 0, p50 = 0, p85 = 0, epoch = rows.front()->epoch;
    for (const MetricsRow* r : rows) {
      acc.push_back(r->eval_acc);
      p15 += r->p15;
      p50 += r->p50;
      p85 += r->p85;
    }
    double n = static_cast<double>(rows.size());
    curve.push_back({step, stats_of(acc), p15 / n, p50 / n, p85 / n, epoch});
  }
  return curve;
}

// "val" or "test" (split_kind): what the runs evaluated on, for column names, labels and titles.
std::string eval_kind_of(const std::vector<RunOutcome>& outcomes) {
  for (const RunOutcome& o : outcomes)
    if (o.arm != nullptr && !o.result.eval_split.empty()) return split_kind(o.result.eval_split);
  return "test";
}

// Arm a's line style: eight colours that stay apart for colour-blind readers (Okabe and Ito's
// palette), then the same colours dashed, so a grid of more than eight arms stays legible.
std::string arm_style(size_t a) {
  static const char* const kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                         "#E69F00", "#56B4E9", "#000000", "#F0E442"};
  return std::string("lc rgb '") + kColours[a % 8] + "' dt " + std::to_string(a / 8 % 5 + 1);
}

std::vector<std::string> render_plots(const AblationSpec& spec, const std::vector<Arm>& arms,
                                      const std::vector<RunOutcome>& outcomes, bool by_epoch,
                                      AblationReport& report) {
  // x: the step (column 1) or, for arms of different batch sizes, the epoch (column 8).
  const std::string x = by_epoch ? "8" : "1";
  std::vector<std::string> messages;
  std::ostringstream dat;
  bool have_probe = false;
  double lo = 1e30, hi = -1e30;
  std::vector<std::vector<CurvePoint>> curves;
  for (const Arm& arm : arms) curves.push_back(arm_curve(arm, outcomes));
  for (size_t a = 0; a < arms.size(); ++a) {
    dat << "# " << arms[a].name << "\n# step acc_mean acc_min acc_max p15 p50 p85 epoch\n";
    for (const CurvePoint& p : curves[a]) {
      dat << p.step << " " << p.acc.mean << " " << p.acc.min << " " << p.acc.max << " " << p.p15
          << " " << p.p50 << " " << p.p85 << " " << p.epoch << "\n";
      if (std::isfinite(p.p15) && std::isfinite(p.p85)) {
        have_probe = true;
        lo = std::min(lo, p.p15);
        hi = std::max(hi, p.p85);
      }
    }
    dat << "\n\n";
  }
  write_file_atomic((fs::path(spec.out_dir) / "curves.dat").string(), dat.str());

  const std::string kind = eval_kind_of(outcomes);
  std::string title = spec.title.empty() ? kind + " accuracy" : spec.title;
  // Two panels: the whole run, and a zoom on the top where the arms' final accuracies differ.
  double final_low = 1.0;
  for (const auto& curve : curves)
    if (!curve.empty() && std::isfinite(curve.back().acc.mean))
      final_low = std::min(final_low, curve.back().acc.mean);
  double zoom_low = std::max(0.0, std::floor((final_low - 0.02) * 100.0) / 100.0);
  std::ostringstream acc;
  acc << "set multiplot layout 1,2 title "
      << gnuplot_quote(title + " (" + std::to_string(spec.seeds) + " seed" +
                       (spec.seeds > 1 ? "s, band = min..max" : "") + ")")
      // Verbatim, as the key and the other titles: under the enhanced terminal a '_' or '^' in a
      // --title or a dataset name was drawn as a subscript or a superscript.
      << " noenhanced\nset xlabel '"
      << (by_epoch ? "epochs (training images seen / set size)" : "training steps")
      << "'\nset ylabel '" << kind << " accuracy'\nset grid\n"
      << (by_epoch ? "" : "set format x '%.0f'\n");
  // The legend sits outside the zoom panel, right of the curves it would otherwise cover.
  for (int panel = 0; panel < 2; ++panel) {
    acc << (panel == 0 ? "unset key\nset title 'whole run'\nset yrange [*:1]\n"
                       : "set key outside right top vertical noenhanced\nset title 'zoom'\nset "
                         "yrange [" +
                             fmt("%.2f", zoom_low) + ":1]\n")
        << "plot \\\n";
    for (size_t a = 0; a < arms.size(); ++a) {
      acc << "  'curves.dat' index " << a << " using " << x
          << ":3:4 with filledcurves fs transparent solid 0.15 noborder " << arm_style(a)
          << " notitle, \\\n"
          << "  'curves.dat' index " << a << " using " << x << ":2 with lines lw 2 " << arm_style(a)
          << " title " << gnuplot_quote(arms[a].name) << (a + 1 < arms.size() ? ", \\\n" : "\n");
    }
  }
  acc << "unset multiplot\n";
  PlotResult accuracy =
      render_gnuplot((fs::path(spec.out_dir) / "accuracy.gp").string(), acc.str(),
                     (fs::path(spec.out_dir) / "accuracy.png").string(), 1600, 520);
  messages.push_back(accuracy.message);
  if (accuracy.rendered) report.accuracy_png = accuracy.png;

  if (have_probe) {
    double pad = 0.05 * (hi - lo + 1e-9);
    std::ostringstream pct;
    // Small multiples in a grid of at most four columns, not one strip as wide as the arms.
    const size_t cols = std::min<size_t>(arms.size(), 4);
    const size_t rows = (arms.size() + cols - 1) / cols;
    pct << "set multiplot layout " << rows << "," << cols
        << " title 'input to one last-hidden-layer activation: 15th, 50th, 85th percentiles over "
           "the "
        << kind << " split'\n"
        << "set xlabel '" << (by_epoch ? "epochs" : "training steps")
        << "'\nset grid\nset key top right\n"
        << "set yrange [" << lo - pad << ":" << hi + pad << "]\n";
    for (size_t a = 0; a < arms.size(); ++a) {
      pct << "set title " << gnuplot_quote(arms[a].name) << " noenhanced\nplot 'curves.dat' index "
          << a << " using " << x << ":5:7 with filledcurves fs transparent solid 0.25 noborder "
          << arm_style(a) << " title '15th-85th', '' index " << a << " using " << x
          << ":6 with lines lw 2 " << arm_style(a) << " title '50th'\n";
    }
    pct << "unset multiplot\n";
    PlotResult percentiles =
        render_gnuplot((fs::path(spec.out_dir) / "percentiles.gp").string(), pct.str(),
                       (fs::path(spec.out_dir) / "percentiles.png").string(),
                       static_cast<int>(480 * cols), static_cast<int>(380 * rows));
    messages.push_back(percentiles.message);
    if (percentiles.rendered) report.percentiles_png = percentiles.png;
  }
  return messages;
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& factor_help() {
  // The settings table's factors (train/knobs.h), plus lr-mult, which scales --lr.
  static const std::vector<std::pair<std::string, std::string>> help = [] {
    std::vector<std::pair<std::string, std::string>> h;
    for (const Knob& k : knobs()) {
      if (!k.factor) continue;
      h.emplace_back(k.flag.substr(2), k.help);
      if (k.flag == "--lr")
        h.emplace_back("lr-mult", "Multiplier of the base --lr (the paper's 5x / 30x)");
      if (k.flag == "--batch-size") {
        h.emplace_back("lr-scaling",
                       "none | linear: the arm's lr times its batch size / the base batch size");
      }
    }
    return h;
  }();
  return help;
}

Factor parse_factor(const std::string& spec) {
  auto eq = spec.find('=');
  BNLAB_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(), "ablate: bad factor '",
              spec, "'; expected NAME=V1,V2,... e.g. norm=none,batch");
  Factor f{spec.substr(0, eq), split(spec.substr(eq + 1), ',')};
  bool known = false;
  std::string names;
  for (const auto& [name, what] : factor_help()) {
    known |= name == f.name;
    names += (names.empty() ? "" : ", ") + name;
  }
  BNLAB_CHECK(known, "ablate: unknown factor '", f.name, "'; known factors: ", names);
  BNLAB_CHECK(!f.values.empty(), "ablate: factor '", f.name, "' has no values");
  for (size_t i = 0; i < f.values.size(); ++i) {
    BNLAB_CHECK(!f.values[i].empty(), "ablate: empty value in factor '", spec, "'");
    // A repeated value would make two arms with one name, and so one run directory.
    for (size_t j = 0; j < i; ++j) {
      BNLAB_CHECK(f.values[j] != f.values[i], "ablate: value '", f.values[i],
                  "' appears twice in factor '", spec, "'");
    }
  }
  return f;
}

void apply_preset(AblationSpec& spec, const std::string& preset) {
  spec.factors = preset_factors(preset);
  // Smaller batches must not see fewer images: the question is the batch's statistics, not the
  // amount of training (issue 15: batch 2 at fixed steps saw a third of an epoch).
  if (preset == "batch-size" || preset == "inference" || preset == "recurrent")
    spec.equal_samples = true;
  if (preset == "gradient-flow") spec.base.grad_stats = true;  // each run's grad_norms.png
  // Overfitting needs a small training set trained long; the gap needs train accuracy measured as
  // the test accuracy is, in eval mode.
  if (preset == "regularization") {
    if (spec.base.train_subset == 0) spec.base.train_subset = 2000;
    spec.base.eval_train = true;
  }
  // The mechanism measurements (train/mechanism.h) at every evaluation unless set: a few dozen
  // measured steps show the trend at a cost of (step sizes + layers) passes each.
  if (preset == "mechanism" && spec.base.mechanism_every == 0) {
    spec.base.mechanism_every = spec.base.eval_every > 0 ? spec.base.eval_every
                                : spec.base.steps > 0 ? std::max<int64_t>(1, spec.base.steps / 20)
                                                      : 100;
  }
  if (preset == "inference" && spec.inference_batches.empty())
    spec.inference_batches = {4, 60, 1000};
  // The lr preset picks each arm's best rate: on held-out training images, not on the test split.
  if (preset == "lr" && spec.base.val_split == 0 &&
      (spec.base.dataset == "mnist" || spec.base.dataset == "fashion-mnist")) {
    spec.base.val_split = 5000;
    spec.val_split_set_by = "--preset lr";
  }
}

std::vector<std::string> preset_names() {
  return {"fig1",      "lr",        "batch-size", "init",          "placement",
          "norm",      "dropout",   "dataset",    "gradient-flow", "regularization",
          "inference", "recurrent", "mechanism"};
}

std::vector<Factor> preset_factors(const std::string& preset) {
  if (preset == "fig1") return {{"norm", {"none", "batch"}}};
  if (preset == "lr") {  // the paper's 1x, 5x, 30x, and 0.2x in case an arm is best below 1x
    return {{"norm", {"none", "batch"}}, {"lr-mult", {"1", "5", "30", "0.2"}}};
  }
  if (preset == "batch-size") {
    return {{"norm", {"none", "batch", "layer", "group"}},
            {"batch-size", {"2", "8", "60"}},
            {"lr-scaling", {"linear", "none"}}};
  }
  if (preset == "init")
    return {{"norm", {"none", "batch"}}, {"init", {"normal:0.01", "normal:0.1", "normal:1"}}};
  if (preset == "placement") return {{"norm", {"batch"}}, {"placement", {"before", "after"}}};
  if (preset == "norm") return {{"norm", {"none", "batch", "layer", "group"}}};
  if (preset == "dropout") return {{"norm", {"none", "batch"}}, {"dropout", {"0", "0.5"}}};
  if (preset == "gradient-flow") return {{"model", {"deep-mlp"}}, {"norm", {"none", "batch"}}};
  // mlp: two hidden layers of 512 and 256 units, each followed by Dropout when it is on.
  if (preset == "regularization")
    return {{"model", {"mlp"}}, {"norm", {"none", "batch"}}, {"dropout", {"0", "0.5"}}};
  // Small batches are where the running averages and the batch statistics part (Batch Renorm's
  // motivation); equal samples and the linear rule keep the comparison about the statistics.
  if (preset == "inference") {
    return {{"norm", {"batch", "batch-renorm"}},
            {"batch-size", {"4", "60"}},
            {"lr-scaling", {"linear"}}};
  }
  // Batch statistics in a recurrent network (LayerNorm's motivation): row-rnn with one BatchNorm
  // per time step against LayerNorm and none, at a batch large enough for BN and one that is not
  // (equal samples and the linear rule, as in inference, so the batch's statistics are the
  // difference).
  if (preset == "recurrent") {
    return {{"model", {"row-rnn"}},
            {"norm", {"none", "layer", "batch"}},
            {"batch-size", {"4", "60"}},
            {"lr-scaling", {"linear"}}};
  }
  if (preset == "dataset")
    return {{"norm", {"none", "batch"}}, {"dataset", {"mnist", "fashion-mnist"}}};
  // Santurkar et al.'s test of the ICS explanation: BN with a random shift injected after every
  // BN layer each step (noisy-batch) next to BN and none, each run measuring ICS and smoothness.
  if (preset == "mechanism") return {{"norm", {"none", "batch", "noisy-batch"}}};
  std::string names;
  for (const std::string& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  BNLAB_FAIL("ablate: unknown preset '", preset, "'; expected one of ", names);
}

void apply_factor(TrainConfig& cfg, const std::string& factor, const std::string& value) {
  if (factor == "lr-scaling") {  // applied by expand_arms, which knows the base batch size
    BNLAB_CHECK(value == "none" || value == "linear", "ablate: lr-scaling=", value,
                ": must be none or linear");
    return;
  }
  if (factor == "lr-mult") {
    float m = 0;
    try {
      m = static_cast<float>(parse_real(value, 0, std::numeric_limits<float>::max(), true, false));
    } catch (const Error& e) {
      BNLAB_FAIL("ablate: lr-mult=", value, ": ", e.what());
    }
    BNLAB_CHECK(std::isfinite(cfg.lr * m) && cfg.lr * m > 0.0f, "ablate: lr-mult ", value,
                " times the base lr ", cfg.lr, " is not a finite float > 0");
    cfg.lr *= m;
    return;
  }
  // Every other factor is a flag's setting, checked by the flag's own rule (train/knobs.h).
  const Knob* k = find_knob_by_flag("--" + factor);
  BNLAB_CHECK(k != nullptr && k->factor, "ablate: unknown factor '", factor, "'");
  try {
    k->set(cfg, value);
  } catch (const Error& e) {
    BNLAB_FAIL("ablate: ", factor, "=", value, ": ", e.what());
  }
}

namespace {

// A config's settings as text, one knob a line: equal exactly when two configs train the same run
// (floats as their shortest decimal, so 0.1 and 0.10 match). Not config_to_json: its JSON dump
// throws on text outside UTF-8, such as a dataset folder's path (fuzz_grid found it).
std::string config_key(const TrainConfig& c) {
  std::string key;
  for (const Knob& k : knobs()) key += k.key + "=" + k.get(c) + "\n";
  return key;
}

}  // namespace

std::vector<Arm> expand_arms(const AblationSpec& spec) {
  // Runs take seeds base.seed .. base.seed + seeds - 1; past 2^64 - 1 they wrapped to 0 (a run
  // seed-0 beside seed-18446744073709551615, and "seeds 18446744073709551615..0").
  constexpr uint64_t kMaxSeed = std::numeric_limits<uint64_t>::max();
  BNLAB_CHECK(spec.seeds < 1 || static_cast<uint64_t>(spec.seeds - 1) <= kMaxSeed - spec.base.seed,
              "ablate: --seeds ", spec.seeds, " from --seed ", spec.base.seed, " needs seeds past ",
              kMaxSeed, ", the largest; use a --seed of at most ",
              kMaxSeed - static_cast<uint64_t>(spec.seeds - 1));
  // The grid's size first: a few --vary flags multiply quickly, and each arm is a training run.
  size_t count = 1;
  std::string sizes;
  for (size_t i = 0; i < spec.factors.size(); ++i) {
    const Factor& f = spec.factors[i];
    for (size_t j = 0; j < i; ++j) {
      BNLAB_CHECK(spec.factors[j].name != f.name, "ablate: factor '", f.name,
                  "' is given twice; list all its values in one NAME=V1,V2,...");
    }
    sizes += (sizes.empty() ? "" : " x ") + std::to_string(f.values.size());
    BNLAB_CHECK(!f.values.empty(), "ablate: factor '", f.name, "' has no values");
    BNLAB_CHECK(!__builtin_mul_overflow(count, f.values.size(), &count) && count <= kMaxArms,
                "ablate: the grid has more than ", kMaxArms, " arms (", sizes,
                " values so far); vary fewer factors or values");
  }
  // An lr value replaces the rate that lr-mult scaled (or lr-mult scales the lr values: it depends
  // on their order), so arms named lr-mult=5 would train at 1x: one factor sets the rate.
  bool varies_lr = false, varies_lr_mult = false;
  for (const Factor& f : spec.factors) {
    varies_lr |= f.name == "lr";
    varies_lr_mult |= f.name == "lr-mult";
  }
  BNLAB_CHECK(!(varies_lr && varies_lr_mult),
              "ablate: factors 'lr' and 'lr-mult' both set the learning rate, so one of them "
              "would not change what the arms train; vary one of them");
  std::vector<Arm> arms{Arm{"", {}, spec.base}};
  if (spec.lr_from_model) arms[0].config.lr = default_lr(spec.base.model.name, spec.base.optimizer);
  for (const Factor& f : spec.factors) {
    std::vector<Arm> next;
    for (const Arm& arm : arms) {
      // Values spelled differently can give one setting (lr=0.1,0.10,1e-1): arms named apart
      // that train the same run. lr-scaling acts after the grid is built (its values are distinct
      // names: none, linear).
      std::map<std::string, std::string> value_of_config;
      for (const std::string& v : f.values) {
        Arm a = arm;
        a.settings.emplace_back(f.name, v);
        a.name += (a.name.empty() ? "" : ",") + f.name + "=" + v;
        const std::string model_before = a.config.model.name;
        const std::string optimizer_before = a.config.optimizer;
        apply_factor(a.config, f.name, v);
        bool lr_set = false;
        for (const auto& [name, value] : a.settings) lr_set |= name == "lr";
        if ((f.name == "model" || f.name == "optimizer") && spec.lr_from_model && !lr_set) {
          // The new model's or optimizer's rate (adam's is not an SGD rate), keeping any lr-mult
          // already applied; the new default times that ratio, so without one it is exact.
          a.config.lr = default_lr(a.config.model.name, a.config.optimizer) *
                        (a.config.lr / default_lr(model_before, optimizer_before));
        }
        if (f.name != "lr-scaling") {
          auto [it, fresh] = value_of_config.emplace(config_key(a.config), v);
          BNLAB_CHECK(fresh, "ablate: ", f.name, "=", it->second, " and ", f.name, "=", v,
                      " give the same setting",
                      arm.name.empty() ? std::string() : " (in arm " + arm.name + ")",
                      ", so two arms would train one run; list each setting once");
        }
        next.push_back(std::move(a));
      }
    }
    arms = std::move(next);
  }
  const TrainConfig& base = spec.base;
  for (Arm& arm : arms) {
    TrainConfig& c = arm.config;
    const double ratio = static_cast<double>(c.batch_size) / static_cast<double>(base.batch_size);
    for (const auto& [name, value] : arm.settings) {
      if (name != "lr-scaling" || value != "linear") continue;
      c.lr = static_cast<float>(c.lr * ratio);  // the linear scaling rule (Goyal et al. 2017)
      BNLAB_CHECK(std::isfinite(c.lr) && c.lr > 0.0f, "ablate: lr-scaling=linear gives arm ",
                  arm.name, " the learning rate ", c.lr);
    }
    if (spec.equal_samples && c.batch_size != base.batch_size && base.steps > 0) {
      // The base's training images, so every arm sees as many samples (and evaluates at them).
      c.steps = std::max<int64_t>(1, std::llround(static_cast<double>(base.steps) / ratio));
      if (base.eval_every > 0)
        c.eval_every =
            std::max<int64_t>(1, std::llround(static_cast<double>(base.eval_every) / ratio));
    }
  }
  if (arms.size() == 1 && arms[0].name.empty()) arms[0].name = "base";
  // Distinct names can still share a run directory (slug maps ':' and '/' alike to '_'), and then
  // the second arm would silently reuse the first one's results.
  std::map<std::string, const Arm*> dirs;
  for (const Arm& arm : arms) {
    auto [it, fresh] = dirs.emplace(slug(arm.name), &arm);
    BNLAB_CHECK(fresh, "ablate: arms '", it->second->name, "' and '", arm.name,
                "' would share the run directory runs/", it->first, "; rename a value");
  }
  return arms;
}

std::string summary_table(const std::vector<Arm>& arms, const std::vector<RunOutcome>& outcomes,
                          const std::vector<double>& thresholds, bool by_epoch) {
  auto runs_of = [&](const Arm& arm) {
    std::vector<const RunOutcome*> out;
    for (const RunOutcome& o : outcomes)
      if (o.arm == &arm) out.push_back(&o);
    return out;
  };
  // A failed run (diverged or collapsed) reached no threshold, whatever it touched on the way:
  // counting it made an arm whose runs all failed look fast, and gave it a speed-up.
  auto reached_at = [&](const RunOutcome& o, double t) {
    return o.result.diverged || o.result.collapsed ? -1.0 : progress_to(o.result, t, by_epoch);
  };
  // Speed-up is measured at the highest threshold that every run of the baseline (first arm)
  // reached (the highest, not the last listed: --thresholds 0.7,0.3 measured it at 30 %).
  const auto base_runs = runs_of(arms.front());
  double speed_threshold = -1;
  for (double t : thresholds) {
    bool all = !base_runs.empty();
    for (const RunOutcome* o : base_runs) all &= reached_at(*o, t) >= 0;
    if (all) speed_threshold = std::max(speed_threshold, t);
  }
  auto mean_steps = [&](const std::vector<const RunOutcome*>& runs, double t, int64_t* reached) {
    std::vector<double> steps;
    for (const RunOutcome* o : runs) {
      double s = reached_at(*o, t);
      if (s >= 0) steps.push_back(s);
    }
    *reached = static_cast<int64_t>(steps.size());
    return stats_of(steps).mean;
  };
  int64_t base_reached = 0;
  double base_steps =
      speed_threshold > 0 ? mean_steps(base_runs, speed_threshold, &base_reached) : NAN;

  std::ostringstream os;
  os << "| arm | seeds | final " << eval_kind_of(outcomes) << " acc (mean ± std) | best | failed |";
  for (double t : thresholds)
    os << (by_epoch ? " epochs to " : " steps to ") << fmt("%.0f", t * 100) << "% |";
  os << " speed-up"
     << (speed_threshold > 0 ? " to " + fmt("%.0f", speed_threshold * 100) + "%" : "")
     << " | ms/step |\n|---|---|---|---|---|";
  for (size_t i = 0; i < thresholds.size(); ++i) os << "---|";
  os << "---|---|\n";
  for (const Arm& arm : arms) {
    auto runs = runs_of(arm);
    // Failed runs (diverged: NaN/Inf; collapsed: stuck at chance or exploding loss) are counted
    // and kept out of the accuracy columns, which average the healthy runs.
    std::vector<double> finals, bests;
    int64_t diverged = 0, collapsed = 0;
    std::string diverged_steps;
    for (const RunOutcome* o : runs) {
      if (o->result.diverged) {
        ++diverged;
        diverged_steps +=
            (diverged_steps.empty() ? "" : ", ") + std::to_string(o->result.diverged_step);
        continue;
      }
      if (o->result.collapsed) {
        ++collapsed;
        continue;
      }
      if (o->result.rows.empty()) continue;
      finals.push_back(o->result.rows.back().eval_acc);
      double best = 0;
      for (const MetricsRow& r : o->result.rows) best = std::max(best, r.eval_acc);
      bests.push_back(best);
    }
    const std::string of_n = "/" + std::to_string(runs.size());
    std::string failed;
    if (diverged) {
      failed = std::to_string(diverged) + of_n + " diverged at step" + (diverged > 1 ? "s " : " ") +
               diverged_steps;
    }
    if (collapsed)
      failed += (failed.empty() ? "" : ", ") + std::to_string(collapsed) + of_n + " collapsed";
    Stats f = stats_of(finals), b = stats_of(bests);
    os << "| " << arm.name << " | " << runs.size()
       << " | "
       // One healthy run has no spread to report ("± 0.0000" claimed one), as mean_std says.
       << (f.n ? fmt("%.4f", f.mean) + (f.n > 1 ? " ± " + fmt("%.4f", f.std) : std::string())
               : std::string("—"))
       << " | " << (b.n ? fmt("%.4f", b.mean) : std::string("—")) << " | "
       << (failed.empty() ? std::string("0") : failed) << " |";
    for (double t : thresholds) {
      int64_t reached = 0;
      double m = mean_steps(runs, t, &reached);
      if (reached == 0) {
        os << " — |";
      } else {
        os << " " << fmt(by_epoch ? "%.2f" : "%.0f", m)
           << (reached < static_cast<int64_t>(runs.size())
                   ? " (" + std::to_string(reached) + "/" + std::to_string(runs.size()) + ")"
                   : "")
           << " |";
      }
    }
    int64_t reached = 0;
    double m = speed_threshold > 0 ? mean_steps(runs, speed_threshold, &reached) : NAN;
    // Both means are of steps after training started, so > 0; the check keeps a ratio that is not
    // a number out of the table whatever the rows hold.
    if (speed_threshold > 0 && reached == static_cast<int64_t>(runs.size()) && reached > 0 &&
        m > 0 && base_steps > 0 && std::isfinite(base_steps / m)) {
      os << " " << fmt("%.2f", base_steps / m) << "x |";
    } else {
      os << " — |";
    }
    // What a step costs, from the runs themselves (training time, evaluation excluded), over
    // every run of the arm: a failed run paid for its steps too. Runs trained side by side
    // (--jobs) share the cores, so compare arms of one sweep, not sweeps.
    std::vector<double> ms;
    for (const RunOutcome* o : runs)
      if (o->result.steps_done > 0 && o->result.seconds > 0)
        ms.push_back(1e3 * o->result.seconds / static_cast<double>(o->result.steps_done));
    Stats cost = stats_of(ms);
    os << " " << (cost.n ? fmt("%.2f", cost.mean) : std::string("—")) << " |\n";
  }
  return os.str();
}

namespace {

// The distinct values of one setting across the arms, in order: "mnist" or "mnist, fashion-mnist".
template <typename Get>
std::string distinct(const std::vector<Arm>& arms, Get get) {
  std::vector<std::string> seen;
  for (const Arm& arm : arms)
    if (std::find(seen.begin(), seen.end(), get(arm.config)) == seen.end())
      seen.push_back(get(arm.config));
  std::string out;
  for (const std::string& v : seen) out += (out.empty() ? "" : ", ") + v;
  return out;
}

}  // namespace

std::string arms_models_and_data(const std::vector<Arm>& arms) {
  return distinct(arms, [](const TrainConfig& c) { return c.model.name; }) + " on " +
         distinct(arms, [](const TrainConfig& c) { return c.dataset; });
}

namespace {

// The learning-rate control (issue 15): the same table for each arm at the learning rate that
// suited it best, chosen on the evaluation split by mean final accuracy of its healthy runs. Arms
// are grouped by every setting except lr / lr-mult. "" when the grid varies no rate.
std::string best_rate_table(const std::vector<Arm>& arms, const std::vector<RunOutcome>& outcomes,
                            const std::vector<double>& thresholds, bool by_epoch) {
  auto is_rate = [](const std::string& factor) { return factor == "lr" || factor == "lr-mult"; };
  auto others = [&](const Arm& arm) {
    std::string key;
    for (const auto& [name, value] : arm.settings)
      if (!is_rate(name)) key += name + "=" + value + ",";
    return key;
  };
  std::vector<std::string> keys;
  bool varies_rate = false;
  for (const Arm& arm : arms) {
    for (const auto& [name, value] : arm.settings) varies_rate |= is_rate(name);
    if (std::find(keys.begin(), keys.end(), others(arm)) == keys.end()) keys.push_back(others(arm));
  }
  if (!varies_rate || keys.size() == arms.size()) return "";
  std::vector<Arm> chosen;
  std::vector<std::string> tests;
  for (const std::string& key : keys) {
    const Arm* best = nullptr;
    double best_acc = -1, best_test = NAN;
    for (const Arm& arm : arms) {
      if (others(arm) != key) continue;
      double sum = 0, test_sum = 0;
      int64_t n = 0, tested = 0;
      for (const RunOutcome& o : outcomes) {
        if (o.arm != &arm || o.result.diverged || o.result.collapsed || o.result.rows.empty())
          continue;
        sum += o.result.rows.back().eval_acc;
        ++n;
        if (!std::isnan(o.result.test_acc)) {
          test_sum += o.result.test_acc;
          ++tested;
        }
      }
      if (n > 0 && sum / static_cast<double>(n) > best_acc) {
        best_acc = sum / static_cast<double>(n);
        best = &arm;
        best_test = tested > 0 ? test_sum / static_cast<double>(tested) : NAN;
      }
    }
    if (best == nullptr) continue;  // every rate failed: the main table shows it
    chosen.push_back(*best);
    if (!std::isnan(best_test)) tests.push_back(best->name + " " + fmt("%.4f", best_test));
  }
  if (chosen.size() < 2) return "";
  std::vector<RunOutcome> chosen_outcomes;
  for (const RunOutcome& o : outcomes) {
    for (const Arm& c : chosen) {
      if (o.arm == nullptr || o.arm->name != c.name) continue;
      RunOutcome copy = o;
      copy.arm = &c;
      chosen_outcomes.push_back(std::move(copy));
    }
  }
  std::string kind = eval_kind_of(outcomes);
  std::string out = "\nEach arm at its own best learning rate (chosen on " + kind +
                    " accuracy, mean final over the healthy seeds):\n\n" +
                    summary_table(chosen, chosen_outcomes, thresholds, by_epoch);
  if (!tests.empty()) {
    out += "\nTest accuracy of the chosen arms (measured once, not used to choose): ";
    for (size_t i = 0; i < tests.size(); ++i) out += (i ? ", " : "") + tests[i];
    out += ".\n";
  }
  return out;
}

}  // namespace

std::vector<double> default_thresholds(const std::string& dataset) {
  if (dataset == "mnist") return {0.90, 0.95, 0.97, 0.98};
  if (dataset == "fashion-mnist") return {0.80, 0.85, 0.88, 0.90};
  if (dataset == "cifar10") return {0.40, 0.50, 0.60, 0.70};
  if (dataset == "cifar100") return {0.20, 0.30, 0.40, 0.50};
  return {0.50, 0.70, 0.80, 0.90};
}

namespace {

// The inference preset's measurement: the final model on the test split with the running averages,
// then with each evaluation batch's own statistics.
std::vector<double> inference_accuracies(const AblationSpec& spec, const TrainConfig& cfg,
                                         const TrainResult& result, const RunData& data) {
  if (spec.inference_batches.empty() || result.diverged) return {};
  const ImageDataset& split = data.test ? *data.test : data.eval;
  Model model = load_trained_model(cfg.out_dir, split);
  const NormalizeOptions norm = training_normalization(cfg.dataset, data.train);
  std::vector<double> acc{
      evaluate(model, split, norm, cfg.eval_batch_size, -1, NormStatistics::kRunning).accuracy};
  for (int64_t b : spec.inference_batches)
    acc.push_back(evaluate(model, split, norm, b, -1, NormStatistics::kBatch).accuracy);
  return acc;
}

std::string mean_std(const std::vector<double>& v) {
  Stats s = stats_of(v);
  if (s.n == 0) return "—";
  return fmt("%.4f", s.mean) + (s.n > 1 ? " ± " + fmt("%.4f", s.std) : "");
}

// The regularization control (issue 15): train accuracy measured in eval mode on the training
// images against the evaluation split, per arm; "" when no run measured it (--eval-train).
std::string generalization_table(const std::vector<Arm>& arms,
                                 const std::vector<RunOutcome>& outcomes) {
  std::ostringstream os;
  bool any = false;
  for (const Arm& arm : arms) {
    std::vector<double> train, eval, gap;
    for (const RunOutcome& o : outcomes) {
      const TrainResult& r = o.result;
      if (o.arm != &arm || r.diverged || r.collapsed || r.rows.empty() ||
          std::isnan(r.train_eval_acc))
        continue;
      train.push_back(r.train_eval_acc);
      eval.push_back(r.rows.back().eval_acc);
      gap.push_back(r.train_eval_acc - r.rows.back().eval_acc);
    }
    if (train.empty()) continue;
    any = true;
    os << "| " << arm.name << " | " << mean_std(train) << " | " << mean_std(eval) << " | "
       << mean_std(gap) << " |\n";
  }
  if (!any) return "";
  const std::string kind = eval_kind_of(outcomes);
  return "\nGeneralization: the final model's accuracy on its training images, in eval mode (no "
         "dropout, running statistics), against the " +
         kind +
         " split (healthy runs, mean ± std over seeds):\n\n| arm | train acc (eval mode) | " +
         kind + " acc | gap (train − " + kind + ") |\n|---|---|---|---|\n" + os.str();
}

// The inference control (issue 15): test accuracy with the running averages against batch
// statistics at several evaluation batch sizes; "" without spec.inference_batches. `test_images`:
// the size of the split measured, which caps the batch a column can use.
std::string inference_table(const AblationSpec& spec, const std::vector<Arm>& arms,
                            const std::vector<RunOutcome>& outcomes, int64_t test_images) {
  if (spec.inference_batches.empty()) return "";
  std::ostringstream os;
  os << "\nInference: the final model on the test split with the running averages (eval mode) and "
        "with each evaluation batch's own statistics (train-mode normalization, dropout off), "
        "mean ± std over the seeds:\n\n| arm | running averages |";
  // A batch larger than the split is the whole split: the column says so rather than name a batch
  // that was never used (batch 1000 of a 64-image split is one batch of 64).
  for (int64_t b : spec.inference_batches) {
    os << " batch statistics, batch "
       << (b > test_images
               ? std::to_string(test_images) + " (the whole split; " + std::to_string(b) + " asked)"
               : std::to_string(b))
       << " |";
  }
  os << "\n|---|---|";
  for (size_t i = 0; i < spec.inference_batches.size(); ++i) os << "---|";
  os << "\n";
  for (const Arm& arm : arms) {
    os << "| " << arm.name << " |";
    for (size_t c = 0; c <= spec.inference_batches.size(); ++c) {
      std::vector<double> v;
      for (const RunOutcome& o : outcomes)
        if (o.arm == &arm && c < o.inference_acc.size()) v.push_back(o.inference_acc[c]);
      os << " " << mean_std(v) << " |";
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace

void check_thresholds(const std::vector<double>& thresholds) {
  for (size_t i = 0; i < thresholds.size(); ++i) {
    BNLAB_CHECK(thresholds[i] >= 0 && thresholds[i] <= 1,
                "ablate: --thresholds: each must be an accuracy in [0, 1]; got ", thresholds[i]);
    for (size_t j = 0; j < i; ++j)
      BNLAB_CHECK(thresholds[j] != thresholds[i], "ablate: --thresholds: ", thresholds[i],
                  " is given twice; each threshold makes one 'steps to' column");
  }
}

namespace {

// summary.md's learning rate: the rates the arms train at, not the base's. The base model may be
// one no arm trains (the regularization preset's arms are all mlp, at 0.1, on paper-mlp's base
// of 0.5), and factors over rates or models give the arms several.
std::string rates_of(const AblationSpec& spec, const std::vector<Arm>& arms) {
  std::vector<float> rates;
  bool lr_factor = false;
  for (const Arm& arm : arms) {
    if (std::find(rates.begin(), rates.end(), arm.config.lr) == rates.end())
      rates.push_back(arm.config.lr);
    for (const auto& [name, value] : arm.settings) lr_factor |= name == "lr";
  }
  std::string text;
  if (rates.size() == 1) {
    text = fmt("%g", rates[0]);
  } else if (rates.size() <= 6) {
    text = "by arm ";
    for (size_t i = 0; i < rates.size(); ++i) text += (i ? ", " : "") + fmt("%g", rates[i]);
  } else {
    const auto [lo, hi] = std::minmax_element(rates.begin(), rates.end());
    text = "by arm, " + fmt("%g", *lo) + " to " + fmt("%g", *hi);
  }
  if (spec.lr_from_model && !lr_factor) {
    // With another optimizer than sgd the default is that optimizer's, not the model's SGD rate.
    std::string defaults;
    std::vector<std::string> runs;
    for (const Arm& arm : arms) {
      const TrainConfig& c = arm.config;
      const std::string run =
          c.model.name + (c.optimizer == "sgd" ? std::string() : " with " + c.optimizer);
      if (std::find(runs.begin(), runs.end(), run) != runs.end()) continue;
      runs.push_back(run);
      defaults += (defaults.empty() ? "" : ", ") +
                  fmt("%g", default_lr(c.model.name, c.optimizer)) + " for " + run;
    }
    text += " (each model's default: " + defaults + ")";
  }
  return text;
}

}  // namespace

AblationReport run_ablation(const AblationSpec& spec) {
  BNLAB_CHECK(spec.seeds >= 1, "ablate: --seeds must be at least 1; got ", spec.seeds);
  BNLAB_CHECK(spec.jobs >= 0, "ablate: --jobs must be at least 0; got ", spec.jobs);
  check_thresholds(spec.thresholds);
  std::vector<Arm> arms = expand_arms(spec);
  ensure_directory(spec.out_dir);

  struct Job {
    const Arm* arm;
    uint64_t seed;
    TrainConfig cfg;
  };
  std::vector<Job> jobs;
  int cores = std::max(1, spec.base.threads > 0 ? spec.base.threads : bnlab::num_threads());
  // Small models scale poorly across threads, so matched runs side by side beat one run on all
  // cores.
  int requested = spec.jobs > 0 ? spec.jobs : cores;
  int jobs_at_once =
      std::min<int>(requested, static_cast<int>(arms.size() * static_cast<size_t>(spec.seeds)));
  // Under mpirun the runs go one after another, each data-parallel over every rank
  // (train/data_parallel.h): runs side by side would interleave their collectives.
  Communicator& comm = world();
  if (comm.size() > 1) jobs_at_once = 1;
  for (const Arm& arm : arms) {
    for (int64_t s = 0; s < spec.seeds; ++s) {
      TrainConfig cfg = arm.config;
      cfg.seed = spec.base.seed + static_cast<uint64_t>(s);
      cfg.out_dir =
          (fs::path(spec.out_dir) / "runs" / slug(arm.name) / ("seed-" + std::to_string(cfg.seed)))
              .string();
      cfg.label = arm.name + (spec.seeds > 1 ? " seed " + std::to_string(cfg.seed) : "");
      cfg.save_checkpoint = true;
      if (jobs_at_once > 1) {
        cfg.threads = std::max(1, cores / jobs_at_once);
        cfg.plain_progress = true;
      }
      jobs.push_back({&arm, cfg.seed, cfg});
    }
  }
  // Every run directory that holds another config's run is refused before any data is read and any
  // arm trains (rank 0 alone writes the run directories).
  if (comm.rank() == 0)
    for (const Job& job : jobs) check_same_experiment(job.cfg.out_dir, job.cfg);

  // Load each dataset once; every arm on it shares the same images (and so the same data order per
  // seed).
  std::map<std::tuple<std::string, int64_t, int64_t>, RunData> data;
  auto data_key = [](const TrainConfig& c) {
    return std::make_tuple(c.dataset, c.val_split, c.train_subset);
  };
  for (const Arm& arm : arms) {
    if (data.count(data_key(arm.config))) continue;
    try {
      data.emplace(data_key(arm.config), load_run_data(arm.config));
    } catch (const Error& e) {
      // A --val-split the training set cannot spare ("--val-split 5000 leaves no training images
      // of ..."): when a preset chose it, the user never passed the flag the message names.
      const std::string what = e.what();
      if (spec.val_split_set_by.empty() || arm.config.val_split != spec.base.val_split ||
          what.rfind("--val-split ", 0) != 0)
        throw;
      throw Error(what + " (" + spec.val_split_set_by + " sets --val-split " +
                      std::to_string(spec.base.val_split) +
                      " to choose each arm's rate on held-out images; give a smaller --val-split)",
                  e.where());
    }
  }
  // The Trainer refuses such a batch too, but only when that arm starts: after the arms before it
  // trained, and without naming the arm.
  for (const Arm& arm : arms) {
    const ImageDataset& train = data.at(data_key(arm.config)).train;
    if (arm.config.batch_size > train.size()) {
      throw AblationSettingError(
          "ablate: arm " + arm.name + " has batch size " + std::to_string(arm.config.batch_size) +
          ", more than the " + std::to_string(train.size()) + " training images of " +
          train.title() + "; choose a batch size of at most " + std::to_string(train.size()));
    }
  }

  std::vector<RunOutcome> outcomes(jobs.size());
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr first_error;
  auto worker = [&]() {
    for (size_t i = next++; i < jobs.size(); i = next++) {
      if (interrupt_requested()) break;  // SIGINT/SIGTERM: start no new run
      try {
        const Job& job = jobs[i];
        outcomes[i].arm = job.arm;
        outcomes[i].seed = job.seed;
        outcomes[i].run_dir = job.cfg.out_dir;
        if (finished_run(job.cfg.out_dir, job.cfg)) {
          outcomes[i].result = load_finished_run(job.cfg.out_dir);
          outcomes[i].reused = true;
          TrainResult& r = outcomes[i].result;
          if (!r.diverged) {  // this sweep's collapse rule, which may differ from the first run's
            r.collapse_reason =
                collapse_reason(r.rows, r.chance_acc, data.at(data_key(job.cfg)).eval.num_classes(),
                                job.cfg.collapse_after, job.cfg.collapse_margin);
            r.collapsed = !r.collapse_reason.empty();
          }
          std::printf("%s: already finished in %s, reusing\n", job.cfg.label.c_str(),
                      job.cfg.out_dir.c_str());
          outcomes[i].inference_acc =
              inference_accuracies(spec, job.cfg, r, data.at(data_key(job.cfg)));
          continue;
        }
        bool resume = fs::exists(fs::path(job.cfg.out_dir) / "train_state.safetensors") &&
                      fs::exists(fs::path(job.cfg.out_dir) / "config.json") &&
                      same_experiment(job.cfg.out_dir, job.cfg);
        outcomes[i].result = train(job.cfg, data.at(data_key(job.cfg)), resume);
        if (!outcomes[i].result.interrupted_by)
          outcomes[i].inference_acc =
              inference_accuracies(spec, job.cfg, outcomes[i].result, data.at(data_key(job.cfg)));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
        next = jobs.size();  // stop handing out work
      }
    }
  };
  if (jobs_at_once > 1) {
    std::vector<std::thread> threads;
    for (int t = 0; t < jobs_at_once; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
  } else {
    worker();
  }
  if (first_error) std::rethrow_exception(first_error);
  if (comm.rank() != 0) return {};  // rank 0 alone writes the tables and plots

  AblationReport report;
  // Interrupted: the runs that were training saved a checkpoint at their last step; report how
  // many are unfinished and write no tables (rerunning the same command resumes and completes).
  if (interrupt_requested()) {
    report.interrupted_by = interrupt_signal();
    for (size_t i = 0; i < jobs.size(); ++i) {
      const TrainResult& r = outcomes[i].result;
      bool done = outcomes[i].arm != nullptr && !r.interrupted_by &&
                  fs::exists(fs::path(jobs[i].cfg.out_dir) / "summary.json");
      report.unfinished += done ? 0 : 1;
    }
    if (report.unfinished > 0) return report;
    report.interrupted_by = 0;  // everything had finished: write the report as usual
  }

  // results.csv: one row per (arm, seed, evaluated step), factor columns first.
  std::ostringstream csv;
  csv << "arm";
  for (const Factor& f : spec.factors) csv << "," << f.name;
  const std::string kind = eval_kind_of(outcomes);
  // The arm's columns, then each run's metrics.csv row (one format: train/trainer.h), then
  // divergence.
  csv << ",seed," << metrics_csv_header(kind) << ",diverged,diverged_step,collapsed\n";
  for (const RunOutcome& o : outcomes) {
    for (const MetricsRow& r : o.result.rows) {
      csv << csv_escape(o.arm->name);
      for (const auto& [name, value] : o.arm->settings) csv << "," << csv_escape(value);
      csv << "," << o.seed << "," << metrics_csv_cells(r) << "," << (o.result.diverged ? 1 : 0)
          << "," << o.result.diverged_step << "," << (o.result.collapsed ? 1 : 0) << "\n";
    }
  }
  report.results_csv = (fs::path(spec.out_dir) / "results.csv").string();
  write_file_atomic(report.results_csv, csv.str());

  for (const Arm& arm : arms) {
    double sum = 0;
    int64_t n = 0;
    for (const RunOutcome& o : outcomes) {
      // The healthy runs only, as the table's accuracy column: a diverged run's last row is from
      // before it diverged, and a gate on this number passed arms whose runs had all failed.
      if (o.arm != &arm || o.result.rows.empty() || o.result.diverged || o.result.collapsed)
        continue;
      sum += o.result.rows.back().eval_acc;
      ++n;
    }
    report.final_accuracy.emplace_back(arm.name, n > 0 ? sum / static_cast<double>(n) : NAN);
  }
  // Arms of different batch sizes are compared at equal training images seen (epochs), not steps.
  bool by_epoch = false;
  for (const Arm& arm : arms) by_epoch |= arm.config.batch_size != arms.front().config.batch_size;
  // One table per dataset: thresholds suit one dataset's difficulty, and a speed-up compares arms
  // on the same data (its baseline is the first arm on that dataset).
  std::vector<std::string> datasets;
  for (const Arm& arm : arms)
    if (std::find(datasets.begin(), datasets.end(), arm.config.dataset) == datasets.end())
      datasets.push_back(arm.config.dataset);
  for (const std::string& dataset : datasets) {
    std::vector<Arm> group;
    for (const Arm& arm : arms)
      if (arm.config.dataset == dataset) group.push_back(arm);
    std::vector<RunOutcome> group_outcomes;
    for (const RunOutcome& o : outcomes) {
      if (o.arm == nullptr || o.arm->config.dataset != dataset) continue;
      RunOutcome copy = o;
      for (const Arm& g : group)
        if (g.name == o.arm->name) copy.arm = &g;
      group_outcomes.push_back(std::move(copy));
    }
    if (datasets.size() > 1) report.table += "### " + dataset + "\n\n";
    const std::vector<double> thresholds =
        spec.thresholds.empty() ? default_thresholds(dataset) : spec.thresholds;
    report.table += summary_table(group, group_outcomes, thresholds, by_epoch);
    report.table += best_rate_table(group, group_outcomes, thresholds, by_epoch);
    report.table += generalization_table(group, group_outcomes);
    const RunData& group_data = data.at(data_key(group.front().config));
    report.table +=
        inference_table(spec, group, group_outcomes,
                        group_data.test ? group_data.test->size() : group_data.eval.size());
    if (datasets.size() > 1 && dataset != datasets.back()) report.table += "\n";
  }
  std::ostringstream md;
  const TrainConfig& b = spec.base;
  md << "# " << (spec.title.empty() ? "bnlab ablation" : spec.title) << "\n\n"
     << "Model " << arms_models_and_data(arms) << ", batch " << b.batch_size << ", " << b.optimizer
     << " lr " << rates_of(spec, arms)
     << (b.momentum > 0 ? " momentum " + fmt("%g", b.momentum) : "") << ", "
     << (b.steps > 0 ? std::to_string(b.steps) + " steps" : std::to_string(b.epochs) + " epochs")
     << ", evaluated every "
     << (b.eval_every > 0 ? std::to_string(b.eval_every) + " steps" : std::string("epoch"))
     << (spec.equal_samples ? " (other batch sizes: steps scaled to the same training images)" : "")
     << " on the " << (outcomes.empty() ? std::string("test") : outcomes.front().result.eval_split)
     << " split; seeds " << b.seed << ".." << b.seed + static_cast<uint64_t>(spec.seeds) - 1
     << ". Speed-up: the baseline arm's (first row) " << (by_epoch ? "epochs" : "steps")
     << " to the accuracy shown divided by the arm's.\n\n"
     << report.table;
  report.arms = arms;
  for (const Arm& arm : arms) {
    report.outcomes.emplace_back();
    for (const RunOutcome& o : outcomes) {
      if (o.arm != &arm) continue;
      report.outcomes.back().push_back(o);
      report.outcomes.back().back().arm = nullptr;
    }
  }
  std::vector<std::string> mechanism_messages;
  const std::string mechanism =
      mechanism_section(spec, report, &report.extra_pngs, &mechanism_messages);
  report.table += mechanism;
  md << mechanism;
  for (const std::string& png : report.extra_pngs) md << "\n![" << png << "](" << png << ")\n";
  report.summary_md = (fs::path(spec.out_dir) / "summary.md").string();
  write_file_atomic(report.summary_md, md.str());
  report.messages = render_plots(spec, arms, outcomes, by_epoch, report);
  report.messages.insert(report.messages.end(), mechanism_messages.begin(),
                         mechanism_messages.end());
  return report;
}

Experiment::Experiment(std::string out_dir) { spec_.out_dir = std::move(out_dir); }

Experiment& Experiment::model(const std::string& name, ModelFactory factory) {
  register_model(name, std::move(factory));
  return model(name);
}

Experiment& Experiment::model(const std::string& name) {
  apply_factor(spec_.base, "model", name);  // checked against the registry
  return *this;
}

Experiment& Experiment::vary(const std::string& factor, const std::vector<std::string>& values) {
  std::string text = factor + "=";
  for (size_t i = 0; i < values.size(); ++i) text += (i ? "," : "") + values[i];
  spec_.factors.push_back(parse_factor(text));
  return *this;
}

Experiment& Experiment::seeds(int64_t n) {
  spec_.seeds = n;
  return *this;
}

Experiment& Experiment::lr_from_model(bool on) {
  spec_.lr_from_model = on;
  return *this;
}

Experiment& Experiment::title(std::string text) {
  spec_.title = std::move(text);
  return *this;
}

AblationReport Experiment::run() const { return run_ablation(spec_); }

}  // namespace bnlab

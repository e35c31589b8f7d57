// The mechanism preset's tables and figures, and the per-seed numbers of its study claims. See
// train/mechanism_report.h; the formulas are in docs/mechanism.md.
#include "train/mechanism_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/io.h"
#include "train/mechanism.h"
#include "train/plot.h"
#include "train/report_text.h"

namespace bnlab {

namespace fs = std::filesystem;

namespace {

using detail::fmt;

double mean_of(const std::vector<double>& v) {
  double sum = 0;
  int64_t n = 0;
  for (double x : v)
    if (std::isfinite(x)) {
      sum += x;
      ++n;
    }
  return n > 0 ? sum / static_cast<double>(n) : NAN;
}

double std_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double ss = 0;
  int64_t n = 0;
  for (double x : v)
    if (std::isfinite(x)) {
      ss += (x - m) * (x - m);
      ++n;
    }
  return n > 1 ? std::sqrt(ss / static_cast<double>(n - 1)) : NAN;
}

// The ICS cells the summaries average: every layer but the first, whose ICS is 0 by definition.
template <typename F>
double mean_over_ics(const MechanismRun& run, F value) {
  std::vector<double> v;
  for (const IcsRow& c : run.ics)
    if (c.layer > 0) v.push_back(value(c));
  return mean_of(v);
}

// Okabe and Ito's colours, as the ablation's plots use them (arm a's colour).
std::string colour(size_t a) {
  static const char* const kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                         "#E69F00", "#56B4E9", "#000000", "#F0E442"};
  return std::string("lc rgb '") + kColours[a % 8] + "'";
}

// Per arm: its runs' measurements (one per seed that measured anything).
struct ArmRuns {
  std::string name;
  std::vector<MechanismRun> runs;
  std::vector<const TrainResult*> results;
};

// The mean over seeds, per measured step, of one mechanism.csv quantity.
template <typename F>
std::map<int64_t, double> per_step_mean(const ArmRuns& arm, F value) {
  std::map<int64_t, std::vector<double>> by_step;
  for (const MechanismRun& run : arm.runs)
    for (const MechanismRow& s : run.steps) by_step[s.step].push_back(value(s));
  std::map<int64_t, double> out;
  for (const auto& [step, v] : by_step) out[step] = mean_of(v);
  return out;
}

}  // namespace

MechanismRun read_mechanism_run(const std::string& dir) {
  MechanismRun run;
  const fs::path mech = fs::path(dir) / "mechanism.csv", ics = fs::path(dir) / "ics.csv";
  if (!fs::exists(mech)) return run;
  run.steps = read_mechanism_csv(mech.string());
  if (fs::exists(ics)) run.ics = read_ics_csv(ics.string());
  return run;
}

double mean_ics_cosine(const MechanismRun& run) {
  return mean_over_ics(run, [](const IcsRow& c) { return c.cosine; });
}

double mean_ics_relative_l2(const MechanismRun& run) {
  return mean_over_ics(
      run, [](const IcsRow& c) { return c.grad_norm > 0 ? c.l2_diff / c.grad_norm : NAN; });
}

double mean_log10_beta(const MechanismRun& run) {
  std::vector<double> v;
  for (const MechanismRow& s : run.steps)
    if (s.beta_smoothness > 0) v.push_back(std::log10(s.beta_smoothness));
  return mean_of(v);
}

double activation_drift(const MechanismRun& run) {
  if (run.steps.size() < 2) return NAN;
  double sum = 0;
  int64_t n = 0;
  for (size_t i = 1; i < run.steps.size(); ++i) {
    const double dm = run.steps[i].probe_mean - run.steps[i - 1].probe_mean;
    const double ds = run.steps[i].probe_std - run.steps[i - 1].probe_std;
    if (!std::isfinite(dm) || !std::isfinite(ds)) continue;
    sum += dm * dm + ds * ds;
    ++n;
  }
  return n > 0 ? std::sqrt(sum / static_cast<double>(n)) : NAN;
}

std::string mechanism_section(const AblationSpec& spec, const AblationReport& report,
                              std::vector<std::string>* pngs, std::vector<std::string>* messages) {
  std::vector<ArmRuns> arms;
  for (size_t a = 0; a < report.arms.size(); ++a) {
    ArmRuns arm{report.arms[a].name, {}, {}};
    for (const RunOutcome& o : report.outcomes[a]) {
      MechanismRun run = read_mechanism_run(o.run_dir);
      if (run.empty()) continue;
      arm.runs.push_back(std::move(run));
      arm.results.push_back(&o.result);
    }
    if (!arm.runs.empty()) arms.push_back(std::move(arm));
  }
  if (arms.empty()) return "";

  // The table: one row per arm, each number the mean ± std over its seeds of a per-run summary.
  auto cell = [](const std::vector<double>& v, const char* format) {
    const double m = mean_of(v), s = std_of(v);
    if (!std::isfinite(m)) return std::string("—");
    return fmt(format, m) + (std::isfinite(s) ? " ± " + fmt(format, s) : std::string());
  };
  std::ostringstream md;
  md << "\n### Mechanism: internal covariate shift and smoothness (docs/mechanism.md)\n\n"
     << "| arm | runs | ICS cosine (1 = none) | ICS l2 / gradient norm | log10 "
        "beta-smoothness | loss range along the gradient | max gradient change | input drift "
        "of the probe unit |\n|---|---|---|---|---|---|---|---|\n";
  for (const ArmRuns& arm : arms) {
    std::vector<double> cosine, rel, beta, range, change, drift;
    for (const MechanismRun& run : arm.runs) {
      cosine.push_back(mean_ics_cosine(run));
      rel.push_back(mean_ics_relative_l2(run));
      beta.push_back(mean_log10_beta(run));
      std::vector<double> r, c;
      for (const MechanismRow& s : run.steps) {
        r.push_back(s.loss_max - s.loss_min);
        c.push_back(s.grad_diff_max);
      }
      range.push_back(mean_of(r));
      change.push_back(mean_of(c));
      drift.push_back(activation_drift(run));
    }
    md << "| " << arm.name << " | " << arm.runs.size() << " | " << cell(cosine, "%.3f") << " | "
       << cell(rel, "%.3f") << " | " << cell(beta, "%.2f") << " | " << cell(range, "%.3g") << " | "
       << cell(change, "%.3g") << " | " << cell(drift, "%.3g") << " |\n";
  }
  md << "\nEach cell: the mean over the run's measured steps (ICS: and over every layer but the "
        "first), then mean ± std over seeds. Loss range and gradient change are measured along "
        "the gradient at the step sizes "
     <<
      [&] {
        std::string s;
        for (float e : spec.base.mechanism_etas) s += (s.empty() ? "" : ", ") + fmt("%g", e);
        return s;
      }()
     << " x the learning rate.\n";

  // Figures. Data: one gnuplot index per arm, the seed means per measured step.
  std::ostringstream dat;
  for (const ArmRuns& arm : arms) {
    auto loss_min = per_step_mean(arm, [](const auto& s) { return s.loss_min; });
    auto loss_max = per_step_mean(arm, [](const auto& s) { return s.loss_max; });
    auto g_min = per_step_mean(arm, [](const auto& s) { return s.grad_diff_min; });
    auto g_max = per_step_mean(arm, [](const auto& s) { return s.grad_diff_max; });
    auto beta = per_step_mean(arm, [](const auto& s) { return s.beta_smoothness; });
    auto p15 = per_step_mean(arm, [](const auto& s) { return s.probe_p15; });
    auto p50 = per_step_mean(arm, [](const auto& s) { return s.probe_p50; });
    auto p85 = per_step_mean(arm, [](const auto& s) { return s.probe_p85; });
    dat << "# " << arm.name
        << "\n# step loss_min loss_max grad_diff_min grad_diff_max beta p15 p50 p85\n";
    for (const auto& [step, lo] : loss_min)
      dat << step << " " << lo << " " << loss_max[step] << " " << g_min[step] << " " << g_max[step]
          << " " << beta[step] << " " << p15[step] << " " << p50[step] << " " << p85[step] << "\n";
    dat << "\n\n";
  }
  // Training accuracy (train mode, since the previous evaluation), per evaluation.
  for (const ArmRuns& arm : arms) {
    std::map<int64_t, std::vector<double>> acc;
    for (const TrainResult* r : arm.results)
      for (const MetricsRow& row : r->rows)
        if (row.step > 0) acc[row.step].push_back(row.train_acc);
    dat << "# " << arm.name << " training accuracy\n";
    for (const auto& [step, v] : acc) dat << step << " " << mean_of(v) << "\n";
    dat << "\n\n";
  }
  // ICS per layer: index arms.size() * 2 + arm * layers + layer.
  int64_t layers = 0;
  for (const ArmRuns& arm : arms)
    for (const MechanismRun& run : arm.runs)
      for (const auto& c : run.ics) layers = std::max(layers, c.layer + 1);
  for (const ArmRuns& arm : arms) {
    for (int64_t layer = 0; layer < layers; ++layer) {
      std::map<int64_t, std::vector<double>> cos, rel;
      for (const MechanismRun& run : arm.runs)
        for (const auto& c : run.ics)
          if (c.layer == layer) {
            cos[c.step].push_back(c.cosine);
            rel[c.step].push_back(c.grad_norm > 0 ? c.l2_diff / c.grad_norm : NAN);
          }
      dat << "# " << arm.name << " layer " << layer << ": step cosine l2/grad_norm\n";
      for (const auto& [step, v] : cos)
        dat << step << " " << mean_of(v) << " " << mean_of(rel[step]) << "\n";
      dat << "\n\n";
    }
  }
  const fs::path dir = spec.out_dir;
  write_file_atomic((dir / "mechanism.dat").string(), dat.str());

  const size_t n = arms.size();
  auto plot_arms = [&](std::ostringstream& gp, const std::string& using_, const std::string& with,
                       size_t index_base, bool band) {
    gp << "plot \\\n";
    for (size_t a = 0; a < n; ++a) {
      gp << "  'mechanism.dat' index " << index_base + a << " using " << using_ << " with " << with
         << " " << colour(a) << (band ? " notitle" : " title " + gnuplot_quote(arms[a].name))
         << (a + 1 < n ? ", \\\n" : "\n");
    }
  };
  std::ostringstream gp;
  gp << "set termoption noenhanced\nset multiplot layout 2,2 title 'what BN changes along the "
        "training path (mean over "
        "seeds)'\nset xlabel 'training steps'\nset grid\nset key outside right top noenhanced\n"
     << "set title 'training accuracy (train mode)'\nset ylabel 'accuracy'\n";
  plot_arms(gp, "1:2", "lines lw 2", n, false);
  gp << "set title 'effective beta-smoothness along the gradient'\nset ylabel 'max ||g_eta - "
        "g|| / ||eta g||'\nset logscale y\n";
  plot_arms(gp, "1:6", "linespoints lw 2 pt 7 ps 0.5", 0, false);
  gp << "unset logscale y\nset title 'loss landscape: range of the loss along the gradient'\nset "
        "ylabel 'loss'\n";
  gp << "plot \\\n";
  for (size_t a = 0; a < n; ++a)
    gp << "  'mechanism.dat' index " << a
       << " using 1:2:3 with filledcurves fs transparent solid 0.25 noborder " << colour(a)
       << " title " << gnuplot_quote(arms[a].name) << (a + 1 < n ? ", \\\n" : "\n");
  gp << "set title 'gradient predictiveness: range of ||g_eta - g|| along the gradient'\nset "
        "ylabel 'l2 change of the gradient'\nset logscale y\nplot \\\n";
  for (size_t a = 0; a < n; ++a)
    gp << "  'mechanism.dat' index " << a
       << " using 1:4:5 with filledcurves fs transparent solid 0.25 noborder " << colour(a)
       << " title " << gnuplot_quote(arms[a].name) << (a + 1 < n ? ", \\\n" : "\n");
  gp << "unset multiplot\n";
  PlotResult plot = render_gnuplot((dir / "mechanism.gp").string(), gp.str(),
                                   (dir / "mechanism.png").string(), 1500, 900);
  messages->push_back(plot.message);
  if (plot.rendered) pngs->push_back("mechanism.png");

  if (layers > 0) {
    std::ostringstream ics;
    const size_t cols = static_cast<size_t>(std::min<int64_t>(layers, 4));
    const size_t rows = 2 * ((static_cast<size_t>(layers) + cols - 1) / cols);
    ics << "set termoption noenhanced\nset multiplot layout " << rows << "," << cols
        << " title 'internal covariate shift per layer: the weight gradient before vs after the "
           "preceding layers update (mean over seeds)'\nset xlabel 'training steps'\nset "
           "grid\nset key bottom left noenhanced\n";
    for (int what = 0; what < 2; ++what) {
      for (int64_t layer = 0; layer < layers; ++layer) {
        ics << "set title 'layer " << layer + 1 << (what == 0 ? ": cosine" : ": l2 / ||G||")
            << "'\nplot \\\n";
        for (size_t a = 0; a < n; ++a)
          ics << "  'mechanism.dat' index "
              << 2 * n + a * static_cast<size_t>(layers) + static_cast<size_t>(layer)
              << " using 1:" << (what == 0 ? 2 : 3) << " with linespoints lw 2 pt 7 ps 0.4 "
              << colour(a) << " title " << gnuplot_quote(arms[a].name)
              << (a + 1 < n ? ", \\\n" : "\n");
      }
      // Fill the row so the l2 panels start on a row of their own.
      for (size_t k = static_cast<size_t>(layers); k % cols != 0; ++k)
        ics << "set multiplot next\n";
    }
    ics << "unset multiplot\n";
    plot = render_gnuplot((dir / "ics.gp").string(), ics.str(), (dir / "ics.png").string(),
                          static_cast<int>(420 * cols), static_cast<int>(320 * rows));
    messages->push_back(plot.message);
    if (plot.rendered) pngs->push_back("ics.png");
  }

  std::ostringstream drift;
  const size_t cols = std::min<size_t>(n, 4);
  drift << "set termoption noenhanced\nset multiplot layout " << (n + cols - 1) / cols << ","
        << cols
        << " title 'one unit of the probe layer: its input on the training batch in train mode "
           "(15th, 50th, 85th percentiles; noise included)'\nset xlabel 'training steps'\nset "
           "grid\nset key top right\n";
  for (size_t a = 0; a < n; ++a)
    drift << "set title " << gnuplot_quote(arms[a].name)
          << " noenhanced\nplot 'mechanism.dat' index " << a
          << " using 1:7:9 with filledcurves fs transparent solid 0.25 noborder " << colour(a)
          << " title '15th-85th', '' index " << a << " using 1:8 with lines lw 2 " << colour(a)
          << " title '50th'\n";
  drift << "unset multiplot\n";
  plot =
      render_gnuplot((dir / "drift.gp").string(), drift.str(), (dir / "drift.png").string(),
                     static_cast<int>(480 * cols), static_cast<int>(380 * ((n + cols - 1) / cols)));
  messages->push_back(plot.message);
  if (plot.rendered) pngs->push_back("drift.png");
  return md.str();
}

}  // namespace bnlab

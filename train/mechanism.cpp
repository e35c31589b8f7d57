// The measurements of train/mechanism.h. Definitions (Santurkar et al. 2018), at a measured step
// with batch (x, y), weights W^t, training loss L (cross-entropy, train mode, as the step computes
// it) and gradient g = grad L(W^t):
//   ICS of weight i:  G = grad_{W_i} L(W^t),  G' = grad_{W_i} L(W_1^{t+1}, .., W_{i-1}^{t+1},
//   W_i^t,
//                     .., W_k^t) over the parameters in forward (registration) order, biases and
//                     normalization parameters included; recorded ||G - G'|| and cos(G, G').
//   landscape:        for eta = m x lr, L_eta = L(W^t - eta g), g_eta = grad L(W^t - eta g);
//                     recorded L_eta and ||g_eta - g||; per step min/max of L over {0} and the
//                     etas, min/max of ||g_eta - g||, and beta = max ||g_eta - g|| / (eta ||g||).
// Every pass replays the step's forward from its starting state (see the rule in the header), so
// the first weight's G' is G bit for bit, and m = 0 gives the step's own loss.
#include "train/mechanism.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "core/io.h"
#include "core/ops.h"
#include "train/plot.h"
#include "train/report_text.h"

namespace bnlab {

namespace fs = std::filesystem;

namespace {

double sum_sq(const float* a, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * a[i];
  return s;
}

// sum (a - b)^2; a null `a` counts as zeros (a parameter the pass left without a gradient).
double sum_sq_diff(const float* a, const float* b, int64_t n) {
  if (a == nullptr) return sum_sq(b, n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return s;
}

const float* grad_or_null(const Tensor& p) { return p.has_grad() ? p.grad().data() : nullptr; }

}  // namespace

MechanismMeter::MechanismMeter(Model& model, std::vector<float> eta_mults, float label_smoothing,
                               int64_t probe_unit)
    : model_(model),
      eta_mults_(std::move(eta_mults)),
      label_smoothing_(label_smoothing),
      probe_unit_(model.probe != nullptr ? probe_unit : -1) {
  for (float m : eta_mults_)
    BNLAB_CHECK(std::isfinite(m) && m >= 0.0f, "mechanism: step-size multiples must be >= 0; got ",
                m);
  for (const auto& [name, p] : model_.net->named_parameters()) {
    if (p.dim() >= 2) weights_.push_back(params_.size());
    params_.push_back({name, p, p.clone(), p.clone(), p.clone()});
  }
  for (const auto& [name, b] : model_.net->named_buffers()) {
    buffers_.push_back(b);
    buffers_before_.push_back(b.clone());
    buffers_after_.push_back(b.clone());
  }
}

void MechanismMeter::restore_buffers(const std::vector<Tensor>& from) {
  for (size_t i = 0; i < buffers_.size(); ++i) buffers_[i].copy_(from[i]);
}

void MechanismMeter::before_forward() {
  for (size_t i = 0; i < buffers_.size(); ++i) buffers_before_[i].copy_(buffers_[i]);
  if (model_.dropout_rng) rng_before_ = model_.dropout_rng->state();
  probe_values_.clear();
  if (probe_unit_ >= 0) {
    probe_hook_ =
        model_.probe->register_forward_hook([this](const Module&, const Tensor& x, const Tensor&) {
          append_probe_values(x, probe_unit_, probe_values_);
        });
  }
}

void MechanismMeter::skip() {
  probe_hook_.remove();  // its own hook only: the user's stay
  measuring_ = false;
}

float MechanismMeter::replay() {
  restore_buffers(buffers_before_);
  if (model_.dropout_rng) model_.dropout_rng->set_state(rng_before_);
  for (Param& q : params_)
    if (q.p.has_grad()) q.p.grad().fill_(0.0f);
  Tensor loss = cross_entropy((*model_.net)(images_), labels_, label_smoothing_);
  loss.backward();
  return loss.item();
}

// The step's gradients, and the buffers and generator as the step's own forward left them (the
// caller puts the parameters back).
void MechanismMeter::restore_step_state() {
  for (Param& q : params_) {
    if (q.had_grad) {
      q.p.grad().copy_(q.g);  // a pass gave every parameter that had a gradient one again
    } else {
      q.p.zero_grad();
    }
  }
  restore_buffers(buffers_after_);
  if (model_.dropout_rng) model_.dropout_rng->set_state(rng_after_);
}

void MechanismMeter::after_backward(const Tensor& images, const std::vector<int64_t>& labels,
                                    float loss, float lr) {
  skip();  // unhooks the probe: it records the step's own forward only
  images_ = images;
  labels_.assign(labels.begin(), labels.end());
  for (size_t i = 0; i < buffers_.size(); ++i) buffers_after_[i].copy_(buffers_[i]);
  if (model_.dropout_rng) rng_after_ = model_.dropout_rng->state();
  double g2 = 0;
  for (Param& q : params_) {
    q.w0.copy_(q.p);
    q.had_grad = q.p.has_grad();
    if (q.had_grad) {
      q.g.copy_(q.p.grad());
    } else {
      q.g.fill_(0.0f);
    }
    g2 += sum_sq(q.g.data(), q.g.numel());
  }
  row_ = MechanismRow{};
  row_.loss = loss;
  row_.grad_norm = std::sqrt(g2);
  row_.loss_min = row_.loss_max = loss;
  row_.grad_diff_min = INFINITY;
  row_.grad_diff_max = -INFINITY;
  pending_.clear();
  // The direction is the plain gradient even under momentum or Adam: the paper's definition, and
  // the landscape's property rather than the optimizer's.
  for (float mult : eta_mults_) {
    const float eta = mult * lr;
    for (Param& q : params_) {
      float* w = q.p.data();
      const float* w0 = q.w0.data();
      const float* g = q.g.data();
      for (int64_t i = 0; i < q.p.numel(); ++i) w[i] = w0[i] - eta * g[i];
      q.p.bump_version();
    }
    const float l = replay();
    double d2 = 0;
    for (Param& q : params_) d2 += sum_sq_diff(grad_or_null(q.p), q.g.data(), q.g.numel());
    const double diff = std::sqrt(d2);
    pending_.push_back({0, eta, mult, l, diff});
    row_.loss_min = std::min(row_.loss_min, static_cast<double>(l));
    row_.loss_max = std::max(row_.loss_max, static_cast<double>(l));
    row_.grad_diff_min = std::min(row_.grad_diff_min, diff);
    row_.grad_diff_max = std::max(row_.grad_diff_max, diff);
    const double step_length = static_cast<double>(eta) * row_.grad_norm;
    if (step_length > 0)
      row_.beta_smoothness = std::isnan(row_.beta_smoothness)
                                 ? diff / step_length
                                 : std::max(row_.beta_smoothness, diff / step_length);
  }
  if (pending_.empty()) row_.grad_diff_min = row_.grad_diff_max = NAN;
  if (!probe_values_.empty()) {
    row_.probe_p15 = percentile(probe_values_, 15);
    row_.probe_p50 = percentile(probe_values_, 50);
    row_.probe_p85 = percentile(probe_values_, 85);
    double sum = 0, sq = 0;
    for (float v : probe_values_) sum += v;
    const double n = static_cast<double>(probe_values_.size());
    row_.probe_mean = sum / n;
    for (float v : probe_values_) sq += (v - row_.probe_mean) * (v - row_.probe_mean);
    row_.probe_std = std::sqrt(sq / n);
  }
  for (Param& q : params_) q.p.copy_(q.w0);
  restore_step_state();
  measuring_ = true;
}

void MechanismMeter::after_update(int64_t step, std::vector<IcsRow>& ics,
                                  std::vector<SmoothnessRow>& smoothness,
                                  std::vector<MechanismRow>& summary) {
  BNLAB_CHECK(measuring_, "MechanismMeter::after_update: no after_backward for step ", step);
  measuring_ = false;
  for (Param& q : params_) {
    q.w1.copy_(q.p);
    q.p.copy_(q.w0);
  }
  // Weight i's pass: parameters before it at W^{t+1}, the rest at W^t. Moving forward through the
  // weights only ever switches more parameters to W^{t+1}.
  size_t updated = 0;
  for (size_t layer = 0; layer < weights_.size(); ++layer) {
    const size_t k = weights_[layer];
    for (; updated < k; ++updated) params_[updated].p.copy_(params_[updated].w1);
    replay();
    const Param& q = params_[k];
    const float* after = grad_or_null(q.p);
    const float* before = q.g.data();
    const int64_t n = q.g.numel();
    double dot = 0;
    if (after != nullptr)
      for (int64_t i = 0; i < n; ++i) dot += static_cast<double>(before[i]) * after[i];
    const double n2 = sum_sq(before, n);
    const double n2_after = after != nullptr ? sum_sq(after, n) : 0.0;
    const double l2 = std::sqrt(sum_sq_diff(after, before, n));
    // sqrt(n2 * n2) is n2 exactly, so equal gradients give a cosine of exactly 1.
    const double cosine = n2 > 0 && n2_after > 0 ? dot / std::sqrt(n2 * n2_after) : NAN;
    const double norm = std::sqrt(n2), norm_after = std::sqrt(n2_after);
    ics.push_back({step, static_cast<int64_t>(layer), q.name, norm, norm_after, l2, cosine});
  }
  for (Param& q : params_) q.p.copy_(q.w1);
  restore_step_state();
  for (SmoothnessRow& r : pending_) {
    r.step = step;
    smoothness.push_back(r);
  }
  row_.step = step;
  summary.push_back(row_);
}

void append_probe_values(const Tensor& x, int64_t unit, std::vector<float>& out) {
  const int64_t N = x.size(0);
  const int64_t C = x.size(1);
  unit = std::min(unit, C - 1);
  const int64_t plane = x.numel() / (N * C);
  const int64_t centre = x.dim() == 4 ? (x.size(2) / 2) * x.size(3) + x.size(3) / 2 : 0;
  for (int64_t n = 0; n < N; ++n) out.push_back(x.data()[(n * C + unit) * plane + centre]);
}

// ---- CSV files ----

namespace {

using detail::read_csv_rows;

std::ostringstream csv_stream(const char* header) {
  std::ostringstream os;
  os.precision(9);
  os << header << "\n";
  return os;
}

}  // namespace

std::string format_ics_csv(const std::vector<IcsRow>& rows) {
  std::ostringstream os = csv_stream("step,layer,param,grad_norm,grad_norm_after,l2_diff,cosine");
  for (const IcsRow& r : rows)
    os << r.step << "," << r.layer << "," << r.param << "," << r.grad_norm << ","
       << r.grad_norm_after << "," << r.l2_diff << "," << r.cosine << "\n";
  return os.str();
}

std::string format_smoothness_csv(const std::vector<SmoothnessRow>& rows) {
  std::ostringstream os = csv_stream("step,eta,eta_mult,loss,grad_diff_l2");
  for (const SmoothnessRow& r : rows)
    os << r.step << "," << r.eta << "," << r.eta_mult << "," << r.loss << "," << r.grad_diff_l2
       << "\n";
  return os.str();
}

std::string format_mechanism_csv(const std::vector<MechanismRow>& rows) {
  std::ostringstream os = csv_stream(
      "step,loss,grad_norm,loss_min,loss_max,grad_diff_min,grad_diff_max,beta_smoothness,"
      "probe_p15,probe_p50,probe_p85,probe_mean,probe_std");
  for (const MechanismRow& r : rows)
    os << r.step << "," << r.loss << "," << r.grad_norm << "," << r.loss_min << "," << r.loss_max
       << "," << r.grad_diff_min << "," << r.grad_diff_max << "," << r.beta_smoothness << ","
       << r.probe_p15 << "," << r.probe_p50 << "," << r.probe_p85 << "," << r.probe_mean << ","
       << r.probe_std << "\n";
  return os.str();
}

std::vector<IcsRow> read_ics_csv(const std::string& path) {
  return read_csv_rows<IcsRow>(path, 7, [](const std::vector<std::string>& c) {
    return IcsRow{std::stoll(c[0]), std::stoll(c[1]), c[2],           std::stod(c[3]),
                  std::stod(c[4]),  std::stod(c[5]),  std::stod(c[6])};
  });
}

std::vector<SmoothnessRow> read_smoothness_csv(const std::string& path) {
  return read_csv_rows<SmoothnessRow>(path, 5, [](const std::vector<std::string>& c) {
    return SmoothnessRow{std::stoll(c[0]), std::stod(c[1]), std::stod(c[2]), std::stod(c[3]),
                         std::stod(c[4])};
  });
}

std::vector<MechanismRow> read_mechanism_csv(const std::string& path) {
  return read_csv_rows<MechanismRow>(path, 13, [](const std::vector<std::string>& c) {
    MechanismRow r;
    r.step = std::stoll(c[0]);
    double* fields[] = {&r.loss,          &r.grad_norm,     &r.loss_min,        &r.loss_max,
                        &r.grad_diff_min, &r.grad_diff_max, &r.beta_smoothness, &r.probe_p15,
                        &r.probe_p50,     &r.probe_p85,     &r.probe_mean,      &r.probe_std};
    for (size_t i = 0; i < 12; ++i) *fields[i] = std::stod(c[i + 1]);
    return r;
  });
}

// ---- plots ----

void plot_mechanism(const std::string& dir, const std::vector<IcsRow>& ics,
                    const std::vector<MechanismRow>& summary, std::vector<PlotResult>& plots) {
  if (summary.empty()) return;
  // ics.png: one line per weight, input (dark) to output (light), as grad_norms.png.
  std::vector<std::string> params;
  for (const IcsRow& r : ics)
    if (std::find(params.begin(), params.end(), r.param) == params.end()) params.push_back(r.param);
  if (!params.empty()) {
    std::ostringstream dat;
    for (const std::string& p : params) {
      dat << "# " << p << ": step l2_diff cosine\n";
      for (const IcsRow& r : ics)
        if (r.param == p) dat << r.step << " " << r.l2_diff << " " << r.cosine << "\n";
      dat << "\n\n";
    }
    write_file_atomic((fs::path(dir) / "ics.dat").string(), dat.str());
    std::ostringstream lines[2];
    for (int col = 0; col < 2; ++col) {
      for (size_t i = 0; i < params.size(); ++i) {
        double frac =
            params.size() > 1 ? static_cast<double>(i) / static_cast<double>(params.size() - 1) : 0;
        lines[col] << "  'ics.dat' index " << i << " using 1:" << col + 2
                   << " with linespoints lw 2 pt 7 ps 0.5 lc palette frac " << frac << " title "
                   << gnuplot_quote(params[i]) << (i + 1 < params.size() ? ", \\\n" : "\n");
      }
    }
    std::ostringstream gp;
    gp << "set grid\nset xlabel 'training steps'\nset key outside right top noenhanced\n"
          "unset colorbox\nset palette defined (0 '#08306b', 1 '#6baed6', 2 '#fdae6b')\n"
          "set multiplot layout 1,2 title 'internal covariate shift (Santurkar et al. 2018, "
          "Def. 2.1): gradient before vs after the earlier layers update'\n"
          "set logscale y\nset title '||G - G''||  (l2)'\nplot \\\n"
       << lines[0].str() << "unset logscale y\nset yrange [*:1]\nset title 'cos(G, G'')'\nplot \\\n"
       << lines[1].str() << "unset multiplot\n";
    plots.push_back(render_gnuplot((fs::path(dir) / "ics.gp").string(), gp.str(),
                                   (fs::path(dir) / "ics.png").string(), 1400, 500));
  }
  std::ostringstream gp;
  gp << "set termoption noenhanced\nset datafile separator ','\nset key autotitle columnhead\n"
        "set grid\n"
        "set xlabel 'training steps'\nset style fill transparent solid 0.3 noborder\n"
        "set multiplot layout 1,3 title 'loss landscape along the gradient (Santurkar et al. "
        "2018, Fig. 4)'\n"
        "set title 'loss range over the step sizes'\n"
        "plot 'mechanism.csv' using 1:4:5 with filledcurves lc rgb '#3182bd' title 'range', "
        "'' using 1:2 with lines lw 2 lc rgb '#08306b' title 'step loss'\n"
        "set title 'gradient change ||g_eta - g|| (l2)'\n"
        "plot 'mechanism.csv' using 1:6:7 with filledcurves lc rgb '#e6550d' title 'range'\n"
        "set title 'effective beta-smoothness'\n"
        "plot 'mechanism.csv' using 1:8 with linespoints lw 2 pt 7 ps 0.5 lc rgb '#31a354' "
        "title 'max ||g_eta - g|| / ||eta g||'\n"
        "unset multiplot\n";
  plots.push_back(render_gnuplot((fs::path(dir) / "smoothness.gp").string(), gp.str(),
                                 (fs::path(dir) / "smoothness.png").string(), 1500, 450));
}

}  // namespace bnlab

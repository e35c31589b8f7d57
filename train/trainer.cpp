// The training loop. One step: batch -> forward (records the tape) -> cross_entropy -> backward ->
// optional clipping -> optimizer.step() -> zero_grad. Evaluation points write a metrics row, and
// (with an output directory) metrics.csv and a checkpoint, so an interrupted run resumes from its
// last evaluation and reproduces the uninterrupted run bit for bit: the data order is a function of
// (seed, epoch), the dropout generator's state is saved, and the optimizer state and BN buffers are
// in the checkpoint.
#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_set>

#include "core/autograd.h"
#include "core/blas.h"
#include "core/frozen_weights.h"
#include "core/io.h"
#include "core/ops.h"
#include "core/serialize.h"
#include "core/version.h"
#include "data/data_loader.h"
#include "data/datasets.h"
#include "optim/optim.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/interrupt.h"
#include "train/knobs.h"
#include "train/mechanism.h"
#include "train/nonfinite_guard.h"
#include "train/plot.h"
#include "train/progress.h"
#include "train/report_text.h"
#include "train/run_dir.h"

namespace bnlab {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The learning rate and weight decay travel in the parameter groups only (the options' lr and
// weight_decay are unused when groups are given; optim/optimizer.h): the options carry the rest.
std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& cfg, Module& model) {
  std::vector<ParamGroup> groups;
  if (cfg.decay_norm_and_bias || cfg.weight_decay == 0.0f) {
    groups.push_back({model.parameters(), cfg.lr, cfg.weight_decay});
  } else {
    groups = split_weight_decay(model.named_parameters(), cfg.lr, cfg.weight_decay);
  }
  if (cfg.optimizer == "sgd") {
    return std::make_unique<Sgd>(std::move(groups),
                                 SgdOptions{.momentum = cfg.momentum, .nesterov = cfg.nesterov});
  }
  if (cfg.optimizer == "adam") return std::make_unique<Adam>(std::move(groups));
  if (cfg.optimizer == "adamw") return std::make_unique<AdamW>(std::move(groups));
  if (cfg.optimizer == "rmsprop")
    return std::make_unique<Rmsprop>(std::move(groups), RmspropOptions{.momentum = cfg.momentum});
  BNLAB_FAIL("train: unknown optimizer '", cfg.optimizer,
             "'; expected sgd, adam, adamw or rmsprop");
}

std::string eval_split_for(const std::string& dataset) {
  // The CIFAR-10 copy on our machines has no full test batch: validate on batch 5 (see
  // data/datasets.h).
  return dataset == "cifar10" ? "val" : "test";
}

void write_summary(const std::string& dir, const TrainConfig& cfg, const TrainResult& r) {
  json j;
  j["model"] = cfg.model.name;
  j["norm"] = cfg.model.norm;
  j["dataset"] = cfg.dataset;
  j["eval_split"] = r.eval_split;
  j["steps"] = r.steps_done;
  j["diverged"] = r.diverged;
  j["diverged_step"] = r.diverged_step;
  j["on_nan"] = cfg.on_nan;
  j["nonfinite_steps"] = r.nonfinite_steps;
  j["first_nonfinite_step"] = r.first_nonfinite_step;
  j["train_seconds"] = r.seconds;
  j["images_per_second"] = r.images_per_second;
  j["ranks"] = r.ranks;
  j["allreduce_seconds"] = r.allreduce_seconds;
  if (cfg.mechanism_every > 0)  // --mechanism-every: its cost (this process), outside train_seconds
    j["mechanism_seconds"] = r.mechanism_seconds;
  // Keys named by the split they measured: final_val_acc is never called a test accuracy.
  const std::string kind = split_kind(r.eval_split);
  if (!r.rows.empty()) {
    const MetricsRow& last = r.rows.back();
    j["final_" + kind + "_acc"] = last.eval_acc;
    j["final_" + kind + "_loss"] = last.eval_loss;
    j["final_train_loss"] = last.train_loss;
    j["best_" + kind + "_acc"] = r.best_eval_acc;
    j["best_step"] = r.best_step;
  }
  if (!std::isnan(r.test_acc)) {  // a validation run's test split, measured once at the end
    j["final_test_acc"] = r.test_acc;
    j["final_test_loss"] = r.test_loss;
  }
  if (!std::isnan(r.best_test_acc)) j["best_model_test_acc"] = r.best_test_acc;
  if (!std::isnan(r.train_eval_acc)) {  // --eval-train: the training images, in eval mode
    j["final_train_acc_eval_mode"] = r.train_eval_acc;
    j["final_train_loss_eval_mode"] = r.train_eval_loss;
  }
  j["collapsed"] = r.collapsed;
  j["collapse_reason"] = r.collapse_reason;
  j["chance_acc"] = r.chance_acc;
  write_file_atomic((fs::path(dir) / "summary.json").string(), j.dump(2) + "\n");
}

}  // namespace

TrainResult load_finished_run(const std::string& dir) {
  TrainResult r;
  const std::string metrics_path = (fs::path(dir) / "metrics.csv").string();
  r.rows = read_metrics_csv(metrics_path);
  std::string path = (fs::path(dir) / "summary.json").string();
  try {
    auto j = json::parse(read_file(path));
    r.diverged = j.at("diverged");
    r.diverged_step = j.at("diverged_step");
    r.steps_done = j.at("steps");
    r.seconds = j.at("train_seconds");
    r.images_per_second = j.at("images_per_second");
    r.eval_split = j.at("eval_split");
    // Absent from older summaries, or from some runs (no rows, no test split): NaN / defaults.
    const std::string kind = split_kind(r.eval_split);
    auto number = [&](const std::string& key) {
      return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
    };
    r.ranks = j.value("ranks", 1);
    r.nonfinite_steps = j.value("nonfinite_steps", int64_t{0});
    r.first_nonfinite_step = j.value("first_nonfinite_step", int64_t{-1});
    r.best_step = j.value("best_step", int64_t{-1});
    r.best_eval_acc = number("best_" + kind + "_acc");
    r.chance_acc = number("chance_acc");
    // Evaluating on test, final_test_acc is that evaluation's last figure ("final_" + kind), not
    // a separate split measured once: only a run that validated has one.
    if (kind == "val") {
      r.test_acc = number("final_test_acc");
      r.test_loss = number("final_test_loss");
    }
    r.best_test_acc = number("best_model_test_acc");
    r.train_eval_acc = number("final_train_acc_eval_mode");
    r.train_eval_loss = number("final_train_loss_eval_mode");
    r.collapsed = j.value("collapsed", false);
    r.collapse_reason = j.value("collapse_reason", std::string());
    // summary.json repeats metrics.csv's last row, written just before it. A metrics.csv that
    // disagrees (emptied or cut short by hand, or copied from another run) would hand a sweep
    // that reuses the run curves and steps-to-threshold that are not the run's, so refuse it.
    const std::string final_key = "final_" + kind + "_acc";
    if (j.contains(final_key)) {
      BNLAB_CHECK(!r.rows.empty(), metrics_path, " has no rows, but ", path,
                  " records a finished run; delete ", dir, " to train it again");
      const double recorded = number(final_key), last = r.rows.back().eval_acc;
      // metrics.csv holds 7 significant digits.
      const bool agree = (std::isnan(recorded) && std::isnan(last)) ||
                         std::abs(recorded - last) <= 1e-6 * std::max(1.0, std::abs(recorded));
      BNLAB_CHECK(agree, metrics_path, "'s last row (step ", r.rows.back().step, ") has ", kind,
                  "_acc ", last, " but ", path, " records ", final_key, " ", recorded,
                  ": the files are not from one run; delete ", dir, " to train it again");
    }
  } catch (const json::exception& e) {
    BNLAB_FAIL(path, ": unreadable summary: ", e.what());
  }
  return r;
}

namespace {

// config.json: the settings, plus what produced the run (read back, "provenance" is ignored: it
// is not a setting). The data directory is recorded as resolved, since "" and relative paths mean
// different places from different working directories. The normalization too: a folder's is
// computed from its images, and eval must normalize as training did even if they change. And the
// input geometry and class count the model was built for ("input").
std::string config_with_provenance(const TrainConfig& cfg, const NormalizeOptions& normalize,
                                   const ModelSpec& built) {
  json j = json::parse(config_to_json(cfg));
  j["normalization"] = {{"mean", normalize.mean}, {"std", normalize.std}};
  // What the weights' shapes follow from: eval and resume compare it with their data first.
  j["input"] = {{"channels", built.channels},
                {"height", built.height},
                {"width", built.width},
                {"num_classes", built.num_classes}};
  std::error_code ec;
  fs::path data = fs::absolute(resolve_data_dir(cfg.data_dir), ec);
  j["provenance"] = {
      {"bnlab_version", version()},
      {"git_commit", git_commit()},
      {"data_dir", ec ? resolve_data_dir(cfg.data_dir) : data.lexically_normal().string()}};
  return j.dump(2) + "\n";
}

// A resumed run's length (--steps, --epochs) as config.json's from now on, the rest of the file
// (its provenance too) as it was: an extended run left the shorter length there, so a plain
// `--resume` later asked for that length and was refused ("checkpoint is at step 7, past the
// requested 5 steps").
void record_length(const std::string& dir, const TrainConfig& cfg) {
  const std::string path = (fs::path(dir) / "config.json").string();
  json j = json::parse(read_file(path));
  if (j.value("steps", int64_t{-1}) == cfg.steps && j.value("epochs", int64_t{-1}) == cfg.epochs)
    return;
  j["steps"] = cfg.steps;
  j["epochs"] = cfg.epochs;
  write_file_atomic(path, j.dump(2) + "\n");
}

std::string format_grad_norms_csv(const std::vector<GradNormRow>& rows) {
  std::ostringstream os;
  os.precision(7);
  os << "step,param,grad_norm,weight_norm\n";
  for (const GradNormRow& r : rows)
    os << r.step << "," << r.param << "," << r.grad_norm << "," << r.weight_norm << "\n";
  return os.str();
}

std::vector<GradNormRow> read_grad_norms_csv(const std::string& path) {
  return detail::read_csv_rows<GradNormRow>(path, 4, [](const std::vector<std::string>& c) {
    return GradNormRow{std::stoll(c[0]), c[1], std::stod(c[2]), std::stod(c[3])};
  });
}

// grad_norms.png: each weight's gradient norm over training, log scale, one line per layer from
// the input (dark) to the output (light), so a vanishing gradient shows as a fan.
void plot_grad_norms(const std::string& dir, const std::vector<GradNormRow>& rows,
                     std::vector<PlotResult>& plots) {
  std::vector<std::string> params;
  for (const GradNormRow& r : rows)
    if (std::find(params.begin(), params.end(), r.param) == params.end()) params.push_back(r.param);
  if (params.empty()) return;
  std::ostringstream dat;
  for (const std::string& p : params) {
    dat << "# " << p << "\n";
    for (const GradNormRow& r : rows)
      if (r.param == p && r.step > 0) dat << r.step << " " << r.grad_norm << "\n";
    dat << "\n\n";
  }
  write_file_atomic((fs::path(dir) / "grad_norms.dat").string(), dat.str());
  std::ostringstream gp;
  gp << "set logscale y\nset grid\nset xlabel 'training steps'\nset ylabel 'gradient L2 norm'\n"
        "set key outside right top noenhanced\nunset colorbox\nset title 'weight gradients by "
        "layer (input "
        "first)'\nset palette defined (0 '#08306b', 1 '#6baed6', 2 '#fdae6b')\nplot \\\n";
  for (size_t i = 0; i < params.size(); ++i) {
    double frac =
        params.size() > 1 ? static_cast<double>(i) / static_cast<double>(params.size() - 1) : 0;
    gp << "  'grad_norms.dat' index " << i << " using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc "
       << "palette frac " << frac << " title " << gnuplot_quote(params[i])
       << (i + 1 < params.size() ? ", \\\n" : "\n");
  }
  plots.push_back(render_gnuplot((fs::path(dir) / "grad_norms.gp").string(), gp.str(),
                                 (fs::path(dir) / "grad_norms.png").string(), 1100, 550));
}

// curves.png beside metrics.csv: loss and accuracy, training (running mean since the previous
// evaluation, train mode) and the evaluation split, against steps. Without gnuplot, curves.gp
// stays for later (plot.h).
PlotResult plot_curves(const std::string& dir, const std::string& eval_split) {
  std::ostringstream gp;
  gp << "set datafile separator ','\nset key autotitle columnhead\nset grid\n"
        "set xlabel 'training steps'\nset multiplot layout 1,2\n"
        "set title 'loss'\nset key top right\n"
        "plot 'metrics.csv' using 1:3 with lines lw 2 title 'train', "
        "'metrics.csv' using 1:5 with linespoints lw 2 title "
     << gnuplot_quote(eval_split)
     << "\nset title 'accuracy'\nset key bottom right\nset yrange [*:1]\n"
        "plot 'metrics.csv' using 1:4 with lines lw 2 title 'train', "
        "'metrics.csv' using 1:6 with linespoints lw 2 title "
     << gnuplot_quote(eval_split) << "\nunset multiplot\n";
  return render_gnuplot((fs::path(dir) / "curves.gp").string(), gp.str(),
                        (fs::path(dir) / "curves.png").string(), 1200, 450);
}

}  // namespace

std::string split_kind(const std::string& split) {
  bool val =
      split == "val" || (split.size() > 4 && split.compare(split.size() - 4, 4, "-val") == 0);
  return val ? "val" : "test";
}

std::string collapse_reason(const std::vector<MetricsRow>& rows, double chance, int64_t classes,
                            double after, double margin) {
  const double loss_bound = 10.0 * std::log(static_cast<double>(std::max<int64_t>(classes, 2)));
  char buf[200];
  for (const MetricsRow& r : rows) {
    if (std::isfinite(r.train_loss) && r.train_loss > loss_bound) {
      std::snprintf(buf, sizeof buf, "training loss %.4g exceeded %.3g (10 ln %ld) at step %ld",
                    r.train_loss, loss_bound, static_cast<long>(classes),
                    static_cast<long>(r.step));
      return buf;
    }
  }
  if (rows.size() < 2 || std::isnan(chance)) return "";
  const double from = after * static_cast<double>(rows.back().step);
  int64_t first = -1;
  for (const MetricsRow& r : rows) {
    if (r.step == 0 || static_cast<double>(r.step) < from) continue;
    if (!(r.eval_acc <= chance + margin)) return "";
    if (first < 0) first = r.step;
  }
  if (first < 0) return "";
  std::snprintf(buf, sizeof buf, "accuracy within %.3g of chance (%.4f) from step %ld on", margin,
                chance, static_cast<long>(first));
  return buf;
}

std::string metrics_csv_header(const std::string& eval_kind) {
  return "step,epoch,train_loss,train_acc," + eval_kind + "_loss," + eval_kind +
         "_acc,lr,elapsed_s,probe_p15,probe_p50,probe_p85";
}

std::string metrics_csv_cells(const MetricsRow& r) {
  std::ostringstream os;
  os.precision(7);
  os << r.step << "," << r.epoch << "," << r.train_loss << "," << r.train_acc << "," << r.eval_loss
     << "," << r.eval_acc << "," << r.lr << "," << r.elapsed << "," << r.p15 << "," << r.p50 << ","
     << r.p85;
  return os.str();
}

std::string format_metrics_csv(const std::vector<MetricsRow>& rows, const std::string& eval_kind) {
  std::string text = metrics_csv_header(eval_kind) + "\n";
  for (const MetricsRow& r : rows) text += metrics_csv_cells(r) + "\n";
  return text;
}

std::vector<MetricsRow> read_metrics_csv(const std::string& path) {
  std::string text = read_file(path);
  std::vector<MetricsRow> rows;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<double> v;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) {
      try {
        v.push_back(cell == "nan" || cell == "-nan" ? NAN : std::stod(cell));
      } catch (const std::exception&) {
        BNLAB_FAIL(path, ": cannot read '", cell, "' in line '", line, "'");
      }
    }
    BNLAB_CHECK(v.size() == 11, path, ": expected 11 columns in line '", line, "'");
    rows.push_back(
        {static_cast<int64_t>(v[0]), v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]});
  }
  return rows;
}

double percentile(std::vector<float> values, double q) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  double pos = q / 100.0 * static_cast<double>(values.size() - 1);
  auto lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, values.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return values[lo] + frac * (values[hi] - values[lo]);
}

namespace {

std::string geometry_text(int64_t channels, int64_t height, int64_t width) {
  return std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width);
}

// The input geometry and class count `dir`'s run was trained on, as config.json records it
// (config_with_provenance); nullopt for a run written before it did.
std::optional<ModelSpec> recorded_geometry(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const json j = json::parse(read_file(config_path), nullptr, false);
  if (!j.is_object() || !j.contains("input")) return std::nullopt;
  try {
    const json& in = j.at("input");
    ModelSpec g;
    g.channels = in.at("channels").get<int64_t>();
    g.height = in.at("height").get<int64_t>();
    g.width = in.at("width").get<int64_t>();
    g.num_classes = in.at("num_classes").get<int64_t>();
    return g;
  } catch (const json::exception& e) {
    BNLAB_FAIL(config_path, ": key 'input': ", e.what());
  }
}

}  // namespace

std::optional<std::string> recorded_data_dir(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const json j = json::parse(read_file(config_path), nullptr, false);
  if (!j.is_object() || !j.contains("provenance")) return std::nullopt;
  const json& provenance = j.at("provenance");
  if (!provenance.is_object() || !provenance.contains("data_dir")) return std::nullopt;
  if (!provenance.at("data_dir").is_string())
    BNLAB_FAIL(config_path, ": key 'provenance.data_dir' is not a string");
  return provenance.at("data_dir").get<std::string>();
}

void check_run_geometry(const std::string& dir, const ImageDataset& data) {
  const std::optional<ModelSpec> run = recorded_geometry(dir);
  if (!run) return;
  // Compared as the model sees them (with_geometry_of: at least 2 classes).
  const ModelSpec now = with_geometry_of(ModelSpec{}, data);
  if (run->channels == now.channels && run->height == now.height && run->width == now.width &&
      run->num_classes == now.num_classes)
    return;
  BNLAB_FAIL(dir, ": the run was trained on ",
             geometry_text(run->channels, run->height, run->width), " images with ",
             run->num_classes, " classes; this dataset (", data.title(), ") has ",
             geometry_text(data.channels, data.height, data.width), " images, ", data.num_classes(),
             " classes");
}

Model load_trained_model(const std::string& dir, const ImageDataset& like, TrainConfig* cfg_out) {
  std::string config_path = (fs::path(dir) / "config.json").string();
  TrainConfig cfg = config_from_json(read_file(config_path), config_path);
  // Before loading: the weights' size mismatch would name a tensor, not the data that differs.
  check_run_geometry(dir, like);
  ModelSpec spec = with_geometry_of(cfg.model, like);
  Rng rng(cfg.seed);
  Model model = build_model(spec, rng);
  const std::string weights_path = (fs::path(dir) / "model.safetensors").string();
  try {
    model.net->load_state_dict(load_safetensors(weights_path).tensors);
  } catch (const Error& e) {
    std::string m = e.what();  // load_safetensors names the file already; load_state_dict does not
    m = m.find(weights_path) == std::string::npos ? weights_path + ": " + m : m;
    // A run from before config.json recorded its input: the data is the likely difference.
    if (!recorded_geometry(dir) && m.find("size mismatch") != std::string::npos) {
      m += "\n(the model was built for this dataset's " +
           geometry_text(like.channels, like.height, like.width) + " images and " +
           std::to_string(like.num_classes()) + " classes: is it the one the run trained on?)";
    }
    throw Error(m, e.where());
  }
  if (cfg_out) *cfg_out = cfg;
  return model;
}

namespace {

std::string joined_names(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& n : names) text += (text.empty() ? "" : ", ") + n;
  return text;
}

// A folder dataset's splits are separate directories, each deciding its own classes (its
// sub-directories) and image size: a test/ without one class folder would silently shift every
// later label. The model is built for the training split, so every other split must match it.
void check_split_matches_training(const std::string& dataset, const ImageDataset& train,
                                  const ImageDataset& other) {
  const std::string what = "dataset " + dataset + ": the " +
                           (other.split.empty() ? std::string("evaluation") : other.split) +
                           " split's ";
  BNLAB_CHECK(other.channels == train.channels && other.height == train.height &&
                  other.width == train.width,
              what, "images are ", other.channels, "x", other.height, "x", other.width,
              " but the training split's are ", train.channels, "x", train.height, "x", train.width,
              "; every split needs one image size and channel count");
  BNLAB_CHECK(other.class_names == train.class_names, what, "classes (",
              joined_names(other.class_names), ") are not the training split's (",
              joined_names(train.class_names),
              "), so its labels would mean other classes; give every split the same class "
              "folders");
}

bool is_folder_dataset(const std::string& dataset) { return dataset.rfind("folder:", 0) == 0; }

// How training carves the whole training split: --val-split holds images out, then --train-subset
// keeps some of the rest. Both fixed (their own seeds), the same for every run, seed and arm, so
// matched runs validate on the same images and overfit the same ones.
TrainValSplit hold_out_validation(const ImageDataset& train, int64_t val_split) {
  BNLAB_CHECK(val_split < train.size(), "--val-split ", val_split, " leaves no training images of ",
              train.title(), "'s ", train.size());
  constexpr uint64_t kValSplitSeed = 0x5eedu;
  return split_train_val(train, val_split, kValSplitSeed);
}

void keep_train_subset(ImageDataset& train, int64_t train_subset) {
  if (train_subset > 0 && train_subset < train.size()) {
    constexpr uint64_t kSubsetSeed = 0x5b5e7u;
    std::string split = train.split;
    train = split_train_val(train, train_subset, kSubsetSeed).val;
    train.split = split;
  } else {
    BNLAB_CHECK(train_subset <= train.size(), "--train-subset ", train_subset, ": ", train.title(),
                " has only ", train.size(), " training images");
  }
}

}  // namespace

RunData load_run_data(const std::string& dataset, const std::string& data_dir, int64_t val_split,
                      int64_t train_subset) {
  const DataDir dir = find_data_dir(data_dir);
  RunData data;
  if (val_split <= 0) {
    data = {load_dataset(dataset, "train", dir),
            load_dataset(dataset, eval_split_for(dataset), dir), std::nullopt};
  } else {
    BNLAB_CHECK(eval_split_for(dataset) == "test", "--val-split: ", dataset,
                " validates on its own split already (", eval_split_for(dataset), ")");
    TrainValSplit parts = hold_out_validation(load_dataset(dataset, "train", dir), val_split);
    data = {std::move(parts.train), std::move(parts.val), load_dataset(dataset, "test", dir)};
  }
  if (is_folder_dataset(dataset)) {
    check_split_matches_training(dataset, data.train, data.eval);
    if (data.test) check_split_matches_training(dataset, data.train, *data.test);
  }
  keep_train_subset(data.train, train_subset);
  return data;
}

RunData load_run_data(const TrainConfig& cfg) {
  return load_run_data(cfg.dataset, cfg.data_dir, cfg.val_split, cfg.train_subset);
}

ImageDataset load_run_split(const TrainConfig& cfg, const std::string& split,
                            std::optional<ImageDataset>* run_train) {
  if (split == "train" && (cfg.val_split > 0 || cfg.train_subset > 0))
    return load_run_data(cfg).train;
  if (split == "val" && cfg.val_split > 0) {
    RunData run = load_run_data(cfg);
    if (run_train) *run_train = std::move(run.train);
    return std::move(run.eval);
  }
  const DataDir dir = find_data_dir(cfg.data_dir);
  ImageDataset data = load_dataset(cfg.dataset, split, dir);
  if (is_folder_dataset(cfg.dataset) && split != "train") {
    ImageDataset train = load_dataset(cfg.dataset, "train", dir);
    check_split_matches_training(cfg.dataset, train, data);
    if (run_train) {
      // Carved as load_run_data carves it, from the split just loaded rather than a second load.
      if (cfg.val_split > 0) train = std::move(hold_out_validation(train, cfg.val_split).train);
      keep_train_subset(train, cfg.train_subset);
      *run_train = std::move(train);
    }
  }
  return data;
}

NormalizeOptions run_normalization(const std::string& dir, const TrainConfig& cfg,
                                   const ImageDataset* run_train) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const json j = json::parse(read_file(config_path), nullptr, false);
  if (j.is_object() && j.contains("normalization")) {
    NormalizeOptions recorded;
    try {
      const json& n = j.at("normalization");
      recorded = {n.at("mean").get<std::vector<float>>(), n.at("std").get<std::vector<float>>()};
    } catch (const json::exception& e) {
      BNLAB_FAIL(config_path, ": key 'normalization': ", e.what());
    }
    // Checked here, against the channels the run was built for, so that a value edited into the
    // file is reported as the file's and not later as the normalization's alone.
    const std::optional<ModelSpec> built = recorded_geometry(dir);
    try {
      make_pixel_affine(recorded,
                        built ? built->channels : static_cast<int64_t>(recorded.mean.size()));
    } catch (const Error& e) {
      BNLAB_FAIL(config_path, ": key 'normalization': ", e.what());
    }
    return recorded;
  }
  // Written before config.json recorded it: the published constants need no data.
  if (std::optional<NormalizeOptions> known = find_standard_normalization(cfg.dataset))
    return *known;
  return training_normalization(cfg.dataset, run_train ? *run_train : load_run_data(cfg).train);
}

namespace {

// Each module's own train/eval mode, parents before their children. A model may mix modes
// (BatchNorm layers frozen in eval mode in a model that trains); Module::train() recurses, so
// setting them back in this order leaves every module as it was.
void collect_modes(Module& m, std::vector<std::pair<Module*, bool>>& modes) {
  modes.emplace_back(&m, m.is_training());
  for (const auto& [name, child] : m.children()) collect_modes(*child, modes);
}

// NormStatistics::kBatch, on a model in eval mode: every BatchNorm (batch-renorm and noisy ones
// too) on the batch's own statistics as plain batch norm, without renorm's r and d and without
// noise, both training-only like dropout, and without touching its running statistics
// (BatchNorm::set_eval_batch_statistics); InstanceNorm in training mode, on each image's own. Every
// other module stays in eval mode: no dropout, nor any other layer's training-only behaviour.
// Appends the BatchNorm layers it switched, to switch them back.
void use_batch_statistics(Module& m, std::vector<BatchNorm*>& switched) {
  if (auto* bn = dynamic_cast<BatchNorm*>(&m)) {
    if (!bn->eval_batch_statistics()) {
      bn->set_eval_batch_statistics(true);
      switched.push_back(bn);
    }
  } else if (dynamic_cast<InstanceNorm*>(&m) != nullptr) {
    m.train(true);
  }
  for (const auto& [name, child] : m.children()) use_batch_statistics(*child, switched);
}

}  // namespace

EvalResult evaluate(Model& model, const ImageDataset& data, const std::string& dataset_name,
                    int64_t batch_size, int64_t probe_unit, NormStatistics statistics) {
  return evaluate(model, data, standard_normalization(dataset_name), batch_size, probe_unit,
                  statistics);
}

EvalResult evaluate(Model& model, const ImageDataset& data, const NormalizeOptions& normalize,
                    int64_t batch_size, int64_t probe_unit, NormStatistics statistics) {
  EvalResult result;
  // Made first: a loader that refuses its options leaves the model untouched.
  DataLoaderOptions opts;
  opts.batch_size = batch_size;
  opts.shuffle = false;
  opts.normalize = normalize;
  opts.prefetch = false;
  DataLoader loader(data, opts);
  loader.start_epoch(0);
  std::vector<std::pair<Module*, bool>> modes;
  collect_modes(*model.net, modes);
  model.net->eval();
  std::vector<std::pair<Tensor, Tensor>> saved_buffers;
  std::vector<BatchNorm*> switched;
  if (statistics == NormStatistics::kBatch) {
    // A training-mode InstanceNorm that tracks running statistics updates them: keep copies to
    // put back. (BatchNorm on eval batch statistics leaves its own alone.)
    for (const auto& [name, buffer] : model.net->named_buffers())
      saved_buffers.emplace_back(buffer, buffer.clone());
    use_batch_statistics(*model.net, switched);
  }
  auto restore = [&] {
    for (const auto& [buffer, copy] : saved_buffers) buffer.copy_(copy);
    for (BatchNorm* bn : switched) bn->set_eval_batch_statistics(false);
    for (const auto& [module, training] : modes) module->train(training);
  };
  NoGradGuard no_grad;
  // The weights do not change during an evaluation: linear() packs each once, not per batch.
  FrozenWeightsGuard frozen;
  // Removed by its handle afterwards: the user's hooks on the probe stay.
  ForwardHookHandle probe_hook;
  if (model.probe && probe_unit >= 0) {
    probe_hook =
        model.probe->register_forward_hook([&](const Module&, const Tensor& x, const Tensor&) {
          append_probe_values(x, probe_unit, result.probe_values);
        });
  }
  Batch batch;
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  try {
    while (loader.next(batch)) {
      // kBatch: a last batch of one image has no batch statistics (BatchNorm1d refuses it, after
      // every other batch was evaluated), so it joins the batch before it.
      Batch last;
      if (statistics == NormStatistics::kBatch && seen + batch.size() + 1 == data.size() &&
          loader.next(last)) {
        batch.images = cat({batch.images, last.images}, 0);
        batch.labels.insert(batch.labels.end(), last.labels.begin(), last.labels.end());
      }
      Tensor logits = (*model.net)(batch.images);
      loss_sum += static_cast<double>(cross_entropy(logits, batch.labels).item()) *
                  static_cast<double>(batch.size());
      std::vector<int64_t> pred = argmax(logits, 1);
      for (int64_t i = 0; i < batch.size(); ++i) {
        correct += pred[static_cast<size_t>(i)] == batch.labels[static_cast<size_t>(i)];
        result.predictions.push_back(pred[static_cast<size_t>(i)]);
      }
      seen += batch.size();
    }
  } catch (...) {
    probe_hook.remove();
    restore();
    throw;
  }
  probe_hook.remove();
  restore();
  result.loss = seen ? loss_sum / static_cast<double>(seen) : NAN;
  result.accuracy = seen ? static_cast<double>(correct) / static_cast<double>(seen) : NAN;
  return result;
}

// The counters of one fit(). Running train loss/accuracy since the last evaluation: a checkpoint
// taken between evaluations (on SIGINT) carries them, so the resumed run's next metrics row is the
// uninterrupted one.
struct Trainer::Running {
  int64_t step = 0;
  int64_t epoch = 0;
  double elapsed_before = 0;  // training seconds of the runs this one resumes
  double train_seconds = 0;   // this process's
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  int64_t images_since_start = 0;
  int64_t saved_step = -1;       // the step of the newest checkpoint on disk
  bool finished_before = false;  // resumed a run already finished at the requested steps
  double best_acc = -INFINITY;   // the best evaluation so far (track_best)
  int64_t evals_since_best = 0;
  std::unique_ptr<NonFiniteGuard> guard;
  std::unique_ptr<Progress> progress;
  RunDirLock lock;  // one process per run directory (train/run_dir.h)
};

Trainer::Trainer(TrainConfig cfg, const RunData& data) : cfg_(std::move(cfg)), data_(data) {
  BNLAB_CHECK(cfg_.batch_size > 0, "train: batch size must be positive; got ", cfg_.batch_size);
  BNLAB_CHECK(std::isfinite(cfg_.lr) && cfg_.lr > 0.0f,
              "train: learning rate must be a positive number; got ", cfg_.lr);
  BNLAB_CHECK(cfg_.steps > 0 || cfg_.epochs > 0, "train: need --steps or --epochs > 0");
  BNLAB_CHECK(data.train.size() >= cfg_.batch_size, "train: batch size ", cfg_.batch_size,
              " exceeds the ", data.train.size(), " training images of ", data.train.title());
  BNLAB_CHECK(cfg_.train_subset == 0 || data.train.size() <= cfg_.train_subset,
              "train: --train-subset ", cfg_.train_subset, " but the RunData holds ",
              data.train.size(), " training images; load it with load_run_data(cfg)");
  set_num_threads(cfg_.threads);

  ModelSpec spec = with_geometry_of(cfg_.model, data.train);
  // The model is built for the training split. An evaluation (or test) split of another image size
  // or class count used to fail at the first evaluation, inside fit(), with a layer's or
  // cross_entropy's message naming neither split; check_run_geometry does the same for eval.
  // Compared as the model sees them (with_geometry_of: at least 2 classes). An empty split is never
  // fed to the model.
  auto check_split = [&](const ImageDataset& other, const char* role) {
    const ModelSpec g = with_geometry_of(ModelSpec{}, other);
    BNLAB_CHECK(other.size() == 0 || (g.channels == spec.channels && g.height == spec.height &&
                                      g.width == spec.width && g.num_classes == spec.num_classes),
                "train: the ", role, " split (", other.title(), ") has ",
                geometry_text(other.channels, other.height, other.width), " images and ",
                other.num_classes(), " classes, but the model is built for the training split (",
                data.train.title(),
                "): ", geometry_text(data.train.channels, data.train.height, data.train.width),
                " images and ", data.train.num_classes(), " classes");
  };
  check_split(data.eval, "evaluation");
  if (data.test) check_split(*data.test, "test");
  BNLAB_CHECK(cfg_.early_stop == 0 || split_kind(data.eval.split) == "val",
              "--early-stop selects on validation data, and ", data.eval.title(),
              " is a test split: add --val-split N");
  Rng init_rng(cfg_.seed);
  model_ = build_model(spec, init_rng);
  BNLAB_CHECK(
      cfg_.probe_unit < 0 || model_.probe == nullptr || cfg_.probe_unit < model_.probe_width,
      "--probe-unit must be -1 (off) or a unit from 0 to ", model_.probe_width - 1, " of ",
      spec.name, "'s probe layer, got ", cfg_.probe_unit);
  // mpirun -np P: train/data_parallel.h; a no-op in one process.
  dp_ = std::make_unique<DataParallel>(model_, cfg_.seed, cfg_.sync_bn);
  BNLAB_CHECK(data.train.size() >= cfg_.batch_size * dp_->size(), "train: ", dp_->size(),
              " ranks of batch size ", cfg_.batch_size, " need more than the ", data.train.size(),
              " training images of ", data.train.title());
  optimizer_ = make_optimizer(cfg_, *model_.net);
  base_lrs_.assign(optimizer_->param_groups().size(), cfg_.lr);
  if (cfg_.mechanism_every > 0) {
    // The measurement replays the step on this process's batch; the gradients it compares would
    // be one rank's, not the averaged ones the update used.
    BNLAB_CHECK(dp_->size() == 1, "--mechanism-every measures in one process only; this run has ",
                dp_->size(), " ranks (mpirun -np)");
    for (float m : cfg_.mechanism_etas)
      BNLAB_CHECK(std::isfinite(m) && m > 0.0f,
                  "--mechanism-etas: every step-size multiple must be > 0; got ", m);
    BNLAB_CHECK(!cfg_.mechanism_etas.empty(), "--mechanism-etas: give at least one step size");
    mechanism_ = std::make_unique<MechanismMeter>(model_, cfg_.mechanism_etas, cfg_.label_smoothing,
                                                  cfg_.probe_unit);
  }

  // drop_last: a ragged final batch (possibly of 1) would give BatchNorm a different, noisier
  // batch.
  DataLoaderOptions lopts;
  lopts.batch_size = cfg_.batch_size;
  lopts.shuffle = true;
  lopts.drop_last = true;
  lopts.seed = cfg_.seed;
  lopts.shards = dp_->size();  // this rank's slice of each global batch of size() * batch_size
  lopts.shard = dp_->rank();
  normalize_ = training_normalization(cfg_.dataset, data.train);
  lopts.normalize = normalize_;
  if (cfg_.augment) lopts.augment = AugmentOptions{.crop_padding = 4, .horizontal_flip = true};
  loader_ = std::make_unique<DataLoader>(data.train, lopts);
  per_epoch_ = loader_->batches_per_epoch();
  total_ = cfg_.steps > 0 ? cfg_.steps : cfg_.epochs * per_epoch_;
  eval_every_ = cfg_.eval_every > 0 ? cfg_.eval_every : per_epoch_;
  // With --epochs the run's length is known only now; check_config checked a --steps run already.
  check_schedule_fits(cfg_, total_);
  schedule_ = parse_schedule(cfg_.schedule, total_);
}

Trainer::~Trainer() = default;

void Trainer::set_optimizer(std::unique_ptr<Optimizer> optimizer) {
  BNLAB_CHECK(!fitted_, "Trainer::set_optimizer: call it before fit()");
  BNLAB_CHECK(optimizer != nullptr, "Trainer::set_optimizer: no optimizer given");
  // An optimizer over another model's tensors would step them and leave this model untouched.
  std::unordered_set<const void*> own;
  for (const Tensor& t : model_.net->parameters()) own.insert(t.impl().get());
  const std::vector<ParamGroup>& groups = optimizer->param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t i = 0; i < groups[g].params.size(); ++i) {
      const Tensor& p = groups[g].params[i];
      BNLAB_CHECK(own.count(p.impl().get()), "Trainer::set_optimizer: ", optimizer->name(),
                  "'s parameter ", i, " of group ", g, " ", p.shape(),
                  " is not a parameter of the model being trained (", model_.spec.name,
                  "); build the optimizer from trainer.model().net");
    }
  }
  base_lrs_.clear();
  for (const ParamGroup& group : groups) base_lrs_.push_back(group.lr);
  optimizer_ = std::move(optimizer);
}

void Trainer::set_schedule(std::unique_ptr<LrSchedule> schedule) {
  BNLAB_CHECK(!fitted_, "Trainer::set_schedule: call it before fit()");
  BNLAB_CHECK(schedule != nullptr, "Trainer::set_schedule: no schedule given");
  schedule_ = std::move(schedule);
}

// Takes the run directory: its lock, and either the checkpoint to resume from or a clean slate.
void Trainer::open_run_dir(bool& resume, TrainResult& result, Running& run) {
  const std::string& dir = cfg_.out_dir;
  if (dir.empty()) return;
  if (dp_->is_root()) {
    run.lock = RunDirLock(dir);
    remove_stale_temporaries(dir);  // of killed writes: the lock says no one else is writing
  }
  if (resume && !fs::exists(fs::path(dir) / "train_state.safetensors")) {
    // Killed before its first checkpoint: nothing to continue, so start it over.
    if (!cfg_.quiet && dp_->is_root()) {
      std::printf("notice: %s has no checkpoint yet; starting the run from step 0\n", dir.c_str());
      std::fflush(stdout);
    }
    resume = false;
  }
  if (resume) {
    check_run_geometry(dir, data_.train);
    // The normalization the run trained with, as config.json records it. A folder's is computed
    // from its training images, which may have changed since: the rest of the run would have
    // trained on other statistics than its first part and than eval then uses (config.json's).
    const NormalizeOptions recorded = run_normalization(dir, cfg_, &data_.train);
    if (recorded.mean != normalize_.mean || recorded.std != normalize_.std) {
      normalize_ = recorded;
      DataLoaderOptions lopts = loader_->options();
      lopts.normalize = normalize_;
      loader_ = std::make_unique<DataLoader>(data_.train, lopts);
    }
    CheckpointState resumed = load_checkpoint(dir, model_, *optimizer_);
    run.step = resumed.step;
    run.saved_step = resumed.step;
    run.elapsed_before = resumed.elapsed;
    run.loss_sum = resumed.loss_sum;
    run.correct = resumed.correct;
    run.seen = resumed.seen;
    BNLAB_CHECK(run.step <= total_, "train: checkpoint is at step ", run.step,
                ", past the requested ", total_, " steps");
    if (run.step == total_ && fs::exists(fs::path(dir) / "summary.json")) {
      run.finished_before = true;  // fit() returns its result and leaves the directory alone
      return;
    }
    if (dp_->is_root()) record_length(dir, cfg_);
    std::string metrics_path = (fs::path(dir) / "metrics.csv").string();
    for (const MetricsRow& row : read_metrics_csv(metrics_path))
      if (row.step <= run.step) result.rows.push_back(row);
    for (const MetricsRow& row : result.rows) track_best(row, result, run, /*save=*/false);
    const fs::path grads = fs::path(dir) / "grad_norms.csv";
    if (cfg_.grad_stats && fs::exists(grads))
      for (const GradNormRow& row : read_grad_norms_csv(grads.string()))
        if (row.step <= run.step) result.grad_rows.push_back(row);
    if (cfg_.mechanism_every > 0) {
      const fs::path ics = fs::path(dir) / "ics.csv";
      const fs::path smooth = fs::path(dir) / "smoothness.csv";
      const fs::path mech = fs::path(dir) / "mechanism.csv";
      if (fs::exists(ics))
        for (const IcsRow& row : read_ics_csv(ics.string()))
          if (row.step <= run.step) result.ics_rows.push_back(row);
      if (fs::exists(smooth))
        for (const SmoothnessRow& row : read_smoothness_csv(smooth.string()))
          if (row.step <= run.step) result.smoothness_rows.push_back(row);
      if (fs::exists(mech))
        for (const MechanismRow& row : read_mechanism_csv(mech.string()))
          if (row.step <= run.step) result.mechanism_rows.push_back(row);
    }
  } else if (dp_->is_root()) {
    // A fresh run replaces whatever run the directory held (the CLI asks for --overwrite first),
    // so no older checkpoint can be resumed under this config.
    clear_run(dir);
    write_file_atomic((fs::path(dir) / "config.json").string(),
                      config_with_provenance(cfg_, normalize_, model_.spec));
  }
  // summary.json marks a finished run; from here on this one is not (an extended resume that is
  // interrupted must not leave the shorter run's summary beside its newer checkpoint). Removed
  // only now, once the checkpoint has loaded and fits the requested steps, so that a refused
  // resume leaves a finished run finished.
  if (dp_->is_root()) {
    std::error_code ec;
    fs::remove(fs::path(dir) / "summary.json", ec);
  }
}

void Trainer::evaluate_into(MetricsRow& row, const Running& run) {
  EvalResult ev = evaluate(model_, data_.eval, normalize_, cfg_.eval_batch_size, cfg_.probe_unit);
  row.eval_loss = ev.loss;
  row.eval_acc = ev.accuracy;
  row.lr = optimizer_->lr();
  row.elapsed = run.elapsed_before + run.train_seconds;
  if (!ev.probe_values.empty()) {
    row.p15 = percentile(ev.probe_values, 15);
    row.p50 = percentile(ev.probe_values, 50);
    row.p85 = percentile(ev.probe_values, 85);
  }
}

// One optimizer step on `batch`; false when the non-finite guard stops the run.
bool Trainer::train_step(const Batch& batch, TrainResult& result, Running& run) {
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  apply(*optimizer_, *schedule_, base_lrs_, run.step);
  dp_->reseed_dropout(run.step);  // ranks > 0: a dropout stream per (rank, step): exact resume
  run.guard->before_step();
  // --mechanism-every (train/mechanism.h): measured around the step, which it leaves unchanged.
  const bool measured =
      mechanism_ && ((run.step + 1) % cfg_.mechanism_every == 0 || run.step + 1 == total_);
  double measure_seconds = 0;
  auto measure = [&](auto&& f) {
    auto m0 = clock::now();
    f();
    measure_seconds += std::chrono::duration<double>(clock::now() - m0).count();
  };
  if (measured) measure([&] { mechanism_->before_forward(); });
  Tensor logits = (*model_.net)(batch.images);
  Tensor loss = cross_entropy(logits, batch.labels, cfg_.label_smoothing);
  float loss_value = static_cast<float>(dp_->mean_over_ranks(loss.item()));
  loss.backward();
  dp_->average_gradients();
  const bool evaluation_step = (run.step + 1) % eval_every_ == 0 || run.step + 1 == total_;
  if (cfg_.grad_stats && evaluation_step && dp_->is_root()) record_grad_norms(run.step + 1, result);
  // The non-finite guard (train/nonfinite_guard.h): one check of the loss and the gradients;
  // loss and gradients are averaged over ranks already, so every rank takes the same branch.
  bool apply_update = true;
  const bool nonfinite = run.guard->found(loss_value);
  if (measured) {
    measure([&] {
      if (nonfinite) {
        mechanism_->skip();
      } else {
        mechanism_->after_backward(batch.images, batch.labels, loss_value, optimizer_->lr());
      }
    });
  }
  if (nonfinite) {
    NonFiniteGuard::Verdict v = run.guard->handle(run.step + 1, loss_value, batch.images);
    if (!v.message.empty())
      run.progress->line((cfg_.label.empty() ? "train" : cfg_.label) + ": " + v.message);
    if (v.stop) {
      result.diverged = true;
      result.diverged_step = run.step + 1;
      optimizer_->zero_grad();
      return false;
    }
    apply_update = v.apply_update;  // skip: the step's loss stays out of the running averages
  }
  if (apply_update) {
    if (cfg_.clip_grad_norm > 0.0f) clip_grad_norm(model_.net->parameters(), cfg_.clip_grad_norm);
    optimizer_->step();
  }
  if (measured && !nonfinite) {
    measure([&] {
      mechanism_->after_update(run.step + 1, result.ics_rows, result.smoothness_rows,
                               result.mechanism_rows);
    });
  }
  optimizer_->zero_grad();
  // Measuring is not training: it stays out of elapsed_s and images per second.
  result.mechanism_seconds += measure_seconds;
  run.train_seconds += std::chrono::duration<double>(clock::now() - t0).count() - measure_seconds;
  ++run.step;
  run.images_since_start += batch.size();

  if (apply_update) {
    std::vector<int64_t> pred = argmax(logits, 1);
    for (int64_t i = 0; i < batch.size(); ++i)
      run.correct += pred[static_cast<size_t>(i)] == batch.labels[static_cast<size_t>(i)];
    run.seen += batch.size();
    run.loss_sum += static_cast<double>(loss_value) * static_cast<double>(batch.size());
  }
  if (!cfg_.quiet) {
    run.progress->update(run.step, run.loss_sum / static_cast<double>(run.seen),
                         static_cast<double>(run.correct) / static_cast<double>(run.seen),
                         static_cast<double>(run.images_since_start * dp_->size()) /
                             std::max(run.train_seconds, 1e-9));
  }
  if (hooks.on_step) hooks.on_step(*this, {run.step, loss_value, optimizer_->lr(), batch.size()});
  return true;
}

// An evaluation point: the metrics row, metrics.csv and a checkpoint. False when on_eval ends the
// run.
bool Trainer::end_of_period(TrainResult& result, Running& run) {
  if (dp_->active()) {  // training loss and accuracy over every rank's samples
    double sums[3] = {run.loss_sum, static_cast<double>(run.correct),
                      static_cast<double>(run.seen)};
    dp_->sum_over_ranks(sums, 3);
    run.loss_sum = sums[0];
    run.correct = static_cast<int64_t>(sums[1]);
    run.seen = static_cast<int64_t>(sums[2]);
  }
  MetricsRow row;
  row.step = run.step;
  row.epoch = static_cast<double>(run.step) / static_cast<double>(per_epoch_);
  row.train_loss = run.loss_sum / static_cast<double>(run.seen);
  row.train_acc = static_cast<double>(run.correct) / static_cast<double>(run.seen);
  if (dp_->is_root()) evaluate_into(row, run);
  result.rows.push_back(row);
  run.loss_sum = 0;
  run.correct = run.seen = 0;
  if (!cfg_.quiet) {
    char buf[256];
    std::snprintf(
        buf, sizeof buf,
        "%s step %ld | epoch %.2f | train loss %.4f acc %.4f | %s loss %.4f acc %.4f | lr %.4g",
        cfg_.label.empty() ? "eval" : cfg_.label.c_str(), static_cast<long>(run.step), row.epoch,
        row.train_loss, row.train_acc, data_.eval.split.c_str(), row.eval_loss, row.eval_acc,
        row.lr);
    run.progress->line(buf);
  }
  const std::string& dir = cfg_.out_dir;
  if (!dir.empty() && dp_->is_root()) {
    write_file_atomic((fs::path(dir) / "metrics.csv").string(),
                      format_metrics_csv(result.rows, split_kind(data_.eval.split)));
    write_step_records(result);
    if (cfg_.save_checkpoint) {
      save_checkpoint(dir, model_, *optimizer_, {run.step, run.elapsed_before + run.train_seconds});
      run.saved_step = run.step;
    }
  }
  // Early stopping: rank 0 alone evaluated, so its decision goes to every rank.
  double stop = dp_->is_root() && track_best(row, result, run, /*save=*/true) ? 1.0 : 0.0;
  dp_->sum_over_ranks(&stop, 1);
  // The hook sees this evaluation whether or not --early-stop ends the run at it.
  const bool hook_goes_on = !hooks.on_eval || hooks.on_eval(*this, row);
  if (stop > 0 || !hook_goes_on) {
    result.stopped_early = true;
    return false;
  }
  return true;
}

// Model selection after an evaluation (on rank 0): the best evaluation so far (the first of equal
// ones), saved as best.safetensors when the evaluation split is a validation split (selecting on
// test data would make the test number meaningless). True when --early-stop's patience is used up.
bool Trainer::track_best(const MetricsRow& row, TrainResult& result, Running& run, bool save) {
  const bool validation = split_kind(data_.eval.split) == "val";
  if (row.eval_acc > run.best_acc) {
    run.best_acc = row.eval_acc;
    run.evals_since_best = 0;
    result.best_step = row.step;
    result.best_eval_acc = row.eval_acc;
    if (save && validation && !cfg_.out_dir.empty()) {
      save_safetensors((fs::path(cfg_.out_dir) / "best.safetensors").string(),
                       model_.net->state_dict(),
                       {{"format", "pytorch state_dict"},
                        {"model", model_.spec.name},
                        {"step", std::to_string(row.step)},
                        {"selected_on", data_.eval.title()}});
    }
  } else {
    ++run.evals_since_best;
  }
  return cfg_.early_stop > 0 && run.evals_since_best >= cfg_.early_stop;
}

// A validation run's test split, measured once: the final model, and the selected one.
void Trainer::measure_test(TrainResult& result) {
  if (!data_.test || !dp_->is_root()) return;
  EvalResult final_model = evaluate(model_, *data_.test, normalize_, cfg_.eval_batch_size, -1);
  result.test_loss = final_model.loss;
  result.test_acc = final_model.accuracy;
  const fs::path best = fs::path(cfg_.out_dir) / "best.safetensors";
  if (cfg_.out_dir.empty() || !fs::exists(best)) return;
  Rng rng(cfg_.seed);
  Model selected = build_model(model_.spec, rng);
  selected.net->load_state_dict(load_safetensors(best.string()).tensors);
  result.best_test_acc =
      evaluate(selected, *data_.test, normalize_, cfg_.eval_batch_size, -1).accuracy;
}

// The weights' gradient norms of this step (gradients averaged over ranks, before the update).
// Weights only (dim >= 2): biases and normalization parameters are not what vanishes.
void Trainer::record_grad_norms(int64_t step, TrainResult& result) {
  for (const auto& [name, p] : model_.net->named_parameters()) {
    if (p.dim() < 2) continue;
    double g2 = 0, w2 = 0;
    const float* w = p.data();
    for (int64_t i = 0; i < p.numel(); ++i) w2 += static_cast<double>(w[i]) * w[i];
    if (p.grad().defined()) {
      const float* g = p.grad().data();
      for (int64_t i = 0; i < p.numel(); ++i) g2 += static_cast<double>(g[i]) * g[i];
    }
    result.grad_rows.push_back({step, name, std::sqrt(g2), std::sqrt(w2)});
  }
}

// grad_norms.csv and the mechanism CSVs: all rows so far, rewritten whole at each evaluation (a
// resumed run read back the rows up to its checkpoint).
void Trainer::write_step_records(const TrainResult& result) const {
  const fs::path dir = cfg_.out_dir;
  if (cfg_.grad_stats)
    write_file_atomic((dir / "grad_norms.csv").string(), format_grad_norms_csv(result.grad_rows));
  if (cfg_.mechanism_every > 0) {
    write_file_atomic((dir / "ics.csv").string(), format_ics_csv(result.ics_rows));
    write_file_atomic((dir / "smoothness.csv").string(),
                      format_smoothness_csv(result.smoothness_rows));
    write_file_atomic((dir / "mechanism.csv").string(),
                      format_mechanism_csv(result.mechanism_rows));
  }
}

void Trainer::write_outputs(TrainResult& result) const {
  const std::string& dir = cfg_.out_dir;
  if (dir.empty() || !dp_->is_root()) return;
  write_file_atomic((fs::path(dir) / "metrics.csv").string(),
                    format_metrics_csv(result.rows, split_kind(data_.eval.split)));
  write_step_records(result);
  if (gnuplot_available()) {
    result.plots.push_back(plot_curves(dir, split_kind(result.eval_split)));
    if (cfg_.grad_stats) plot_grad_norms(dir, result.grad_rows, result.plots);
    if (cfg_.mechanism_every > 0)
      plot_mechanism(dir, result.ics_rows, result.mechanism_rows, result.plots);
  }
  // No summary for an interrupted run: summary.json marks a finished one (ablate reuses it).
  if (!result.interrupted_by) write_summary(dir, cfg_, result);
}

TrainResult Trainer::fit(bool resume) {
  BNLAB_CHECK(!fitted_, "Trainer::fit: a Trainer runs once; make a new one for another run");
  fitted_ = true;
  TrainResult result;
  result.eval_split = data_.eval.split;
  Running run;
  open_run_dir(resume, result, run);
  const std::string& dir = cfg_.out_dir;
  if (run.finished_before) {
    // Nothing to train: rewriting its outputs would only lose what this process did not measure
    // (the training speed, the metrics' full precision).
    if (!cfg_.quiet && dp_->is_root()) {
      std::printf(
          "notice: %s finished its %ld steps already; nothing to train, nothing rewritten\n",
          dir.c_str(), static_cast<long>(total_));
      std::fflush(stdout);
    }
    TrainResult finished = load_finished_run(dir);
    finished.finished_before = true;
    return finished;
  }
  run.progress = std::make_unique<Progress>(
      cfg_.label.empty() ? "train" : cfg_.label, total_, cfg_.log_every,
      cfg_.quiet || !dp_->is_root() ? nullptr : stdout, cfg_.plain_progress);
  run.guard = std::make_unique<NonFiniteGuard>(model_, parse_on_nan(cfg_.on_nan));
  run.epoch = run.step / per_epoch_;
  loader_->start_epoch(run.epoch);
  Batch batch;
  for (int64_t skip = run.step % per_epoch_; skip > 0; --skip) loader_->next(batch);  // mid-epoch

  // Row 0 is the untrained model, so curves start where training starts. (A run interrupted at
  // step 0 has its row 0 in metrics.csv already.) Rank 0 alone evaluates and writes; on_eval sees
  // it on every rank, as every evaluation (other ranks: the training columns only), and may end
  // the run before its first step.
  bool stop_at_row0 = false;
  if (run.step == 0 && result.rows.empty()) {
    MetricsRow row;
    row.train_loss = row.train_acc = NAN;
    if (dp_->is_root()) {
      evaluate_into(row, run);
      result.rows.push_back(row);
      track_best(row, result, run, /*save=*/true);
    }
    if (hooks.on_eval && !hooks.on_eval(*this, row)) {
      result.stopped_early = true;
      stop_at_row0 = true;
    }
  }

  while (!stop_at_row0 && run.step < total_) {
    // SIGINT/SIGTERM (train/interrupt.h): stop at this step boundary with a checkpoint.
    bool interrupted = interrupt_requested();
    if (dp_->active()) {  // every rank stops at the same step
      double any = interrupted ? 1.0 : 0.0;
      dp_->sum_over_ranks(&any, 1);
      interrupted = any > 0;
    }
    if (interrupted) {
      // A rank that saw no signal itself (under mpirun) reports SIGINT.
      result.interrupted_by = interrupt_requested() ? interrupt_signal() : SIGINT;
      if (!dir.empty() && cfg_.save_checkpoint && dp_->is_root() && run.step != run.saved_step) {
        save_checkpoint(dir, model_, *optimizer_,
                        {run.step, run.elapsed_before + run.train_seconds, run.loss_sum,
                         run.correct, run.seen});
      }
      break;
    }
    if (!loader_->next(batch)) {
      loader_->start_epoch(++run.epoch);
      continue;
    }
    if (!train_step(batch, result, run)) break;
    if ((run.step % eval_every_ == 0 || run.step == total_) && !end_of_period(result, run)) break;
  }
  run.progress->finish();
  result.steps_done = run.step;
  result.seconds = run.elapsed_before + run.train_seconds;
  result.nonfinite_steps = run.guard->events();
  result.first_nonfinite_step = run.guard->first_step();
  result.images_per_second =
      static_cast<double>(run.images_since_start * dp_->size()) / std::max(run.train_seconds, 1e-9);
  result.ranks = dp_->size();
  result.allreduce_seconds = dp_->allreduce_seconds();
  if (!result.interrupted_by) {
    measure_test(result);
    // The generalization gap's first term: train mode would count dropout's noise and batch
    // statistics as the model's training accuracy.
    if (cfg_.eval_train && dp_->is_root() && !result.diverged) {
      EvalResult on_train = evaluate(model_, data_.train, normalize_, cfg_.eval_batch_size, -1);
      result.train_eval_acc = on_train.accuracy;
      result.train_eval_loss = on_train.loss;
    }
    // Chance: always answering the evaluation split's commonest class.
    std::vector<int64_t> count(static_cast<size_t>(std::max<int64_t>(data_.eval.num_classes(), 1)));
    for (int64_t label : data_.eval.labels)
      if (label >= 0 && label < static_cast<int64_t>(count.size()))
        ++count[static_cast<size_t>(label)];
    if (data_.eval.size() > 0)
      result.chance_acc = static_cast<double>(*std::max_element(count.begin(), count.end())) /
                          static_cast<double>(data_.eval.size());
    if (!result.diverged && dp_->is_root()) {
      result.collapse_reason =
          collapse_reason(result.rows, result.chance_acc, data_.eval.num_classes(),
                          cfg_.collapse_after, cfg_.collapse_margin);
      result.collapsed = !result.collapse_reason.empty();
    }
  }
  write_outputs(result);
  return result;
}

TrainResult train(const TrainConfig& cfg, const RunData& data, bool resume) {
  return Trainer(cfg, data).fit(resume);
}

}  // namespace bnlab

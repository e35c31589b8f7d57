// The training loop. One step: batch -> forward (records the tape) -> cross_entropy -> backward ->
// optional clipping -> optimizer.step() -> zero_grad. Evaluation points write a metrics row, and
// (with an output directory) metrics.csv and a checkpoint, so an interrupted run resumes from its
// last evaluation and reproduces the uninterrupted run bit for bit: the data order is a function of
// (seed, epoch), the dropout generator's state is saved, and the optimizer state and BN buffers are
// in the checkpoint.
#include "apps/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/progress.h"
#include "core/autograd.h"
#include "core/blas.h"
#include "core/io.h"
#include "core/ops.h"
#include "core/serialize.h"
#include "data/data_loader.h"
#include "data/datasets.h"
#include "optim/optim.h"

namespace bnlab::apps {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kStateFormat = "bnlab-train-state-1";

std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& cfg, Module& model) {
  std::vector<ParamGroup> groups;
  if (cfg.decay_norm_and_bias || cfg.weight_decay == 0.0f) {
    groups.push_back({model.parameters(), cfg.lr, cfg.weight_decay});
  } else {
    groups = split_weight_decay(model.named_parameters(), cfg.lr, cfg.weight_decay);
  }
  if (cfg.optimizer == "sgd") {
    return std::make_unique<Sgd>(
        std::move(groups),
        SgdOptions{.lr = cfg.lr, .momentum = cfg.momentum, .nesterov = cfg.nesterov});
  }
  if (cfg.optimizer == "adam")
    return std::make_unique<Adam>(std::move(groups), AdamOptions{.lr = cfg.lr});
  if (cfg.optimizer == "adamw")
    return std::make_unique<AdamW>(std::move(groups), AdamWOptions{.lr = cfg.lr});
  if (cfg.optimizer == "rmsprop") {
    return std::make_unique<Rmsprop>(std::move(groups),
                                     RmspropOptions{.lr = cfg.lr, .momentum = cfg.momentum});
  }
  BNLAB_FAIL("train: unknown optimizer '", cfg.optimizer,
             "'; expected sgd, adam, adamw or rmsprop");
}

std::string eval_split_for(const std::string& dataset) {
  // The CIFAR-10 copy on our machines has no full test batch: validate on batch 5 (see
  // data/datasets.h).
  return dataset == "cifar10" ? "val" : "test";
}

void save_checkpoint(const std::string& dir, const Model& model, const Optimizer& opt, int64_t step,
                     double elapsed) {
  save_safetensors((fs::path(dir) / "model.safetensors").string(), model.net->state_dict(),
                   {{"format", "pytorch state_dict"}, {"model", model.spec.name}});
  std::vector<NamedTensor> state;
  for (auto& [name, t] : opt.state_tensors()) state.push_back({name, t, DType::F32});
  Rng::State r = model.dropout_rng->state();
  Metadata meta{{"format", kStateFormat},
                {"step", std::to_string(step)},
                {"optimizer_step_count", std::to_string(opt.step_count())},
                {"elapsed_s", std::to_string(elapsed)},
                {"dropout_rng_state", std::to_string(r.state)},
                {"dropout_rng_inc", std::to_string(r.inc)},
                {"dropout_rng_has_spare", r.has_spare ? "1" : "0"}};
  // The spare normal is saved by its bits so the round trip is exact.
  uint32_t spare_bits;
  std::memcpy(&spare_bits, &r.spare, sizeof spare_bits);
  meta["dropout_rng_spare_bits"] = std::to_string(spare_bits);
  save_safetensors((fs::path(dir) / "train_state.safetensors").string(), state, meta);
}

// Restores model, optimizer and dropout generator; returns the step the checkpoint was taken at.
int64_t load_checkpoint(const std::string& dir, Model& model, Optimizer& opt, double* elapsed) {
  SafetensorsFile weights = load_safetensors((fs::path(dir) / "model.safetensors").string());
  std::string state_path = (fs::path(dir) / "train_state.safetensors").string();
  SafetensorsFile state = load_safetensors(state_path);
  auto meta = [&](const char* key) {
    auto it = state.metadata.find(key);
    BNLAB_CHECK(it != state.metadata.end(), state_path, ": metadata has no '", key, "'");
    return it->second;
  };
  BNLAB_CHECK(meta("format") == kStateFormat, state_path, ": format '", meta("format"),
              "', expected ", kStateFormat);
  std::vector<std::pair<std::string, Tensor>> opt_state;
  for (auto& e : state.tensors) opt_state.emplace_back(e.name, e.tensor);
  model.net->load_state_dict(weights.tensors);
  opt.load_state_tensors(opt_state);
  opt.set_step_count(std::stoll(meta("optimizer_step_count")));
  Rng::State r{std::stoull(meta("dropout_rng_state")), std::stoull(meta("dropout_rng_inc")), 0.0f,
               meta("dropout_rng_has_spare") == "1"};
  auto spare_bits = static_cast<uint32_t>(std::stoul(meta("dropout_rng_spare_bits")));
  std::memcpy(&r.spare, &spare_bits, sizeof spare_bits);
  model.dropout_rng->set_state(r);
  *elapsed = std::stod(meta("elapsed_s"));
  return std::stoll(meta("step"));
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
  j["train_seconds"] = r.seconds;
  j["images_per_second"] = r.images_per_second;
  if (!r.rows.empty()) {
    const MetricsRow& last = r.rows.back();
    j["final_test_acc"] = last.test_acc;
    j["final_test_loss"] = last.test_loss;
    j["final_train_loss"] = last.train_loss;
    double best = 0;
    for (const MetricsRow& row : r.rows) best = std::max(best, row.test_acc);
    j["best_test_acc"] = best;
  }
  write_file_atomic((fs::path(dir) / "summary.json").string(), j.dump(2) + "\n");
}

}  // namespace

std::string format_metrics_csv(const std::vector<MetricsRow>& rows) {
  std::ostringstream os;
  os << "step,epoch,train_loss,train_acc,test_loss,test_acc,lr,elapsed_s,probe_p15,probe_p50,probe_"
        "p85\n";
  os.precision(7);
  for (const MetricsRow& r : rows) {
    os << r.step << "," << r.epoch << "," << r.train_loss << "," << r.train_acc << ","
       << r.test_loss << "," << r.test_acc << "," << r.lr << "," << r.elapsed << "," << r.p15 << ","
       << r.p50 << "," << r.p85 << "\n";
  }
  return os.str();
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

Model load_trained_model(const std::string& dir, const ImageDataset& like, TrainConfig* cfg_out) {
  std::string config_path = (fs::path(dir) / "config.json").string();
  TrainConfig cfg = config_from_json(read_file(config_path), config_path);
  ModelSpec spec = cfg.model;
  spec.channels = like.channels;
  spec.height = like.height;
  spec.width = like.width;
  spec.num_classes = std::max<int64_t>(like.num_classes(), 2);
  Rng rng(cfg.seed);
  Model model = build_model(spec, rng);
  model.net->load_state_dict(
      load_safetensors((fs::path(dir) / "model.safetensors").string()).tensors);
  if (cfg_out) *cfg_out = cfg;
  return model;
}

RunData load_run_data(const std::string& dataset, const std::string& data_dir) {
  std::string dir = resolve_data_dir(data_dir);
  return {load_dataset(dataset, "train", dir), load_dataset(dataset, eval_split_for(dataset), dir)};
}

EvalResult evaluate(Model& model, const ImageDataset& data, const std::string& dataset_name,
                    int64_t batch_size, int64_t probe_unit) {
  EvalResult result;
  bool was_training = model.net->is_training();
  model.net->eval();
  NoGradGuard no_grad;
  if (model.probe && probe_unit >= 0) {
    model.probe->register_forward_hook([&](const Module&, const Tensor& x, const Tensor&) {
      // Dense probe [N, D]: column `unit`. Conv probe [N, C, H, W]: channel `unit` at the centre
      // pixel.
      int64_t N = x.size(0);
      int64_t C = x.size(1);
      int64_t unit = std::min(probe_unit, C - 1);
      int64_t plane = x.numel() / (N * C);
      int64_t centre = x.dim() == 4 ? (x.size(2) / 2) * x.size(3) + x.size(3) / 2 : 0;
      for (int64_t n = 0; n < N; ++n)
        result.probe_values.push_back(x.data()[(n * C + unit) * plane + centre]);
    });
  }
  DataLoaderOptions opts;
  opts.batch_size = batch_size;
  opts.shuffle = false;
  opts.normalize = standard_normalization(dataset_name);
  opts.prefetch = false;
  DataLoader loader(data, opts);
  loader.start_epoch(0);
  Batch batch;
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  try {
    while (loader.next(batch)) {
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
    if (model.probe) model.probe->clear_forward_hooks();
    model.net->train(was_training);
    throw;
  }
  if (model.probe) model.probe->clear_forward_hooks();
  model.net->train(was_training);
  result.loss = seen ? loss_sum / static_cast<double>(seen) : NAN;
  result.accuracy = seen ? static_cast<double>(correct) / static_cast<double>(seen) : NAN;
  return result;
}

TrainResult train(const TrainConfig& cfg, const RunData& data, bool resume) {
  using clock = std::chrono::steady_clock;
  BNLAB_CHECK(cfg.batch_size > 0, "train: batch size must be positive; got ", cfg.batch_size);
  BNLAB_CHECK(std::isfinite(cfg.lr) && cfg.lr > 0.0f,
              "train: learning rate must be a positive number; got ", cfg.lr);
  BNLAB_CHECK(cfg.steps > 0 || cfg.epochs > 0, "train: need --steps or --epochs > 0");
  BNLAB_CHECK(data.train.size() >= cfg.batch_size, "train: batch size ", cfg.batch_size,
              " exceeds the ", data.train.size(), " training images of ", data.train.title());
  set_num_threads(cfg.threads);

  ModelSpec spec = cfg.model;
  spec.channels = data.train.channels;
  spec.height = data.train.height;
  spec.width = data.train.width;
  spec.num_classes = std::max<int64_t>(data.train.num_classes(), 2);
  Rng init_rng(cfg.seed);
  Model model = build_model(spec, init_rng);
  std::unique_ptr<Optimizer> opt = make_optimizer(cfg, *model.net);

  // drop_last: a ragged final batch (possibly of 1) would give BatchNorm a different, noisier
  // batch.
  DataLoaderOptions lopts;
  lopts.batch_size = cfg.batch_size;
  lopts.shuffle = true;
  lopts.drop_last = true;
  lopts.seed = cfg.seed;
  lopts.normalize = standard_normalization(cfg.dataset);
  if (cfg.augment) lopts.augment = AugmentOptions{.crop_padding = 4, .horizontal_flip = true};
  DataLoader loader(data.train, lopts);
  const int64_t per_epoch = loader.batches_per_epoch();
  const int64_t total = cfg.steps > 0 ? cfg.steps : cfg.epochs * per_epoch;
  const int64_t eval_every = cfg.eval_every > 0 ? cfg.eval_every : per_epoch;
  std::unique_ptr<LrSchedule> schedule = parse_schedule(cfg.schedule, total);

  TrainResult result;
  result.eval_split = data.eval.split;
  int64_t step = 0;
  double elapsed_before = 0;
  const std::string& dir = cfg.out_dir;
  if (!dir.empty()) {
    ensure_directory(dir);
    if (resume) {
      step = load_checkpoint(dir, model, *opt, &elapsed_before);
      std::string metrics_path = (fs::path(dir) / "metrics.csv").string();
      for (const MetricsRow& row : read_metrics_csv(metrics_path))
        if (row.step <= step) result.rows.push_back(row);
    } else {
      write_file_atomic((fs::path(dir) / "config.json").string(), config_to_json(cfg));
    }
  }
  BNLAB_CHECK(step <= total, "train: checkpoint is at step ", step, ", past the requested ", total,
              " steps");

  Progress progress(cfg.label.empty() ? "train" : cfg.label, total, 0, cfg.quiet ? nullptr : stdout,
                    cfg.plain_progress);
  double loss_sum = 0, train_seconds = 0;
  int64_t correct = 0, seen = 0, images_since_start = 0;
  int64_t epoch = step / per_epoch;
  loader.start_epoch(epoch);
  Batch batch;
  for (int64_t skip = step % per_epoch; skip > 0; --skip) loader.next(batch);  // resume mid-epoch

  // Row 0 is the untrained model, so curves start where training starts.
  auto evaluate_row = [&](MetricsRow& row) {
    EvalResult ev = evaluate(model, data.eval, cfg.dataset, cfg.eval_batch_size, cfg.probe_unit);
    row.test_loss = ev.loss;
    row.test_acc = ev.accuracy;
    row.lr = opt->lr();
    row.elapsed = elapsed_before + train_seconds;
    if (!ev.probe_values.empty()) {
      row.p15 = percentile(ev.probe_values, 15);
      row.p50 = percentile(ev.probe_values, 50);
      row.p85 = percentile(ev.probe_values, 85);
    }
  };
  if (step == 0) {
    MetricsRow row;
    row.train_loss = row.train_acc = NAN;
    evaluate_row(row);
    result.rows.push_back(row);
  }

  while (step < total) {
    if (!loader.next(batch)) {
      loader.start_epoch(++epoch);
      continue;
    }
    auto t0 = clock::now();
    apply(*opt, *schedule, cfg.lr, step);
    Tensor logits = (*model.net)(batch.images);
    Tensor loss = cross_entropy(logits, batch.labels, cfg.label_smoothing);
    float loss_value = loss.item();
    if (!std::isfinite(loss_value)) {
      result.diverged = true;
      result.diverged_step = step + 1;
      progress.line((cfg.label.empty() ? "train" : cfg.label) + ": loss is " +
                    std::to_string(loss_value) + " at step " + std::to_string(step + 1) +
                    "; stopping (diverged)");
      break;
    }
    loss.backward();
    if (cfg.clip_grad_norm > 0.0f) clip_grad_norm(model.net->parameters(), cfg.clip_grad_norm);
    opt->step();
    opt->zero_grad();
    train_seconds += std::chrono::duration<double>(clock::now() - t0).count();
    ++step;
    images_since_start += batch.size();

    std::vector<int64_t> pred = argmax(logits, 1);
    for (int64_t i = 0; i < batch.size(); ++i)
      correct += pred[static_cast<size_t>(i)] == batch.labels[static_cast<size_t>(i)];
    seen += batch.size();
    loss_sum += static_cast<double>(loss_value) * static_cast<double>(batch.size());
    if (!cfg.quiet) {
      progress.update(step, loss_sum / static_cast<double>(seen),
                      static_cast<double>(correct) / static_cast<double>(seen),
                      static_cast<double>(images_since_start) / std::max(train_seconds, 1e-9));
    }

    if (step % eval_every == 0 || step == total) {
      MetricsRow row;
      row.step = step;
      row.epoch = static_cast<double>(step) / static_cast<double>(per_epoch);
      row.train_loss = loss_sum / static_cast<double>(seen);
      row.train_acc = static_cast<double>(correct) / static_cast<double>(seen);
      evaluate_row(row);
      result.rows.push_back(row);
      loss_sum = 0;
      correct = seen = 0;
      if (!cfg.quiet) {
        char buf[256];
        std::snprintf(
            buf, sizeof buf,
            "%s step %ld | epoch %.2f | train loss %.4f acc %.4f | %s loss %.4f acc %.4f | lr %.4g",
            cfg.label.empty() ? "eval" : cfg.label.c_str(), static_cast<long>(step), row.epoch,
            row.train_loss, row.train_acc, data.eval.split.c_str(), row.test_loss, row.test_acc,
            row.lr);
        progress.line(buf);
      }
      if (!dir.empty()) {
        write_file_atomic((fs::path(dir) / "metrics.csv").string(),
                          format_metrics_csv(result.rows));
        if (cfg.save_checkpoint)
          save_checkpoint(dir, model, *opt, step, elapsed_before + train_seconds);
      }
    }
  }
  progress.finish();
  result.steps_done = step;
  result.seconds = elapsed_before + train_seconds;
  result.images_per_second =
      static_cast<double>(images_since_start) / std::max(train_seconds, 1e-9);
  if (!dir.empty()) {
    write_file_atomic((fs::path(dir) / "metrics.csv").string(), format_metrics_csv(result.rows));
    write_summary(dir, cfg, result);
  }
  return result;
}

std::string config_to_json(const TrainConfig& c) {
  json j;
  j["model"] = {{"name", c.model.name},           {"norm", c.model.norm},
                {"placement", c.model.placement}, {"groups", c.model.groups},
                {"dropout", c.model.dropout},     {"init", c.model.init}};
  j["dataset"] = c.dataset;
  j["data_dir"] = c.data_dir;
  j["epochs"] = c.epochs;
  j["steps"] = c.steps;
  j["batch_size"] = c.batch_size;
  j["optimizer"] = c.optimizer;
  j["lr"] = c.lr;
  j["momentum"] = c.momentum;
  j["nesterov"] = c.nesterov;
  j["weight_decay"] = c.weight_decay;
  j["decay_norm_and_bias"] = c.decay_norm_and_bias;
  j["schedule"] = c.schedule;
  j["clip_grad_norm"] = c.clip_grad_norm;
  j["label_smoothing"] = c.label_smoothing;
  j["augment"] = c.augment;
  j["seed"] = c.seed;
  j["threads"] = c.threads;
  j["eval_every"] = c.eval_every;
  j["eval_batch_size"] = c.eval_batch_size;
  j["probe_unit"] = c.probe_unit;
  return j.dump(2) + "\n";
}

TrainConfig config_from_json(const std::string& text, const std::string& source) {
  TrainConfig c;
  try {
    json j = json::parse(text);
    const json& m = j.at("model");
    c.model.name = m.at("name");
    c.model.norm = m.at("norm");
    c.model.placement = m.at("placement");
    c.model.groups = m.at("groups");
    c.model.dropout = m.at("dropout");
    c.model.init = m.at("init");
    c.dataset = j.at("dataset");
    c.data_dir = j.at("data_dir");
    c.epochs = j.at("epochs");
    c.steps = j.at("steps");
    c.batch_size = j.at("batch_size");
    c.optimizer = j.at("optimizer");
    c.lr = j.at("lr");
    c.momentum = j.at("momentum");
    c.nesterov = j.at("nesterov");
    c.weight_decay = j.at("weight_decay");
    c.decay_norm_and_bias = j.at("decay_norm_and_bias");
    c.schedule = j.at("schedule");
    c.clip_grad_norm = j.at("clip_grad_norm");
    c.label_smoothing = j.at("label_smoothing");
    c.augment = j.at("augment");
    c.seed = j.at("seed");
    c.threads = j.at("threads");
    c.eval_every = j.at("eval_every");
    c.eval_batch_size = j.at("eval_batch_size");
    c.probe_unit = j.at("probe_unit");
  } catch (const json::exception& e) {
    BNLAB_FAIL(source, ": not a bnlab config: ", e.what());
  }
  return c;
}

}  // namespace bnlab::apps

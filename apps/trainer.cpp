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
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/checkpoint.h"
#include "apps/data_parallel.h"
#include "apps/interrupt.h"
#include "apps/knobs.h"
#include "apps/nonfinite_guard.h"
#include "apps/progress.h"
#include "apps/run_dir.h"
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
  const std::string weights_path = (fs::path(dir) / "model.safetensors").string();
  try {
    model.net->load_state_dict(load_safetensors(weights_path).tensors);
  } catch (const Error& e) {
    std::string m = e.what();  // load_safetensors names the file already; load_state_dict does not
    throw Error(m.find(weights_path) == std::string::npos ? weights_path + ": " + m : m, e.where());
  }
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
  DataParallel dp(model, cfg);  // mpirun -np P: apps/data_parallel.h; a no-op in one process
  BNLAB_CHECK(data.train.size() >= cfg.batch_size * dp.size(), "train: ", dp.size(),
              " ranks of batch size ", cfg.batch_size, " need more than the ", data.train.size(),
              " training images of ", data.train.title());
  std::unique_ptr<Optimizer> opt = make_optimizer(cfg, *model.net);

  // drop_last: a ragged final batch (possibly of 1) would give BatchNorm a different, noisier
  // batch.
  DataLoaderOptions lopts;
  lopts.batch_size = cfg.batch_size;
  lopts.shuffle = true;
  lopts.drop_last = true;
  lopts.seed = cfg.seed;
  lopts.shards = dp.size();  // this rank's slice of each global batch of size() * batch_size
  lopts.shard = dp.rank();
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
  CheckpointState resumed;
  const std::string& dir = cfg.out_dir;
  RunDirLock lock;  // one process per run directory (apps/run_dir.h)
  if (!dir.empty() && dp.is_root()) {
    lock = RunDirLock(dir);
    remove_stale_temporaries(dir);  // of killed writes: the lock says no one else is writing
    // summary.json marks a finished run; from here on this one is not (an extended resume that
    // is interrupted must not leave the shorter run's summary beside its newer checkpoint).
    std::error_code ec;
    fs::remove(fs::path(dir) / "summary.json", ec);
  }
  if (resume && !dir.empty() && !fs::exists(fs::path(dir) / "train_state.safetensors")) {
    // Killed before its first checkpoint: nothing to continue, so start it over.
    if (!cfg.quiet && dp.is_root()) {
      std::printf("notice: %s has no checkpoint yet; starting the run from step 0\n", dir.c_str());
      std::fflush(stdout);
    }
    resume = false;
  }
  if (!dir.empty()) {
    if (resume) {
      resumed = load_checkpoint(dir, model, *opt);
      step = resumed.step;
      elapsed_before = resumed.elapsed;
      std::string metrics_path = (fs::path(dir) / "metrics.csv").string();
      for (const MetricsRow& row : read_metrics_csv(metrics_path))
        if (row.step <= step) result.rows.push_back(row);
    } else if (dp.is_root()) {
      // A fresh run replaces whatever run the directory held (the CLI asks for --overwrite first),
      // so no older checkpoint can be resumed under this config.
      clear_run(dir);
      write_file_atomic((fs::path(dir) / "config.json").string(), config_to_json(cfg));
    }
  }
  BNLAB_CHECK(step <= total, "train: checkpoint is at step ", step, ", past the requested ", total,
              " steps");

  Progress progress(cfg.label.empty() ? "train" : cfg.label, total, 0,
                    cfg.quiet || !dp.is_root() ? nullptr : stdout, cfg.plain_progress);
  // Running train loss/accuracy since the last evaluation; a checkpoint taken between evaluations
  // (on SIGINT) carries them, so the resumed run's next metrics row is the uninterrupted one.
  double loss_sum = resumed.loss_sum, train_seconds = 0;
  int64_t correct = resumed.correct, seen = resumed.seen, images_since_start = 0;
  NonFiniteGuard guard(model, parse_on_nan(cfg.on_nan));
  int64_t saved_step = resume ? step : -1;
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
  // (A run interrupted at step 0 has its row 0 in metrics.csv already.)
  if (step == 0 && result.rows.empty() && dp.is_root()) {  // rank 0 alone evaluates and writes
    MetricsRow row;
    row.train_loss = row.train_acc = NAN;
    evaluate_row(row);
    result.rows.push_back(row);
  }

  while (step < total) {
    // SIGINT/SIGTERM (apps/interrupt.h): stop at this step boundary with a checkpoint.
    bool interrupted = interrupt_requested();
    if (dp.active()) {  // every rank stops at the same step
      double any = interrupted ? 1.0 : 0.0;
      dp.sum_over_ranks(&any, 1);
      interrupted = any > 0;
    }
    if (interrupted) {
      // A rank that saw no signal itself (under mpirun) reports SIGINT.
      result.interrupted_by = interrupt_requested() ? interrupt_signal() : SIGINT;
      if (!dir.empty() && cfg.save_checkpoint && dp.is_root() && step != saved_step) {
        save_checkpoint(dir, model, *opt,
                        {step, elapsed_before + train_seconds, loss_sum, correct, seen});
      }
      break;
    }
    if (!loader.next(batch)) {
      loader.start_epoch(++epoch);
      continue;
    }
    auto t0 = clock::now();
    apply(*opt, *schedule, cfg.lr, step);
    dp.reseed_dropout(step);  // ranks > 0: a dropout stream per (rank, step), so resume is exact
    guard.before_step();
    Tensor logits = (*model.net)(batch.images);
    Tensor loss = cross_entropy(logits, batch.labels, cfg.label_smoothing);
    float loss_value = static_cast<float>(dp.mean_over_ranks(loss.item()));
    loss.backward();
    dp.average_gradients();
    // The non-finite guard (apps/nonfinite_guard.h): one check of the loss and the gradients;
    // loss and gradients are averaged over ranks already, so every rank takes the same branch.
    bool apply_update = true, count_loss = true;
    if (guard.found(loss_value)) {
      NonFiniteGuard::Verdict v = guard.handle(step + 1, loss_value, batch.images);
      if (!v.message.empty())
        progress.line((cfg.label.empty() ? "train" : cfg.label) + ": " + v.message);
      if (v.stop) {
        result.diverged = true;
        result.diverged_step = step + 1;
        opt->zero_grad();
        break;
      }
      apply_update = v.apply_update;
      count_loss = v.apply_update;  // skip: the step's loss stays out of the running averages
    }
    if (apply_update) {
      if (cfg.clip_grad_norm > 0.0f) clip_grad_norm(model.net->parameters(), cfg.clip_grad_norm);
      opt->step();
    }
    opt->zero_grad();
    train_seconds += std::chrono::duration<double>(clock::now() - t0).count();
    ++step;
    images_since_start += batch.size();

    if (count_loss) {
      std::vector<int64_t> pred = argmax(logits, 1);
      for (int64_t i = 0; i < batch.size(); ++i)
        correct += pred[static_cast<size_t>(i)] == batch.labels[static_cast<size_t>(i)];
      seen += batch.size();
      loss_sum += static_cast<double>(loss_value) * static_cast<double>(batch.size());
    }
    if (!cfg.quiet) {
      progress.update(
          step, loss_sum / static_cast<double>(seen),
          static_cast<double>(correct) / static_cast<double>(seen),
          static_cast<double>(images_since_start * dp.size()) / std::max(train_seconds, 1e-9));
    }

    if (step % eval_every == 0 || step == total) {
      if (dp.active()) {  // training loss and accuracy over every rank's samples
        double sums[3] = {loss_sum, static_cast<double>(correct), static_cast<double>(seen)};
        dp.sum_over_ranks(sums, 3);
        loss_sum = sums[0];
        correct = static_cast<int64_t>(sums[1]);
        seen = static_cast<int64_t>(sums[2]);
      }
      MetricsRow row;
      row.step = step;
      row.epoch = static_cast<double>(step) / static_cast<double>(per_epoch);
      row.train_loss = loss_sum / static_cast<double>(seen);
      row.train_acc = static_cast<double>(correct) / static_cast<double>(seen);
      if (dp.is_root()) evaluate_row(row);
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
      if (!dir.empty() && dp.is_root()) {
        write_file_atomic((fs::path(dir) / "metrics.csv").string(),
                          format_metrics_csv(result.rows));
        if (cfg.save_checkpoint) {
          save_checkpoint(dir, model, *opt, {step, elapsed_before + train_seconds});
          saved_step = step;
        }
      }
    }
  }
  progress.finish();
  result.steps_done = step;
  result.seconds = elapsed_before + train_seconds;
  result.nonfinite_steps = guard.events();
  result.first_nonfinite_step = guard.first_step();
  result.images_per_second =
      static_cast<double>(images_since_start * dp.size()) / std::max(train_seconds, 1e-9);
  result.ranks = dp.size();
  result.allreduce_seconds = dp.allreduce_seconds();
  if (!dir.empty() && dp.is_root()) {
    write_file_atomic((fs::path(dir) / "metrics.csv").string(), format_metrics_csv(result.rows));
    // No summary for an interrupted run: summary.json marks a finished one (ablate reuses it).
    if (!result.interrupted_by) write_summary(dir, cfg, result);
  }
  return result;
}

}  // namespace bnlab::apps

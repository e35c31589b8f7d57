// The training loop behind `bnlab train` and every arm of `bnlab ablate`: model, optimizer,
// schedule, seeded data order, periodic evaluation (with the probe percentiles of the BN paper's
// Figure 1), metrics.csv, checkpoints that resume exactly, and summary.json.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "apps/models.h"
#include "data/dataset.h"

namespace bnlab::apps {

struct TrainConfig {
  ModelSpec model;
  std::string dataset = "mnist";
  std::string data_dir;  // "" = $BNLAB_DATA or data/
  int64_t epochs = 1;    // used when steps == 0
  int64_t steps = 0;     // total optimizer steps; wins over epochs when > 0
  int64_t batch_size = 64;
  std::string optimizer = "sgd";  // sgd | adam | adamw | rmsprop
  float lr = 0.01f;
  float momentum = 0.0f;  // sgd, rmsprop
  bool nesterov = false;
  float weight_decay = 0.0f;
  bool decay_norm_and_bias = false;  // false: BN/LN/GN parameters and biases get no weight decay
  std::string schedule = "constant";
  float clip_grad_norm = 0.0f;  // 0 = off
  std::string on_nan = "stop";  // non-finite loss/gradient: stop | skip | continue
  float label_smoothing = 0.0f;
  bool augment = false;  // random crop (padding 4) + flip; for cifar10
  uint64_t seed = 1;
  int threads = 0;         // 0 = all cores
  int64_t eval_every = 0;  // steps between evaluations; 0 = once per epoch
  int64_t eval_batch_size = 1000;
  int64_t probe_unit = 0;       // which unit of the probe layer to record percentiles for; < 0: off
  std::string out_dir;          // "" = write nothing
  bool save_checkpoint = true;  // model.safetensors + train_state.safetensors at each evaluation
  std::string label;            // progress prefix (an ablation arm's name)
  bool quiet = false;           // no progress output (tests)
  bool plain_progress = false;  // plain lines even on a terminal (parallel runs share the screen)
  // Data-parallel runs (mpirun -np P; apps/data_parallel.h): BatchNorm statistics over the global
  // batch of all ranks (SyncBN) instead of each rank's own batch. No effect in one process.
  bool sync_bn = false;
};

struct MetricsRow {
  int64_t step = 0;
  double epoch = 0;
  double train_loss = 0, train_acc = 0;
  double test_loss = 0, test_acc = 0;
  double lr = 0;
  double elapsed = 0;
  double p15 = NAN, p50 = NAN, p85 = NAN;  // probe percentiles (NaN without a probe)
};

struct TrainResult {
  std::vector<MetricsRow> rows;
  int64_t steps_done = 0;
  bool diverged = false;
  int64_t diverged_step = -1;
  int64_t nonfinite_steps = 0;        // steps whose loss or gradients were NaN/Inf
  int64_t first_nonfinite_step = -1;  // -1 when none
  int interrupted_by = 0;        // SIGINT/SIGTERM: stopped at a step boundary after a checkpoint
  double seconds = 0;            // training time this process (evaluation excluded)
  double images_per_second = 0;  // all ranks together in a data-parallel run
  int ranks = 1;                 // processes that trained the model (mpirun -np)
  double allreduce_seconds = 0;  // time in gradient/loss collectives (0 in one process)
  std::string eval_split;        // which split test_* columns measured
};

// The data one run uses; loaded once and shared by matched runs.
struct RunData {
  ImageDataset train;
  ImageDataset eval;  // test split for mnist/fashion-mnist; val (batch 5) for cifar10
};

// Loads the training split and the evaluation split of cfg.dataset.
RunData load_run_data(const std::string& dataset, const std::string& data_dir);

// Trains per cfg on `data`. With cfg.out_dir set, holds the directory's lock (apps/run_dir.h) for
// the run's life and writes config.json, metrics.csv, checkpoints and summary.json there; a fresh
// run (resume false) first removes the run files the directory held. resume: continue from the
// checkpoint in cfg.out_dir (written by an earlier run with the same config), bit-exactly as if
// uninterrupted; a directory with no checkpoint yet starts from step 0, with a notice.
TrainResult train(const TrainConfig& cfg, const RunData& data, bool resume = false);

// Accuracy and mean loss of `model` on `data` in eval mode; fills probe values when requested.
struct EvalResult {
  double loss = 0, accuracy = 0;
  std::vector<int64_t> predictions;
  std::vector<float> probe_values;
};
EvalResult evaluate(Model& model, const ImageDataset& data, const std::string& dataset_name,
                    int64_t batch_size, int64_t probe_unit);

// Rebuilds the model of a run directory (its config.json) for data shaped like `like`, and loads
// its model.safetensors. Returns the config too.
Model load_trained_model(const std::string& dir, const ImageDataset& like,
                         TrainConfig* cfg_out = nullptr);

// The q-th percentile (0..100) by linear interpolation, as numpy.percentile's default.
double percentile(std::vector<float> values, double q);

// metrics.csv <-> rows.
std::string format_metrics_csv(const std::vector<MetricsRow>& rows);
std::vector<MetricsRow> read_metrics_csv(const std::string& path);

// Config <-> JSON (config.json), every key validated by the settings table: apps/knobs.h.
std::string config_to_json(const TrainConfig& cfg);
TrainConfig config_from_json(const std::string& json_text, const std::string& source);

}  // namespace bnlab::apps

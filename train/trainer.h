// The training loop behind `bnlab train` and every arm of `bnlab ablate`: model, optimizer,
// schedule, seeded data order, periodic evaluation (with the probe percentiles of the BN paper's
// Figure 1), metrics.csv, checkpoints that resume exactly, and summary.json.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"
#include "train/models.h"
#include "train/plot.h"

namespace bnlab {

/// Every setting of a run: what `bnlab train` takes as flags and writes to config.json (the same
/// defaults; train/knobs.cpp validates each).
struct TrainConfig {
  ModelSpec model;                    ///< which registered model, and its normalization choices
  std::string dataset = "mnist";      ///< mnist | fashion-mnist | cifar10 | cifar100 | folder:PATH
  std::string data_dir;               ///< "" = the default of find_data_dir (data/datasets.h)
  int64_t epochs = 1;                 ///< used when steps == 0
  int64_t steps = 0;                  ///< total optimizer steps; wins over epochs when > 0
  int64_t batch_size = 64;            ///< per rank in a data-parallel run
  std::string optimizer = "sgd";      ///< sgd | adam | adamw | rmsprop
  float lr = 0.01f;                   ///< the base learning rate (the schedule scales it)
  float momentum = 0.0f;              ///< sgd, rmsprop
  bool nesterov = false;              ///< sgd: Nesterov momentum
  float weight_decay = 0.0f;          ///< L2 (sgd, adam, rmsprop) or decoupled (adamw)
  bool decay_norm_and_bias = false;   ///< false: BN/LN/GN parameters and biases get no weight decay
  std::string schedule = "constant";  ///< an optim/schedule.h spec: constant, cosine, step:N:G, ...
  float clip_grad_norm = 0.0f;        ///< 0 = off
  std::string on_nan = "stop";        ///< non-finite loss/gradient: stop | skip | continue
  float label_smoothing = 0.0f;       ///< cross_entropy's label smoothing
  bool augment = false;               ///< random crop (padding 4) + flip; for cifar10
  uint64_t seed = 1;                  ///< fixes initial weights, data order and dropout masks
  int threads = 0;                    ///< 0 = all cores
  int64_t eval_every = 0;             ///< steps between evaluations; 0 = once per epoch
  int64_t eval_batch_size = 1000;     ///< batch size of evaluation (no effect on results)
  int64_t probe_unit = 0;  ///< which unit of the probe layer to record percentiles for; < 0: off
  std::string out_dir;     ///< "" = write nothing
  bool save_checkpoint = true;  ///< model.safetensors + train_state.safetensors at each evaluation
  std::string label;            ///< progress prefix (an ablation arm's name)
  bool quiet = false;           ///< no progress output (tests)
  bool plain_progress = false;  ///< plain lines even on a terminal (parallel runs share the screen)
  int64_t log_every = 0;        ///< steps between plain progress lines; 0: about 20 per run
  /// Training images held out (a fixed split, the same for every seed) as the validation split
  /// that evaluation, best.safetensors and early stopping use; 0: none (evaluation on test).
  /// mnist, fashion-mnist, cifar100, folder: (cifar10 validates on its batch 5 already).
  int64_t val_split = 0;
  /// Train on this many training images only (a fixed random subset, the same for every seed and
  /// arm, drawn after the validation split is held out); 0: all. A small subset trained long
  /// overfits: the regularization preset's setting.
  int64_t train_subset = 0;
  /// At the end, measure the final model on the training images in eval mode (no dropout,
  /// running statistics): TrainResult::train_eval_acc, the generalization gap's first term.
  bool eval_train = false;
  /// Stop when validation accuracy has not improved for this many evaluations; 0: off. Needs a
  /// validation split.
  int64_t early_stop = 0;
  /// A run counts as collapsed (failed without a NaN) when every evaluation from this fraction of
  /// its steps on is within collapse_margin of chance (collapse.h: is_collapsed).
  float collapse_after = 0.5f;
  float collapse_margin = 0.05f;  ///< accuracy above chance still counted as chance
  /// At every evaluation, record each weight's gradient norm (of that step, after the gradient
  /// average over ranks, before the update) and the weight's norm: grad_norms.csv / .png.
  bool grad_stats = false;
  /// Data-parallel runs (mpirun -np P; train/data_parallel.h): BatchNorm statistics over the global
  /// batch of all ranks (SyncBN) instead of each rank's own batch. No effect in one process.
  bool sync_bn = false;
  /// Measure the optimization mechanism (internal covariate shift per layer, the loss landscape
  /// along the gradient, the probe unit in train mode; train/mechanism.h) at every step that is a
  /// multiple of this, and at the last step; 0: off. The run itself is unchanged (bit for bit); a
  /// measured step costs (mechanism_etas.size() + weight tensors) extra forward+backward passes.
  /// One process only.
  int64_t mechanism_every = 0;
  /// The step sizes of the landscape measurement, as multiples of the step's learning rate (each
  /// > 0): the paper's [0.05, 0.4] at its lr 0.1 is {0.5, 1, 2, 4}.
  std::vector<float> mechanism_etas = {0.5f, 1.0f, 2.0f, 4.0f};
};

/// One evaluation point of a run: a row of metrics.csv.
struct MetricsRow {
  int64_t step = 0;       ///< optimizer steps taken (0: the untrained model)
  double epoch = 0;       ///< step / steps per epoch
  double train_loss = 0;  ///< mean training loss since the previous row (NaN in row 0)
  double train_acc = 0;   ///< training accuracy since the previous row, in train mode
  double eval_loss = 0;  ///< mean loss on the evaluation split (TrainResult::eval_split), eval mode
  double eval_acc = 0;   ///< accuracy on the evaluation split
  double lr = 0;         ///< the learning rate of the last step
  double elapsed = 0;    ///< training seconds so far (evaluation excluded)
  double p15 = NAN;      ///< probe input's 15th percentile (NaN without a probe)
  double p50 = NAN;      ///< probe input's median
  double p85 = NAN;      ///< probe input's 85th percentile
};

/// One weight's gradient at an evaluation step (TrainConfig::grad_stats).
struct GradNormRow {
  int64_t step = 0;        ///< the step whose gradient this is (an evaluation step)
  std::string param;       ///< the weight's state_dict name ("3.weight")
  double grad_norm = 0;    ///< its gradient's L2 norm
  double weight_norm = 0;  ///< the weight's L2 norm before the update
};

/// Internal covariate shift of one layer at a measured step (Santurkar et al. 2018, Definition
/// 2.1; TrainConfig::mechanism_every): the gradient G of the layer's weight at the step's weights
/// W^t, against G', the same gradient after every parameter before this weight (forward order) has
/// taken the step's update (same batch, same BatchNorm and dropout state).
struct IcsRow {
  int64_t step = 0;            ///< the measured step (1-based, as metrics.csv)
  int64_t layer = 0;           ///< 0-based index among the weights (parameters with >= 2 dims)
  std::string param;           ///< the weight's state_dict name ("1.weight")
  double grad_norm = 0;        ///< ||G||
  double grad_norm_after = 0;  ///< ||G'||
  double l2_diff = 0;          ///< ||G - G'||: 0 for the first layer
  double cosine = 0;  ///< <G, G'> / (||G|| ||G'||): 1 for the first layer; NaN if a norm is 0
};

/// The loss landscape at W^t - eta g along the step's gradient g (Santurkar et al. 2018, section
/// 3.1), same batch and state as the step.
struct SmoothnessRow {
  int64_t step = 0;         ///< the measured step
  double eta = 0;           ///< the absolute step size: eta_mult x the step's learning rate
  double eta_mult = 0;      ///< the entry of TrainConfig::mechanism_etas
  double loss = 0;          ///< L(W^t - eta g)
  double grad_diff_l2 = 0;  ///< ||grad L(W^t - eta g) - g|| over all parameters
};

/// One measured step's summary (TrainConfig::mechanism_every).
struct MechanismRow {
  int64_t step = 0;              ///< the measured step
  double loss = 0;               ///< the step's training loss L(W^t)
  double grad_norm = 0;          ///< ||g||, all parameters
  double loss_min = 0;           ///< min of L over eta in {0} and the etas (loss Lipschitzness)
  double loss_max = 0;           ///< max of the same
  double grad_diff_min = 0;      ///< min over the etas of ||g_eta - g|| (gradient predictiveness)
  double grad_diff_max = 0;      ///< max of the same
  double beta_smoothness = NAN;  ///< max over the etas of ||g_eta - g|| / ||eta g||
  double probe_p15 = NAN;        ///< the probe unit's input on the training batch, train mode
  double probe_p50 = NAN;        ///< its median
  double probe_p85 = NAN;        ///< its 85th percentile
  double probe_mean = NAN;       ///< its mean
  double probe_std = NAN;        ///< its (population) standard deviation
};

/// What a run did.
struct TrainResult {
  std::vector<MetricsRow> rows;       ///< every evaluation, row 0 first
  int64_t steps_done = 0;             ///< steps completed (the total unless stopped)
  bool diverged = false;              ///< the non-finite guard stopped the run (on_nan stop)
  int64_t diverged_step = -1;         ///< the step it stopped at; -1 when it did not
  int64_t nonfinite_steps = 0;        ///< steps whose loss or gradients were NaN/Inf
  int64_t first_nonfinite_step = -1;  ///< -1 when none
  int interrupted_by = 0;        ///< SIGINT/SIGTERM: stopped at a step boundary after a checkpoint
  double seconds = 0;            ///< training time this process (evaluation excluded)
  double images_per_second = 0;  ///< all ranks together in a data-parallel run
  int ranks = 1;                 ///< processes that trained the model (mpirun -np)
  double allreduce_seconds = 0;  ///< time in gradient/loss collectives (0 in one process)
  std::string eval_split;        ///< which split eval_* fields measured
  bool stopped_early = false;    ///< --early-stop or a TrainerHooks::on_eval hook ended the run
  int64_t best_step = -1;        ///< the evaluation with the highest eval_acc (first if tied)
  double best_eval_acc = NAN;    ///< its eval_acc
  double test_loss = NAN;        ///< the final model on RunData::test (NaN without one)
  double test_acc = NAN;         ///< the final model on RunData::test
  double best_test_acc = NAN;    ///< best.safetensors' model on RunData::test
  double train_eval_acc = NAN;   ///< TrainConfig::eval_train: the final model on the training set
  double train_eval_loss = NAN;  ///< its mean loss there
  /// Failed without a NaN: stuck at chance, or the training loss exploded (collapse_reason says
  /// which). Diverged runs (NaN/Inf) are not also counted as collapsed.
  bool collapsed = false;
  std::string collapse_reason;  ///< "" unless collapsed
  /// The accuracy of always predicting the evaluation split's commonest class.
  double chance_acc = NAN;
  std::vector<GradNormRow> grad_rows;  ///< with TrainConfig::grad_stats: every evaluation's rows
  std::vector<IcsRow> ics_rows;  ///< with TrainConfig::mechanism_every: each measured step's layers
  std::vector<SmoothnessRow> smoothness_rows;  ///< ... each measured step's step sizes
  std::vector<MechanismRow> mechanism_rows;    ///< ... one row per measured step
  double mechanism_seconds = 0;  ///< time spent measuring (this process; not in `seconds`)
  /// fit(resume) of a run already finished at the requested steps: nothing was trained or written,
  /// and the fields are load_finished_run's.
  bool finished_before = false;
  /// The plots drawn in the run directory (none without gnuplot); a failed one has rendered false
  /// and a warning as its message, and did not fail the run.
  std::vector<PlotResult> plots;
};

/// The collapse rule, a function of the metrics alone so that reports can re-apply it to finished
/// runs: a training loss above 10 ln(classes) (logits blown up, though finite) at any evaluation,
/// or every evaluation at or after `after` x the last row's step within `margin` of `chance`.
/// Returns the reason, or "" when the run did not collapse.
std::string collapse_reason(const std::vector<MetricsRow>& rows, double chance, int64_t classes,
                            double after, double margin);

/// The data one run uses; loaded once and shared by matched runs.
struct RunData {
  ImageDataset train;  ///< the training split (without the held-out validation images)
  /// What evaluation during training measures, and selects on: a validation split (--val-split,
  /// or cifar10's batch 5) or, without one, the test split.
  ImageDataset eval;
  /// The test split when `eval` is a validation split held out from the training set: measured
  /// once at the end, never used to select anything.
  std::optional<ImageDataset> test;
};

/// Loads `dataset`'s training split and its evaluation split from find_data_dir(data_dir);
/// val_split > 0 holds that many training images out as the validation split (the same ones for
/// every run: a fixed seed) and keeps the test split in RunData::test; train_subset > 0 then keeps
/// that many of the remaining training images (a fixed random subset).
RunData load_run_data(const std::string& dataset, const std::string& data_dir,
                      int64_t val_split = 0, int64_t train_subset = 0);
/// load_run_data with cfg's dataset, data_dir, val_split and train_subset.
RunData load_run_data(const TrainConfig& cfg);

/// Split `split` of the run configured by `cfg`, as that run saw it: "train" is the images it
/// trained on (RunData::train: without those --val-split held out, --train-subset applied), "val"
/// the images --val-split held out (RunData::eval); other splits, and "val" of a run without
/// --val-split, are load_dataset(cfg.dataset, split). A folder dataset's splits other than "train"
/// are checked against the training split (same classes, same image size), which takes loading
/// it; `run_train`, when given, then receives the run's training split (RunData::train), so that
/// a caller needing it too (run_normalization) does not load it again. Left empty otherwise, and
/// for split "train", which is the run's training split itself.
ImageDataset load_run_split(const TrainConfig& cfg, const std::string& split,
                            std::optional<ImageDataset>* run_train = nullptr);

/// "val" for a validation split ("val", or "train-val" held out by --val-split), else "test": the
/// prefix of the evaluation columns of metrics.csv and of summary.json's keys.
std::string split_kind(const std::string& split);

class Optimizer;
class LrSchedule;
class DataLoader;
class DataParallel;
struct Batch;

/// What the per-step hook sees: the step just taken (1-based), its loss (the mean over ranks) and
/// the learning rate it used.
struct StepInfo {
  int64_t step = 0;        ///< steps taken, this one included
  double loss = 0;         ///< this step's loss (mean over ranks)
  double lr = 0;           ///< the learning rate it used
  int64_t batch_size = 0;  ///< images in this rank's batch
};

class Trainer;
class MechanismMeter;

/// Where user code steps into a run. Both run on every rank of a data-parallel run.
struct TrainerHooks {
  /// After every optimizer step (and after a step the non-finite guard skipped).
  std::function<void(Trainer&, const StepInfo&)> on_step;
  /// After every evaluation, row 0 (the untrained model) included, with its metrics row (rank 0
  /// measured it; other ranks see the training columns only). Return false to end the run there
  /// (at row 0: before the first step): it finishes normally (summary
  /// written) with TrainResult::stopped_early set. In a data-parallel run every rank must return
  /// the same answer.
  std::function<bool(Trainer&, const MetricsRow&)> on_eval;
};

/// Trains a registered model (train/models.h) on a RunData: the loop, evaluation, metrics.csv,
/// checkpoints and bit-exact resume, the non-finite guard, SIGINT/SIGTERM, progress and
/// data-parallel training under mpirun. The optimizer and the schedule come from the config unless
/// replaced before fit().
///
///     Trainer trainer(cfg, data);
///     trainer.hooks.on_eval = [](Trainer&, const MetricsRow& row) { return row.eval_acc < 0.99; };
///     TrainResult result = trainer.fit();
class Trainer {
 public:
  /// Builds the model (weights from cfg.seed), joins the data-parallel world, and makes the
  /// optimizer, schedule and data loader cfg asks for. Throws for settings that cannot work with
  /// `data` (a batch larger than the training set, a probe unit the model does not have, an
  /// evaluation or test split whose image size or class count is not the training split's,
  /// naming both). `data` must outlive the Trainer.
  Trainer(TrainConfig cfg, const RunData& data);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// The hooks; set them before fit().
  TrainerHooks hooks;

  /// Runs to cfg.steps (or cfg.epochs). With cfg.out_dir set, holds the directory's lock
  /// (train/run_dir.h) for the run's life and writes config.json, metrics.csv, checkpoints and
  /// summary.json there; a fresh run (resume false) first removes the run files the directory
  /// held. resume: continue from the checkpoint in cfg.out_dir (written by an earlier run with the
  /// same config), bit-exactly as if uninterrupted; a directory with no checkpoint yet starts from
  /// step 0, with a notice; a finished run (its checkpoint at the last step, summary.json written)
  /// is left as it is, with a notice, and its result is load_finished_run's. A refused resume (a
  /// checkpoint past the requested steps, an unreadable one) changes nothing in the directory.
  /// Call once.
  TrainResult fit(bool resume = false);

  /// Replaces the optimizer made from the config (before fit()). Its parameters must be the
  /// model's (any subset, in any groups). The schedule scales each group's own learning rate as
  /// given here, as PyTorch's schedulers scale each group's initial_lr; cfg.lr is then the
  /// optimizer-from-config's alone. A resumed run must use the same kind of optimizer as the run
  /// that wrote the checkpoint.
  void set_optimizer(std::unique_ptr<Optimizer> optimizer);
  /// Replaces the schedule made from cfg.schedule (before fit()); it scales each parameter group's
  /// starting learning rate (cfg.lr, unless set_optimizer gave others).
  void set_schedule(std::unique_ptr<LrSchedule> schedule);

  Model& model() { return model_; }                       ///< the model being trained
  Optimizer& optimizer() { return *optimizer_; }          ///< its optimizer
  const TrainConfig& config() const { return cfg_; }      ///< the settings
  int64_t total_steps() const { return total_; }          ///< steps the run will take
  int64_t steps_per_epoch() const { return per_epoch_; }  ///< batches in one epoch (per rank)
  /// What the loaders normalize with: training_normalization(cfg.dataset, data.train), recorded
  /// in config.json's "normalization"; once fit(true) resumes a run, the one its config.json
  /// recorded (run_normalization), even if the images have changed since.
  const NormalizeOptions& normalization() const { return normalize_; }

 private:
  struct Running;  ///< the counters of one fit()
  void open_run_dir(bool& resume, TrainResult& result, Running& run);
  void evaluate_into(MetricsRow& row, const Running& run);
  bool train_step(const Batch& batch, TrainResult& result, Running& run);
  bool end_of_period(TrainResult& result, Running& run);
  bool track_best(const MetricsRow& row, TrainResult& result, Running& run, bool save);
  void measure_test(TrainResult& result);
  void write_outputs(TrainResult& result) const;
  void write_step_records(const TrainResult& result) const;
  void record_grad_norms(int64_t step, TrainResult& result);

  TrainConfig cfg_;
  const RunData& data_;
  NormalizeOptions normalize_;
  Model model_;
  std::unique_ptr<DataParallel> dp_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<float> base_lrs_;  ///< each parameter group's rate before the schedule scales it
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<DataLoader> loader_;
  std::unique_ptr<MechanismMeter> mechanism_;  ///< with cfg.mechanism_every > 0
  int64_t per_epoch_ = 0, total_ = 0, eval_every_ = 0;
  bool fitted_ = false;
};

/// Trains per cfg on `data`: Trainer(cfg, data).fit(resume).
TrainResult train(const TrainConfig& cfg, const RunData& data, bool resume = false);

/// The result of the finished run in `dir`, as its summary.json and metrics.csv hold it (the
/// metrics at the CSV's precision; no per-step records). Throws naming the file when either is
/// missing or unreadable, and naming both when metrics.csv's last row is not the final metrics
/// summary.json records (an emptied or cut metrics.csv).
TrainResult load_finished_run(const std::string& dir);

/// What evaluate() measured.
struct EvalResult {
  double loss = 0;                   ///< mean cross-entropy
  double accuracy = 0;               ///< fraction classified right
  std::vector<int64_t> predictions;  ///< the predicted class of each image, in order
  std::vector<float> probe_values;   ///< the probe unit's input per image (empty without a probe)
};
/// Which statistics BatchNorm layers normalize with during evaluate().
enum class NormStatistics {
  kRunning,  ///< eval mode: the running averages (what inference uses)
  /// each evaluation batch's own statistics, as plain train-mode batch norm (no renorm r and d, no
  /// noise); everything else in eval mode (dropout off)
  kBatch,
};

/// Accuracy and mean loss of `model` on `data`, without gradients, normalized as `dataset_name`
/// is; records the probe unit's inputs when probe_unit >= 0 and the model has a probe. kRunning
/// evaluates in eval mode. kBatch evaluates in eval mode too (no dropout), except that every
/// BatchNorm normalizes with the evaluation batch's own statistics as plain batch norm does in
/// training: batch renormalization's r and d and noisy batch norm's noise are training-only, like
/// dropout, so neither applies, and the running statistics are not updated, so no batch affects
/// another (BatchNorm::set_eval_batch_statistics); InstanceNorm uses each image's own statistics.
/// That is the train/inference discrepancy the inference preset measures; the result depends on
/// batch_size and on which images share a batch. When the split leaves a last batch of a single
/// image (its size is 1 more than a multiple of batch_size, and more than 1), that image joins the
/// batch before it (of batch_size + 1): one image has no batch statistics, and every image is still
/// evaluated. Buffers are left bit for bit as they were.
/// Restores every module's own train/eval mode (a model may mix them: BatchNorm layers frozen in
/// eval mode in a training model stay frozen).
EvalResult evaluate(Model& model, const ImageDataset& data, const std::string& dataset_name,
                    int64_t batch_size, int64_t probe_unit,
                    NormStatistics statistics = NormStatistics::kRunning);
/// evaluate, normalized with `normalize` (a run's normalization(), or run_normalization()).
EvalResult evaluate(Model& model, const ImageDataset& data, const NormalizeOptions& normalize,
                    int64_t batch_size, int64_t probe_unit,
                    NormStatistics statistics = NormStatistics::kRunning);

/// What the run in `dir` (its config `cfg`) normalized its images with: config.json's
/// "normalization"; for a run directory without it, training_normalization of the images
/// load_run_data(cfg) trains on (the published constants for a named dataset). `run_train`, when
/// given, must be those images (RunData::train; load_run_split hands them back); they are then
/// not loaded again.
NormalizeOptions run_normalization(const std::string& dir, const TrainConfig& cfg,
                                   const ImageDataset* run_train = nullptr);

/// The data directory the run in `dir` read its images from, as its config.json records it under
/// "provenance" (resolved: absolute, whatever the working directory was); nullopt for a run
/// written before it did.
std::optional<std::string> recorded_data_dir(const std::string& dir);

/// Throws, naming both, unless `data`'s image geometry and class count are those the run in `dir`
/// was trained on (config.json's "input"), e.g. "R: the run was trained on 1x28x28 images with 10
/// classes; this dataset (folder:pets/test) has 3x10x10 images, 2 classes". A run whose config.json
/// predates the record passes.
void check_run_geometry(const std::string& dir, const ImageDataset& data);

/// Rebuilds the model of a run directory (its config.json) for data shaped like `like` (which must
/// be shaped as the run's: check_run_geometry), and loads its model.safetensors. Returns the
/// config too.
Model load_trained_model(const std::string& dir, const ImageDataset& like,
                         TrainConfig* cfg_out = nullptr);

/// The q-th percentile (0..100) by linear interpolation, as numpy.percentile's default.
double percentile(std::vector<float> values, double q);

/// metrics.csv's header line (no newline): step, epoch, train_loss, train_acc,
/// `<eval_kind>_loss`, `<eval_kind>_acc`, lr, elapsed_s, probe_p15, probe_p50, probe_p85.
std::string metrics_csv_header(const std::string& eval_kind);
/// One row's cells in that order (no newline), 7 significant digits.
std::string metrics_csv_cells(const MetricsRow& row);
/// Rows as metrics.csv's text (header included); the evaluation columns are named
/// `<eval_kind>_loss`, `<eval_kind>_acc` (split_kind()).
std::string format_metrics_csv(const std::vector<MetricsRow>& rows,
                               const std::string& eval_kind = "test");
/// Reads a metrics.csv; throws naming `path` and the line for a malformed one.
std::vector<MetricsRow> read_metrics_csv(const std::string& path);

/// A config as config.json's text.
std::string config_to_json(const TrainConfig& cfg);
/// Reads config.json's text, every key validated by the settings table (train/knobs.h); errors
/// name `source` and the key.
TrainConfig config_from_json(const std::string& json_text, const std::string& source);

}  // namespace bnlab

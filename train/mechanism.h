// Measuring one training step without changing the run: internal covariate shift per layer, the
// loss landscape along the gradient, and the probe unit in train mode (Santurkar, Tsipras, Ilyas,
// Madry 2018, "How Does Batch Normalization Help Optimization?"; TrainConfig::mechanism_every).
//
// The rule of this file: a measured run is bit for bit the unmeasured run. Every extra forward and
// backward pass starts from the state the step's own forward started from (BatchNorm buffers,
// num_batches_tracked included, and the dropout generator), so it sees the same batch statistics,
// the same noise and the same dropout mask; afterwards the parameters, their gradients, every
// buffer and the generator are put back exactly as the step left them. Snapshots are allocated
// once, in the constructor, and reused at every measured step.
//
// The calls, inside one training step (train/trainer.cpp does this):
//   before_forward()       before the step's forward: copies the buffers and the generator state;
//                          hooks the probe unit
//   forward, loss, backward (gradient average)
//   after_backward(...)    before any clipping or update: the landscape at W^t - eta g, then puts
//                          W^t, g, the buffers and the generator back; or skip() for a step whose
//                          loss or gradients are not finite
//   optimizer.step()
//   after_update(...)      ICS: for each weight, its gradient at W^{t+1} for every parameter before
//                          it and W^t for the rest; then puts W^{t+1} back, appends the rows
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/random.h"
#include "train/trainer.h"

namespace bnlab {

class MechanismMeter {
 public:
  // eta_mults: the step sizes as multiples of the learning rate (>= 0; 0 re-measures W^t itself,
  // which tests use). probe_unit < 0 or a model without a probe: no probe columns (NaN).
  MechanismMeter(Model& model, std::vector<float> eta_mults, float label_smoothing,
                 int64_t probe_unit);

  void before_forward();
  // The landscape along -g, g the gradients the step's backward left (all parameters; the plain
  // gradient even when the optimizer has momentum: the paper's direction). loss: the step's own.
  void after_backward(const Tensor& images, const std::vector<int64_t>& labels, float loss,
                      float lr);
  // A step that is not measured after all (non-finite loss or gradients): unhooks the probe.
  void skip();
  // After optimizer.step(): ICS per weight, then appends this step's rows.
  void after_update(int64_t step, std::vector<IcsRow>& ics, std::vector<SmoothnessRow>& smoothness,
                    std::vector<MechanismRow>& summary);

 private:
  struct Param {
    std::string name;
    Tensor p;
    Tensor w0, w1, g;  // W^t, W^{t+1}, the step's gradient (copies)
    bool had_grad = false;
  };
  // One forward + backward at the current parameters from the pre-step state; returns the loss.
  float replay();
  void restore_step_state();  // gradients, buffers, generator as the step left them
  void restore_buffers(const std::vector<Tensor>& from);

  Model& model_;
  std::vector<float> eta_mults_;
  float label_smoothing_;
  int64_t probe_unit_;
  std::vector<Param> params_;
  std::vector<size_t> weights_;  // indices into params_ of the parameters with >= 2 dims
  std::vector<Tensor> buffers_, buffers_before_, buffers_after_;
  Rng::State rng_before_{}, rng_after_{};
  // This step's inputs and the landscape results waiting for after_update.
  Tensor images_;
  std::vector<int64_t> labels_;
  std::vector<float> probe_values_;
  ForwardHookHandle probe_hook_;  // on model_.probe while a step's forward is recorded
  std::vector<SmoothnessRow> pending_;
  MechanismRow row_;
  bool measuring_ = false;
};

// The probe unit's input values of one forward (what evaluate() records): column `unit` of a
// Dense input [N, D], channel `unit` at the centre pixel of a conv input [N, C, H, W]; `unit` is
// clamped to the last one. Appended to `out`.
void append_probe_values(const Tensor& x, int64_t unit, std::vector<float>& out);

// ics.csv, smoothness.csv, mechanism.csv: text (header included) and reading back (a resumed run
// keeps the rows up to its checkpoint). Readers throw naming `path` and the line.
std::string format_ics_csv(const std::vector<IcsRow>& rows);
std::string format_smoothness_csv(const std::vector<SmoothnessRow>& rows);
std::string format_mechanism_csv(const std::vector<MechanismRow>& rows);
std::vector<IcsRow> read_ics_csv(const std::string& path);
std::vector<SmoothnessRow> read_smoothness_csv(const std::string& path);
std::vector<MechanismRow> read_mechanism_csv(const std::string& path);

// ics.png (each weight's l2 difference, log scale, and cosine over steps) and smoothness.png (the
// loss range and gradient-change range bands over steps) in `dir`, from its CSVs' rows.
// Each render's result is appended to `plots`.
void plot_mechanism(const std::string& dir, const std::vector<IcsRow>& ics,
                    const std::vector<MechanismRow>& summary, std::vector<PlotResult>& plots);

}  // namespace bnlab

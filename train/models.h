// The model registry: models built by name from a ModelSpec, for the Trainer, experiments and
// `load_trained_model`. The zoo (paper-mlp, mlp, deep-mlp, lenet, cifar-cnn, each with the
// normalization as a choice of none | batch | batch-renorm | noisy-batch | layer | group | instance
// placed before or after the activation; instance only in lenet and cifar-cnn; and row-rnn, a tanh
// RNN reading an image a row per time step, with none | layer | batch of its recurrent
// pre-activation) is registered from the start; register_model adds a model of your own
// (examples/custom-ablation).
//
// Matched arms share initial weights: normalization layers draw nothing from the Rng and every
// Dense/Conv keeps its bias in every arm, so the same seed gives the same Dense/Conv weights with
// and without BN (what `bnlab ablate` relies on for "differ in one factor only").
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "layers/layers.h"

namespace bnlab {

/// What build_model builds: the registered model's name, its normalization choices, and the data's
/// geometry (the Trainer fills in the last four from the dataset).
struct ModelSpec {
  std::string name = "paper-mlp";  ///< registered: paper-mlp | mlp | deep-mlp | lenet | cifar-cnn |
                                   ///< row-rnn | yours
  /// none | batch | batch-renorm | noisy-batch | layer | group | instance (conv models)
  std::string norm = "none";
  std::string placement = "before";  ///< before | after the activation
  int64_t groups = 8;        ///< GroupNorm: at most this many groups (largest divisor of the width)
  float dropout = -1.0f;     ///< < 0: the model's own default (lenet 0.5, others 0)
  std::string init = "";     ///< "" = the model's default; else an init::apply_scheme name
  float bn_momentum = 0.1f;  ///< BatchNorm running-statistics momentum (PyTorch's default)
  float bn_eps = 1e-5f;      ///< BatchNorm epsilon inside the sqrt (PyTorch's default)
  /// batch-renorm: steps of plain batch norm before r_max, d_max start to grow
  int64_t renorm_warmup = BatchRenormOptions{}.warmup;
  /// batch-renorm: steps over which r_max, d_max grow to their final values
  int64_t renorm_ramp = BatchRenormOptions{}.ramp;
  float renorm_rmax = BatchRenormOptions{}.r_max;  ///< batch-renorm: final r_max (>= 1)
  float renorm_dmax = BatchRenormOptions{}.d_max;  ///< batch-renorm: final d_max (>= 0)
  /// noisy-batch: the injected mean is drawn from U(-bn_noise_mean, bn_noise_mean) (>= 0)
  float bn_noise_mean = BatchNormNoise{}.mean_range;
  /// noisy-batch: the injected variance is drawn from U(1, bn_noise_var) (>= 1)
  float bn_noise_var = BatchNormNoise{}.var_max;
  int64_t channels = 1;      ///< input channels
  int64_t height = 28;       ///< input height
  int64_t width = 28;        ///< input width
  int64_t num_classes = 10;  ///< logits per image
};

/// A built model: the network and what training it needs besides its parameters.
struct Model {
  std::shared_ptr<Module> net;  ///< the network: images [N, C, H, W] -> logits [N, classes]
  /// Dropout's generator; owned here so it outlives the layers and can be saved for exact resume.
  std::unique_ptr<Rng> dropout_rng;
  /// The activation whose input the ablation records (paper Fig. 1 b, c): the last hidden
  /// activation.
  Module* probe = nullptr;
  int64_t probe_width = 0;  ///< units (or channels) of the probe layer
  ModelSpec spec;           ///< what it was built from
  /// Seed for layers that draw fresh noise every step (noisy-batch), set by build_model from its
  /// Rng without drawing from it (so the run's seed changes it, the weights stay the same); a
  /// factory mixes in each layer's position (mix_seed) so that layers get different streams.
  uint64_t noise_seed = 0;
};

/// How a registered model is built. On entry model.spec is the requested spec with the data's
/// geometry (channels, height, width, num_classes) filled in and model.dropout_rng is set. The
/// factory must set model.net, drawing initial weights from `rng` only (so a seed fixes them) and
/// giving Dropout layers *model.dropout_rng (checkpoints save its state, so resume is exact). It
/// may set model.probe and model.probe_width: the activation whose input percentiles the Trainer
/// records (the BN paper's Figure 1 b, c); without them no percentiles are recorded. It should
/// honour spec.norm (none | batch | batch-renorm | noisy-batch | layer | group | instance) and
/// whichever other spec fields it means to vary in experiments.
using ModelFactory = std::function<void(Model& model, Rng& rng)>;

/// Makes `factory` available under `name` to build_model, and through it to train(), Trainer,
/// run_ablation/Experiment and load_trained_model. Register before training (e.g. first thing in
/// main). `default_lr` is the SGD rate experiments use for it when none is given (ablate without
/// --lr, AblationSpec::lr_from_model). Throws for a name already registered or one with a space,
/// ',', '=' or '/'.
void register_model(const std::string& name, ModelFactory factory, float default_lr = 0.01f);

/// The registered model's default learning rate (paper-mlp 0.5, mlp 0.1, lenet 0.05, cifar-cnn
/// 0.05, row-rnn 0.02). Throws for an unknown name.
float default_lr(const std::string& name);

/// An optimizer's own default learning rate, torch.optim's: adam and adamw 1e-3, rmsprop 1e-2;
/// nullopt for sgd, which has none (torch.optim.SGD requires one). Throws for an unknown name.
std::optional<float> optimizer_default_lr(const std::string& optimizer);

/// The rate a run of `model` with `optimizer` takes when none is given: the model's default_lr
/// for sgd, the optimizer_default_lr for the others, whatever the model (an SGD rate such as
/// paper-mlp's 0.5 makes Adam diverge). Throws for an unknown model or optimizer.
float default_lr(const std::string& model, const std::string& optimizer);

/// Builds the registered model spec.name with weights drawn from `rng`. Throws listing the
/// registered names for an unknown one, and for a bad norm, placement or geometry.
Model build_model(const ModelSpec& spec, Rng& rng);

/// `spec` with the geometry of `data`'s images (channels, height, width) and its class count (at
/// least 2): what the Trainer and load_trained_model build.
ModelSpec with_geometry_of(ModelSpec spec, const ImageDataset& data);

/// The registered model names: the zoo's six, then registered ones in registration order.
std::vector<std::string> model_names();
/// The normalization choices of ModelSpec::norm: none, batch, batch-renorm, noisy-batch, layer,
/// group, instance.
const std::vector<std::string>& norm_names();

}  // namespace bnlab

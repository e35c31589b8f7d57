// The model zoo: paper-mlp, mlp, lenet and cifar-cnn, each with the normalization as a choice
// (none | batch | layer | group) placed before or after the activation.
//
// Matched arms share initial weights: normalization layers draw nothing from the Rng and every
// Dense/Conv keeps its bias in every arm, so the same seed gives the same Dense/Conv weights with
// and without BN (what `bnlab ablate` relies on for "differ in one factor only").
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "layers/layers.h"

namespace bnlab::apps {

struct ModelSpec {
  std::string name = "paper-mlp";    // paper-mlp | mlp | lenet | cifar-cnn
  std::string norm = "none";         // none | batch | layer | group
  std::string placement = "before";  // before | after the activation
  int64_t groups = 8;        // GroupNorm: at most this many groups (largest divisor of the width)
  float dropout = -1.0f;     // < 0: the model's own default (lenet 0.5, others 0)
  std::string init = "";     // "" = the model's default; else an init::apply_scheme name
  float bn_momentum = 0.1f;  // BatchNorm running-statistics momentum (PyTorch's default)
  float bn_eps = 1e-5f;      // BatchNorm epsilon inside the sqrt (PyTorch's default)
  int64_t channels = 1, height = 28, width = 28, num_classes = 10;
};

struct Model {
  std::shared_ptr<Sequential> net;
  // Dropout's generator; owned here so it outlives the layers and can be saved for exact resume.
  std::unique_ptr<Rng> dropout_rng;
  // The activation whose input the ablation records (paper Fig. 1 b, c): the last hidden
  // activation.
  Module* probe = nullptr;
  int64_t probe_width = 0;  // units (or channels) of the probe layer
  ModelSpec spec;
};

// Builds a model with weights drawn from `rng`. Throws listing the valid choices for a bad name.
Model build_model(const ModelSpec& spec, Rng& rng);

// The names accepted by build_model, for --help text and validation.
const std::vector<std::string>& model_names();
const std::vector<std::string>& norm_names();

}  // namespace bnlab::apps

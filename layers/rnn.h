// RNN: an Elman recurrent layer as torch.nn.RNN(nonlinearity='tanh', batch_first=True,
// num_layers=1), with an optional normalization of the recurrent pre-activation per time step.
//
//   x [N, T, D] -> output [N, T, H];  h_0 = 0,
//   a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh,   h_t = tanh(norm_t(a_t)),   output[:, t] =
//   h_t
//
// Parameters have PyTorch's names and init: weight_ih_l0 [H, D], weight_hh_l0 [H, H], bias_ih_l0
// [H], bias_hh_l0 [H], all U(-1/sqrt(H), 1/sqrt(H)). With norm none the state_dict loads into
// torch.nn.RNN unchanged; output[:, -1] is PyTorch's h_n[0]. The layer is unrolled through
// differentiable ops (one GEMM for every step's input projection, then linear, add, tanh per
// step), so autograd gives backpropagation through time; it has no backward of its own.
//
// norm (the question of issue 15: batch normalization in a recurrent network):
// - layer: one LayerNorm over H shared by every step (Ba et al. 2016), child "norm" (norm.weight,
//   norm.bias). Per sample, so it is the same at any batch size and any sequence length.
// - batch: one BatchNorm1d over H per time step, children "norm.0" ... "norm.<steps-1>" (Cooijmans
//   et al. 2016, "Recurrent Batch Normalization": separate statistics per t, because the
//   pre-activation's distribution changes along the sequence). Steps t >= steps reuse the last
//   one, norm.<steps-1>: its parameters and, in eval, its running statistics (the paper's rule
//   for sequences longer than those trained on); in training such steps use their batch
//   statistics and also feed that module's running averages. Unlike the paper, the summed
//   pre-activation is normalized (as layer does), not x W_ih^T and h W_hh^T separately.
#pragma once

#include <optional>

#include "core/random.h"
#include "layers/module.h"

namespace bnlab {

/// How RNN normalizes its recurrent pre-activation (see layers/rnn.h).
enum class RNNNorm {
  kNone,   ///< torch.nn.RNN
  kLayer,  ///< one LayerNorm over the hidden units, shared across time steps
  kBatch,  ///< one BatchNorm1d per time step (separate statistics per t)
};

/// torch.nn.RNN's arguments that bnlab supports, and the normalization.
struct RNNOptions {
  int64_t input_size = 0;         ///< D, features per time step
  int64_t hidden_size = 0;        ///< H
  bool bias = true;               ///< bias_ih_l0 and bias_hh_l0
  RNNNorm norm = RNNNorm::kNone;  ///< the pre-activation's normalization, per time step
  /// kBatch: time steps with statistics of their own (the training sequence length); later steps
  /// use the last one's. Ignored otherwise.
  int64_t steps = 0;
  /// the normalization's epsilon: >= 0 for kLayer, > 0 for kBatch (LayerNorm's and BatchNorm's
  /// rules); ignored for kNone
  float eps = 1e-5f;
  std::optional<float> momentum = 0.1f;  ///< kBatch: running-statistics momentum
};

/// Elman RNN with tanh, batch first, one layer (torch.nn.RNN): [N, T, D] -> [N, T, H], the
/// hidden state at every step, starting from h_0 = 0. See layers/rnn.h for the normalizations.
class RNN : public Module {
 public:
  /// Weights and biases drawn from `rng` as PyTorch does: U(-1/sqrt(H), 1/sqrt(H)).
  RNN(const RNNOptions& options, Rng& rng);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "RNN"; }
  std::string extra_repr() const override;

  const Tensor& weight_ih() const { return weight_ih_; }  ///< [H, D]
  const Tensor& weight_hh() const { return weight_hh_; }  ///< [H, H]
  const Tensor& bias_ih() const { return bias_ih_; }      ///< [H], undefined without bias
  const Tensor& bias_hh() const { return bias_hh_; }      ///< [H], undefined without bias
  /// The options it was built with.
  const RNNOptions& options() const { return options_; }

 private:
  RNNOptions options_;
  Tensor weight_ih_, weight_hh_, bias_ih_, bias_hh_;
  std::shared_ptr<Module> layer_norm_;            // kLayer
  std::vector<std::shared_ptr<Module>> step_bn_;  // kBatch, one per time step
};

/// "none", "layer" or "batch".
const char* to_string(RNNNorm norm);

}  // namespace bnlab

#include "layers/rnn.h"

#include <cmath>

#include "core/ops.h"
#include "layers/batch_norm.h"
#include "layers/init.h"
#include "layers/layer_norm.h"

namespace bnlab {

namespace {

// Holds the per-step BatchNorm1d children so that they are named norm.0, norm.1, ... (PyTorch's
// nn.ModuleList); RNN::forward calls them one step at a time, never this.
class StepNorms : public Module {
 public:
  void add(const std::shared_ptr<Module>& m) { add_child(std::to_string(children().size()), m); }
  Tensor forward(const Tensor&) override {
    BNLAB_FAIL("RNN: the per-step normalizations are applied by RNN::forward, one step each");
  }
  std::string type_name() const override { return "ModuleList"; }
};

}  // namespace

const char* to_string(RNNNorm norm) {
  switch (norm) {
    case RNNNorm::kLayer:
      return "layer";
    case RNNNorm::kBatch:
      return "batch";
    case RNNNorm::kNone:
      break;
  }
  return "none";
}

RNN::RNN(const RNNOptions& o, Rng& rng) : options_(o) {
  BNLAB_CHECK(o.input_size > 0 && o.hidden_size > 0,
              "RNN: input_size and hidden_size must be positive; got ", o.input_size, " and ",
              o.hidden_size);
  BNLAB_CHECK(o.norm != RNNNorm::kBatch || o.steps > 0,
              "RNN: norm batch keeps statistics per time step and needs steps > 0 (the training "
              "sequence length); got ",
              o.steps);
  // The norm child checks eps as well, but under its own name, for an option the user set on RNN.
  BNLAB_CHECK(
      o.norm == RNNNorm::kNone || (o.norm == RNNNorm::kLayer ? o.eps >= 0.0f : o.eps > 0.0f),
      "RNN: eps must be ", o.norm == RNNNorm::kLayer ? ">= 0" : "positive", " for norm ",
      bnlab::to_string(o.norm), "; got ", o.eps);
  const int64_t H = o.hidden_size;
  weight_ih_ = register_parameter("weight_ih_l0", Tensor::empty({H, o.input_size}));
  weight_hh_ = register_parameter("weight_hh_l0", Tensor::empty({H, H}));
  if (o.bias) {
    bias_ih_ = register_parameter("bias_ih_l0", Tensor::empty({H}));
    bias_hh_ = register_parameter("bias_hh_l0", Tensor::empty({H}));
  }
  // torch.nn.RNNBase.reset_parameters: every weight and bias U(-1/sqrt(H), 1/sqrt(H)), drawn in
  // registration order.
  const float bound = 1.0f / std::sqrt(static_cast<float>(H));
  for (const Tensor& t : {weight_ih_, weight_hh_, bias_ih_, bias_hh_})
    if (t.defined()) init::uniform_(t, rng, -bound, bound);

  if (o.norm == RNNNorm::kLayer) {
    layer_norm_ = register_module("norm", std::make_shared<LayerNorm>(LayerNormOptions{
                                              .normalized_shape = {H}, .eps = o.eps}));
  } else if (o.norm == RNNNorm::kBatch) {
    auto list = register_module("norm", std::make_shared<StepNorms>());
    for (int64_t t = 0; t < o.steps; ++t) {
      step_bn_.push_back(std::make_shared<BatchNorm1d>(
          BatchNormOptions{.num_features = H, .eps = o.eps, .momentum = o.momentum}));
      list->add(step_bn_.back());
    }
  }
}

Tensor RNN::forward(const Tensor& x) {
  const int64_t D = options_.input_size, H = options_.hidden_size;
  BNLAB_CHECK(x.dim() == 3 && x.size(2) == D, "RNN: expected input [N, T, ", D,
              "] (batch first); got ", x.shape());
  const int64_t N = x.size(0), T = x.size(1);
  BNLAB_CHECK(N > 0 && T > 0, "RNN: empty batch or sequence; input ", x.shape());
  // Every step's input projection in one GEMM, time-major so that step t is a contiguous block.
  Tensor xw = reshape(linear(reshape(transpose(x, 0, 1), {T * N, D}), weight_ih_, bias_ih_),
                      {T, N, H});  // [T, N, H]
  std::vector<Tensor> hs;
  hs.reserve(static_cast<size_t>(T));
  Tensor h = Tensor::zeros({N, H});
  for (int64_t t = 0; t < T; ++t) {
    Tensor a = add(select(xw, 0, t), linear(h, weight_hh_, bias_hh_));  // [N, H]
    if (layer_norm_) a = (*layer_norm_)(a);
    if (!step_bn_.empty()) {
      const size_t k = std::min(static_cast<size_t>(t), step_bn_.size() - 1);
      a = (*step_bn_[k])(a);
    }
    h = tanh(a);
    hs.push_back(h);
  }
  return stack(hs, 1);  // [N, T, H]
}

std::string RNN::extra_repr() const {
  std::string s = std::to_string(options_.input_size) + " -> " +
                  std::to_string(options_.hidden_size) + ", tanh" +
                  (options_.bias ? "" : ", no bias");
  if (options_.norm != RNNNorm::kNone)
    s += std::string(", norm ") + bnlab::to_string(options_.norm);
  if (options_.norm == RNNNorm::kBatch) s += " x " + std::to_string(options_.steps) + " steps";
  return s;
}

}  // namespace bnlab

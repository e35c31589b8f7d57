// Dense: a fully connected layer, y = x W^T + b, as torch.nn.Linear (weight [K, D], bias [K]).
// Input [N, D] -> output [N, K]. Initialized as PyTorch does (init::torch_default_).
#pragma once

#include "layers/module.h"

namespace bnlab {

/// torch.nn.Linear's arguments.
struct DenseOptions {
  int64_t in_features = 0;   ///< D
  int64_t out_features = 0;  ///< K
  bool bias = true;          ///< learnable bias [K]
};

/// Fully connected layer (linear()): [N, D] -> [N, K], y = x W^T + b (torch.nn.Linear).
class Dense : public Module {
 public:
  /// Weights and bias drawn from `rng` with PyTorch's default initialization.
  Dense(const DenseOptions& options, Rng& rng);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Dense"; }
  std::string extra_repr() const override;

  /// [K, D], PyTorch's layout
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  ///< undefined without bias
  /// The options it was built with.
  const DenseOptions& options() const { return options_; }

 private:
  DenseOptions options_;
  Tensor weight_, bias_;
};

}  // namespace bnlab

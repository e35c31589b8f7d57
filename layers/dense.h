// Dense: a fully connected layer, y = x W^T + b, as torch.nn.Linear (weight [K, D], bias [K]).
// Input [N, D] -> output [N, K]. Initialized as PyTorch does (init::torch_default_).
#pragma once

#include "layers/module.h"

namespace bnlab {

struct DenseOptions {
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = true;
};

class Dense : public Module {
 public:
  Dense(const DenseOptions& options, Rng& rng);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Dense"; }
  std::string extra_repr() const override;

  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias
  const DenseOptions& options() const { return options_; }

 private:
  DenseOptions options_;
  Tensor weight_, bias_;
};

}  // namespace bnlab

// Flatten: [N, d1, d2, ...] -> [N, d1*d2*...] (torch.nn.Flatten with start_dim 1), sharing data.
#pragma once

#include "layers/module.h"

namespace bnlab {

/// Flattens dims from start_dim on (flatten()): [N, C, H, W] -> [N, C*H*W] by default.
class Flatten : public Module {
 public:
  /// The first dimension flattened.
  explicit Flatten(int64_t start_dim = 1) : start_dim_(start_dim) {}
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Flatten"; }

 private:
  int64_t start_dim_;
};

}  // namespace bnlab

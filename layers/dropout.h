// Dropout as torch.nn.Dropout: p is the DROP probability; in training each element is zeroed with
// probability p and survivors are scaled by 1/(1-p) (inverted dropout), so eval mode is the
// identity. The mask comes from the Rng passed at construction, which must outlive the layer: one
// seeded generator for the whole model makes runs reproducible and its state is what a checkpoint
// saves.
#pragma once

#include "layers/module.h"

namespace bnlab {

/// Inverted dropout (dropout()) in training, the identity in eval.
class Dropout : public Module {
 public:
  /// `p`: the DROP probability, in [0, 1] (p = 1 zeroes every output and gradient, as PyTorch).
  /// `rng` draws the masks and must outlive the layer.
  Dropout(float p, Rng& rng);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  /// The drop probability.
  float p() const { return p_; }

 private:
  float p_;
  Rng* rng_;
};

}  // namespace bnlab

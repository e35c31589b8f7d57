// Conv2d: 2-D convolution as torch.nn.Conv2d (square kernel, stride, zero padding; weight [K, C,
// kh, kw], bias [K]). Input [N, C, H, W] -> [N, K, Ho, Wo] with Ho = (H + 2*padding - kernel) /
// stride + 1.
#pragma once

#include "layers/module.h"

namespace bnlab {

struct Conv2dOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t kernel = 3;
  int64_t stride = 1;
  int64_t padding = 0;
  bool bias = true;
};

class Conv2d : public Module {
 public:
  Conv2d(const Conv2dOptions& options, Rng& rng);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Conv2d"; }
  std::string extra_repr() const override;

  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  const Conv2dOptions& options() const { return options_; }

 private:
  Conv2dOptions options_;
  Tensor weight_, bias_;
};

}  // namespace bnlab

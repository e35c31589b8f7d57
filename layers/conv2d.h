// Conv2d: 2-D convolution as torch.nn.Conv2d (square kernel, stride, zero padding, groups; weight
// [K, C/groups, kh, kw], bias [K]). Input [N, C, H, W] -> [N, K, Ho, Wo] with Ho = (H + 2*padding -
// kernel) / stride + 1.
#pragma once

#include <vector>

#include "layers/module.h"

namespace bnlab {

/// torch.nn.Conv2d's arguments (square kernels, no dilation).
struct Conv2dOptions {
  int64_t in_channels = 0;   ///< C
  int64_t out_channels = 0;  ///< K
  int64_t kernel = 3;        ///< kernel height and width
  int64_t stride = 1;        ///< step between windows
  int64_t padding = 0;       ///< zeros added on each side
  bool bias = true;          ///< learnable bias [K]
  /// Channel groups G: must divide C and K; output group g sees input group g only. G == C is a
  /// depthwise conv. The weight is [K, C/G, kernel, kernel], as PyTorch's.
  int64_t groups = 1;
};

/// 2-D convolution (conv2d()): [N, C, H, W] -> [N, K, Ho, Wo], weight [K, C/groups, kernel,
/// kernel].
class Conv2d : public Module {
 public:
  /// Weights and bias drawn from `rng` with PyTorch's default initialization.
  Conv2d(const Conv2dOptions& options, Rng& rng);
  Tensor forward(const Tensor& x) override;
  /// With next[0] exactly a ReLU: conv2d_relu (one pass over the output in inference, the two ops
  /// with gradients), 1 module fused; with gradients and next[1] exactly a MaxPool2d too:
  /// relu(max_pool2d(conv2d(x))), the same values and gradients as the three in order (up to the
  /// sign of zeros) with relu on the pooled tensor, 2 modules fused. With next[0] a BatchNorm2d
  /// that uses batch statistics (BatchNorm::takes_conv_planes): the conv computes each output
  /// plane's moments while the image is in cache and the BatchNorm, with what it fuses with, runs
  /// on them, 1 + its modules fused; bit-identical to the modules one by one. Not fused ({})
  /// otherwise, nor for a subclass (its forward() is its own).
  FusedForward forward_fused(std::span<Module* const> next, const Tensor& x) override;
  std::string type_name() const override { return "Conv2d"; }
  std::string extra_repr() const override;

  /// [K, C/groups, kernel, kernel]
  const Tensor& weight() const { return weight_; }
  /// [K], undefined without bias
  const Tensor& bias() const { return bias_; }
  /// The options it was built with.
  const Conv2dOptions& options() const { return options_; }

 private:
  void check_input(const Tensor& x) const;

  Conv2dOptions options_;
  Tensor weight_, bias_;
  /// The output's plane moments for a BatchNorm2d after it, [N * K * 2], reused across steps.
  std::vector<double> plane_moments_;
};

}  // namespace bnlab

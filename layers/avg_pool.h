// AvgPool2d and AdaptiveAvgPool2d as torch.nn.AvgPool2d / torch.nn.AdaptiveAvgPool2d (square
// window, floor mode): [N, C, H, W] -> [N, C, Ho, Wo]. AdaptiveAvgPool2d(1) is the global average
// pooling of ResNet-style heads.
#pragma once

#include <array>

#include "layers/module.h"

namespace bnlab {

/// Average pooling over [N, C, H, W] (avg_pool2d()); no parameters.
class AvgPool2d : public Module {
 public:
  /// stride 0 means stride = kernel; padded zeros count in the divisor when count_include_pad.
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0,
                     bool count_include_pad = true);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "AvgPool2d"; }
  std::string extra_repr() const override;

 private:
  int64_t kernel_, stride_, padding_;
  bool count_include_pad_;
};

/// Adaptive average pooling to a fixed output size (adaptive_avg_pool2d()); no parameters.
class AdaptiveAvgPool2d : public Module {
 public:
  /// Output [N, C, oh, ow] for any input size.
  explicit AdaptiveAvgPool2d(std::array<int64_t, 2> output_size);
  /// Output [N, C, output_size, output_size].
  explicit AdaptiveAvgPool2d(int64_t output_size);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }
  std::string extra_repr() const override;

 private:
  std::array<int64_t, 2> output_size_;
};

}  // namespace bnlab

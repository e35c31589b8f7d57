// MaxPool2d as torch.nn.MaxPool2d (square window; stride defaults to the kernel size; padding
// counts as -inf). [N, C, H, W] -> [N, C, Ho, Wo].
#pragma once

#include "layers/module.h"

namespace bnlab {

/// Max pooling over [N, C, H, W] (max_pool2d()); no parameters.
class MaxPool2d : public Module {
 public:
  /// stride 0 means stride = kernel; padded cells count as -inf.
  explicit MaxPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "MaxPool2d"; }
  std::string extra_repr() const override;

  int64_t kernel() const { return kernel_; }    ///< the window's side
  int64_t stride() const { return stride_; }    ///< the kernel when built with stride 0
  int64_t padding() const { return padding_; }  ///< cells of -inf on each side

 private:
  int64_t kernel_, stride_, padding_;
};

}  // namespace bnlab

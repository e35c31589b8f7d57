#include "layers/avg_pool.h"

#include "core/ops.h"

namespace bnlab {

AvgPool2d::AvgPool2d(int64_t kernel, int64_t stride, int64_t padding, bool count_include_pad)
    : kernel_(kernel),
      stride_(stride == 0 ? kernel : stride),
      padding_(padding),
      count_include_pad_(count_include_pad) {
  BNLAB_CHECK(kernel > 0 && stride_ > 0 && padding >= 0 && padding * 2 <= kernel,
              "AvgPool2d: invalid kernel=", kernel, " stride=", stride, " padding=", padding,
              " (padding must be at most half the kernel)");
}

Tensor AvgPool2d::forward(const Tensor& x) {
  BNLAB_CHECK(x.dim() == 4, "AvgPool2d: expected input [N, C, H, W]; got ", x.shape());
  return avg_pool2d(x, kernel_, stride_, padding_, count_include_pad_);
}

std::string AvgPool2d::extra_repr() const {
  return std::to_string(kernel_) + "x" + std::to_string(kernel_) +
         (stride_ != kernel_ ? ", stride " + std::to_string(stride_) : "") +
         (padding_ ? ", pad " + std::to_string(padding_) : "") +
         (padding_ && !count_include_pad_ ? ", pad not counted" : "");
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(std::array<int64_t, 2> output_size)
    : output_size_(output_size) {
  BNLAB_CHECK(output_size[0] >= 1 && output_size[1] >= 1,
              "AdaptiveAvgPool2d: output size must be at least 1x1; got ", output_size[0], "x",
              output_size[1]);
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(int64_t output_size)
    : AdaptiveAvgPool2d(std::array<int64_t, 2>{output_size, output_size}) {}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) {
  BNLAB_CHECK(x.dim() == 4, "AdaptiveAvgPool2d: expected input [N, C, H, W]; got ", x.shape());
  return adaptive_avg_pool2d(x, output_size_);
}

std::string AdaptiveAvgPool2d::extra_repr() const {
  return "output " + std::to_string(output_size_[0]) + "x" + std::to_string(output_size_[1]);
}

}  // namespace bnlab

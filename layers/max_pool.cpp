#include "layers/max_pool.h"

#include "core/ops.h"

namespace bnlab {

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : kernel_(kernel), stride_(stride == 0 ? kernel : stride), padding_(padding) {
  BNLAB_CHECK(kernel > 0 && stride_ > 0 && padding >= 0 && padding * 2 <= kernel,
              "MaxPool2d: invalid kernel=", kernel, " stride=", stride, " padding=", padding,
              " (padding must be at most half the kernel)");
}

Tensor MaxPool2d::forward(const Tensor& x) {
  BNLAB_CHECK(x.dim() == 4, "MaxPool2d: expected input [N, C, H, W]; got ", x.shape());
  return max_pool2d(x, kernel_, stride_, padding_);
}

std::string MaxPool2d::extra_repr() const {
  return std::to_string(kernel_) + "x" + std::to_string(kernel_) +
         (stride_ != kernel_ ? ", stride " + std::to_string(stride_) : "") +
         (padding_ ? ", pad " + std::to_string(padding_) : "");
}

}  // namespace bnlab

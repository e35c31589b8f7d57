#include "layers/flatten.h"

#include "core/ops.h"

namespace bnlab {

Tensor Flatten::forward(const Tensor& x) { return flatten(x, start_dim_); }

}  // namespace bnlab

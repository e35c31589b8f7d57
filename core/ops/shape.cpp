// Shape ops: reshape and flatten share the input's data; clone copies it. Gradients pass through
// unchanged (same element order), so backward is a plain add.
#include <cstring>

#include "core/autograd.h"
#include "core/ops.h"

namespace bnlab {

namespace {
void add_through(const Tensor& input, const Tensor& dout) {
  float* dx = grad_buffer(input);
  if (!dx) return;
  const float* pd = dout.data();
  int64_t n = dout.numel();
  for (int64_t i = 0; i < n; ++i) dx[i] += pd[i];
}
}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  // Resolve one -1 from the element count.
  Shape resolved = shape;
  int64_t known = 1;
  int64_t infer_at = -1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      BNLAB_CHECK(infer_at < 0, "reshape: more than one -1 in ", shape);
      infer_at = static_cast<int64_t>(i);
    } else {
      BNLAB_CHECK(resolved[i] >= 0, "reshape: negative dimension in ", shape);
      known *= resolved[i];
    }
  }
  if (infer_at >= 0) {
    BNLAB_CHECK(known != 0 && x.numel() % known == 0, "reshape: cannot reshape ", x.shape(),
                " into ", shape);
    resolved[static_cast<size_t>(infer_at)] = x.numel() / known;
  }
  BNLAB_CHECK(numel_of(resolved) == x.numel(), "reshape: cannot reshape ", x.shape(), " (",
              x.numel(), " elements) into ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = resolved;
  impl->storage = x.impl()->storage;
  Tensor out(impl);
  if (needs_grad({x})) {
    attach(out, "reshape", {x},
           [](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             add_through(in[0], dout);
           });
  }
  return out;
}

Tensor flatten(const Tensor& x, int64_t start_dim) {
  int64_t rank = x.dim();
  int64_t s = start_dim < 0 ? start_dim + rank : start_dim;
  BNLAB_CHECK(s >= 0 && s < std::max<int64_t>(rank, 1), "flatten: start_dim ", start_dim,
              " out of range for shape ", x.shape());
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  shape.push_back(-1);
  if (x.numel() == 0) shape.back() = 0;
  return reshape(x, shape);
}

Tensor clone(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape());
  std::memcpy(out.data(), x.data(), static_cast<size_t>(x.numel()) * sizeof(float));
  if (needs_grad({x})) {
    attach(out, "clone", {x}, [](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
      add_through(in[0], dout);
    });
  }
  return out;
}

}  // namespace bnlab

// Indexing and joining: slice, narrow and select (one primitive, take_rows, under three PyTorch
// names) and cat; stack composes unsqueeze and cat.
//
// Legend: around dimension d a tensor is seen as [outer, size, inner], outer = prod(shape[:d]),
// size = shape[d], inner = prod(shape[d+1:]). A selection takes `count` rows start, start + step,
// ... of the middle dimension.
//
// Storage: bnlab tensors are contiguous (no strides), so a selection can share the input's buffer
// only when its elements are one block of it: outer == 1 (dim 0, or leading dims of size 1) with
// step 1 or a single row, or the selection is all of x. Then the result is a window of x's buffer
// (detail::Storage) and writes through either are seen by both, as in PyTorch; otherwise it is a
// copy. Backward is the same either way: dout is added into the selected rows of dx.
//
// Reference: https://pytorch.org/docs/stable/generated/torch.narrow.html, torch.select, torch.cat,
// torch.stack; Python slicing for slice's clamping rules.
#include <algorithm>
#include <cstring>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/parallel.h"

namespace bnlab {

namespace {

struct Rows {
  int64_t outer, size, inner;  // x as [outer, size, inner]
  int64_t start, count, step;  // the selected rows of the middle dimension
};

Rows rows_around(const Shape& shape, int64_t d, int64_t start, int64_t count, int64_t step) {
  Rows r{1, shape[static_cast<size_t>(d)], 1, start, count, step};
  for (int64_t i = 0; i < d; ++i) r.outer *= shape[static_cast<size_t>(i)];
  for (size_t i = static_cast<size_t>(d) + 1; i < shape.size(); ++i) r.inner *= shape[i];
  return r;
}

constexpr int64_t kParallelFloats = 1 << 16;

// Moves the selected rows between the two layouts of a selection: the strided side [outer, size,
// inner] (rows start + j * step) and the packed side [outer, count, inner]. dst = src, or dst +=
// src with kAdd. Selection forward and cat backward pack (strided -> packed); selection backward
// and cat forward unpack.
template <bool kAdd>
void move_rows(float* dst, const float* src, const Rows& r, bool dst_is_strided) {
  // With step 1 each outer slice's rows are adjacent on both sides: one run of count * inner.
  const int64_t run = r.step == 1 ? r.count * r.inner : r.inner;
  const int64_t runs = r.step == 1 ? std::min<int64_t>(r.count, 1) : r.count;
  detail::parallel_for(r.outer, r.outer * r.count * r.inner > kParallelFloats, [=](int64_t o) {
    for (int64_t j = 0; j < runs; ++j) {
      const int64_t strided = (o * r.size + r.start + j * r.step) * r.inner;
      const int64_t packed = o * r.count * r.inner + j * run;
      float* d = dst + (dst_is_strided ? strided : packed);
      const float* s = src + (dst_is_strided ? packed : strided);
      if constexpr (kAdd) {
        for (int64_t i = 0; i < run; ++i) d[i] += s[i];
      } else {
        std::memcpy(d, s, static_cast<size_t>(run) * sizeof(float));
      }
    }
  });
}

// The one selection primitive behind slice, narrow and select: rows of dimension d of x, as a
// tensor of out_shape (select drops the dimension). Shares x's buffer when the rows are one block.
Tensor take_rows(const char* op, const Tensor& x, int64_t d, int64_t start, int64_t count,
                 int64_t step, const Shape& out_shape) {
  const Rows r = rows_around(x.shape(), d, start, count, step);
  const bool one_run = step == 1 || count <= 1;
  const bool everything = start == 0 && count == r.size && one_run;
  Tensor out;
  if ((r.outer == 1 && one_run) || everything) {
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = out_shape;
    const int64_t offset = everything ? 0 : start * r.inner;
    impl->storage = std::make_shared<detail::Storage>(
        x.impl()->storage, static_cast<size_t>(offset), static_cast<size_t>(numel_of(out_shape)));
    out = Tensor(impl);
  } else {
    out = Tensor::empty(out_shape);
    move_rows<false>(out.data(), x.data(), r, /*dst_is_strided=*/false);
  }
  if (needs_grad({x})) {
    attach(out, op, {x}, Reads::nothing(),
           [r](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             if (float* dx = grad_buffer(in[0])) move_rows<true>(dx, dout.data(), r, true);
           });
  }
  return out;
}

void check_has_dims(const char* op, const Tensor& x) {
  BNLAB_CHECK(x.dim() > 0, op, ": cannot be applied to a 0-dim tensor (shape ", x.shape(), ")");
}

}  // namespace

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  check_has_dims("slice", x);
  const int64_t d = wrap_dim("slice", dim, x.dim(), x.shape());
  BNLAB_CHECK(step > 0, "slice: step must be positive; got ", step);
  // Python's rules: negative bounds count from the end, then both clamp to [0, size].
  const int64_t size = x.shape()[static_cast<size_t>(d)];
  auto clamp_bound = [size](int64_t b) {
    return std::clamp<int64_t>(b < 0 ? b + size : b, 0, size);
  };
  const int64_t s = clamp_bound(start);
  const int64_t e = std::max(clamp_bound(end), s);
  // ceil((e - s) / step) without forming e - s + step - 1, which overflows for a huge step.
  const int64_t count = e == s ? 0 : (e - s - 1) / step + 1;
  Shape shape = x.shape();
  shape[static_cast<size_t>(d)] = count;
  return take_rows("slice", x, d, s, count, step, shape);
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  check_has_dims("narrow", x);
  const int64_t d = wrap_dim("narrow", dim, x.dim(), x.shape());
  const int64_t size = x.shape()[static_cast<size_t>(d)];
  BNLAB_CHECK(start >= -size && start <= size, "narrow: start ", start, " out of range for dim ",
              dim, " of size ", size, " (shape ", x.shape(), ")");
  const int64_t s = start < 0 ? start + size : start;
  // length <= size - s, not s + length <= size: the sum can overflow.
  BNLAB_CHECK(length >= 0 && length <= size - s, "narrow: start (", s, ") + length (", length,
              ") exceeds size ", size, " of dim ", dim, " (shape ", x.shape(), ")");
  Shape shape = x.shape();
  shape[static_cast<size_t>(d)] = length;
  return take_rows("narrow", x, d, s, length, 1, shape);
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  check_has_dims("select", x);
  const int64_t d = wrap_dim("select", dim, x.dim(), x.shape());
  const int64_t size = x.shape()[static_cast<size_t>(d)];
  BNLAB_CHECK(index >= -size && index < size, "select: index ", index, " out of range for dim ",
              dim, " of size ", size, " (shape ", x.shape(), ")");
  Shape shape = x.shape();
  shape.erase(shape.begin() + d);
  return take_rows("select", x, d, index < 0 ? index + size : index, 1, 1, shape);
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  BNLAB_CHECK(!tensors.empty(), "cat: expected a non-empty list of tensors");
  const Tensor& first = tensors[0];
  check_has_dims("cat", first);
  const int64_t d = wrap_dim("cat", dim, first.dim(), first.shape());
  Shape shape = first.shape();
  shape[static_cast<size_t>(d)] = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const Tensor& t = tensors[k];
    bool match = t.dim() == first.dim();
    for (int64_t i = 0; match && i < t.dim(); ++i) match = i == d || t.size(i) == first.size(i);
    BNLAB_CHECK(match, "cat: tensor ", k, " has shape ", t.shape(), ", tensor 0 has shape ",
                first.shape(), "; they must match in every dimension but dim ", dim);
    shape[static_cast<size_t>(d)] += t.size(d);
  }
  // out [outer, sum of sizes, inner]: tensor k fills rows offset_k .. offset_k + size_k.
  Tensor out = Tensor::empty(shape);
  std::vector<Rows> parts;
  int64_t row = 0;
  for (const Tensor& t : tensors) {
    Rows r = rows_around(shape, d, row, t.size(d), 1);
    row += t.size(d);
    parts.push_back(r);
    move_rows<false>(out.data(), t.data(), r, /*dst_is_strided=*/true);
  }
  bool any_grad = false;
  for (const Tensor& t : tensors) any_grad = any_grad || needs_grad({t});
  if (any_grad) {
    attach(out, "cat", tensors, Reads::nothing(),
           [parts](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             for (size_t k = 0; k < in.size(); ++k) {
               float* dx = grad_buffer(in[k]);
               if (!dx) continue;
               move_rows<true>(dx, dout.data(), parts[k], /*dst_is_strided=*/false);
             }
           });
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  BNLAB_CHECK(!tensors.empty(), "stack: expected a non-empty list of tensors");
  const Tensor& first = tensors[0];
  for (size_t k = 1; k < tensors.size(); ++k) {
    BNLAB_CHECK(tensors[k].shape() == first.shape(), "stack: tensor ", k, " has shape ",
                tensors[k].shape(), ", tensor 0 has shape ", first.shape(),
                "; stack needs equal shapes");
  }
  const int64_t d = wrap_dim("stack", dim, first.dim() + 1, first.shape());
  std::vector<Tensor> parts;
  parts.reserve(tensors.size());
  for (const Tensor& t : tensors) parts.push_back(unsqueeze(t, d));  // views: no copy before cat
  return cat(parts, d);
}

}  // namespace bnlab

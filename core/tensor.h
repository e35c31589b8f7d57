// Tensor: float32, row-major, contiguous, int64 shape; a cheap handle to shared storage with
// autograd fields.
//
// Layout legend used across bnlab: images are NCHW, dense data is [N, D].
//   N batch, C channels, H height, W width, D in-features, K out-features / out-channels.
// The last dimension is contiguous (NumPy/PyTorch order).
//
// Copying a Tensor copies the handle: both share data. clone() copies the data. reshape() shares
// data with a new shape. Gradients live in the tensor's impl, are allocated lazily on first
// accumulation, and for leaves accumulate across backward() calls until zero_grad() (see
// core/autograd.h).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"

namespace bnlab {

using Shape = std::vector<int64_t>;

// Number of elements of a shape; throws if a dimension is negative or the product overflows int64.
int64_t numel_of(const Shape& shape);

struct Node;

namespace detail {

// A float buffer, 64-byte aligned, drawn from a process-wide pool of freed buffers of the same size
// so that the identical allocations of consecutive training steps do not go back to malloc (see
// docs/ARCHITECTURE.md).
class Storage {
 public:
  explicit Storage(size_t count);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  float* data_;
  size_t size_;
};

// Bytes currently held by the pool (freed buffers kept for reuse) and a way to give them back.
size_t storage_pool_cached_bytes();
void storage_pool_release();

}  // namespace detail

struct TensorImpl {
  Shape shape;
  std::shared_ptr<detail::Storage> storage;
  std::shared_ptr<detail::Storage> grad;  // null until a gradient is accumulated
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (defined() is false), e.g. an absent bias

  // Factories.
  static Tensor empty(const Shape& shape);  // uninitialized
  static Tensor zeros(const Shape& shape);
  static Tensor ones(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor from(const std::vector<float>& values, const Shape& shape);
  static Tensor scalar(float value) { return full({}, value); }
  static Tensor uniform(const Shape& shape, Rng& rng, float low = 0.0f, float high = 1.0f);
  static Tensor normal(const Shape& shape, Rng& rng, float mean = 0.0f, float std = 1.0f);
  // A tensor sharing `storage`, e.g. a gradient buffer seen as a tensor. No autograd.
  static Tensor wrap(const Shape& shape, std::shared_ptr<detail::Storage> storage);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  // Size of dimension d; negative d counts from the end, as in PyTorch.
  int64_t size(int64_t d) const;
  int64_t numel() const;

  // Data access. The handle has shared semantics, so data() is writable through a const handle too.
  float* data() const;
  float item() const;  // the value of a one-element tensor
  std::vector<float> to_vector() const;

  // Autograd.
  bool requires_grad() const;
  // Marks a leaf as a parameter-like tensor whose grad backward() fills. Throws on non-leaves.
  Tensor& set_requires_grad(bool value = true);
  bool is_leaf() const;
  bool has_grad() const;
  // The accumulated gradient as a tensor sharing the grad buffer (undefined if none yet).
  Tensor grad() const;
  // Drops the gradient buffer (the next backward allocates a zeroed one).
  void zero_grad() const;
  // Backpropagates from this scalar (seed 1) or with an explicit seed of this tensor's shape.
  void backward() const;
  void backward(const Tensor& seed) const;
  const std::shared_ptr<Node>& grad_fn() const;

  // A tensor sharing this one's data, outside the graph.
  Tensor detach() const;
  // Same data, new shape (one dimension may be -1). Differentiable; see ops.h.
  Tensor reshape(const Shape& shape) const;
  // A copy of the data. Differentiable.
  Tensor clone() const;
  // Fills in place (no autograd); returns *this.
  const Tensor& fill_(float value) const;
  // Copies `src`'s data into this tensor (same numel; no autograd).
  const Tensor& copy_(const Tensor& src) const;

  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// "tensor([[1, 2], [3, 4]], shape=[2, 2])", eliding the middle of large tensors.
std::ostream& operator<<(std::ostream& os, const Tensor& t);
std::string to_string(const Tensor& t);

}  // namespace bnlab

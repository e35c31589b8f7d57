// Tensor: float32, row-major, contiguous, int64 shape; a cheap handle to shared storage with
// autograd fields.
//
// Layout legend used across bnlab: images are NCHW, dense data is [N, D].
//   N batch, C channels, H height, W width, D in-features, K out-features / out-channels.
// The last dimension is contiguous (NumPy/PyTorch order).
//
// Copying a Tensor copies the handle: both share data. clone() copies the data. reshape() shares
// data with a new shape; views that stay contiguous (select/narrow/slice of one block, squeeze,
// unsqueeze, view) share a window of the base's buffer, and the rest (transpose, permute, strided
// slices, cat, stack) copy: docs/guide/tensors-autodiff.md has the table. Gradients live in the
// tensor's impl, are allocated lazily on first accumulation, and for leaves accumulate across
// backward() calls until zero_grad() (see core/autograd.h).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"

namespace bnlab {

/// A tensor's dimensions, outermost first (row-major; the last one is contiguous).
using Shape = std::vector<int64_t>;

/// Number of elements of a shape; throws if a dimension is negative or the product overflows int64.
int64_t numel_of(const Shape& shape);

struct Node;
struct ValuesIndices;

namespace detail {

// A float buffer, 64-byte aligned, drawn from a process-wide pool of freed buffers of the same size
// so that the identical allocations of consecutive training steps do not go back to malloc (see
// docs/ARCHITECTURE.md).
//
// A window is a Storage over `count` floats of another one's buffer (a view such as x[1]): data()
// and size() describe the window, so code that reads a tensor's storage needs no offset; the window
// keeps the owning buffer alive and gives nothing back to the pool.
class Storage {
 public:
  explicit Storage(size_t count);
  // A window of `count` floats of `base` from element `offset` of base's window; throws if it does
  // not fit. Windows of windows refer to the owning buffer directly.
  Storage(const std::shared_ptr<Storage>& base, size_t offset, size_t count);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }
  // Elements between the owning buffer's start and data() (0 unless a window).
  size_t offset() const { return offset_; }
  // The buffer's owner: this storage itself unless it is a window.
  const Storage* owner() const { return owner_ ? owner_.get() : this; }
  // The owning buffer's count of in-place writes (Tensor::version): kept on the owner, so that a
  // write through any window of the buffer is seen by every tensor over it, as in PyTorch.
  uint64_t version() const { return owner()->version_; }
  void bump_version() { ++(owner_ ? owner_->version_ : version_); }

 private:
  float* data_;
  size_t size_;
  size_t offset_ = 0;
  std::shared_ptr<Storage> owner_;  // set for windows only
  // Plain, not atomic: it is bumped by the thread that wrote the data, and a buffer's writes are
  // never concurrent with a forward or backward reading it (that would race on the data itself).
  // The threads bnlab runs (OpenMP loops inside one op, the DataLoader's worker filling a batch
  // nothing else holds, ablation runs each on its own model) never share a buffer being written.
  uint64_t version_ = 0;
};

// Bytes currently held by the pool (freed buffers kept for reuse) and a way to give them back.
size_t storage_pool_cached_bytes();
void storage_pool_release();

}  // namespace detail

/// What a Tensor handle points to; shared by every copy of the handle.
struct TensorImpl {
  Shape shape;  ///< dimensions
  std::shared_ptr<detail::Storage>
      storage;                            ///< the float32 data (a window of the base's for views)
  std::shared_ptr<detail::Storage> grad;  ///< null until a gradient is accumulated
  bool requires_grad = false;             ///< backward() fills this leaf's grad / ops record a node
  std::shared_ptr<Node> grad_fn;          ///< null for leaves
};

/// A float32, row-major, contiguous n-dimensional array with reverse-mode autodiff; a cheap
/// handle to shared storage (copies share data, clone() copies). See the top of core/tensor.h.
class Tensor {
 public:
  Tensor() = default;  ///< an undefined tensor (defined() is false), e.g. an absent bias

  // Factories.
  static Tensor empty(const Shape& shape);  ///< uninitialized
  /// Filled with 0.
  static Tensor zeros(const Shape& shape);
  /// Filled with 1.
  static Tensor ones(const Shape& shape);
  /// Filled with `value`.
  static Tensor full(const Shape& shape, float value);
  /// `values` in row-major order; throws unless their count is the shape's numel.
  static Tensor from(const std::vector<float>& values, const Shape& shape);
  /// A 0-dimensional tensor holding `value`.
  static Tensor scalar(float value) { return full({}, value); }
  /// Uniform in [low, high), drawn from `rng`. Throws unless low and high are finite, low <= high
  /// and high - low is finite (PyTorch's uniform_ checks).
  static Tensor uniform(const Shape& shape, Rng& rng, float low = 0.0f, float high = 1.0f);
  /// Normal(mean, std^2), drawn from `rng`. Throws if std < 0 or NaN, as PyTorch.
  static Tensor normal(const Shape& shape, Rng& rng, float mean = 0.0f, float std = 1.0f);
  /// Standard normal draws from `rng` (torch.randn): normal(shape, rng, 0, 1).
  static Tensor randn(const Shape& shape, Rng& rng);
  /// Uniform draws in [0, 1) from `rng` (torch.rand): uniform(shape, rng, 0, 1).
  static Tensor rand(const Shape& shape, Rng& rng);
  /// 1-D [start, start + step, ...] up to `end` exclusive (torch.arange): ceil((end - start) /
  /// step) values, each computed as start + i * step in double. Throws if step is 0 or points away
  /// from end.
  static Tensor arange(double start, double end, double step = 1.0);
  /// [0, 1, ..., end - 1] as floats (torch.arange(end)); see arange(start, end, step).
  static Tensor arange(double end) { return arange(0.0, end, 1.0); }
  /// A tensor sharing `storage`, e.g. a gradient buffer seen as a tensor. No autograd.
  static Tensor wrap(const Shape& shape, std::shared_ptr<detail::Storage> storage);

  /// False for a default-constructed (undefined) tensor.
  bool defined() const { return impl_ != nullptr; }
  /// The dimensions.
  const Shape& shape() const;
  /// The number of dimensions (rank).
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  /// Size of dimension d; negative d counts from the end, as in PyTorch.
  int64_t size(int64_t d) const;
  /// The number of elements (1 for a scalar).
  int64_t numel() const;

  /// Data access. The handle has shared semantics, so data() is writable through a const handle
  /// too.
  float* data() const;
  float item() const;  ///< the value of a one-element tensor
  /// A copy of the data, row-major.
  std::vector<float> to_vector() const;

  // Autograd.
  /// True for a leaf marked with set_requires_grad() and for results of ops on such tensors.
  bool requires_grad() const;
  /// Marks a leaf as a parameter-like tensor whose grad backward() fills. Throws on non-leaves.
  Tensor& set_requires_grad(bool value = true);
  /// True unless an op produced this tensor inside a recorded graph.
  bool is_leaf() const;
  /// True once a gradient buffer exists (after a backward reached it).
  bool has_grad() const;
  /// The accumulated gradient as a tensor sharing the grad buffer (undefined if none yet).
  Tensor grad() const;
  /// Drops the gradient buffer (the next backward allocates a zeroed one).
  void zero_grad() const;
  /// Backpropagates from this scalar (seed 1) or with an explicit seed of this tensor's shape.
  void backward() const;
  /// Backpropagates `seed` (dL/d this, same shape as this tensor) through the graph.
  void backward(const Tensor& seed) const;
  /// The node of the op that produced this tensor (null for leaves and after backward).
  const std::shared_ptr<Node>& grad_fn() const;

  /// A tensor sharing this one's data, outside the graph. Throws for an undefined tensor.
  Tensor detach() const;
  /// Same data, new shape (one dimension may be -1). Differentiable; see ops.h.
  Tensor reshape(const Shape& shape) const;
  /// A copy of the data. Differentiable.
  Tensor clone() const;
  /// Fills in place (no autograd); returns *this.
  const Tensor& fill_(float value) const;
  /// Copies `src`'s data into this tensor (same numel; no autograd).
  const Tensor& copy_(const Tensor& src) const;
  /// How many in-place writes its buffer has had (fill_, copy_, an optimizer step,
  /// load_state_dict, ...), shared with every view of the buffer, as PyTorch's _version. A
  /// recorded op notes the versions of the tensors its backward reads, and backward() throws if one
  /// changed since. Writes through data() are not counted unless followed by bump_version().
  uint64_t version() const;
  /// Counts one in-place write of this tensor's buffer (see version()): for code that writes
  /// through data() into a tensor a recorded graph may still read, so that backward() refuses
  /// the stale graph instead of computing gradients from the new values. Returns *this.
  const Tensor& bump_version() const;

  // Indexing and reshaping views (core/ops/index.cpp, core/ops/shape.cpp; the free functions in
  // core/ops.h). Results that stay one contiguous block share this tensor's data; the others copy
  // (the table is in docs/guide/tensors-autodiff.md). All differentiable.
  /// Same data, new shape (one dimension may be -1); as reshape(), since bnlab tensors are
  /// contiguous.
  Tensor view(const Shape& shape) const;
  /// Elements [start, end) of dimension `dim`, every `step`-th; negative start/end count from the
  /// end and out-of-range ones clamp, as in Python slicing. See bnlab::slice.
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  /// `length` elements of dimension `dim` from `start`; throws if they do not fit.
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  /// Index `index` of dimension `dim`, which is removed; negative index counts from the end.
  Tensor select(int64_t dim, int64_t index) const;
  /// select(0, index): t[i] as in PyTorch.
  Tensor operator[](int64_t index) const;
  /// Dimensions dim0 and dim1 swapped (a copy).
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  /// Dimensions reordered: result dim i is input dim dims[i] (a copy).
  Tensor permute(const std::vector<int64_t>& dims) const;
  /// A new dimension of size 1 at `dim` (in [-dim()-1, dim()]); shares data.
  Tensor unsqueeze(int64_t dim) const;
  /// Every dimension of size 1 removed; shares data.
  Tensor squeeze() const;
  /// Dimension `dim` removed if its size is 1 (otherwise the same shape); shares data.
  Tensor squeeze(int64_t dim) const;
  /// Where this tensor's first element sits in the buffer it shares with the tensor it is a view
  /// of (0 for a tensor owning its buffer), in elements.
  int64_t storage_offset() const;
  // Reductions (core/ops/reduce.cpp): the free functions of core/ops.h as methods, as in PyTorch.
  /// sum(*this): scalar sum of all elements.
  Tensor sum() const;
  /// sum(*this, dim, keepdim); dim may be negative.
  Tensor sum(int64_t dim, bool keepdim = false) const;
  /// mean(*this): scalar mean.
  Tensor mean() const;
  /// mean(*this, dim, keepdim).
  Tensor mean(int64_t dim, bool keepdim = false) const;
  /// max(*this): scalar max of all elements.
  Tensor max() const;
  /// max(*this, dim, keepdim): values and int64 indices along dim (ties: the first).
  ValuesIndices max(int64_t dim, bool keepdim = false) const;
  /// min(*this): scalar min of all elements.
  Tensor min() const;
  /// min(*this, dim, keepdim): values and int64 indices along dim (ties: the first).
  ValuesIndices min(int64_t dim, bool keepdim = false) const;
  /// argmax(*this): flat index of the first max.
  int64_t argmax() const;
  /// argmax(*this, dim): indices of the first max along dim.
  std::vector<int64_t> argmax(int64_t dim) const;
  /// argmin(*this): flat index of the first min.
  int64_t argmin() const;
  /// argmin(*this, dim): indices of the first min along dim.
  std::vector<int64_t> argmin(int64_t dim) const;
  /// var(*this): unbiased variance of all elements.
  Tensor var() const;
  /// var(*this, dim, correction, keepdim): divisor max(0, n - correction).
  Tensor var(int64_t dim, double correction = 1.0, bool keepdim = false) const;
  /// std(*this): unbiased standard deviation of all elements.
  Tensor std() const;
  /// std(*this, dim, correction, keepdim).
  Tensor std(int64_t dim, double correction = 1.0, bool keepdim = false) const;

  /// True if both handles share one TensorImpl.
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  /// The shared implementation.
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  /// A handle to an existing implementation.
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<TensorImpl> impl_;
};

/// What max/min over a dim return, as PyTorch's torch.return_types.max: `auto [v, i] = max(x, 1);`.
struct ValuesIndices {
  Tensor values;                 ///< the extrema, x's shape reduced over dim (grad flows back)
  std::vector<int64_t> indices;  ///< their positions along dim, row-major over values' shape
};

/// "tensor([[1, 2], [3, 4]], shape=[2, 2])", eliding the middle of large tensors.
std::ostream& operator<<(std::ostream& os, const Tensor& t);
/// The same text as operator<<.
std::string to_string(const Tensor& t);

/// Prints a shape as PyTorch does: "[2, 3]" ("[]" for a scalar). Shape is a std::vector, so
/// this is found from inside namespace bnlab or after `using namespace bnlab` (or `using
/// bnlab::operator<<`).
std::ostream& operator<<(std::ostream& os, const Shape& shape);

/// Zeros of t's shape (torch.zeros_like).
Tensor zeros_like(const Tensor& t);
/// Ones of t's shape (torch.ones_like).
Tensor ones_like(const Tensor& t);
/// `value` in every element of a tensor of t's shape (torch.full_like).
Tensor full_like(const Tensor& t, float value);

}  // namespace bnlab

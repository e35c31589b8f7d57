// Tensor handle, its factories, the pooled storage behind it, and printing.
#include "core/tensor.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <limits>
#include <mutex>
#include <ostream>
#include <sstream>
#include <unordered_map>

#include "core/autograd.h"
#include "core/ops.h"

namespace bnlab {

std::string to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    BNLAB_CHECK(d >= 0, "tensor: negative dimension in shape ", shape);
    BNLAB_CHECK(d == 0 || n <= std::numeric_limits<int64_t>::max() / d, "tensor: shape ", shape,
                " has more elements than int64 can count");
    n *= d;
  }
  return n;
}

namespace detail {
namespace {

// Freed buffers by exact element count. A training step allocates the same sizes every step, so
// exact matching is enough; the cap keeps a one-off huge tensor from pinning memory forever.
class StoragePool {
 public:
  static StoragePool& instance() {
    static auto* pool =
        new StoragePool();  // never destroyed: storages may be freed during static teardown
    return *pool;
  }

  float* acquire(size_t count) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(count);
      if (it != free_.end() && !it->second.empty()) {
        float* p = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= bytes_for(count);
        return p;
      }
    }
    const size_t bytes = bytes_for(count);
    if (bytes >= kHugePage && huge_pages_wanted()) {
      // Whole 2 MiB pages, asked for as transparent huge pages (granted when the kernel's THP
      // mode is "always" or "madvise"; a refusal leaves ordinary pages). Batch norm's passes
      // stride over activations of several MiB a page of 4 KiB at a time; with huge pages their
      // backward took 0.85-0.92x the time (cifar-cnn's six BN + ReLU shapes, one thread, AMD
      // EPYC with THP "madvise", four alternating runs) and conv was unchanged.
      const size_t whole = (bytes + kHugePage - 1) / kHugePage * kHugePage;
      void* p = std::aligned_alloc(kHugePage, whole);
      BNLAB_CHECK(p != nullptr, "tensor: out of memory allocating ", count, " floats");
      (void)madvise(p, whole, MADV_HUGEPAGE);  // advice only: EINVAL on kernels without THP
      return static_cast<float*>(p);
    }
    void* p = std::aligned_alloc(kAlignment, bytes);
    BNLAB_CHECK(p != nullptr, "tensor: out of memory allocating ", count, " floats");
    return static_cast<float*>(p);
  }

  void give_back(float* p, size_t count) {
    size_t bytes = bytes_for(count);
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + bytes > kMaxCachedBytes) {
      std::free(p);
      return;
    }
    free_[count].push_back(p);
    cached_bytes_ += bytes;
  }

  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_bytes_;
  }

  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [count, list] : free_)
      for (float* p : list) std::free(p);
    free_.clear();
    cached_bytes_ = 0;
  }

 private:
  static constexpr size_t kAlignment = 64;
  static constexpr size_t kHugePage = size_t{2} << 20;
  // BNLAB_HUGE_PAGES=0 turns the advice off (to compare, or where compaction stalls hurt more).
  static bool huge_pages_wanted() {
    static const bool wanted = [] {
      const char* env = std::getenv("BNLAB_HUGE_PAGES");
      return env == nullptr || std::strcmp(env, "0") != 0;
    }();
    return wanted;
  }
  static constexpr size_t kMaxCachedBytes = size_t{1} << 30;
  static size_t bytes_for(size_t count) {
    size_t bytes = std::max<size_t>(count, 1) * sizeof(float);
    return (bytes + kAlignment - 1) / kAlignment * kAlignment;
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<float*>> free_;
  size_t cached_bytes_ = 0;
};

}  // namespace

Storage::Storage(size_t count) : data_(StoragePool::instance().acquire(count)), size_(count) {}

Storage::Storage(const std::shared_ptr<Storage>& base, size_t offset, size_t count)
    : data_(nullptr), size_(count) {
  BNLAB_CHECK(base != nullptr && offset <= base->size_ && count <= base->size_ - offset,
              "tensor: a view of ", count, " elements from offset ", offset,
              " does not fit in a buffer of ", base ? base->size_ : 0);
  data_ = base->data_ + offset;
  offset_ = base->offset_ + offset;
  owner_ = base->owner_ ? base->owner_ : base;
}

Storage::~Storage() {
  if (!owner_) StoragePool::instance().give_back(data_, size_);
}

size_t storage_pool_cached_bytes() { return StoragePool::instance().cached_bytes(); }
void storage_pool_release() { StoragePool::instance().release(); }

}  // namespace detail

namespace {

// The machine's physical memory in bytes (a generous bound when it cannot be read).
size_t physical_memory_bytes() {
  static const size_t bytes = [] {
    long pages = ::sysconf(_SC_PHYS_PAGES), page_size = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0) return size_t{1} << 46;
    return static_cast<size_t>(pages) * static_cast<size_t>(page_size);
  }();
  return bytes;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(size_t{1} << 30));
  return buf;
}

// Refuses a tensor larger than physical memory before allocating it. Such a shape comes from a
// bug or a corrupt file (a data or checkpoint header); with overcommit, malloc would succeed and
// the OOM killer end the process later, with no message.
size_t checked_count(const Shape& shape) {
  const auto count = static_cast<size_t>(numel_of(shape));
  const size_t limit = physical_memory_bytes();
  BNLAB_CHECK(count <= limit / sizeof(float), "tensor: shape ", shape, " needs ",
              gib(static_cast<double>(count) * sizeof(float)), " (", count,
              " floats), more than the ", gib(static_cast<double>(limit)),
              " of memory this machine has");
  return count;
}

std::shared_ptr<TensorImpl> make_impl(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = std::make_shared<detail::Storage>(checked_count(shape));
  return impl;
}

const std::shared_ptr<TensorImpl>& checked(const std::shared_ptr<TensorImpl>& impl) {
  BNLAB_CHECK(impl != nullptr, "tensor: use of an undefined tensor");
  return impl;
}
}  // namespace

Tensor Tensor::empty(const Shape& shape) { return Tensor(make_impl(shape)); }

Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.0f); }
Tensor Tensor::ones(const Shape& shape) { return full(shape, 1.0f); }

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  std::fill_n(t.data(), t.numel(), value);
  return t;
}

Tensor Tensor::from(const std::vector<float>& values, const Shape& shape) {
  BNLAB_CHECK(static_cast<int64_t>(values.size()) == numel_of(shape), "tensor: ", values.size(),
              " values do not fill shape ", shape, " (", numel_of(shape), " elements)");
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

Tensor Tensor::uniform(const Shape& shape, Rng& rng, float low, float high) {
  detail::check_uniform_range("uniform", low, high);
  Tensor t = empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(low, high);
  return t;
}

Tensor Tensor::normal(const Shape& shape, Rng& rng, float mean, float std) {
  detail::check_normal_std("normal", std);
  Tensor t = empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.normal(mean, std);
  return t;
}

Tensor Tensor::randn(const Shape& shape, Rng& rng) { return normal(shape, rng, 0.0f, 1.0f); }
Tensor Tensor::rand(const Shape& shape, Rng& rng) { return uniform(shape, rng, 0.0f, 1.0f); }

Tensor Tensor::arange(double start, double end, double step) {
  BNLAB_CHECK(std::isfinite(start) && std::isfinite(end) && std::isfinite(step),
              "arange: start, end and step must be finite; got ", start, ", ", end, ", ", step);
  BNLAB_CHECK(step != 0.0, "arange: step must be nonzero");
  BNLAB_CHECK((step > 0 && end >= start) || (step < 0 && end <= start), "arange: step ", step,
              " does not lead from start ", start, " to end ", end);
  const double count = std::ceil((end - start) / step);
  BNLAB_CHECK(count < 9e15, "arange: ", count, " elements are too many");
  Tensor t = empty({static_cast<int64_t>(count)});
  float* p = t.data();
  // start + i * step rather than a running sum, so the last value carries no accumulated error.
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(start + static_cast<double>(i) * step);
  return t;
}

Tensor Tensor::wrap(const Shape& shape, std::shared_ptr<detail::Storage> storage) {
  BNLAB_CHECK(storage && static_cast<int64_t>(storage->size()) == numel_of(shape),
              "tensor: storage does not match shape ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = std::move(storage);
  return Tensor(impl);
}

const Shape& Tensor::shape() const { return checked(impl_)->shape; }

int64_t Tensor::size(int64_t d) const {
  int64_t rank = dim();
  int64_t k = d < 0 ? d + rank : d;
  BNLAB_CHECK(k >= 0 && k < rank, "tensor: dimension ", d, " out of range for shape ", shape());
  return shape()[static_cast<size_t>(k)];
}

int64_t Tensor::numel() const { return static_cast<int64_t>(checked(impl_)->storage->size()); }

float* Tensor::data() const { return checked(impl_)->storage->data(); }

float Tensor::item() const {
  BNLAB_CHECK(numel() == 1, "item: tensor of shape ", shape(), " has ", numel(),
              " elements; expected exactly 1");
  return data()[0];
}

std::vector<float> Tensor::to_vector() const {
  return std::vector<float>(data(), data() + numel());
}

bool Tensor::requires_grad() const { return checked(impl_)->requires_grad; }

Tensor& Tensor::set_requires_grad(bool value) {
  BNLAB_CHECK(is_leaf(),
              "set_requires_grad: only leaf tensors can be marked; this one was made by '",
              impl_->grad_fn->op, "'");
  impl_->requires_grad = value;
  return *this;
}

bool Tensor::is_leaf() const { return checked(impl_)->grad_fn == nullptr; }
bool Tensor::has_grad() const { return checked(impl_)->grad != nullptr; }

Tensor Tensor::grad() const {
  if (!has_grad()) return Tensor();
  return wrap(impl_->shape, impl_->grad);
}

void Tensor::zero_grad() const { checked(impl_)->grad.reset(); }

void Tensor::backward() const { detail::run_backward(*this, nullptr); }
void Tensor::backward(const Tensor& seed) const { detail::run_backward(*this, &seed); }

const std::shared_ptr<Node>& Tensor::grad_fn() const { return checked(impl_)->grad_fn; }

Tensor Tensor::detach() const {
  // One checked access before both reads: the order in which wrap's arguments are evaluated is
  // unspecified, so impl_->storage could otherwise be read through null before shape() throws.
  const auto& impl = checked(impl_);
  return wrap(impl->shape, impl->storage);
}

Tensor Tensor::reshape(const Shape& shape) const { return bnlab::reshape(*this, shape); }
Tensor Tensor::view(const Shape& shape) const { return bnlab::view(*this, shape); }
Tensor Tensor::slice(int64_t dim, int64_t start, int64_t end, int64_t step) const {
  return bnlab::slice(*this, dim, start, end, step);
}
Tensor Tensor::narrow(int64_t dim, int64_t start, int64_t length) const {
  return bnlab::narrow(*this, dim, start, length);
}
Tensor Tensor::select(int64_t dim, int64_t index) const { return bnlab::select(*this, dim, index); }
Tensor Tensor::operator[](int64_t index) const { return bnlab::select(*this, 0, index); }
Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  return bnlab::transpose(*this, dim0, dim1);
}
Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  return bnlab::permute(*this, dims);
}
Tensor Tensor::unsqueeze(int64_t dim) const { return bnlab::unsqueeze(*this, dim); }
Tensor Tensor::squeeze() const { return bnlab::squeeze(*this); }
Tensor Tensor::squeeze(int64_t dim) const { return bnlab::squeeze(*this, dim); }
int64_t Tensor::storage_offset() const {
  return static_cast<int64_t>(checked(impl_)->storage->offset());
}
Tensor Tensor::clone() const { return bnlab::clone(*this); }

const Tensor& Tensor::fill_(float value) const {
  std::fill_n(data(), numel(), value);
  return bump_version();
}

const Tensor& Tensor::copy_(const Tensor& src) const {
  BNLAB_CHECK(src.numel() == numel(), "copy_: source shape ", src.shape(), " does not match ",
              shape());
  // memmove: src may be an overlapping view of the same buffer (x.narrow(0, 1, 2).copy_(x.narrow(0,
  // 0, 2))).
  std::memmove(data(), src.data(), static_cast<size_t>(numel()) * sizeof(float));
  return bump_version();
}

uint64_t Tensor::version() const { return checked(impl_)->storage->version(); }

const Tensor& Tensor::bump_version() const {
  checked(impl_)->storage->bump_version();
  return *this;
}

namespace {
// Prints dimension `d` of `t` starting at flat offset `offset`; long dimensions show 3 items,
// "...", 3 items.
void print_dim(std::ostream& os, const Tensor& t, size_t d, int64_t offset, int64_t stride) {
  const Shape& s = t.shape();
  int64_t n = s[d];
  int64_t inner = stride / std::max<int64_t>(n, 1);
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > 6 && i == 3) {
      os << "...";
      i = n - 4;
      if (i + 1 < n) os << ", ";
      continue;
    }
    if (d + 1 == s.size()) {
      os << t.data()[offset + i];
    } else {
      print_dim(os, t, d + 1, offset + i * inner, inner);
    }
    if (i + 1 < n) os << ", ";
  }
  os << "]";
}
}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  os << "tensor(";
  if (t.dim() == 0) {
    os << t.data()[0];
  } else {
    print_dim(os, t, 0, 0, t.numel());
  }
  os << ", shape=" << to_string(t.shape());
  if (t.requires_grad()) os << ", requires_grad";
  if (t.grad_fn()) os << ", grad_fn=" << t.grad_fn()->op;
  return os << ")";
}

std::string to_string(const Tensor& t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Shape& shape) { return os << to_string(shape); }

Tensor zeros_like(const Tensor& t) { return Tensor::zeros(t.shape()); }
Tensor ones_like(const Tensor& t) { return Tensor::ones(t.shape()); }
Tensor full_like(const Tensor& t, float value) { return Tensor::full(t.shape(), value); }

}  // namespace bnlab

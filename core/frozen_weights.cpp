// FrozenWeightsGuard's per-thread store of packed weights (core/frozen_weights.h).
#include "core/frozen_weights.h"

#include <map>
#include <memory>

#include "core/blas.h"
#include "core/tensor.h"

namespace bnlab {
namespace {

struct PackedWeight {
  Tensor weight;  // held, so that its storage (and the address PackedB reads) outlives the entry
  uint64_t version = 0;
  const float* data = nullptr;
  std::unique_ptr<PackedB> packed;
};

struct FrozenStore {
  int depth = 0;
  // Keyed by the tensor's identity (its impl), which the held reference keeps from being reused.
  std::map<const void*, PackedWeight> weights;
};

// Created by the outermost guard and destroyed by it, so nothing here needs a thread_local
// destructor (threads of OpenMP's pool never run under a guard's scope of their own).
thread_local FrozenStore* t_store = nullptr;

}  // namespace

FrozenWeightsGuard::FrozenWeightsGuard() {
  if (t_store == nullptr) t_store = new FrozenStore;
  ++t_store->depth;
}

FrozenWeightsGuard::~FrozenWeightsGuard() {
  if (--t_store->depth == 0) {
    delete t_store;
    t_store = nullptr;
  }
}

bool weights_frozen() { return t_store != nullptr; }

namespace detail {

const PackedB* frozen_packed_transposed(const Tensor& weight) {
  if (t_store == nullptr) return nullptr;
  PackedWeight& entry = t_store->weights[weight.impl().get()];
  if (!entry.packed || entry.version != weight.version() || entry.data != weight.data()) {
    const int64_t K = weight.size(0), D = weight.size(1);
    entry.packed.reset();  // before the new copy, so that at most one is held
    entry.packed = std::make_unique<PackedB>(true, D, K, weight.data(), D);
    entry.weight = weight;
    entry.version = weight.version();
    entry.data = weight.data();
  }
  return entry.packed.get();
}

int64_t frozen_weight_count() {
  return t_store == nullptr ? 0 : static_cast<int64_t>(t_store->weights.size());
}

}  // namespace detail
}  // namespace bnlab

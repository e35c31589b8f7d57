// FrozenWeightsGuard: a promise that no weight changes for a stretch of inference, so that ops may
// keep what they derive from a weight across calls instead of redoing it for every batch.
//
// What is kept today: linear()'s weight in the GEMM kernel's packed form (core/blas.h, PackedB).
// gemm() packs its B operand on every call; for a dense layer's forward at inference that is the
// whole weight per batch, 11.8 % of W2's inference time on one Zen 3 core (docs/performance.md).
// The results are the same bits with and without the guard.
//
// Why a guard and not a cache keyed on Tensor::version alone: version() counts the writes of ops,
// optimizers and load_state_dict, but not raw writes through data(), and a stale packed weight
// would give wrong outputs silently. So the caller says when weights are frozen. Within the guard
// a weight whose version() changes is packed again; a raw write through data() is not seen and is
// the caller's error. The guard holds a reference to each weight it packed, so a weight freed in
// the meantime cannot be mistaken for a new one at the same address.
//
// Per thread, as NoGradGuard: it covers the calls its own thread makes. Nested guards share the
// outermost's packed weights; they are freed when the outermost ends. Trainer::evaluate,
// bnlab eval and bnlab bench's inference run under one.
#pragma once

#include <cstdint>

namespace bnlab {

class PackedB;
class Tensor;

/// While alive, the calling thread's linear() keeps each weight packed after its first use (see
/// the top of core/frozen_weights.h). Weights must not be written through data() meanwhile.
class FrozenWeightsGuard {
 public:
  FrozenWeightsGuard();
  ~FrozenWeightsGuard();
  FrozenWeightsGuard(const FrozenWeightsGuard&) = delete;
  FrozenWeightsGuard& operator=(const FrozenWeightsGuard&) = delete;
};

/// Is a FrozenWeightsGuard alive on this thread?
bool weights_frozen();

namespace detail {

/// `weight` [K, D] packed as gemm()'s B operand transposed (op(B) = weight^T, [D, K]: linear()'s
/// product), made at its first use under this thread's guard (or again after its version()
/// changed) and kept until the outermost guard ends. Null when no guard is alive.
const PackedB* frozen_packed_transposed(const Tensor& weight);

/// How many weights this thread's guard holds packed (0 without a guard); for tests.
int64_t frozen_weight_count();

}  // namespace detail
}  // namespace bnlab

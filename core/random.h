// Rng: a small, seeded, serializable random generator (PCG32, O'Neill 2014) with the draws the
// library needs.
//
// Every source of randomness in bnlab (initialization, dropout masks, shuffling, augmentation)
// takes an Rng& so that a run is reproduced exactly by its seed. The full state is two uint64s,
// which is what checkpoints save to resume a run bit-exactly.
#pragma once

#include <cstdint>

namespace bnlab {

namespace detail {
// Throws, naming `op`, unless uniform draws in [low, high) are defined: PyTorch's checks for
// uniform_ (low and high finite, low <= high, high - low finite in float).
void check_uniform_range(const char* op, float low, float high);
// Throws, naming `op`, unless std >= 0 (so a NaN std throws too): PyTorch's check for normal_.
void check_normal_std(const char* op, float std);
}  // namespace detail

/// A 64-bit seed derived from `seed` and `salt` (the splitmix64 finalizer of seed ^ (salt +
/// golden ratio)): unrelated outputs for neighbouring salts, e.g. one seed per layer or per step
/// with no generator state to save.
uint64_t mix_seed(uint64_t seed, uint64_t salt);

/// A seeded PCG32 generator: every random draw in bnlab takes one, so runs repeat exactly.
class Rng {
 public:
  /// A generator seeded with `seed` on stream `stream` (different streams are independent).
  explicit Rng(uint64_t seed = 0, uint64_t stream = 0x14057b7ef767814fULL) {
    seed_with(seed, stream);
  }

  /// Restarts the sequence as Rng(seed, stream) would.
  void seed_with(uint64_t seed, uint64_t stream = 0x14057b7ef767814fULL);

  /// The next 32 random bits.
  uint32_t next_u32();
  /// Uniform in [0, 1) with 24 random bits, so it is exactly representable as a float.
  float uniform();
  /// Uniform in [low, high).
  float uniform(float low, float high) { return low + (high - low) * uniform(); }
  /// out[0..n) = n calls of uniform(), the same values in the same order, and the generator ends
  /// where those calls would leave it; several times faster than the calls (dropout's masks).
  void fill_uniform(float* out, int64_t n);
  /// Standard normal via Box-Muller; the spare value is cached (and is part of the state).
  float normal();
  /// Normal with the given mean and standard deviation.
  float normal(float mean, float std) { return mean + std * normal(); }
  /// Uniform integer in [0, n), unbiased (Lemire's method with rejection).
  uint32_t below(uint32_t n);
  /// An independent generator for a sub-task (e.g. one per epoch), derived deterministically.
  Rng split(uint64_t salt) const;

  /// The complete generator state, for checkpoints (bit-exact resume).
  struct State {
    uint64_t state;  ///< PCG32 state
    uint64_t inc;    ///< PCG32 stream increment
    float spare;     ///< Box-Muller's cached second normal
    bool has_spare;  ///< whether `spare` is valid
  };
  /// The current state.
  State state() const { return {state_, inc_, spare_, has_spare_}; }
  /// Continues exactly where the generator that produced `s` was.
  void set_state(const State& s) {
    state_ = s.state;
    inc_ = s.inc;
    spare_ = s.spare;
    has_spare_ = s.has_spare;
  }

 private:
  uint64_t state_ = 0;
  uint64_t inc_ = 1;
  float spare_ = 0.0f;
  bool has_spare_ = false;
};

}  // namespace bnlab

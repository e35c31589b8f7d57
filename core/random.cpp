// PCG32 (XSH-RR variant), Box-Muller normals and Lemire's bounded integers.
// Reference: M. E. O'Neill, "PCG: A Family of Simple Fast Space-Efficient Statistically Good
// Algorithms for Random Number Generation", 2014.
#include "core/random.h"

#include <cmath>

#include "core/error.h"

namespace bnlab {

namespace detail {

void check_uniform_range(const char* op, float low, float high) {
  BNLAB_CHECK(std::isfinite(low) && std::isfinite(high), op,
              ": low and high must be finite; got low=", low, ", high=", high);
  BNLAB_CHECK(low <= high, op, ": expects a [low, high) range, but found low=", low,
              " > high=", high);
  BNLAB_CHECK(std::isfinite(high - low), op, ": high - low overflows float (low=", low,
              ", high=", high, ")");
}

void check_normal_std(const char* op, float std) {
  BNLAB_CHECK(std >= 0.0f, op, ": expects std >= 0, but found std=", std);
}

}  // namespace detail

void Rng::seed_with(uint64_t seed, uint64_t stream) {
  state_ = 0;
  inc_ = (stream << 1u) | 1u;
  next_u32();
  state_ += seed;
  next_u32();
  has_spare_ = false;
  spare_ = 0.0f;
}

namespace {

constexpr uint64_t kPcgMultiplier = 6364136223846793005ULL;

// PCG32's output (XSH-RR) for the state before a step.
inline uint32_t pcg_output(uint64_t old) {
  auto xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
  auto rot = static_cast<uint32_t>(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

inline float uniform_of(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

}  // namespace

uint32_t Rng::next_u32() {
  uint64_t old = state_;
  state_ = old * kPcgMultiplier + inc_;
  return pcg_output(old);
}

float Rng::uniform() { return uniform_of(next_u32()); }

void Rng::fill_uniform(float* out, int64_t n) {
  // One generator is one chain: each state is the previous times a constant plus inc_, so n calls
  // of uniform() wait n times on a 64-bit multiply and an add. kLanes chains started one step
  // apart, each jumping kLanes steps at a time (state_{i+L} = a^L state_i + inc (a^{L-1} + ... +
  // a + 1), the LCG's jump-ahead), produce the same states in the same order without waiting on
  // each other; the loop over lanes vectorizes where the CPU multiplies 64-bit lanes.
  constexpr int kLanes = 8;
  uint64_t jump_mul = 1, jump_add = 0;
  for (int k = 0; k < kLanes; ++k) {
    jump_add = jump_add * kPcgMultiplier + inc_;
    jump_mul *= kPcgMultiplier;
  }
  int64_t i = 0;
  if (n >= kLanes) {
    uint64_t lane[kLanes];
    lane[0] = state_;
    for (int k = 1; k < kLanes; ++k) lane[k] = lane[k - 1] * kPcgMultiplier + inc_;
    for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
      for (int k = 0; k < kLanes; ++k) {
        out[i + k] = uniform_of(pcg_output(lane[k]));
        lane[k] = lane[k] * jump_mul + jump_add;
      }
    }
    state_ = lane[0];  // the state after the i draws made so far
  }
  for (; i < n; ++i) out[i] = uniform();
}

float Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // u1 in (0, 1] so that log(u1) is finite.
  double u1 = (static_cast<double>(next_u32() >> 8) + 1.0) / 16777216.0;
  double u2 = static_cast<double>(next_u32() >> 8) / 16777216.0;
  double r = std::sqrt(-2.0 * std::log(u1));
  double theta = 2.0 * M_PI * u2;
  spare_ = static_cast<float>(r * std::sin(theta));
  has_spare_ = true;
  return static_cast<float>(r * std::cos(theta));
}

uint32_t Rng::below(uint32_t n) {
  if (n <= 1) return 0;
  uint64_t m = static_cast<uint64_t>(next_u32()) * n;
  auto low = static_cast<uint32_t>(m);
  if (low < n) {
    uint32_t threshold = (0u - n) % n;
    while (low < threshold) {
      m = static_cast<uint64_t>(next_u32()) * n;
      low = static_cast<uint32_t>(m);
    }
  }
  return static_cast<uint32_t>(m >> 32);
}

uint64_t mix_seed(uint64_t seed, uint64_t salt) {
  uint64_t z = seed ^ (salt + 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Mix the current state with the salt so children of different salts are unrelated.
Rng Rng::split(uint64_t salt) const { return Rng(mix_seed(state_, salt), salt); }

}  // namespace bnlab

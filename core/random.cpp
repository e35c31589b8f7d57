// PCG32 (XSH-RR variant), Box-Muller normals and Lemire's bounded integers.
// Reference: M. E. O'Neill, "PCG: A Family of Simple Fast Space-Efficient Statistically Good
// Algorithms for Random Number Generation", 2014.
#include "core/random.h"

#include <cmath>

namespace bnlab {

void Rng::seed_with(uint64_t seed, uint64_t stream) {
  state_ = 0;
  inc_ = (stream << 1u) | 1u;
  next_u32();
  state_ += seed;
  next_u32();
  has_spare_ = false;
  spare_ = 0.0f;
}

uint32_t Rng::next_u32() {
  uint64_t old = state_;
  state_ = old * 6364136223846793005ULL + inc_;
  auto xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
  auto rot = static_cast<uint32_t>(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

float Rng::uniform() { return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f); }

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

// Whether a float buffer holds only finite values, and how large they are (internal; not
// installed). The conv paths that mix a whole tile or image (Winograd, frequency domain) bound
// their operands with it before they run, and the trainer's non-finite guard tests each step's
// gradients.
#pragma once

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstdint>

#include "core/parallel.h"

namespace bnlab::detail {

/// The largest biased exponent field (0-255) among the n floats at p: every finite value v there
/// has |v| < 2^(result - 126), and the result is 255 exactly when one of them is NaN or +-inf. An
/// integer max of the exponent bits vectorizes without -ffast-math (a float max or sum would not,
/// and a sum could overflow on large finite values). It reads everything (no early exit): the
/// answer is nearly always "finite", and a branch per vector would cost more than it saves.
inline int max_exponent(const float* p, int64_t n) {
  // Above a few hundred KiB both cores read: a conv's input in a W4 step is up to 8 MiB.
  constexpr int64_t kParallelFloats = int64_t{1} << 17;
  uint32_t top = 0;
  if (n >= kParallelFloats && team_has_threads()) {
#pragma omp parallel for simd schedule(static) reduction(max : top)
    for (int64_t i = 0; i < n; ++i)
      top = std::max(top, std::bit_cast<uint32_t>(p[i]) & 0x7f800000u);
  } else {
#pragma omp simd reduction(max : top)
    for (int64_t i = 0; i < n; ++i)
      top = std::max(top, std::bit_cast<uint32_t>(p[i]) & 0x7f800000u);
  }
  return static_cast<int>(top >> 23);
}

/// True when none of the n floats at p is NaN or +-inf: a float is non-finite exactly when its
/// exponent bits are all ones.
inline bool all_finite(const float* p, int64_t n) { return max_exponent(p, n) < 255; }

}  // namespace bnlab::detail

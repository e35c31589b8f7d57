// Whether a float buffer holds only finite values (internal; not installed). The conv paths that
// mix a whole tile or image (Winograd, frequency domain) test their inputs with it before they
// run, and the trainer's non-finite guard tests each step's gradients.
#pragma once

#include <omp.h>

#include <bit>
#include <cstdint>

#include "core/parallel.h"

namespace bnlab::detail {

/// 1 when v is NaN or +-inf, else 0: its exponent bits are all ones exactly then.
inline uint32_t nonfinite_bit(float v) {
  return static_cast<uint32_t>((std::bit_cast<uint32_t>(v) & 0x7f800000u) == 0x7f800000u);
}

/// True when none of the n floats at p is NaN or +-inf. A float is non-finite exactly when its
/// exponent bits are all ones, and OR-ing integer tests vectorizes without -ffast-math (a float sum
/// would not, and could overflow on large finite values). It reads everything (no early exit): the
/// answer is nearly always "finite", and a branch per vector would cost more than it saves.
inline bool all_finite(const float* p, int64_t n) {
  // Above a few hundred KiB both cores read: a conv's input in a W4 step is up to 8 MiB.
  constexpr int64_t kParallelFloats = int64_t{1} << 17;
  uint32_t bad = 0;
  if (n >= kParallelFloats && team_has_threads()) {
#pragma omp parallel for simd schedule(static) reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) bad |= nonfinite_bit(p[i]);
  } else {
#pragma omp simd reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) bad |= nonfinite_bit(p[i]);
  }
  return bad == 0;
}

}  // namespace bnlab::detail

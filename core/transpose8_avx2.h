// The in-register transpose of an 8 x 8 float block in AVX2 registers, and the lane mask for
// partial blocks, shared by the GEMM's packing (core/gemm_avx2.cpp), the 2x2 max-pool
// (core/ops/max_pool2x2_avx2.cpp) and the frequency-domain convolution's lane transposes
// (core/ops/conv_fourier.cpp). The AVX2 counterpart of core/transpose16_avx512.h. Internal; not
// installed.
//
// Only callers compiled for AVX2 (a target attribute or pragma) may use it, and only after the
// run-time check of the CPU that their dispatcher makes.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace bnlab::detail {

// All-ones in the first n of 8 lanes (n clamped to 0..8), for maskload / maskstore of a partial
// block.
__attribute__((target("avx2,fma"))) inline __m256i first_lanes8(int64_t n) {
  alignas(32) static constexpr int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                     0,  0,  0,  0,  0,  0,  0,  0};
  return _mm256_loadu_si256(
      reinterpret_cast<const __m256i*>(kTable + 8 - std::clamp<int64_t>(n, 0, 8)));
}

// r[i] lane j <-> r[j] lane i. Pairs of floats, then quads, then the 128-bit halves.
__attribute__((target("avx2,fma"))) inline void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {
    const __m256 lo = t[4 * h], hi = t[4 * h + 1], lo2 = t[4 * h + 2], hi2 = t[4 * h + 3];
    s[4 * h + 0] = _mm256_shuffle_ps(lo, lo2, _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * h + 1] = _mm256_shuffle_ps(lo, lo2, _MM_SHUFFLE(3, 2, 3, 2));
    s[4 * h + 2] = _mm256_shuffle_ps(hi, hi2, _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * h + 3] = _mm256_shuffle_ps(hi, hi2, _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x20);
    r[4 + i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x31);
  }
}

}  // namespace bnlab::detail

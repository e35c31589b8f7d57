// The in-register transpose of a 16 x 16 float block in AVX-512F registers, and the lane mask
// for partial blocks, shared by the GEMM's packing (core/gemm_avx512.cpp) and the
// frequency-domain convolution's lane transposes (core/ops/conv_fourier.cpp). Internal; not
// installed.
//
// Only callers compiled for AVX-512F (a target attribute or pragma) may use it, and only after the
// run-time check of the CPU that their dispatcher makes.
#pragma once

#include <immintrin.h>

#include <cstdint>

// GCC 12's AVX-512 shuffle intrinsics start from _mm512_undefined_ps(), a self-initialized
// variable that -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593, fixed in
// GCC 13); the value is fully overwritten, so the warning is noise here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace bnlab::detail {

// Mask of the first n of 16 lanes (n <= 0: none, n >= 16: all), for the masked loads and stores
// of a partial block.
__attribute__((target("avx512f"), always_inline)) inline __mmask16 first_lanes(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << n) - 1u);
}

// r[i] lane j <-> r[j] lane i. Three shuffle stages (pairs of floats, then quads, then 128-bit
// lanes twice), the usual AVX-512 sequence.
__attribute__((target("avx512f"), always_inline)) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int h = 0; h < 16; h += 8) {
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
    }
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
}

}  // namespace bnlab::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

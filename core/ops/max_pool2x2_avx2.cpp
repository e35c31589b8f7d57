// max_pool2d 2x2 stride 2, one output row at a time in AVX2 registers, for CPUs without AVX-512F:
// the forward, and the unpooling that batch norm's pooled backward re-forms its planes with.
//
// Why: GCC 12 does not vectorize the portable loops (core/ops/pool.cpp) for AVX2 (the stride-2
// loads and the byte stores of the places stay scalar), and on an AVX2-only build the 2x2 forward
// took 33 % of lenet's training step (perf, one thread, after the frequency-domain transforms were
// fixed). A chunk of up to 8 outputs is two loads per input row, a de-interleave into left and
// right cells, and the portable code's tournament. Batch norm's pooled backward re-formed
// cifar-cnn's 16-wide rows with four scalar selects per window; the unpool writes a chunk of 8
// windows with a compare per place, two masks and two interleaving shuffles per row. (max_pool2d's
// own backward keeps the portable selects: an AVX2 routing of the same form took 1.2-1.6x their
// time at cifar-cnn's 4- and lenet's 7-wide rows, the same at 16 wide, docs/performance.md.)
//
// Conventions: those of core/ops/max_pool2x2_avx512.cpp (the first maximum in row-major window
// order wins a tie, a NaN beats any number and any NaN before it; each row's pair first, then the
// bottom pair's winner against the top's), so the results are bit-identical to the other kernels'.
// Partial chunks use masked loads and stores, which touch only the row's own cells (masked-off
// lanes do not fault).
#include "core/ops/max_pool2x2_avx2.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "core/ops/max_pool2x2_places.h"
#include "core/transpose8_avx2.h"

#define BNLAB_AVX2 __attribute__((target("avx2,fma")))

namespace bnlab::detail {

namespace {

constexpr int64_t kChunk = 8;  // outputs per chunk: one ymm of floats

// Lanes (all-ones floats) where v (later in the window) replaces best: v > best, or v is NaN.
BNLAB_AVX2 inline __m256 beats(__m256 v, __m256 best) {
  const __m256 greater = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
  const __m256 v_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  return _mm256_or_ps(greater, v_nan);
}

// A shuffle within 128-bit halves leaves [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]; this puts the 64-bit
// pieces in order: [lo0 lo2 lo4 lo6 hi0 hi2 hi4 hi6] (cells 0, 2, ..., 14 for the left ones).
BNLAB_AVX2 inline __m256 in_order(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Pair winners of one input row chunk of n (1..8) outputs: value and place (all-ones lanes where
// the right cell won).
struct Pair {
  __m256 value, right;
};

BNLAB_AVX2 inline Pair pair_max(const float* row, int64_t n) {
  __m256 lo, hi;
  if (n == kChunk) {
    lo = _mm256_loadu_ps(row);
    hi = _mm256_loadu_ps(row + 8);
  } else {
    lo = _mm256_maskload_ps(row, first_lanes8(2 * n));
    hi = n > 4 ? _mm256_maskload_ps(row + 8, first_lanes8(2 * n - 8)) : _mm256_setzero_ps();
  }
  const __m256 left = in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)));
  const __m256 right = in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m256 r = beats(right, left);
  return {_mm256_blendv_ps(left, right, r), r};
}

// Byte i of spread[m] is bit i of m: 8 lane bits to 8 place bytes without BMI2's pdep.
constexpr std::array<uint64_t, 256> kSpread = [] {
  std::array<uint64_t, 256> t{};
  for (unsigned m = 0; m < 256; ++m) {
    for (unsigned i = 0; i < 8; ++i) t[m] |= static_cast<uint64_t>((m >> i) & 1u) << (8 * i);
  }
  return t;
}();

// Lanes 2i and 2i + 1 of the 16 cells from lane i of left and of right: [l0 r0 l1 r1 ... l7 r7]
// as the cells 0-7 and 8-15.
struct Interleaved {
  __m256 lo, hi;
};
BNLAB_AVX2 inline Interleaved interleave(__m256 left, __m256 right) {
  const __m256 a = _mm256_unpacklo_ps(left, right);  // l0 r0 l1 r1 | l4 r4 l5 r5
  const __m256 b = _mm256_unpackhi_ps(left, right);  // l2 r2 l3 r3 | l6 r6 l7 r7
  return {_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31)};
}

// One gradient row chunk of n (1..8) windows: cells 2i and 2i + 1 (window i's left and right)
// get g[i] where place[i] is left_place or left_place + 1, +0 elsewhere.
BNLAB_AVX2 inline void unpool_chunk(float* row, __m256 g, __m256i places, int left_place,
                                    int64_t n) {
  const __m256 left =
      _mm256_castsi256_ps(_mm256_cmpeq_epi32(places, _mm256_set1_epi32(left_place)));
  const __m256 right =
      _mm256_castsi256_ps(_mm256_cmpeq_epi32(places, _mm256_set1_epi32(left_place + 1)));
  const Interleaved cells = interleave(_mm256_and_ps(left, g), _mm256_and_ps(right, g));
  if (n == kChunk) {
    _mm256_storeu_ps(row, cells.lo);
    _mm256_storeu_ps(row + 8, cells.hi);
  } else {
    _mm256_maskstore_ps(row, first_lanes8(2 * n), cells.lo);
    _mm256_maskstore_ps(row + 8, first_lanes8(2 * n - 8), cells.hi);
  }
}

}  // namespace

BNLAB_AVX2 void max_pool2x2_unpool_avx2(float* top, float* bottom, const float* g,
                                        const uint8_t* place, int64_t Wo) {
  for (int64_t ow = 0; ow < Wo; ow += kChunk) {
    const int64_t n = std::min(kChunk, Wo - ow);
    uint64_t bytes;
    if (n == kChunk) {
      std::memcpy(&bytes, place + ow, 8);
    } else {
      bytes = load_low_place_bytes(place + ow, n);
    }
    const __m256 gv =
        n == kChunk ? _mm256_loadu_ps(g + ow) : _mm256_maskload_ps(g + ow, first_lanes8(n));
    const __m256i places = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(bytes)));
    unpool_chunk(top + 2 * ow, gv, places, 0, n);
    unpool_chunk(bottom + 2 * ow, gv, places, 2, n);
  }
}

BNLAB_AVX2 void max_pool2x2_row_avx2(float* out, uint8_t* place, const float* top,
                                     const float* bottom, int64_t Wo) {
  for (int64_t ow = 0; ow < Wo; ow += kChunk) {
    const int64_t n = std::min(kChunk, Wo - ow);
    const Pair t = pair_max(top + 2 * ow, n);
    const Pair b = pair_max(bottom + 2 * ow, n);
    const __m256 lower = beats(b.value, t.value);  // ties keep the top (earlier) cell
    const __m256 best = _mm256_blendv_ps(t.value, b.value, lower);
    if (n == kChunk) {
      _mm256_storeu_ps(out + ow, best);
    } else {
      _mm256_maskstore_ps(out + ow, first_lanes8(n), best);
    }
    if (place) {
      // Place = 2 * lower + (lower ? bottom's right bit : top's right bit), per lane.
      const unsigned low = static_cast<unsigned>(_mm256_movemask_ps(lower));
      const unsigned bit = (low & static_cast<unsigned>(_mm256_movemask_ps(b.right))) |
                           (~low & static_cast<unsigned>(_mm256_movemask_ps(t.right)));
      const uint64_t bytes = (kSpread[low] << 1) | kSpread[bit & 0xFFu];
      if (n == kChunk) {
        std::memcpy(place + ow, &bytes, 8);
      } else {
        store_low_place_bytes(place + ow, bytes, n);
      }
    }
  }
}

}  // namespace bnlab::detail

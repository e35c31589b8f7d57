// max_pool2d 2x2 stride 2, one output row at a time in AVX-512F registers.
//
// Why: the portable loops in core/ops/pool.cpp vectorize one input row per loop, and at lenet's
// widths (14 and 7 outputs per row) most of each loop is its scalar remainder; max_pool2d forward
// took 12 % of W3's training step (perf, 1 thread). Here a chunk of up to 16 outputs is two masked
// loads per input row, a de-interleave into left and right cells, and the same tournament as the
// portable code, with no scalar remainder at any width.
//
// Conventions (the same as the portable kernels, so results are bit-identical):
//   - the first maximum in row-major window order wins a tie, and a NaN beats any number and any
//     NaN before it (PyTorch's rule); the tournament takes each row's pair first, then the bottom
//     pair's winner against the top's, which picks the same cell as the row-major chain because
//     "first maximum, last NaN above all" is associative;
//   - backward, assign: winners get 0 + g, the other cells +0 (as a zeroed buffer plus g would);
//     accumulate: winners get row + g, the other cells are not touched (adding +0 would turn a -0
//     already there into +0); unpool (batch norm's pooled backward re-forming its planes):
//     winners get g as it is, -0 included, the other cells +0.
// Masked loads and stores touch only the 2 Wo input / Wo output cells of the row, so a row at the
// end of an allocation is safe (masked-off lanes do not fault); full chunks use plain ones.
#include "core/ops/max_pool2x2_avx512.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/ops/max_pool2x2_places.h"

#define BNLAB_AVX512 __attribute__((target("avx512f")))

// GCC 12's AVX-512 shuffle intrinsics start from _mm512_undefined_*(), which -Wmaybe-uninitialized
// reports wherever they are inlined (GCC bug 105593); the value is fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace bnlab::detail {

namespace {

// Lanes where v (later in the window) replaces best: v > best, or v is NaN.
BNLAB_AVX512 inline __mmask16 beats(__m512 v, __m512 best) {
  const __mmask16 greater = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
  const __mmask16 v_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return static_cast<__mmask16>(greater | v_nan);
}

// The masks of a chunk of n (1..16) outputs: the outputs, and the 2 n input cells split over two
// 16-lane registers.
struct ChunkMasks {
  __mmask16 out, in_lo, in_hi;
};

inline ChunkMasks chunk_masks(int64_t n) {
  const auto first = [](int64_t k) {
    return static_cast<__mmask16>(k >= 16 ? 0xFFFF : (1u << std::max<int64_t>(k, 0)) - 1);
  };
  return {first(n), first(2 * n), first(2 * n - 16)};
}

// Stores the lanes of `mask`. A masked store with all lanes set is much slower than a plain one on
// AMD Zen 4/5 (it halved this kernel's speed at Wo = 16), so full chunks use the plain store.
BNLAB_AVX512 inline void store(float* p, __mmask16 mask, __m512 v) {
  if (mask == 0xFFFF) {
    _mm512_storeu_ps(p, v);
  } else {
    _mm512_mask_storeu_ps(p, mask, v);
  }
}

// Pair winners of one input row chunk: value and place bit (0 left, 1 right) per output.
struct Pair {
  __m512 value;
  __mmask16 right;
};

BNLAB_AVX512 inline Pair pair_max(const float* row, const ChunkMasks& m) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const bool full = m.in_hi == 0xFFFF;
  const __m512 lo = full ? _mm512_loadu_ps(row) : _mm512_maskz_loadu_ps(m.in_lo, row);
  // A chunk of 8 or fewer outputs has no input cell in the second register: no load at all. A
  // masked load with every lane off is not free, and for lenet's 7-wide and cifar-cnn's 4-wide
  // rows it is every row's second load (the pool kernels 2-5 % faster without it, one thread).
  const __m512 hi = full      ? _mm512_loadu_ps(row + 16)
                    : m.in_hi ? _mm512_maskz_loadu_ps(m.in_hi, row + 16)
                              : _mm512_setzero_ps();
  const __m512 left = _mm512_permutex2var_ps(lo, even, hi);
  const __m512 right = _mm512_permutex2var_ps(lo, odd, hi);
  const __mmask16 r = beats(right, left);
  return {_mm512_mask_blend_ps(r, left, right), r};
}

// The first n (< 16) place bytes of a chunk, to or from the low bytes of a register, in pieces of
// 8, 4, 2 and 1 bytes (see store_low_place_bytes).
inline void store_place_bytes(uint8_t* dst, __m128i bytes, int64_t n) {
  uint64_t lo = static_cast<uint64_t>(_mm_cvtsi128_si64(bytes));
  if (n & 8) {
    std::memcpy(dst, &lo, 8);
    dst += 8;
    lo = static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(bytes, bytes)));
  }
  store_low_place_bytes(dst, lo, n & 7);
}

inline __m128i load_place_bytes(const uint8_t* src, int64_t n) {
  uint64_t part[2] = {0, 0};
  int shift = 0, word = 0;
  if (n & 8) {
    std::memcpy(&part[0], src, 8);
    src += 8;
    word = 1;
  }
  if (n & 4) {
    uint32_t v;
    std::memcpy(&v, src, 4);
    src += 4;
    part[word] |= static_cast<uint64_t>(v);
    shift = 32;
  }
  if (n & 2) {
    uint16_t v;
    std::memcpy(&v, src, 2);
    src += 2;
    part[word] |= static_cast<uint64_t>(v) << shift;
    shift += 16;
  }
  if (n & 1) part[word] |= static_cast<uint64_t>(*src) << shift;
  return _mm_set_epi64x(static_cast<int64_t>(part[1]), static_cast<int64_t>(part[0]));
}

// The 16 places of a chunk as int32 lanes (bytes past n read as 0 and are never used).
BNLAB_AVX512 inline __m512i load_places(const uint8_t* place, int64_t n) {
  if (n == 16)
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(place)));
  return _mm512_cvtepu8_epi32(load_place_bytes(place, n));
}

// How a gradient row is written (see the conventions above).
enum class Route { assign, accumulate, unpool };

// One gradient row chunk: lanes 2i and 2i + 1 (the window's left and right cells) of the 2 n cells
// get g[i] where place[i] is `left_place` or `left_place + 1`. The left and right cells' values are
// selected in output lanes, then interleaved (two permutes per 16 outputs).
BNLAB_AVX512 inline void route_chunk(float* row, __m512 g, __m512i places, int left_place,
                                     const ChunkMasks& m, Route route) {
  // Interleaving indices: lane 2i takes lane i of the first operand, lane 2i + 1 lane i of the
  // second (the low eight of each for the first register, the high eight for the second).
  const __m512i interleave_lo =
      _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i interleave_hi = _mm512_add_epi32(interleave_lo, _mm512_set1_epi32(8));
  const __m512 zero = _mm512_setzero_ps();
  const __mmask16 left = _mm512_cmpeq_epi32_mask(places, _mm512_set1_epi32(left_place));
  const __mmask16 right = _mm512_cmpeq_epi32_mask(places, _mm512_set1_epi32(left_place + 1));
  // 0 + g in the winners (+0 for a -0 gradient, as a zeroed buffer plus g gives) when assigning,
  // else g itself (accumulate adds it: a winner's -0 plus a -0 g stays -0, as the portable loops
  // give), +0 elsewhere.
  const bool as_is = route != Route::assign;
  const __m512 left_g = as_is ? _mm512_maskz_mov_ps(left, g) : _mm512_maskz_add_ps(left, zero, g);
  const __m512 right_g =
      as_is ? _mm512_maskz_mov_ps(right, g) : _mm512_maskz_add_ps(right, zero, g);
  const __m512i interleave[2] = {interleave_lo, interleave_hi};
  const __mmask16 in_masks[2] = {m.in_lo, m.in_hi};
  for (int half = 0; half < 2; ++half) {
    if (!in_masks[half]) continue;
    float* cells = row + 16 * half;
    const __m512 routed = _mm512_permutex2var_ps(left_g, interleave[half], right_g);
    if (route != Route::accumulate) {
      store(cells, in_masks[half], routed);
      continue;
    }
    // Accumulating: only the winners are added to (adding +0 would turn a -0 there into +0).
    const __m512i all = _mm512_set1_epi32(-1);
    const __mmask16 won = _mm512_test_epi32_mask(
        _mm512_permutex2var_epi32(_mm512_maskz_mov_epi32(left, all), interleave[half],
                                  _mm512_maskz_mov_epi32(right, all)),
        all);
    const __m512 old = in_masks[half] == 0xFFFF ? _mm512_loadu_ps(cells)
                                                : _mm512_maskz_loadu_ps(in_masks[half], cells);
    store(cells, in_masks[half], _mm512_mask_add_ps(old, won, old, routed));
  }
}

}  // namespace

BNLAB_AVX512 void max_pool2x2_row_avx512(float* out, uint8_t* place, const float* top,
                                         const float* bottom, int64_t Wo) {
  const __m512i one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2);
  for (int64_t ow = 0; ow < Wo; ow += 16) {
    const ChunkMasks m = chunk_masks(Wo - ow);
    const Pair t = pair_max(top + 2 * ow, m);
    const Pair b = pair_max(bottom + 2 * ow, m);
    const __mmask16 lower = beats(b.value, t.value);  // ties keep the top (earlier) cell
    store(out + ow, m.out, _mm512_mask_blend_ps(lower, t.value, b.value));
    if (place) {
      const __m512i top_place = _mm512_maskz_mov_epi32(t.right, one);
      const __m512i bottom_place = _mm512_add_epi32(two, _mm512_maskz_mov_epi32(b.right, one));
      // Narrowed in a register, then stored: vpmovdb straight to memory is microcoded on Zen 4.
      const __m128i places =
          _mm512_cvtepi32_epi8(_mm512_mask_blend_epi32(lower, top_place, bottom_place));
      if (m.out == 0xFFFF) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(place + ow), places);
      } else {
        store_place_bytes(place + ow, places, Wo - ow);
      }
    }
  }
}

namespace {

BNLAB_AVX512 void route_rows(float* top, float* bottom, const float* g, const uint8_t* place,
                             int64_t Wo, Route route) {
  for (int64_t ow = 0; ow < Wo; ow += 16) {
    const int64_t n = std::min<int64_t>(16, Wo - ow);
    const ChunkMasks m = chunk_masks(n);
    const __m512 gv = n == 16 ? _mm512_loadu_ps(g + ow) : _mm512_maskz_loadu_ps(m.out, g + ow);
    const __m512i places = load_places(place + ow, n);
    route_chunk(top + 2 * ow, gv, places, 0, m, route);
    route_chunk(bottom + 2 * ow, gv, places, 2, m, route);
  }
}

}  // namespace

BNLAB_AVX512 void max_pool2x2_route_avx512(float* top, float* bottom, const float* g,
                                           const uint8_t* place, int64_t Wo, bool assign) {
  route_rows(top, bottom, g, place, Wo, assign ? Route::assign : Route::accumulate);
}

BNLAB_AVX512 void max_pool2x2_unpool_avx512(float* top, float* bottom, const float* g,
                                            const uint8_t* place, int64_t Wo) {
  route_rows(top, bottom, g, place, Wo, Route::unpool);
}

}  // namespace bnlab::detail

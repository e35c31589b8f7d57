// detail::plane_moments (core/ops/plane_moments.h): the mean and M2 of each plane, batch norm's
// first pass on images, called both by batch norm itself (core/ops/norm.cpp) and by the convs that
// compute it while their output is in cache.
#include "core/ops/plane_moments.h"

#include <immintrin.h>

#include <cstdint>

#include "core/cpu_isa.h"

namespace bnlab {

namespace detail {

// The vector versions keep 32 double partial sums per pass, lane j taking the values k = j mod 32
// of the plane's body (S rounded down to 32), as independent vector accumulators: with omp simd's
// one accumulator per pass each step waited for the previous add. The lanes are then added in one
// fixed tree (lane_sum), the tail in order, and M2's squares are fused multiply-adds, so the
// AVX-512 (four 8-lane vectors) and AVX2 (eight 4-lane vectors) versions give the same bits; a
// test checks each against a scalar emulation of that order. bench/micro_ops on the AMD EPYC
// (Zen 5), AVX-512 against omp simd: alone, on 1 MiB of planes, 6.6 -> 9.7 values/ns at S = 1024
// and 3.0 -> 5.4 at S = 64; inside W4's first conv (BM_conv2d_forward_with_moments less
// BM_conv2d_forward) 0.58-0.71 -> 0.45 ms. AVX2 on the AMD EPYC (Zen 3), inside W3's first conv:
// see docs/performance.md. The portable version keeps omp simd's order; it differs from the
// vector versions in the last bits, never within one process.
namespace {

// GCC 12's AVX-512 conversion intrinsics start from _mm512_undefined_pd(), which
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// The values after the 32-wide body, in order: added to the body's sum, and their fused squared
// deviations added to the body's M2. Shared by both vector versions (no intrinsics: inlined into
// each, __builtin_fma becomes that version's FMA instruction).
inline double tail_sum(double sum, const float* xc, int64_t body, int64_t S) {
  for (int64_t k = body; k < S; ++k) sum += static_cast<double>(xc[k]);
  return sum;
}
inline double tail_m2(double m2, const float* xc, int64_t body, int64_t S, double mean) {
  for (int64_t k = body; k < S; ++k) {
    const double dev = xc[k] - mean;
    m2 = __builtin_fma(dev, dev, m2);
  }
  return m2;
}

// The lanes' tree: per lane (a + b) + (c + d), then the upper half of the 8 lanes onto the lower,
// twice, then the last two (GCC's _mm512_reduce_add_pd, written out so both versions share it).
__attribute__((target("avx2,fma"))) inline double halves_sum(__m256d lo, __m256d hi) {
  const __m256d four = _mm256_add_pd(hi, lo);
  const __m128d two = _mm_add_pd(_mm256_extractf128_pd(four, 1), _mm256_castpd256_pd128(four));
  return _mm_cvtsd_f64(two) + _mm_cvtsd_f64(_mm_unpackhi_pd(two, two));
}

__attribute__((target("avx512f,avx2,fma"))) inline double lane_sum(__m512d a, __m512d b, __m512d c,
                                                                   __m512d d) {
  const __m512d t = _mm512_add_pd(_mm512_add_pd(a, b), _mm512_add_pd(c, d));
  return halves_sum(_mm512_castpd512_pd256(t), _mm512_extractf64x4_pd(t, 1));
}

__attribute__((target("avx512f,avx2,fma"))) void plane_moments_avx512(double* pm, const float* x,
                                                                      int64_t planes, int64_t S) {
  const double count = static_cast<double>(S);
  const int64_t body = S / 32 * 32;
  for (int64_t i = 0; i < planes; ++i) {
    const float* xc = x + i * S;
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k < body; k += 32) {
      s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_loadu_ps(xc + k)));
      s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_loadu_ps(xc + k + 8)));
      s2 = _mm512_add_pd(s2, _mm512_cvtps_pd(_mm256_loadu_ps(xc + k + 16)));
      s3 = _mm512_add_pd(s3, _mm512_cvtps_pd(_mm256_loadu_ps(xc + k + 24)));
    }
    const double sum = tail_sum(lane_sum(s0, s1, s2, s3), xc, body, S);
    const double mean = sum / count;
    const __m512d m = _mm512_set1_pd(mean);
    __m512d q0 = _mm512_setzero_pd(), q1 = q0, q2 = q0, q3 = q0;
    for (int64_t k = 0; k < body; k += 32) {
      const __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(xc + k)), m);
      const __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(xc + k + 8)), m);
      const __m512d d2 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(xc + k + 16)), m);
      const __m512d d3 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(xc + k + 24)), m);
      q0 = _mm512_fmadd_pd(d0, d0, q0);
      q1 = _mm512_fmadd_pd(d1, d1, q1);
      q2 = _mm512_fmadd_pd(d2, d2, q2);
      q3 = _mm512_fmadd_pd(d3, d3, q3);
    }
    const double m2 = tail_m2(lane_sum(q0, q1, q2, q3), xc, body, S, mean);
    pm[2 * i] = mean;
    pm[2 * i + 1] = m2;
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// lane_sum's tree for the AVX-512 version's four accumulators held as halves (lo[j], hi[j]).
__attribute__((target("avx2,fma"))) inline double lane_sum(const __m256d* lo, const __m256d* hi) {
  return halves_sum(_mm256_add_pd(_mm256_add_pd(lo[0], lo[1]), _mm256_add_pd(lo[2], lo[3])),
                    _mm256_add_pd(_mm256_add_pd(hi[0], hi[1]), _mm256_add_pd(hi[2], hi[3])));
}

__attribute__((target("avx2,fma"))) inline __m256d widen(const float* p) {
  return _mm256_cvtps_pd(_mm_loadu_ps(p));
}

__attribute__((target("avx2,fma"))) void plane_moments_avx2(double* pm, const float* x,
                                                            int64_t planes, int64_t S) {
  const double count = static_cast<double>(S);
  const int64_t body = S / 32 * 32;
  for (int64_t i = 0; i < planes; ++i) {
    const float* xc = x + i * S;
    // The AVX-512 version's accumulator j as two halves: lanes 0-3 in lo[j], 4-7 in hi[j].
    __m256d lo[4], hi[4];
    for (int j = 0; j < 4; ++j) lo[j] = hi[j] = _mm256_setzero_pd();
    for (int64_t k = 0; k < body; k += 32) {
      for (int j = 0; j < 4; ++j) {
        lo[j] = _mm256_add_pd(lo[j], widen(xc + k + 8 * j));
        hi[j] = _mm256_add_pd(hi[j], widen(xc + k + 8 * j + 4));
      }
    }
    const double sum = tail_sum(lane_sum(lo, hi), xc, body, S);
    const double mean = sum / count;
    const __m256d m = _mm256_set1_pd(mean);
    for (int j = 0; j < 4; ++j) lo[j] = hi[j] = _mm256_setzero_pd();
    for (int64_t k = 0; k < body; k += 32) {
      for (int j = 0; j < 4; ++j) {
        const __m256d dl = _mm256_sub_pd(widen(xc + k + 8 * j), m);
        const __m256d dh = _mm256_sub_pd(widen(xc + k + 8 * j + 4), m);
        lo[j] = _mm256_fmadd_pd(dl, dl, lo[j]);
        hi[j] = _mm256_fmadd_pd(dh, dh, hi[j]);
      }
    }
    const double m2 = tail_m2(lane_sum(lo, hi), xc, body, S, mean);
    pm[2 * i] = mean;
    pm[2 * i + 1] = m2;
  }
}

void plane_moments_portable(double* pm, const float* x, int64_t planes, int64_t S) {
  const double count = static_cast<double>(S);
  for (int64_t i = 0; i < planes; ++i) {
    const float* xc = x + i * S;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t k = 0; k < S; ++k) sum += static_cast<double>(xc[k]);
    const double mean = sum / count;
    double m2 = 0.0;
#pragma omp simd reduction(+ : m2)
    for (int64_t k = 0; k < S; ++k) {
      const double dev = xc[k] - mean;
      m2 += dev * dev;
    }
    pm[2 * i] = mean;
    pm[2 * i + 1] = m2;
  }
}

}  // namespace

void plane_moments(double* pm, const float* x, int64_t planes, int64_t S) {
  static const auto path = [] {
    switch (cpu_isa()) {
      case CpuIsa::avx512:
        return plane_moments_avx512;
      case CpuIsa::avx2:
        return plane_moments_avx2;
      default:
        return plane_moments_portable;
    }
  }();
  path(pm, x, planes, S);
}

}  // namespace detail

}  // namespace bnlab

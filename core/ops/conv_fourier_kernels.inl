// The frequency-domain convolution's transforms (core/ops/conv_fourier.cpp), written once for every
// instruction set. conv_fourier.cpp includes this file once per set, inside a namespace of its own
// and under the matching target (core/ops/isa_target.h), so each copy is compiled for its own
// instructions. Row16 is 16 floats that support +, -, += and * by a scalar: GCC's 16-float vector
// type (one zmm) with AVX-512F, SplitRow's two ymm with AVX2 and four xmm otherwise; `a + b * s`
// becomes a fused multiply-add where the set has one.
//
// A group is up to 16 planes transformed together, one per lane: their spectra are neighbours in
// the GEMM operands (images of one channel, or channels of one kernel row), so each spectrum value
// of the group is one 64-byte load or store. The planes themselves go into lanes on the way in and
// back out of them on the way out through planes_to_lanes and lanes_to_planes (conv_fourier.cpp:
// 16 x 16 register transposes with AVX-512F, 8 x 8 with AVX2, scalar copies otherwise).

// Lanes l < count of p (the rest read as 0).
inline Row16 load_lanes(const float* p, int64_t count) {
  Row16 v = {};
  // (The full group's copy with a constant size, so that it compiles to vector moves.)
  if (count == kLanes) {
    std::memcpy(&v, p, sizeof v);
  } else {
    std::memcpy(&v, p, static_cast<size_t>(count) * sizeof(float));
  }
  return v;
}

// Lanes l < count of v to p.
inline void store_lanes(float* p, Row16 v, int64_t count) {
  if (count == kLanes) {
    std::memcpy(p, &v, sizeof v);
  } else {
    std::memcpy(p, &v, static_cast<size_t>(count) * sizeof(float));
  }
}

// f(std::integral_constant<int, B>, i0) over i .. n in blocks of B = W consecutive indices, the
// last block narrower. The transforms' sums are chains of dependent multiply-adds (about 4 cycles
// each); a block of independent sums side by side keeps both FMA pipes busy, where one sum at a
// time waited on its own chain. Each sum still runs in its own order, so the results are those of
// one sum at a time, bit for bit, whatever the width.
template <int W, typename F>
[[gnu::always_inline]] inline void for_blocks(int64_t i, int64_t n, F&& f) {
  for (; i + W <= n; i += W) f(std::integral_constant<int, W>{}, i);
  if constexpr (W > 1) {
    if (i < n) for_blocks<W - 1>(i, n, f);
  }
}

// The widest block (up to 4) whose accumulators, `arrays` Row16 per index, fit in the set's
// accumulator registers (kAccumulatorRegisters, kRowRegisters registers per Row16). On AVX2 the
// width of 4 the AVX-512 registers allow kept 16-32 ymm accumulators live in 16 registers: GCC
// spilled them to the stack, and those loads and stores were the transforms' hottest
// instructions.
template <int Arrays>
constexpr int block_width() {
  return std::clamp(kAccumulatorRegisters / (Arrays * kRowRegisters), 1, 4);
}

// The half spectra of `count` real planes (plane l at src + l * plane_stride, Placement p's rows x
// cols, rows contiguous), value (u, v) of plane l to re[(u * Vw + v) * fs + l] and
// im[(u * Vw + v) * fs + l], for u < Lh, v < Vw:
//   along each row: a[r][v] = sum_j x[r][j] w_Lw^(v (j + col_off))
//   along the rows: F[u] = sum_r a[r] w_Lh^(u (r + row_off)), u and Lh - u from one pass: with
//   P = sum_r cos a[r] and Q = sum_r sin a[r], F[u] = P - iQ and F[Lh - u] = P + iQ.
__attribute__((noinline)) void forward_group(const float* src, int64_t plane_stride, int64_t count,
                                             const Placement& p, const Grid& g, float* re,
                                             float* im, int64_t fs) {
  const int64_t rows = p.rows, cols = p.cols, cells = rows * cols, Vw = g.Vw;
  alignas(64) Row16 x[kMaxRows * kMaxCols];
  planes_to_lanes(src, plane_stride, count, cells, reinterpret_cast<float*>(x));
  alignas(64) Row16 ar[kMaxRows * kMaxCols], ai[kMaxRows * kMaxCols];
  for (int64_t r = 0; r < rows; ++r) {
    const Row16* xr = x + r * cols;
    for_blocks<block_width<2>()>(0, Vw, [&](auto width, int64_t v0) {
      constexpr int B = decltype(width)::value;
      Row16 sr[B] = {}, si[B] = {};
      for (int64_t j = 0; j < cols; ++j) {
        const Row16 xj = xr[j];
        const float* cs = p.fwd_col + (2 * j) * kLanes + v0;
#pragma GCC unroll 4
        for (int t = 0; t < B; ++t) {
          sr[t] += xj * cs[t];
          si[t] += xj * cs[kLanes + t];
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < B; ++t) {
        ar[r * Vw + v0 + t] = sr[t];
        ai[r * Vw + v0 + t] = si[t];
      }
    });
  }
  for (int64_t u = 0; 2 * u <= g.Lh; ++u) {
    const float* c = p.row_cos + u * kMaxRows;
    const float* s = p.row_sin + u * kMaxRows;
    const bool paired = u != 0 && 2 * u != g.Lh;
    for_blocks<block_width<4>()>(0, Vw, [&](auto width, int64_t v0) {
      constexpr int B = decltype(width)::value;
      Row16 pr[B] = {}, pi[B] = {}, qr[B] = {}, qi[B] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const float cr = c[r], sr = s[r];
        const Row16* a_r = ar + r * Vw + v0;
        const Row16* a_i = ai + r * Vw + v0;
#pragma GCC unroll 4
        for (int t = 0; t < B; ++t) {
          pr[t] += a_r[t] * cr;
          pi[t] += a_i[t] * cr;
          qr[t] += a_r[t] * sr;
          qi[t] += a_i[t] * sr;
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < B; ++t) {
        const int64_t f = u * Vw + v0 + t;
        store_lanes(re + f * fs, pr[t] + qi[t], count);
        store_lanes(im + f * fs, pi[t] - qr[t], count);
        // (Skipped: the frequencies whose products are not computed, Grid::mirror_of.)
        if (paired && v0 + t != 0 && 2 * (v0 + t) != g.Lw) {
          const int64_t f2 = (g.Lh - u) * Vw + v0 + t;
          store_lanes(re + f2 * fs, pr[t] - qi[t], count);
          store_lanes(im + f2 * fs, pi[t] + qr[t], count);
        }
      }
    });
  }
}

// The inverse of forward_group: Placement p's rows x cols values of each of `count` real planes
// whose half spectra are at re/im[(u * Vw + v) * fs + l], to plane l at dst + l * plane_stride
// (rows contiguous): assigned (relu(value + bias) when `relu`, else value + bias) when `assign`,
// else added.
//   along the columns: b[i] = sum_u F[u] w_Lh^(-u m_i), m_i = i + row_off; u and Lh - u together:
//   F[u] e + F[Lh - u] conj(e) = S cos + i D sin, S = F[u] + F[Lh - u], D = F[u] - F[Lh - u];
//   along each row: z[i][j] = sum_v b[i][v] inv_col[v][j] (the real part; inv_col holds the
//   1 / (Lh Lw) scale and the weight 2 of the columns that stand for two conjugate ones).
__attribute__((noinline)) void inverse_group(const float* re, const float* im, int64_t fs,
                                             int64_t count, const Placement& p, const Grid& g,
                                             float* dst, int64_t plane_stride, bool assign,
                                             float bias, bool relu) {
  const int64_t Lh = g.Lh, Vw = g.Vw, pairs = (Lh - 1) / 2;
  // F, then S in row u and D in row Lh - u of each pair.
  alignas(64) Row16 fr[kMaxRows * kMaxCols], fi[kMaxRows * kMaxCols];
  for (int64_t f = 0; f < Lh * Vw; ++f) {
    // A skipped frequency is its mirror's conjugate (Grid::mirror_of).
    const int64_t m = g.mirror_of(f);
    fr[f] = load_lanes(re + (m < 0 ? f : m) * fs, count);
    fi[f] = load_lanes(im + (m < 0 ? f : m) * fs, count);
    if (m >= 0) fi[f] = fi[f] * -1.0f;
  }
  for (int64_t u = 1; u <= pairs; ++u) {
    for (int64_t v = 0; v < Vw; ++v) {
      const int64_t a = u * Vw + v, b = (Lh - u) * Vw + v;
      const Row16 ur = fr[a], ui = fi[a];
      fr[a] = ur + fr[b];
      fi[a] = ui + fi[b];
      fr[b] = ur - fr[b];
      fi[b] = ui - fi[b];
    }
  }
  const bool even = Lh % 2 == 0;
  alignas(64) Row16 z[kMaxRows * kMaxCols];  // cell (i, j) at i * cols + j
  for (int64_t i = 0; i < p.rows; ++i) {
    alignas(64) Row16 br[kMaxCols], bi[kMaxCols];
    const float sign = even ? p.row_cos[(Lh / 2) * kMaxRows + i] : 0.0f;
    for_blocks<block_width<2>()>(0, Vw, [&](auto width, int64_t v0) {
      constexpr int B = decltype(width)::value;
      Row16 sr[B], si[B];
#pragma GCC unroll 4
      for (int t = 0; t < B; ++t) {
        sr[t] = fr[v0 + t];
        si[t] = fi[v0 + t];
        if (even) {
          sr[t] += fr[(Lh / 2) * Vw + v0 + t] * sign;
          si[t] += fi[(Lh / 2) * Vw + v0 + t] * sign;
        }
      }
      for (int64_t u = 1; u <= pairs; ++u) {
        const float c = p.row_cos[u * kMaxRows + i], s = p.row_sin[u * kMaxRows + i];
        const Row16* fa_r = fr + u * Vw + v0;
        const Row16* fa_i = fi + u * Vw + v0;
        const Row16* fb_r = fr + (Lh - u) * Vw + v0;
        const Row16* fb_i = fi + (Lh - u) * Vw + v0;
#pragma GCC unroll 4
        for (int t = 0; t < B; ++t) {
          sr[t] += fa_r[t] * c - fb_i[t] * s;
          si[t] += fa_i[t] * c + fb_r[t] * s;
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < B; ++t) {
        br[v0 + t] = sr[t];
        bi[v0 + t] = si[t];
      }
    });
    for_blocks<block_width<1>()>(0, p.cols, [&](auto width, int64_t j0) {
      constexpr int B = decltype(width)::value;
      Row16 acc[B] = {};
      for (int64_t v = 0; v < Vw; ++v) {
        const float* ic = p.inv_col + (2 * v) * kLanes + j0;
#pragma GCC unroll 4
        for (int t = 0; t < B; ++t) acc[t] += br[v] * ic[t] + bi[v] * ic[kLanes + t];
      }
#pragma GCC unroll 4
      for (int t = 0; t < B; ++t) z[i * p.cols + j0 + t] = acc[t];
    });
  }
  lanes_to_planes(reinterpret_cast<const float*>(z), p.rows * p.cols, count, dst, plane_stride,
                  assign, bias, relu);
}

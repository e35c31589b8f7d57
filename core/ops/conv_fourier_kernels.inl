// The frequency-domain convolution's transforms (core/ops/conv_fourier.cpp), written once for every
// instruction set. conv_fourier.cpp includes this file once per set, inside a namespace of its own
// and under the matching target (core/ops/isa_target.h), so each copy is compiled for its own
// instructions. Row16 is 16 floats that support +, -, += and * by a scalar: GCC's 16-float vector
// type (one zmm) with AVX-512F, SplitRow's two ymm with AVX2 and four xmm otherwise; `a + b * s`
// becomes a fused multiply-add where the set has one.
//
// A group is up to 16 planes transformed together, one per lane: their spectra are neighbours in
// the GEMM operands (images of one channel, or channels of one kernel row), so each spectrum value
// of the group is one 64-byte load or store. The planes themselves are transposed into lanes on
// the way in (and back on the way out), plane by plane.

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
  float* xf = reinterpret_cast<float*>(x);
  for (int64_t l = 0; l < kLanes; ++l) {
    const float* s = src + l * plane_stride;
    if (l < count) {
      for (int64_t q = 0; q < cells; ++q) xf[q * kLanes + l] = s[q];
    } else {
      for (int64_t q = 0; q < cells; ++q) xf[q * kLanes + l] = 0.0f;
    }
  }
  alignas(64) Row16 ar[kMaxRows * kMaxCols], ai[kMaxRows * kMaxCols];
  for (int64_t r = 0; r < rows; ++r) {
    const Row16* xr = x + r * cols;
    for (int64_t v = 0; v < Vw; ++v) {
      Row16 sr = {}, si = {};
      for (int64_t j = 0; j < cols; ++j) {
        sr += xr[j] * p.fwd_col[(2 * j) * kLanes + v];
        si += xr[j] * p.fwd_col[(2 * j + 1) * kLanes + v];
      }
      ar[r * Vw + v] = sr;
      ai[r * Vw + v] = si;
    }
  }
  for (int64_t u = 0; 2 * u <= g.Lh; ++u) {
    const float* c = p.row_cos + u * kMaxRows;
    const float* s = p.row_sin + u * kMaxRows;
    const bool paired = u != 0 && 2 * u != g.Lh;
    for (int64_t v = 0; v < Vw; ++v) {
      Row16 pr = {}, pi = {}, qr = {}, qi = {};
      for (int64_t r = 0; r < rows; ++r) {
        pr += ar[r * Vw + v] * c[r];
        pi += ai[r * Vw + v] * c[r];
        qr += ar[r * Vw + v] * s[r];
        qi += ai[r * Vw + v] * s[r];
      }
      const int64_t f = u * Vw + v;
      store_lanes(re + f * fs, pr + qi, count);
      store_lanes(im + f * fs, pi - qr, count);
      if (paired) {
        const int64_t f2 = (g.Lh - u) * Vw + v;
        store_lanes(re + f2 * fs, pr - qi, count);
        store_lanes(im + f2 * fs, pi + qr, count);
      }
    }
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
    fr[f] = load_lanes(re + f * fs, count);
    fi[f] = load_lanes(im + f * fs, count);
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
  for (int64_t i = 0; i < p.rows; ++i) {
    alignas(64) Row16 br[kMaxCols], bi[kMaxCols], z[kMaxCols];
    const float sign = even ? p.row_cos[(Lh / 2) * kMaxRows + i] : 0.0f;
    for (int64_t v = 0; v < Vw; ++v) {
      Row16 sr = fr[v], si = fi[v];
      if (even) {
        sr += fr[(Lh / 2) * Vw + v] * sign;
        si += fi[(Lh / 2) * Vw + v] * sign;
      }
      for (int64_t u = 1; u <= pairs; ++u) {
        const float c = p.row_cos[u * kMaxRows + i], s = p.row_sin[u * kMaxRows + i];
        const int64_t a = u * Vw + v, b = (Lh - u) * Vw + v;
        sr += fr[a] * c - fi[b] * s;
        si += fi[a] * c + fr[b] * s;
      }
      br[v] = sr;
      bi[v] = si;
    }
    for (int64_t j = 0; j < p.cols; ++j) {
      Row16 acc = {};
      for (int64_t v = 0; v < Vw; ++v)
        acc +=
            br[v] * p.inv_col[(2 * v) * kLanes + j] + bi[v] * p.inv_col[(2 * v + 1) * kLanes + j];
      z[j] = acc;
    }
    const float* zf = reinterpret_cast<const float*>(z);
    for (int64_t l = 0; l < count; ++l) {
      float* out = dst + l * plane_stride + i * p.cols;
      if (!assign) {
        for (int64_t j = 0; j < p.cols; ++j) out[j] += zf[j * kLanes + l];
      } else if (relu) {
        for (int64_t j = 0; j < p.cols; ++j) out[j] = relu_value(zf[j * kLanes + l] + bias);
      } else {
        for (int64_t j = 0; j < p.cols; ++j) out[j] = zf[j * kLanes + l] + bias;
      }
    }
  }
}

// The direct convolution's register tiles (core/ops/conv_direct.cpp), written once for every
// instruction set. conv_direct.cpp includes this file once per set, inside a namespace that defines
// `Vec` (a register type and its operations, below) and under the matching `#pragma GCC target`,
// so each copy is compiled for its own instructions and none leaks into another's code.
//
// Vec provides: reg; kLanes, kSegments, kChannels; grad_channels(k); zero(), set1(v), load(p)
// (unaligned), load_first(p, n) (lanes >= n read as 0 and not touched), fma(a, b, c) = a * b + c,
// relu(v) (relu_value lane by lane, NaN passing), store(p, v), store_first(p, v, n) (lanes < n
// only).
//
// Both tiles are noinline with every loop over registers fully unrolled at constant bounds, as
// core/gemm_avx512.cpp's micro-kernel: an array of registers indexed by a run-time bound, or a
// tile inlined into its driver, made GCC 12 keep the accumulators in memory.

// kSegments output segments (kLanes neighbouring outputs of one row each) x kChannels output
// channels: out = bias + sum over c, i, j of w[q, c, i, j] * x[c, row + i, col + j .. + kLanes).
// Per tap: kSegments loads of x and kChannels weight broadcasts feed kSegments * kChannels FMAs.
template <int KS>
__attribute__((noinline)) void forward_tile(const ForwardTile& t) {
  using reg = Vec::reg;
  constexpr int R = Vec::kSegments, Q = Vec::kChannels;
  reg acc[R][Q];
#pragma GCC unroll 16
  for (int q = 0; q < Q; ++q) {
    const reg init = Vec::set1(t.bias[q]);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r][q] = init;
  }
  const float* x[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) x[r] = t.x[r];
  const float* w = t.w;
  const int64_t row = t.row;
  for (int64_t c = 0; c < t.C; ++c) {
#pragma GCC unroll 5
    for (int i = 0; i < KS; ++i) {
#pragma GCC unroll 5
      for (int j = 0; j < KS; ++j) {
        reg xv[R];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) xv[r] = Vec::load(x[r] + i * row + j);
#pragma GCC unroll 16
        for (int q = 0; q < Q; ++q) {
          const reg wq = Vec::set1(w[(i * KS + j) * Q + q]);
#pragma GCC unroll 4
          for (int r = 0; r < R; ++r) acc[r][q] = Vec::fma(wq, xv[r], acc[r][q]);
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) x[r] += t.plane;
    w += KS * KS * Q;
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) {
      if (q >= t.channels || t.count[r] == 0) continue;
      float* o = t.out[r] + q * t.out_plane;
      const reg v = t.relu ? Vec::relu(acc[r][q]) : acc[r][q];
      if (t.count[r] == Vec::kLanes) {
        Vec::store(o, v);
      } else {
        Vec::store_first(o, v, t.count[r]);
      }
    }
  }
}

// One image's contribution to grad_channels(KS) output channels x the KS taps of one kernel row
// (c, i): part[q][j][lane] += sum over rows oh and segments of dy[q, oh, seg] * x[oh + i, seg + j],
// lane by lane (the driver sums the lanes once at the end). Per segment: grad_channels loads of dy
// and KS of x feed grad_channels * KS FMAs. A row's last, partial segment masks both loads: dy's so
// the last row never reads past dout's end, x's so an inf or NaN beside the window never meets
// a zero lane of dy (0 * inf would be NaN).
template <int KS>
__attribute__((noinline)) void grad_tile(const GradTile& t) {
  using reg = Vec::reg;
  constexpr int Q = Vec::grad_channels(KS);
  constexpr int64_t L = Vec::kLanes;
  reg acc[Q][KS];
#pragma GCC unroll 8
  for (int q = 0; q < Q; ++q) {
#pragma GCC unroll 5
    for (int j = 0; j < KS; ++j) acc[q][j] = Vec::load(t.part + (q * KS + j) * L);
  }
  // Channels past t.channels repeat the last one: their sums are computed and never used.
  const float* dy[Q];
#pragma GCC unroll 8
  for (int q = 0; q < Q; ++q) dy[q] = t.dy + (q < t.channels ? q : t.channels - 1) * t.out_plane;
  const int64_t Wo = t.Wo, full = Wo / L * L;
  for (int64_t oh = 0; oh < t.Ho; ++oh) {
    const float* xrow = t.x + oh * t.row;
    const int64_t at = oh * Wo;
    for (int64_t ow0 = 0; ow0 < full; ow0 += L) {
      reg g[Q];
#pragma GCC unroll 8
      for (int q = 0; q < Q; ++q) g[q] = Vec::load(dy[q] + at + ow0);
#pragma GCC unroll 5
      for (int j = 0; j < KS; ++j) {
        const reg xv = Vec::load(xrow + ow0 + j);
#pragma GCC unroll 8
        for (int q = 0; q < Q; ++q) acc[q][j] = Vec::fma(g[q], xv, acc[q][j]);
      }
    }
    if (full < Wo) {
      const int64_t n = Wo - full;
      reg g[Q];
#pragma GCC unroll 8
      for (int q = 0; q < Q; ++q) g[q] = Vec::load_first(dy[q] + at + full, n);
#pragma GCC unroll 5
      for (int j = 0; j < KS; ++j) {
        const reg xv = Vec::load_first(xrow + full + j, n);
#pragma GCC unroll 8
        for (int q = 0; q < Q; ++q) acc[q][j] = Vec::fma(g[q], xv, acc[q][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < Q; ++q) {
#pragma GCC unroll 5
    for (int j = 0; j < KS; ++j) Vec::store(t.part + (q * KS + j) * L, acc[q][j]);
  }
}

constexpr DirectKernels kernels() {
  return {Vec::kLanes,           Vec::kSegments,        Vec::kChannels,
          Vec::grad_channels(3), Vec::grad_channels(5), &forward_tile<3>,
          &forward_tile<5>,      &grad_tile<3>,         &grad_tile<5>};
}

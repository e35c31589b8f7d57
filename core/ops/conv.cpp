// 2-D convolution (cross-correlation, as PyTorch's conv2d) through im2col + one GEMM per image and
// group: the reference path, for every shape. Three faster paths take the shapes they suit:
// Winograd F(4x4, 3x3) for 3x3, stride-1, padding-1 convs with enough channels
// (core/ops/conv_winograd.cpp), direct kernels for thin first layers and 5x5 convs
// (core/ops/conv_direct.cpp) and the frequency domain for small images with large kernels
// (core/ops/conv_fourier.cpp). The rule is detail::conv2d_path (core/ops/conv_path.cpp;
// BNLAB_CONV=im2col|winograd|direct|fourier forces a path); it sees the shape alone, never
// timings, so a run's numerics are reproducible. Winograd and the frequency domain also need
// finite operands of moderate size (mixes_tiles below): a NaN, an inf or a product of magnitudes
// near float's range sends that conv, or its backward, to im2col.
//
// Legend: N batch, C in-channels, H/W input height/width, K out-channels, kh/kw kernel
// height/width, Ho/Wo output height/width, G groups, Cg = C/G and Kg = K/G the channels of one
// group, CK = Cg*kh*kw (rows of the column matrix), P = Ho*Wo (its columns).
//   im2col:   col [CK, P] of group g, row (c, i, j), column (oh, ow) holds
//             x[g*Cg + c, oh*stride - padding + i, ow*stride - padding + j] (0 in the padding)
//   forward:  out_n[g] [Kg, P] = W[g] [Kg, CK] x col_n[g] [CK, P] + b[g]
//   backward: dW[g] [Kg, CK] += sum_n dout_n[g] [Kg, P] x col_n[g]^T
//             dcol_n[g] [CK, P] = W[g]^T x dout_n[g], then col2im (the adjoint of im2col) adds it
//             into dx_n's channels of group g
//             db[k] += sum over n and p of dout_n[k, p]
//   where W[g] is rows [g*Kg, (g+1)*Kg) of the weight [K, Cg, kh, kw] (PyTorch's grouped layout),
//   i.e. group g's output channels see only its Cg input channels. G == C is a depthwise conv.
//   Derivation: docs/derivations.md, "conv2d: im2col and col2im".
//
// Threads: one image per iteration of an OpenMP loop over N, each thread with its own column
// buffer. We link OpenBLAS's OpenMP build, so a GEMM issued inside the parallel region runs on the
// calling thread only; with N == 1 the region is inactive and the GEMM gets every core instead.
// Transposes are GEMM flags, never copies. One GEMM per image rather than one per chunk of images
// (their column matrices side by side): at the W3/W4 shapes the per-image GEMMs already run near
// OpenBLAS's speed for the shape, and the stacked ones were no faster once their buffers left the
// cache (docs/performance.md, "Conv: batched im2col and the same-width path").
//
// Reference: https://pytorch.org/docs/stable/generated/torch.nn.functional.conv2d.html
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/blas.h"
#include "core/ops.h"
#include "core/ops/conv_direct.h"
#include "core/ops/conv_fourier.h"
#include "core/ops/conv_path.h"
#include "core/ops/conv_winograd.h"
#include "core/ops/finite.h"
#include "core/ops/plane_moments.h"
#include "core/ops/thread_scratch.h"
#include "core/ops/unary_op.h"
#include "core/parallel.h"

namespace bnlab {

namespace {

struct ConvDims {
  int64_t N, C, H, W;  // input
  int64_t K, kh, kw;   // weight
  int64_t stride, padding;
  int64_t Ho, Wo;  // output
  int64_t G = 1;   // groups
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
  int64_t CK() const { return Cg() * kh * kw; }
  int64_t P() const { return Ho * Wo; }
  // A 1x1, stride-1, unpadded conv is a plain GEMM on the image itself: col_n == x_n.
  bool pointwise() const { return kh == 1 && kw == 1 && stride == 1 && padding == 0; }
  // Parallel over images only when there are several and the GEMMs are big enough to pay for waking
  // the team (tiny convs, as in gradient checks, run far faster on one thread, especially on a
  // loaded machine).
  bool parallel() const { return N > 1 && N * K * CK() * P() > (int64_t{1} << 18); }
};

// ceil(a / b) for b > 0 and any sign of a (a > INT64_MIN). Not (a + b - 1) / b: that overflows for
// a stride near INT64_MAX.
int64_t div_ceil(int64_t a, int64_t b) { return a >= 0 ? a / b + (a % b != 0) : -((-a) / b); }

// The output columns [ow0, ow1) whose input column iw = ow*stride - padding + j lies inside [0, W);
// the columns outside read padding. Computed once per kernel column, so the copy loops below have
// no per-element bounds checks (and with stride 1 are plain contiguous copies).
void valid_columns(int64_t j, const ConvDims& d, int64_t* ow0, int64_t* ow1) {
  *ow0 = std::clamp<int64_t>(div_ceil(d.padding - j, d.stride), 0, d.Wo);
  *ow1 = std::clamp<int64_t>(div_ceil(d.W + d.padding - j, d.stride), *ow0, d.Wo);
}

// A stride-1 conv whose output is as wide as its input (Wo == W: "same" padding, every conv of the
// benchmark models). There, output cell t = oh*Wo + ow of im2col row (c, i, j) reads input cell
// t + offset of plane c, offset = (i - padding)*W + (j - padding), so a whole row is ONE contiguous
// copy (or add, for col2im) over [t0, t1) instead of Ho short ones of 8-32 floats, where the
// per-call overhead dominated. The output rows [oh0, oh1) read real input rows; within them, the
// columns outside [ow0, ow1) lie in the padding although the contiguous range covers them (it wraps
// to the neighbouring input row's edge pixels). [t0, t1) is clipped so the input index stays inside
// the plane; what is clipped off at either end is such padding columns.
struct SameWidthSpan {
  int64_t oh0, oh1, offset, t0, t1;
};

SameWidthSpan same_width_span(int64_t i, int64_t j, const ConvDims& d) {
  SameWidthSpan s{};
  s.oh0 = std::clamp<int64_t>(d.padding - i, 0, d.Ho);
  s.oh1 = std::clamp<int64_t>(d.H + d.padding - i, s.oh0, d.Ho);
  s.offset = (i - d.padding) * d.W + (j - d.padding);
  s.t0 = std::clamp<int64_t>(-s.offset, s.oh0 * d.Wo, s.oh1 * d.Wo);
  s.t1 = std::clamp<int64_t>(d.H * d.W - s.offset, s.t0, s.oh1 * d.Wo);
  return s;
}

// Sets row's padding columns [0, ow0) and [ow1, Wo) to zero in the output rows [oh0, oh1).
void zero_padding_columns(float* row, int64_t ow0, int64_t ow1, const SameWidthSpan& s,
                          const ConvDims& d) {
  for (int64_t oh = s.oh0; oh < s.oh1; ++oh) {
    float* r = row + oh * d.Wo;
    for (int64_t ow = 0; ow < ow0; ++ow) r[ow] = 0.0f;
    for (int64_t ow = ow1; ow < d.Wo; ++ow) r[ow] = 0.0f;
  }
}

// im2col row (c, i, j) on the same-width path: one copy, then the padding zeroed.
void same_width_im2col_row(float* row, const float* xc, int64_t i, int64_t j, int64_t ow0,
                           int64_t ow1, const ConvDims& d) {
  const SameWidthSpan s = same_width_span(i, j, d);
  std::fill(row, row + s.oh0 * d.Wo, 0.0f);
  if (s.t1 > s.t0) std::copy(xc + s.t0 + s.offset, xc + s.t1 + s.offset, row + s.t0);
  std::fill(row + s.oh1 * d.Wo, row + d.P(), 0.0f);
  zero_padding_columns(row, ow0, ow1, s, d);
}

// col2im row (c, i, j) on the same-width path: the padding cells of dcol's row are zeroed first
// (dcol is scratch), so one contiguous add sends every real cell's gradient to its input pixel and
// the wrapped padding cells add exactly 0.
void same_width_col2im_row(float* dxc, float* row, int64_t i, int64_t j, int64_t ow0, int64_t ow1,
                           const ConvDims& d) {
  const SameWidthSpan s = same_width_span(i, j, d);
  zero_padding_columns(row, ow0, ow1, s, d);
#pragma omp simd
  for (int64_t t = s.t0; t < s.t1; ++t) dxc[t + s.offset] += row[t];
}

// col [CK, P] <- one group's channels x_n [Cg, H, W]; cells that fall in the padding are 0.
void im2col(float* col, const float* x, const ConvDims& d) {
  for (int64_t c = 0; c < d.Cg(); ++c) {
    const float* xc = x + c * d.H * d.W;
    for (int64_t i = 0; i < d.kh; ++i) {
      for (int64_t j = 0; j < d.kw; ++j) {
        float* row = col + ((c * d.kh + i) * d.kw + j) * d.P();
        int64_t ow0, ow1;
        valid_columns(j, d, &ow0, &ow1);
        const int64_t shift = j - d.padding;  // iw = ow * stride + shift
        if (d.stride == 1 && d.Wo == d.W) {
          same_width_im2col_row(row, xc, i, j, ow0, ow1, d);
          continue;
        }
        for (int64_t oh = 0; oh < d.Ho; ++oh) {
          float* dst = row + oh * d.Wo;
          int64_t ih = oh * d.stride - d.padding + i;
          if (ih < 0 || ih >= d.H) {
            std::fill_n(dst, d.Wo, 0.0f);
            continue;
          }
          const float* src = xc + ih * d.W;
          std::fill_n(dst, ow0, 0.0f);
          if (d.stride == 1) {
            std::copy(src + ow0 + shift, src + ow1 + shift, dst + ow0);
          } else {
            for (int64_t ow = ow0; ow < ow1; ++ow) dst[ow] = src[ow * d.stride + shift];
          }
          std::fill(dst + ow1, dst + d.Wo, 0.0f);
        }
      }
    }
  }
}

// dx_n [Cg, H, W] (one group's channels) += col2im(dcol [CK, P]): the adjoint of im2col. An input
// pixel read by several windows (stride < kernel) receives the sum of their gradients; padding
// cells receive nothing. dcol is scratch: the same-width path zeroes its padding cells.
void col2im(float* dx, float* dcol, const ConvDims& d) {
  for (int64_t c = 0; c < d.Cg(); ++c) {
    float* dxc = dx + c * d.H * d.W;
    for (int64_t i = 0; i < d.kh; ++i) {
      for (int64_t j = 0; j < d.kw; ++j) {
        float* row = dcol + ((c * d.kh + i) * d.kw + j) * d.P();
        int64_t ow0, ow1;
        valid_columns(j, d, &ow0, &ow1);
        if (d.stride == 1 && d.Wo == d.W) {
          same_width_col2im_row(dxc, row, i, j, ow0, ow1, d);
          continue;
        }
        const int64_t shift = j - d.padding;
        for (int64_t oh = 0; oh < d.Ho; ++oh) {
          int64_t ih = oh * d.stride - d.padding + i;
          if (ih < 0 || ih >= d.H) continue;
          const float* src = row + oh * d.Wo;
          float* dst = dxc + ih * d.W;
          if (d.stride == 1) {
#pragma omp simd
            for (int64_t ow = ow0; ow < ow1; ++ow) dst[ow + shift] += src[ow];
          } else {
            for (int64_t ow = ow0; ow < ow1; ++ow) dst[ow * d.stride + shift] += src[ow];
          }
        }
      }
    }
  }
}

// The error for conv2d's `what` (its output, its column buffers) of `shape`, whose size the
// arguments decide, when the allocator refused it with e: the allocator's own error (a count past
// int64, more than the machine's memory) could not say which op asked, nor for which arguments.
[[noreturn]] void conv2d_allocation_failed(const char* what, const Shape& shape, const ConvDims& d,
                                           const Error& e) {
  BNLAB_FAIL("conv2d: the ", what, " ", shape, " for input ", Shape{d.N, d.C, d.H, d.W},
             ", weight ", Shape{d.K, d.Cg(), d.kh, d.kw}, ", stride ", d.stride, ", padding ",
             d.padding, " cannot be allocated: ", e.what());
}

Tensor conv2d_empty(const char* what, const Shape& shape, const ConvDims& d) {
  try {
    return Tensor::empty(shape);
  } catch (const Error& e) {
    conv2d_allocation_failed(what, shape, d, e);
  }
}

// One column buffer [CK, P] for each of `team` threads (core/ops/thread_scratch.h: allocated before
// the region, a huge padding asks for a huge buffer); none for a pointwise conv, which reads x in
// place.
detail::TeamScratch column_buffers(const ConvDims& d, int64_t team) {
  int64_t floats = 0;
  // A product past int64 asks for more than int64 counts, which TeamScratch refuses.
  if (!d.pointwise() && __builtin_mul_overflow(d.CK(), d.P(), &floats))
    floats = std::numeric_limits<int64_t>::max();
  return detail::TeamScratch(team, floats, [&](const Error& e) {
    conv2d_allocation_failed("column buffers", {team, d.CK(), d.P()}, d, e);
  });
}

// out [N, K, Ho, Wo] = conv(x [N, C, H, W], w [K, Cg, kh, kw]) + b [K] (b may be null), through
// relu when `relu` (each image's output while it is in cache).
void conv2d_forward(float* out, const float* x, const float* w, const float* b, const ConvDims& d,
                    bool relu, double* pm) {
  const int64_t CK = d.CK(), P = d.P(), Kg = d.Kg(), group_in = d.Cg() * d.H * d.W;
  const int64_t team = d.parallel() ? std::min<int64_t>(omp_get_max_threads(), d.N) : 1;
  const detail::TeamScratch cols = column_buffers(d, team);
#pragma omp parallel num_threads(static_cast <int>(team)) if (team > 1)
  {
    float* col_buffer = cols.of_this_thread();
#pragma omp for schedule(static)
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xn = x + n * d.C * d.H * d.W;
      float* on = out + n * d.K * P;
      // Pre-fill the bias so the GEMMs add onto it (beta = 1) instead of a second pass.
      if (b) {
        for (int64_t k = 0; k < d.K; ++k) std::fill_n(on + k * P, P, b[k]);
      }
      for (int64_t g = 0; g < d.G; ++g) {
        const float* col = xn + g * group_in;
        if (!d.pointwise()) {
          im2col(col_buffer, col, d);
          col = col_buffer;
        }
        gemm(false, false, Kg, P, CK, 1.0f, w + g * Kg * CK, CK, col, P, b ? 1.0f : 0.0f,
             on + g * Kg * P, P);
      }
      if (relu) {
#pragma omp simd
        for (int64_t i = 0; i < d.K * P; ++i) on[i] = detail::relu_value(on[i]);
      }
      if (pm) detail::plane_moments(pm + 2 * n * d.K, on, d.K, P);
    }
  }
}

// db [K] += sum over n, p of dout [N, K, Ho, Wo]; every path shares it.
void conv2d_bias_backward(float* db, const float* dout, const ConvDims& d) {
  const int64_t P = d.P(), K = d.K, N = d.N;
  // db[k] = sum over n, p of dout[n, k, p]: each plane's sum (an omp simd reduction, which keeps
  // several independent double partial sums: a single serial chain of double adds, without
  // -ffast-math, is bound by the add latency, 4 cycles per element), then the planes' sums added
  // in image order. Threads split the images, in memory order, as the ops that wrote dout split
  // them: split by channel, each thread read half of every image, much of it still in the other
  // core's cache, and the pass took as long on two threads as on one (W4's six conv layers,
  // about 3 % of the step). The sum of each channel does not depend on the split.
  const bool parallel = N * K * P > (1 << 15);
  // The calling thread's buffer, grown once, not allocated on every step.
  thread_local std::vector<double> plane_sums;
  if (plane_sums.size() < static_cast<size_t>(N * K)) plane_sums.resize(static_cast<size_t>(N * K));
  double* ps = plane_sums.data();
  detail::parallel_for(N, parallel, [=](int64_t n) {
    for (int64_t k = 0; k < K; ++k) {
      const float* g = dout + (n * K + k) * P;
      double s = 0.0;
#pragma omp simd reduction(+ : s)
      for (int64_t p = 0; p < P; ++p) s += g[p];
      ps[n * K + k] = s;
    }
  });
  for (int64_t k = 0; k < K; ++k) {
    double s = 0.0;
    for (int64_t n = 0; n < N; ++n) s += ps[n * K + k];
    db[k] += static_cast<float>(s);
  }
}

// Accumulates dx [N, C, H, W] and dw [K, Cg, kh, kw] (either may be null: not wanted) from dout
// [N, K, Ho, Wo] on the im2col path. dx_fresh: dx is a fresh (unfilled) gradient buffer, which each
// image's part ASSIGNS: a pointwise conv's GEMM with beta 0, else the part is zeroed right before
// its col2im adds into it, while it is in cache, instead of a whole-tensor memset before the
// backward.
void conv2d_backward(float* dx, bool dx_fresh, float* dw, const float* dout, const float* x,
                     const float* w, const ConvDims& d) {
  const int64_t CK = d.CK(), P = d.P(), Kg = d.Kg(), group_in = d.Cg() * d.H * d.W;
  if (!dx && !dw) return;

  // dW is a sum over images, so threads cannot share it. The images go in kWeightGradChunks
  // contiguous chunks (N if fewer), a split that does not depend on the thread count: chunk 0
  // accumulates straight into dw and every other chunk into its own zeroed partial [K, CK], and the
  // partials are added in chunk order afterwards. So dW has the same bits at any thread count (a
  // run resumed at another --threads stays bit-exact; per-thread partials made the sums' order
  // follow the team), and at most that many threads share the image loop while dW is wanted.
  // The partials are weight-sized, hence small. Without dW every image is its own chunk.
  constexpr int64_t kWeightGradChunks = 4;
  const int64_t chunks = dw ? std::min(kWeightGradChunks, d.N) : d.N;
  const int64_t team = d.parallel() ? std::min<int64_t>(omp_get_max_threads(), chunks) : 1;
  const int64_t wsize = d.K * CK;
  detail::Storage partials(dw ? static_cast<size_t>((chunks - 1) * wsize) : 0);
  if (dw) std::fill_n(partials.data(), (chunks - 1) * wsize, 0.0f);
  // Each thread's one buffer serves first as col_n (for dW), then as dcol_n (for dx).
  const detail::TeamScratch cols = column_buffers(d, team);

#pragma omp parallel num_threads(static_cast <int>(team)) if (team > 1)
  {
    float* col = cols.of_this_thread();
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      float* dw_chunk = dw ? (chunk == 0 ? dw : partials.data() + (chunk - 1) * wsize) : nullptr;
      for (int64_t ng = d.N * chunk / chunks * d.G; ng < d.N * (chunk + 1) / chunks * d.G; ++ng) {
        // Image n, group g: its input channels, output channels and weight rows.
        const int64_t n = ng / d.G, g = ng % d.G;
        const float* xg = x + n * d.C * d.H * d.W + g * group_in;
        float* dxg = dx ? dx + n * d.C * d.H * d.W + g * group_in : nullptr;
        const float* gg = dout + (n * d.K + g * Kg) * P;
        const float* wg = w + g * Kg * CK;
        float* dwg = dw_chunk ? dw_chunk + g * Kg * CK : nullptr;
        if (d.pointwise()) {
          // col is x's group [Cg, HW] and col2im is the identity, so both GEMMs work in place.
          if (dwg) gemm(false, true, Kg, CK, P, 1.0f, gg, P, xg, P, 1.0f, dwg, CK);
          if (dxg)
            gemm(true, false, CK, P, Kg, 1.0f, wg, CK, gg, P, dx_fresh ? 0.0f : 1.0f, dxg, P);
          continue;
        }
        if (dwg) {
          // dW[g] [Kg, CK] += dout_n[g] [Kg, P] x col^T [P, CK]
          im2col(col, xg, d);
          gemm(false, true, Kg, CK, P, 1.0f, gg, P, col, P, 1.0f, dwg, CK);
        }
        if (dxg) {
          // dcol [CK, P] = W[g]^T [CK, Kg] x dout_n[g] [Kg, P], scattered back onto the image.
          gemm(true, false, CK, P, Kg, 1.0f, wg, CK, gg, P, 0.0f, col, P);
          if (dx_fresh) std::fill_n(dxg, group_in, 0.0f);
          col2im(dxg, col, d);
        }
      }
    }
  }

  if (dw) {
    for (int64_t chunk = 1; chunk < chunks; ++chunk) {
      const float* part = partials.data() + (chunk - 1) * wsize;
      detail::parallel_for_simd(wsize, wsize > (1 << 15), [=](int64_t i) { dw[i] += part[i]; });
    }
  }
}

// Whether a path mixes every input of a tile (Winograd: a 6x6 patch into a 4x4 output tile) or of
// an image (frequency domain: every frequency sums all pixels) into every output of it. One NaN or
// inf there turns the whole tile or image NaN, where im2col (and PyTorch) confine it to the
// windows that read it. So these paths run only on finite inputs, weights and output gradients,
// and the rest goes to im2col: a scan of what the op reads anyway, against a silently different
// answer in exactly the steps where a user is looking for the first NaN.
bool mixes_tiles(detail::ConvPath path) {
  return path == detail::ConvPath::winograd || path == detail::ConvPath::fourier;
}

// The same paths' intermediates exceed the sums im2col forms: Winograd's transforms multiply by up
// to 10 x 10 (B^T) and 19 x 19 (A^T), a spectrum sums a whole grid of Lh x Lw <= 32 x 31 values
// and its products another, so a tile's values reach about 2^20 times the largest
// sum |a||b| over one output's terms. Operands whose magnitudes could take that past float's range
// go to im2col, where the result overflows only if the true sum does: the largest |a| < 2^(ea -
// 126) (ea from detail::max_exponent, 255 for NaN or inf) and |b| < 2^(eb - 126), `terms` products
// in each output, and 2^32 for the gains (2^12 to spare). Ordinary data is far inside: values up
// to 2^10 with weights up to 2^2 and 2^20 terms leave about 2^60 of room.
bool tile_products_fit(int ea, int eb, int64_t terms) {
  if (ea == 255 || eb == 255) return false;
  constexpr int kTileGainLog2 = 32;
  const int terms_log2 = static_cast<int>(std::bit_width(static_cast<uint64_t>(terms)));
  return (ea - 126) + (eb - 126) + terms_log2 + kTileGainLog2 < 128;
}

// conv2d, and conv2d_relu when `relu`: each path applies the ReLU as it writes the output, and the
// backward first masks dout with relu_grad(dout, out) (relu's own backward, exact from the output),
// into a scratch tensor that then serves as the conv's dout, so both directions are bit-identical
// to relu(conv2d(...)) while the output of the conv before the ReLU is never written.
Tensor conv2d_op(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
                 int64_t padding, int64_t groups, bool relu, double* pm = nullptr) {
  BNLAB_CHECK(x.dim() == 4, "conv2d: input must be [N, C, H, W]; got ", x.shape());
  BNLAB_CHECK(weight.dim() == 4, "conv2d: weight must be [K, C / groups, kh, kw]; got ",
              weight.shape());
  BNLAB_CHECK(groups >= 1, "conv2d: groups must be >= 1; got ", groups);
  ConvDims d{};
  d.N = x.size(0);
  d.C = x.size(1);
  d.H = x.size(2);
  d.W = x.size(3);
  d.K = weight.size(0);
  d.kh = weight.size(2);
  d.kw = weight.size(3);
  d.stride = stride;
  d.padding = padding;
  d.G = groups;
  BNLAB_CHECK(d.C % groups == 0 && d.K % groups == 0, "conv2d: groups ", groups,
              " must divide both the input channels and the output channels (input ", x.shape(),
              ", weight ", weight.shape(), ")");
  BNLAB_CHECK(weight.size(1) * groups == d.C, "conv2d: input has ", d.C,
              " channels, weight expects ", weight.size(1) * groups,
              groups > 1 ? " (" + std::to_string(weight.size(1)) + " per group x " +
                               std::to_string(groups) + " groups)"
                         : std::string(),
              " (input ", x.shape(), ", weight ", weight.shape(), ")");
  BNLAB_CHECK(d.kh >= 1 && d.kw >= 1, "conv2d: kernel must be at least 1x1; got weight ",
              weight.shape());
  if (bias.defined()) {
    BNLAB_CHECK(bias.shape() == Shape{d.K}, "conv2d: bias has shape ", bias.shape(), ", expected [",
                d.K, "] for weight ", weight.shape());
  }
  BNLAB_CHECK(stride >= 1, "conv2d: stride must be >= 1; got ", stride);
  BNLAB_CHECK(padding >= 0, "conv2d: padding must be >= 0; got ", padding);
  // Refused rather than wrapped: the padded extents below must fit in int64.
  BNLAB_CHECK(padding <= (std::numeric_limits<int64_t>::max() - std::max(d.H, d.W)) / 2,
              "conv2d: padding ", padding, " makes the padded input overflow int64 (input ",
              x.shape(), ", weight ", weight.shape(), ")");
  // Checked before dividing: C++ truncates a negative quotient toward zero, which would hide an
  // empty output.
  BNLAB_CHECK(d.H + 2 * padding >= d.kh && d.W + 2 * padding >= d.kw, "conv2d: kernel ", d.kh, "x",
              d.kw, " is larger than the padded input ", d.H + 2 * padding, "x", d.W + 2 * padding,
              " (input ", x.shape(), ", weight ", weight.shape(), ", padding ", padding, ")");
  d.Ho = (d.H + 2 * padding - d.kh) / stride + 1;
  d.Wo = (d.W + 2 * padding - d.kw) / stride + 1;
  Tensor out = conv2d_empty("output", {d.N, d.K, d.Ho, d.Wo}, d);

  // The path is fixed here, by shape, BNLAB_CONV and the inputs' finiteness, and the backward
  // reuses it (falling back further on a non-finite dout).
  detail::ConvPath path = detail::conv2d_path(detail::conv_path_mode(), d.C, d.K, d.kh, d.kw,
                                              stride, padding, groups, d.H, d.W);
  // Scanned only for the tile paths; the backward reuses the exponents with dout's.
  int x_exp = 0, w_exp = 0;
  if (mixes_tiles(path)) {
    x_exp = detail::max_exponent(x.data(), x.numel());
    w_exp = detail::max_exponent(weight.data(), weight.numel());
    if (!tile_products_fit(x_exp, w_exp, d.C * d.kh * d.kw)) path = detail::ConvPath::im2col;
  }
  const detail::WinogradShape ws{d.N, d.C, d.H, d.W, d.K};
  const detail::DirectConvShape ds{d.N, d.C, d.H, d.W, d.K, d.kh, padding, d.Ho, d.Wo};
  const detail::FourierConvShape fs{d.N, d.C, d.H, d.W, d.K, d.kh, d.kw, padding, d.Ho, d.Wo};
  const float* b = bias.defined() ? bias.data() : nullptr;
  const bool training = needs_grad({x, weight, bias});
  std::shared_ptr<detail::FourierSaved> spectra;  // the fourier forward's, for its backward
  switch (path) {
    case detail::ConvPath::winograd:
      detail::winograd_conv2d_forward(out.data(), x.data(), weight.data(), b, ws, relu, pm);
      break;
    case detail::ConvPath::direct:
    case detail::ConvPath::direct_data:
      detail::conv2d_direct_forward(out.data(), x.data(), weight.data(), b, ds, relu, pm);
      break;
    case detail::ConvPath::fourier:
      spectra = detail::fourier_conv2d_forward(out.data(), x.data(), weight.data(), b, fs, relu,
                                               training, pm);
      break;
    case detail::ConvPath::im2col:
      conv2d_forward(out.data(), x.data(), weight.data(), b, d, relu, pm);
      break;
  }

  if (training) {
    // x and weight whatever is wanted, as PyTorch saves them (the paths read them in different
    // combinations); relu's mask comes from the output.
    const Reads reads{{Reads::kAlways, Reads::kAlways, Reads::kNever},
                      relu ? Reads::kAlways : Reads::kNever};
    attach(out, relu ? "conv2d_relu" : "conv2d", {x, weight, bias}, reads,
           [d, ws, ds, fs, path, spectra, relu, x_exp, w_exp](const Tensor& y, const Tensor& dy,
                                                              const std::vector<Tensor>& in) {
             // relu's backward, relu_grad(dz, z), as its unary op computes it.
             Tensor masked;
             if (relu) {
               masked = Tensor::empty(y.shape());
               const float *pz = y.data(), *pg = dy.data();
               float* pm = masked.data();
               const int64_t n = y.numel();
               detail::parallel_for_simd(n, n > detail::kParallelThreshold, [=](int64_t i) {
                 pm[i] = detail::relu_grad(pg[i], pz[i]);
               });
             }
             const Tensor& dout = relu ? masked : dy;
             if (float* db = grad_buffer(in[2])) conv2d_bias_backward(db, dout.data(), d);
             // dx sums K kh kw products of dout and w in each value, dw N Ho Wo of dout and x.
             detail::ConvPath bwd_path = path;
             if (mixes_tiles(path)) {
               const int g_exp = detail::max_exponent(dout.data(), dout.numel());
               if (!tile_products_fit(g_exp, w_exp, d.K * d.kh * d.kw) ||
                   !tile_products_fit(g_exp, x_exp, d.N * d.Ho * d.Wo)) {
                 bwd_path = detail::ConvPath::im2col;
               }
             }
             // dw's buffer before dx's target: when x and w are one tensor (conv2d(a, a)) they
             // are one buffer, which dw's zero fill leaves to dx to add into, not overwrite. The
             // other way round, dx's target was fresh and its assignment erased dw's sum.
             float* dw = grad_buffer(in[1]);
             const GradTarget dx = grad_target(in[0]);
             if (bwd_path == detail::ConvPath::winograd) {
               detail::winograd_conv2d_backward(dx.data, dx.fresh, dw, dout.data(), in[0].data(),
                                                in[1].data(), ws);
               return;
             }
             if (bwd_path == detail::ConvPath::fourier) {
               detail::fourier_conv2d_backward(dx.data, dx.fresh, dw, dout.data(), in[0].data(),
                                               in[1].data(), fs, spectra.get());
               return;
             }
             // The direct paths: `direct` (thin first layers) computes dw with the direct kernel
             // and dx with im2col's (a thin layer's transposed conv has C <= 4 outputs, a poor
             // fit); `direct_data` computes dx as the transposed direct conv and dw with im2col's.
             const bool direct_dx = bwd_path == detail::ConvPath::direct_data && dx.data;
             const bool direct_dw = bwd_path == detail::ConvPath::direct && dw;
             if (direct_dx) {
               detail::conv2d_direct_input_grad(dx.data, dx.fresh, dout.data(), in[1].data(), ds);
             }
             if (direct_dw) detail::conv2d_direct_weight_grad(dw, dout.data(), in[0].data(), ds);
             conv2d_backward(direct_dx ? nullptr : dx.data, dx.fresh, direct_dw ? nullptr : dw,
                             dout.data(), in[0].data(), in[1].data(), d);
           });
  }
  return out;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding, int64_t groups) {
  return conv2d_op(x, weight, bias, stride, padding, groups, /*relu=*/false);
}

Tensor conv2d_relu(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
                   int64_t padding, int64_t groups) {
  return conv2d_op(x, weight, bias, stride, padding, groups, /*relu=*/true);
}

namespace detail {

Tensor conv2d_with_plane_moments(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 int64_t stride, int64_t padding, int64_t groups, bool relu,
                                 double* pm) {
  BNLAB_CHECK(pm, "conv2d: the plane moments' buffer is null (input ", x.shape(), ")");
  return conv2d_op(x, weight, bias, stride, padding, groups, relu, pm);
}

}  // namespace detail

}  // namespace bnlab

// 2-D pooling: max pooling with saved argmax indices (as torch.nn.functional.max_pool2d, floor
// mode, dilation 1), average pooling (avg_pool2d, floor mode) and adaptive average pooling
// (adaptive_avg_pool2d).
//
// Legend: N batch, C channels, H/W input height/width, Ho/Wo output height/width, k kernel
// (square), s stride, p padding; Ho = (H + 2p - k) / s + 1.
//
// Max pooling conventions, tested in tests/core/test_ops_pool.cpp:
//   - padded cells act as -inf: they are never selected, so every output is a real input value;
//   - ties go to the FIRST maximum in row-major window order (strict >), so the gradient is never
//   split;
//   - a NaN in the window wins, the LAST of several in row-major order (PyTorch's CPU kernel
//     replaces its maximum when `val > maxval || isnan(val)`), so NaNs propagate instead of being
//     silently dropped and the gradient goes where PyTorch's does.
// Backward routes each dout to the saved argmax; overlapping windows (s < k) add up. Derivation:
// docs/derivations.md, "max_pool2d: argmax routing and ties".
// The common 2x2 stride-2 unpadded case has its own kernels (max_pool2x2_*): the same comparisons
// in the same order, the winner saved as a byte (its place in the window), branch-free and
// vectorized; tests/core/test_ops_fast_paths.cpp checks them bit for bit against the general path
// (detail::max_pool2d_general, core/ops/pool_general.h).
//
// Average pooling: every output is the mean of a rectangle of input cells, so both average ops are
// one kernel over per-row and per-column windows [h0, h1) x [w0, w1) (clamped to the real cells):
//   - avg_pool2d: window oh covers oh*s - p .. oh*s - p + k; padded cells are zeros, counted in the
//     divisor (k*k) when count_include_pad, left out of it otherwise (as PyTorch);
//   - adaptive_avg_pool2d: window i covers floor(i*H/Ho) .. ceil((i+1)*H/Ho) (PyTorch's formula),
//     so windows may overlap or differ in size by one when H is not a multiple of Ho.
// Backward spreads dout / divisor evenly over the window's real cells; overlaps add up. A NaN in a
// window makes its output NaN (plain arithmetic).
//
// References: https://pytorch.org/docs/stable/generated/torch.nn.MaxPool2d.html,
// torch.nn.AvgPool2d.html, torch.nn.AdaptiveAvgPool2d.html
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#include "core/autograd.h"
#include "core/cpu_isa.h"
#include "core/ops.h"
#include "core/ops/max_pool2x2_avx2.h"
#include "core/ops/max_pool2x2_avx512.h"
#include "core/ops/pool_general.h"
#include "core/ops/thread_scratch.h"
#include "core/parallel.h"
#include "core/region_error.h"

namespace bnlab {

namespace {

struct PoolDims {
  int64_t planes;  // N * C: each (n, c) plane is pooled independently
  int64_t H, W, kernel, stride, padding, Ho, Wo;
};

// Validates a square-window pooling of x [N, C, H, W] (PyTorch's rules, floor mode) and returns its
// dims, stride 0 resolved to the kernel. `op` names the pooling in errors.
PoolDims pool_dims(const char* op, const Tensor& x, int64_t kernel, int64_t stride,
                   int64_t padding) {
  BNLAB_CHECK(x.dim() == 4, op, ": input must be [N, C, H, W]; got ", x.shape());
  BNLAB_CHECK(kernel >= 1, op, ": kernel must be >= 1; got ", kernel);
  BNLAB_CHECK(stride >= 0, op, ": stride must be >= 1 (or 0 for stride = kernel); got ", stride);
  if (stride == 0) stride = kernel;
  // As PyTorch, so that no window lies entirely in the padding.
  BNLAB_CHECK(padding >= 0 && padding <= kernel / 2, op,
              ": padding must be in [0, kernel / 2] = [0, ", kernel / 2, "]; got ", padding,
              " for kernel ", kernel);
  PoolDims d{};
  d.planes = x.size(0) * x.size(1);
  d.H = x.size(2);
  d.W = x.size(3);
  d.kernel = kernel;
  d.stride = stride;
  d.padding = padding;
  // With H, W >= 1 and padding <= kernel / 2, every window holds at least one real cell.
  BNLAB_CHECK(d.H >= 1 && d.W >= 1, op, ": input ", x.shape(), " has no spatial extent");
  // Refused rather than wrapped: the padded extents below must fit in int64.
  BNLAB_CHECK(padding <= (std::numeric_limits<int64_t>::max() - std::max(d.H, d.W)) / 2, op,
              ": padding ", padding, " makes the padded input overflow int64 (input ", x.shape(),
              ", kernel ", kernel, ")");
  // Checked before dividing: C++ truncates a negative quotient toward zero.
  BNLAB_CHECK(d.H + 2 * padding >= kernel && d.W + 2 * padding >= kernel, op, ": kernel ", kernel,
              " is larger than the padded input ", d.H + 2 * padding, "x", d.W + 2 * padding,
              " (input ", x.shape(), ", padding ", padding, ")");
  d.Ho = (d.H + 2 * padding - kernel) / stride + 1;
  d.Wo = (d.W + 2 * padding - kernel) / stride + 1;
  return d;
}

// out [planes, Ho, Wo] and argmax [planes, Ho, Wo] (index h*W + w inside the plane) from x [planes,
// H, W]: any window. The reference the 2x2/2 kernels below are tested against.
void max_pool2d_forward(float* out, int64_t* argmax, const float* x, const PoolDims& d) {
  // The work estimate in double: kernel * kernel overflows int64 for kernels past 2^31.5.
  detail::parallel_for(
      d.planes, static_cast<double>(d.planes * d.Ho * d.Wo) * d.kernel * d.kernel > (1 << 15),
      [&](int64_t plane) {
        const float* xp = x + plane * d.H * d.W;
        float* op = out + plane * d.Ho * d.Wo;
        int64_t* ap = argmax + plane * d.Ho * d.Wo;
        for (int64_t oh = 0; oh < d.Ho; ++oh) {
          // Clamp the window to the real cells: that is what "padding is -inf" means for a max.
          int64_t h0 = std::max<int64_t>(oh * d.stride - d.padding, 0);
          int64_t h1 = std::min<int64_t>(oh * d.stride - d.padding + d.kernel, d.H);
          for (int64_t ow = 0; ow < d.Wo; ++ow) {
            int64_t w0 = std::max<int64_t>(ow * d.stride - d.padding, 0);
            int64_t w1 = std::min<int64_t>(ow * d.stride - d.padding + d.kernel, d.W);
            int64_t best = h0 * d.W + w0;
            float best_value = xp[best];
            for (int64_t h = h0; h < h1; ++h) {
              for (int64_t w = w0; w < w1; ++w) {
                float v = xp[h * d.W + w];
                // Strict > keeps the first of equal maxima; each NaN replaces what came before.
                if (v > best_value || std::isnan(v)) {
                  best_value = v;
                  best = h * d.W + w;
                }
              }
            }
            op[oh * d.Wo + ow] = best_value;
            ap[oh * d.Wo + ow] = best;
          }
        }
      });
}

// dx [planes, H, W] += dout routed to the saved argmax. Parallel over planes: windows never cross
// planes.
void max_pool2d_backward(float* dx, const float* dout, const int64_t* argmax, const PoolDims& d) {
  detail::parallel_for(d.planes, d.planes * d.Ho * d.Wo > (1 << 15), [&](int64_t plane) {
    float* dxp = dx + plane * d.H * d.W;
    const float* gp = dout + plane * d.Ho * d.Wo;
    const int64_t* ap = argmax + plane * d.Ho * d.Wo;
    for (int64_t i = 0; i < d.Ho * d.Wo; ++i) dxp[ap[i]] += gp[i];
  });
}

// One step of the max in the general loop's order, as a select (no branch: on random data the
// comparison is unpredictable, and a select lets the loop vectorize): v replaces best when larger,
// or when v is a NaN.
inline bool beats(float v, float best) { return (v > best) | (v != v); }

// c ? a : b on the bits: GCC 12 turns a float ?: into a branch in the scalar remainder of a loop,
// which at lenet's widths (5 to 14 outputs) is most of it, and mispredicts on random data.
inline float pick(bool c, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return std::bit_cast<float>((std::bit_cast<uint32_t>(a) & m) | (std::bit_cast<uint32_t>(b) & ~m));
}

// The winner of each horizontal pair of one input row: m [Wo] and its place k [Wo] (0 left, 1
// right). One strided row per loop is what GCC 12 vectorizes (two rows in one loop it does not).
void pair_max_row(float* __restrict m, uint8_t* __restrict k, const float* __restrict row,
                  int64_t Wo) {
#pragma omp simd
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const float left = row[2 * ow], right = row[2 * ow + 1];
    const bool r = beats(right, left);
    m[ow] = pick(r, right, left);
    k[ow] = static_cast<uint8_t>(r);
  }
}

// One input row of the 2x2 backward: row [2 Wo] gets dout g [Wo] in the cells whose window place
// k [Wo] is `place` (left) or `place + 1` (right), nothing elsewhere. kAssign: the row's gradient
// is being created (a fresh buffer), so cells are set, zeros included; else added to. Selects, not
// `+= k == place ? g : 0`: adding +0 would turn a -0 already there into +0.
template <bool kAssign>
void route_row(float* __restrict row, const float* __restrict g, const uint8_t* __restrict k,
               int place, int64_t Wo) {
#pragma omp simd
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const float left = kAssign ? 0.0f : row[2 * ow], right = kAssign ? 0.0f : row[2 * ow + 1];
    row[2 * ow] = pick(k[ow] == place, left + g[ow], left);
    row[2 * ow + 1] = pick(k[ow] == place + 1, right + g[ow], right);
  }
}

}  // namespace

namespace detail {

// The 2x2 stride-2 unpadded windows of one plane, the common case: out [Ho, Wo] from x [H, W] and,
// when `place` is non-null, the winner's place in its window as one byte (0 top-left, 1 top-right,
// 2 bottom-left, 3 bottom-right): 8x less index memory than the general int64 argmax. The max is
// taken as a tournament, each pair's winner first, then the bottom pair's winner against the
// top's: "the first maximum, the last NaN above all" is associative (a later pair's winner
// replaces an earlier one's when it is larger or a NaN), so this picks the same cell as the general
// loop's row-major chain, bit for bit.
void max_pool2x2_plane(float* out, uint8_t* place, const float* x, int64_t H, int64_t W) {
  const int64_t Ho = H / 2, Wo = W / 2;
  if (const CpuIsa isa = max_pool2x2_isa(); isa != CpuIsa::portable) {
    const auto row = isa == CpuIsa::avx512 ? max_pool2x2_row_avx512 : max_pool2x2_row_avx2;
    for (int64_t oh = 0; oh < Ho; ++oh) {
      const float* r0 = x + 2 * oh * W;
      row(out + oh * Wo, place ? place + oh * Wo : nullptr, r0, r0 + W, Wo);
    }
    return;
  }
  // The bottom pairs' winners of one output row, and the top's places when no index is kept: per
  // thread, grown once, so pooling plane by plane allocates nothing.
  // Their size is the input's, so growing them may fail: an Error naming the op, carried out of
  // the callers' OpenMP regions (max_pool2x2_forward, batch norm's for_channel_blocks). `bottom`
  // grows last: a failed growth leaves it short, to be retried, never long beside a short one.
  thread_local std::vector<float> bottom;
  thread_local std::vector<uint8_t> bottom_k, top_k;
  if (bottom.size() < static_cast<size_t>(Wo)) {
    const auto fail = [&] {
      BNLAB_FAIL("max_pool2d: a thread's row scratch of ", Wo, " values (for input rows of ", W,
                 ") cannot be allocated");
    };
    detail::grow_thread_scratch(bottom_k, static_cast<size_t>(Wo), fail);
    detail::grow_thread_scratch(top_k, static_cast<size_t>(Wo), fail);
    detail::grow_thread_scratch(bottom, static_cast<size_t>(Wo), fail);
  }
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const float* r0 = x + 2 * oh * W;  // window rows 2oh, 2oh + 1
    float* __restrict o = out + oh * Wo;
    uint8_t* __restrict a = place ? place + oh * Wo : top_k.data();
    pair_max_row(o, a, r0, Wo);
    pair_max_row(bottom.data(), bottom_k.data(), r0 + W, Wo);
    const float* __restrict b = bottom.data();
    const uint8_t* __restrict bk = bottom_k.data();
#pragma omp simd
    for (int64_t ow = 0; ow < Wo; ++ow) {
      const bool lower = beats(b[ow], o[ow]);  // ties keep the top (earlier) cell
      o[ow] = pick(lower, b[ow], o[ow]);
      a[ow] = lower ? static_cast<uint8_t>(2 + bk[ow]) : a[ow];
    }
  }
}

// dx [H, W] gets dout [Ho, Wo] at each window's saved place: added, or, with `assign`, written over
// every cell (the rows and columns floor mode leaves out get zeros), so that a fresh gradient
// buffer needs no zero-fill. Windows do not overlap.
void max_pool2x2_plane_backward(float* dx, const float* dout, const uint8_t* place, int64_t H,
                                int64_t W, bool assign) {
  const int64_t Ho = H / 2, Wo = W / 2;
  const bool avx512 = max_pool2x2_isa() == CpuIsa::avx512;
  for (int64_t oh = 0; oh < Ho; ++oh) {
    float* d0 = dx + 2 * oh * W;
    const float* g = dout + oh * Wo;
    const uint8_t* a = place + oh * Wo;
    if (avx512) {
      max_pool2x2_route_avx512(d0, d0 + W, g, a, Wo, assign);
      if (assign && W % 2) d0[W - 1] = d0[2 * W - 1] = 0.0f;
    } else if (assign) {
      route_row<true>(d0, g, a, 0, Wo);
      route_row<true>(d0 + W, g, a, 2, Wo);
      if (W % 2) d0[W - 1] = d0[2 * W - 1] = 0.0f;
    } else {
      route_row<false>(d0, g, a, 0, Wo);
      route_row<false>(d0 + W, g, a, 2, Wo);
    }
  }
  if (assign && H % 2) std::fill_n(dx + (H - 1) * W, W, 0.0f);
}

namespace {
std::atomic<CpuIsa> isa_cap{CpuIsa::avx512};
}  // namespace

CpuIsa max_pool2x2_isa() { return std::min(cpu_isa(), isa_cap.load()); }

CpuIsa limit_max_pool2x2_isa(CpuIsa max) { return isa_cap.exchange(max); }

Tensor max_pool2d_general(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  const PoolDims d = pool_dims("max_pool2d", x, kernel, stride, padding);
  Tensor out = Tensor::empty({x.size(0), x.size(1), d.Ho, d.Wo});
  std::vector<int64_t> argmax(static_cast<size_t>(out.numel()));
  max_pool2d_forward(out.data(), argmax.data(), x.data(), d);
  if (needs_grad({x})) {
    attach(out, "max_pool2d", {x}, Reads::nothing(),
           [d, argmax = std::move(argmax)](const Tensor&, const Tensor& dout,
                                           const std::vector<Tensor>& in) {
             max_pool2d_backward(grad_buffer(in[0]), dout.data(), argmax.data(), d);
           });
  }
  return out;
}

}  // namespace detail

namespace {

// The 2x2 path over every plane of x [planes, H, W]. Planes are independent: threads split them.
void max_pool2x2_forward(float* out, uint8_t* at, const float* x, const PoolDims& d) {
  const int64_t in_plane = d.H * d.W, out_plane = d.Ho * d.Wo;
  // Without AVX2 a plane grows its thread's row scratch, which may throw, and an exception
  // cannot leave the region: it is rethrown after it.
  detail::RegionError error;
  detail::parallel_for(d.planes, d.planes * in_plane > (1 << 16), [&](int64_t plane) {
    error.run([&] {
      detail::max_pool2x2_plane(out + plane * out_plane, at ? at + plane * out_plane : nullptr,
                                x + plane * in_plane, d.H, d.W);
    });
  });
  error.rethrow();
}

void max_pool2x2_backward(float* dx, const float* dout, const uint8_t* at, const PoolDims& d,
                          bool assign) {
  const int64_t in_plane = d.H * d.W, out_plane = d.Ho * d.Wo;
  detail::parallel_for(d.planes, d.planes * in_plane > (1 << 16), [&](int64_t plane) {
    detail::max_pool2x2_plane_backward(dx + plane * in_plane, dout + plane * out_plane,
                                       at + plane * out_plane, d.H, d.W, assign);
  });
}

}  // namespace

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  const PoolDims d = pool_dims("max_pool2d", x, kernel, stride, padding);
  if (d.kernel != 2 || d.stride != 2 || d.padding != 0) {
    return detail::max_pool2d_general(x, kernel, stride, padding);
  }
  Tensor out = Tensor::empty({x.size(0), x.size(1), d.Ho, d.Wo});
  if (!needs_grad({x})) {
    max_pool2x2_forward(out.data(), nullptr, x.data(), d);
    return out;
  }
  // Default-initialized: the forward writes every byte.
  std::shared_ptr<uint8_t[]> at(new uint8_t[static_cast<size_t>(out.numel())]);
  max_pool2x2_forward(out.data(), at.get(), x.data(), d);
  attach(out, "max_pool2d", {x}, Reads::nothing(),
         [d, at = std::move(at)](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
           const GradTarget dx = grad_target(in[0]);
           max_pool2x2_backward(dx.data, dout.data(), at.get(), d, dx.fresh);
         });
  return out;
}

namespace {

// The windows of an average pooling over planes of [H, W]: output row oh averages input rows
// [h0[oh], h1[oh]), output column ow columns [w0[ow], w1[ow]) (real cells only); the divisor is
// `fixed_divisor`, or the window's real cell count when that is 0.
struct AvgWindows {
  int64_t planes, H, W, Ho, Wo;
  std::vector<int64_t> h0, h1, w0, w1;
  // A double: avg_pool2d's k*k overflows int64 for kernels past 2^31.5, and is exact below 2^26.
  double fixed_divisor = 0.0;
  float inv_divisor(int64_t oh, int64_t ow) const {
    const double count = fixed_divisor != 0.0
                             ? fixed_divisor
                             : static_cast<double>((h1[oh] - h0[oh]) * (w1[ow] - w0[ow]));
    return 1.0f / static_cast<float>(count);
  }
};

// out [planes, Ho, Wo] = window means of x [planes, H, W].
void avg_pool_forward(float* out, const float* x, const AvgWindows& d) {
  detail::parallel_for(d.planes, d.planes * d.H * d.W > (1 << 15), [&](int64_t plane) {
    const float* xp = x + plane * d.H * d.W;
    float* op = out + plane * d.Ho * d.Wo;
    for (int64_t oh = 0; oh < d.Ho; ++oh) {
      for (int64_t ow = 0; ow < d.Wo; ++ow) {
        float acc = 0.0f;
        for (int64_t h = d.h0[oh]; h < d.h1[oh]; ++h)
          for (int64_t w = d.w0[ow]; w < d.w1[ow]; ++w) acc += xp[h * d.W + w];
        op[oh * d.Wo + ow] = acc * d.inv_divisor(oh, ow);
      }
    }
  });
}

// dx [planes, H, W] += dout / divisor spread over each window. Parallel over planes: windows never
// cross planes.
void avg_pool_backward(float* dx, const float* dout, const AvgWindows& d) {
  detail::parallel_for(d.planes, d.planes * d.H * d.W > (1 << 15), [&](int64_t plane) {
    float* dxp = dx + plane * d.H * d.W;
    const float* gp = dout + plane * d.Ho * d.Wo;
    for (int64_t oh = 0; oh < d.Ho; ++oh) {
      for (int64_t ow = 0; ow < d.Wo; ++ow) {
        const float g = gp[oh * d.Wo + ow] * d.inv_divisor(oh, ow);
        for (int64_t h = d.h0[oh]; h < d.h1[oh]; ++h)
          for (int64_t w = d.w0[ow]; w < d.w1[ow]; ++w) dxp[h * d.W + w] += g;
      }
    }
  });
}

// out: [N, C, Ho, Wo], allocated by the caller.
Tensor avg_pool(const char* op, const Tensor& x, AvgWindows d, Tensor out) {
  avg_pool_forward(out.data(), x.data(), d);
  if (needs_grad({x})) {
    attach(out, op, {x}, Reads::nothing(),
           [d = std::move(d)](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             avg_pool_backward(grad_buffer(in[0]), dout.data(), d);
           });
  }
  return out;
}

}  // namespace

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding,
                  bool count_include_pad) {
  const PoolDims p = pool_dims("avg_pool2d", x, kernel, stride, padding);
  stride = p.stride;
  AvgWindows d{};
  d.planes = p.planes;
  d.H = p.H;
  d.W = p.W;
  d.Ho = p.Ho;
  d.Wo = p.Wo;
  // Floor mode: every window ends inside the padded input, so with count_include_pad its divisor
  // is the full k*k.
  d.fixed_divisor =
      count_include_pad ? static_cast<double>(kernel) * static_cast<double>(kernel) : 0.0;
  auto windows = [&](int64_t size, int64_t count, std::vector<int64_t>& lo,
                     std::vector<int64_t>& hi) {
    for (int64_t i = 0; i < count; ++i) {
      lo.push_back(std::max<int64_t>(i * stride - padding, 0));
      hi.push_back(std::min<int64_t>(i * stride - padding + kernel, size));
    }
  };
  windows(d.H, d.Ho, d.h0, d.h1);
  windows(d.W, d.Wo, d.w0, d.w1);
  Tensor out = Tensor::empty({x.size(0), x.size(1), d.Ho, d.Wo});
  return avg_pool("avg_pool2d", x, std::move(d), out);
}

Tensor adaptive_avg_pool2d(const Tensor& x, std::array<int64_t, 2> output_size) {
  BNLAB_CHECK(x.dim() == 4, "adaptive_avg_pool2d: input must be [N, C, H, W]; got ", x.shape());
  BNLAB_CHECK(output_size[0] >= 1 && output_size[1] >= 1,
              "adaptive_avg_pool2d: output size must be at least 1x1; got ", output_size[0], "x",
              output_size[1]);
  AvgWindows d{};
  d.planes = x.size(0) * x.size(1);
  d.H = x.size(2);
  d.W = x.size(3);
  BNLAB_CHECK(d.H >= 1 && d.W >= 1, "adaptive_avg_pool2d: input ", x.shape(),
              " has no spatial extent");
  d.Ho = output_size[0];
  d.Wo = output_size[1];
  // The output first: its size check must come before the windows, which hold Ho + Wo entries and
  // would otherwise be built for any size asked for, however absurd.
  Tensor out;
  try {
    out = Tensor::empty({x.size(0), x.size(1), d.Ho, d.Wo});
  } catch (const Error& e) {
    BNLAB_FAIL("adaptive_avg_pool2d: output size ", d.Ho, "x", d.Wo, " is too large for input ",
               x.shape(), ": ", e.what());
  }
  // PyTorch's start = floor(i * size / out), end = ceil((i + 1) * size / out), with i * size kept
  // as quotient and remainder by out: the product itself can overflow int64.
  auto windows = [](int64_t size, int64_t count, std::vector<int64_t>& lo,
                    std::vector<int64_t>& hi) {
    int64_t q = 0, r = 0;  // i * size = q * count + r, 0 <= r < count
    for (int64_t i = 0; i < count; ++i) {
      lo.push_back(q);
      q += size / count;
      r += size % count;
      if (r >= count) {
        ++q;
        r -= count;
      }
      hi.push_back(r != 0 ? q + 1 : q);
    }
  };
  // No planes, nothing to pool: an empty output may have any Ho and Wo, and needs no windows.
  if (d.planes > 0) {
    windows(d.H, d.Ho, d.h0, d.h1);
    windows(d.W, d.Wo, d.w0, d.w1);
  }
  return avg_pool("adaptive_avg_pool2d", x, std::move(d), out);
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t output_size) {
  return adaptive_avg_pool2d(x, {output_size, output_size});
}

}  // namespace bnlab

// Direct convolution kernels (internal; not installed): stride-1, ungrouped convs with a square 3x3
// or 5x5 kernel, forward, input gradient and weight gradient, with AVX-512F, AVX2+FMA and portable
// code chosen at run time. The rule (core/ops/conv_path.cpp) gives them the first layer of an image
// network (1-4 input channels: forward and dw) and thicker 5x5 convs (forward and dx), where
// im2col + GEMM fits worse; conventions and reasoning are at the top of core/ops/conv_direct.cpp.
#pragma once

#include <cstdint>

namespace bnlab::detail {

/// A stride-1, ungrouped conv: x [N, C, H, W], w [K, C, k, k], out [N, K, Ho, Wo] with
/// Ho = H + 2 padding - k + 1 (likewise Wo).
struct DirectConvShape {
  int64_t N, C, H, W, K, k, padding, Ho, Wo;
};

/// True when the direct kernels can compute this conv: stride 1, one group, a square 3x3 or 5x5
/// kernel, padding < k. (Whether they do is conv2d_path's rule.)
bool conv2d_direct_eligible(int64_t kh, int64_t kw, int64_t stride, int64_t padding,
                            int64_t groups);

/// The instruction sets the kernels come in, in order of preference.
enum class DirectIsa { portable, avx2, avx512 };

/// The one the kernels use: the best this CPU has (AVX-512F; else AVX2 with FMA; else portable),
/// capped by limit_direct_conv_isa().
DirectIsa direct_conv_isa();

/// Tests: caps the instruction set (portable forces the portable code) and returns the previous
/// cap. Not for use while another thread runs convolutions.
DirectIsa limit_direct_conv_isa(DirectIsa max);

/// out = conv(x, w) + b (b may be null), through relu when `relu`; with pm, also its planes'
/// plane_moments (core/ops/plane_moments.h), [N * K * 2]. Requires an eligible shape.
void conv2d_direct_forward(float* out, const float* x, const float* w, const float* b,
                           const DirectConvShape& s, bool relu = false, double* pm = nullptr);

/// dx [N, C, H, W] = (assign) or += the input gradient for dout [N, K, Ho, Wo]: the transposed
/// convolution, computed as a forward direct conv of dout with w flipped. Requires an eligible
/// shape.
void conv2d_direct_input_grad(float* dx, bool assign, const float* dout, const float* w,
                              const DirectConvShape& s);

/// dw [K, C, k, k] += the weight gradient for dout [N, K, Ho, Wo]. Requires an eligible shape.
void conv2d_direct_weight_grad(float* dw, const float* dout, const float* x,
                               const DirectConvShape& s);

}  // namespace bnlab::detail

// Winograd F(4x4, 3x3) convolution: conv2d's fast path for 3x3, stride-1, padding-1, ungrouped
// convolutions with enough channels (core/ops/conv_winograd.cpp; detail, not installed). The rule
// that picks it is core/ops/conv_path.h's.
#pragma once
#include <cstdint>

namespace bnlab::detail {

/// True when Winograd F(4x4, 3x3) computes this conv: a 3x3 kernel, stride 1, padding 1, groups 1.
bool conv2d_winograd_eligible(int64_t kh, int64_t kw, int64_t stride, int64_t padding,
                              int64_t groups);

/// Tests: false makes the transforms use only their portable code (the path on CPUs without
/// AVX-512F or AVX2), true (the default) lets them use AVX-512F or AVX2 where the CPU has it. Not
/// for use while another thread runs convolutions.
void allow_winograd_vector_parts(bool allowed);

/// Shape of a Winograd conv: x [N, C, H, W], w [K, C, 3, 3], out [N, K, H, W].
struct WinogradShape {
  int64_t N, C, H, W, K;
};

/// out [N, K, H, W] = conv(x, w) + b (b may be null), through relu when `relu`; with pm, also its
/// planes' plane_moments (core/ops/plane_moments.h), [N * K * 2].
void winograd_conv2d_forward(float* out, const float* x, const float* w, const float* b,
                             const WinogradShape& s, bool relu = false, double* pm = nullptr);

/// Accumulates dx [N, C, H, W] and dw [K, C, 3, 3] (either may be null: not wanted) from dout
/// [N, K, H, W]; dx_fresh: dx is a fresh, unfilled gradient buffer (grad_target), which is then
/// assigned. The bias gradient is conv.cpp's, shared by both paths.
void winograd_conv2d_backward(float* dx, bool dx_fresh, float* dw, const float* dout,
                              const float* x, const float* w, const WinogradShape& s);

}  // namespace bnlab::detail

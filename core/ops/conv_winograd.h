// Winograd F(4x4, 3x3) convolution: conv2d's fast path for 3x3, stride-1, padding-1, ungrouped
// convolutions (core/ops/conv_winograd.cpp), and the rule that picks it (detail; not installed).
#pragma once
#include <cstdint>

namespace bnlab::detail {

/// The two implementations behind conv2d.
enum class ConvPath {
  im2col,    ///< im2col + GEMM (core/ops/conv.cpp), every shape; the reference path
  winograd,  ///< Winograd F(4x4, 3x3), only eligible shapes (conv2d_winograd_eligible)
};

/// What BNLAB_CONV asks for: the static rule, or one path forced.
enum class ConvPathMode {
  automatic,  ///< unset or `auto`: conv2d_path()'s measured rule
  im2col,     ///< `im2col`: always the reference path
  winograd,   ///< `winograd`: Winograd wherever eligible, whatever the channel counts
};

/// BNLAB_CONV's value as a mode: null, "" or "auto" -> automatic, "im2col", "winograd"; anything
/// else throws, naming the variable and the accepted values.
ConvPathMode parse_conv_path_mode(const char* value);

/// The mode conv2d uses: BNLAB_CONV, read once at the first call, unless set_conv_path_mode()
/// replaced it.
ConvPathMode conv_path_mode();

/// Replaces the mode for later conv2d calls (tests, benchmarks) and returns the previous one. Not
/// for use while another thread runs conv2d.
ConvPathMode set_conv_path_mode(ConvPathMode mode);

/// Sets a mode for its lifetime and restores the previous one.
class ScopedConvPathMode {
 public:
  explicit ScopedConvPathMode(ConvPathMode mode) : previous_(set_conv_path_mode(mode)) {}
  ~ScopedConvPathMode() { set_conv_path_mode(previous_); }
  ScopedConvPathMode(const ScopedConvPathMode&) = delete;
  ScopedConvPathMode& operator=(const ScopedConvPathMode&) = delete;

 private:
  ConvPathMode previous_;
};

/// True when Winograd F(4x4, 3x3) computes this conv: a 3x3 kernel, stride 1, padding 1, groups 1.
bool conv2d_winograd_eligible(int64_t kh, int64_t kw, int64_t stride, int64_t padding,
                              int64_t groups);

/// The path conv2d takes for input channels C and output channels K of the given kernel under
/// `mode` (the static rule, documented at its definition).
ConvPath conv2d_path(ConvPathMode mode, int64_t C, int64_t K, int64_t kh, int64_t kw,
                     int64_t stride, int64_t padding, int64_t groups);

/// "im2col" or "winograd".
const char* conv_path_name(ConvPath path);

/// Tests: false makes the transforms use only their portable code (the path on CPUs without
/// AVX-512F), true (the default) lets them use AVX-512F where the CPU has it. Not for use while
/// another thread runs convolutions.
void allow_winograd_avx512(bool allowed);

/// Shape of a Winograd conv: x [N, C, H, W], w [K, C, 3, 3], out [N, K, H, W].
struct WinogradShape {
  int64_t N, C, H, W, K;
};

/// out [N, K, H, W] = conv(x, w) + b (b may be null).
void winograd_conv2d_forward(float* out, const float* x, const float* w, const float* b,
                             const WinogradShape& s);

/// Accumulates dx [N, C, H, W] and dw [K, C, 3, 3] (either may be null: not wanted) from dout
/// [N, K, H, W]. The bias gradient is conv.cpp's, shared by both paths.
void winograd_conv2d_backward(float* dx, float* dw, const float* dout, const float* x,
                              const float* w, const WinogradShape& s);

}  // namespace bnlab::detail

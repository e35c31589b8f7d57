// Which implementation computes a conv2d (internal; not installed): im2col + GEMM, the reference
// for every shape (core/ops/conv.cpp), Winograd F(4x4, 3x3) (core/ops/conv_winograd.cpp), the
// direct kernels for thin first layers (core/ops/conv_direct.cpp) or the frequency-domain path for
// small images with large kernels (core/ops/conv_fourier.cpp); BNLAB_CONV; and the static rule
// that picks one per shape.
#pragma once
#include <cstdint>

namespace bnlab::detail {

/// The implementations behind conv2d.
enum class ConvPath {
  im2col,       ///< im2col + GEMM (core/ops/conv.cpp), every shape; the reference path
  winograd,     ///< Winograd F(4x4, 3x3), only eligible shapes (conv2d_winograd_eligible)
  direct,       ///< direct kernels for the forward and dw (dx: im2col's), eligible shapes only
  direct_data,  ///< direct forward and dx (dw: im2col's), eligible shapes only
  fourier,      ///< frequency-domain forward, dx and dw, eligible shapes only
};

/// What BNLAB_CONV asks for: the static rule, or one path forced.
enum class ConvPathMode {
  automatic,  ///< unset or `auto`: conv2d_path()'s measured rule
  im2col,     ///< `im2col`: always the reference path
  winograd,   ///< `winograd`: Winograd wherever eligible, whatever the channel counts
  direct,     ///< `direct`: the direct kernels wherever eligible, whatever the channel counts
  fourier,    ///< `fourier`: the frequency-domain path wherever eligible, whatever the channels
};

/// BNLAB_CONV's value as a mode: null, "" or "auto" -> automatic, "im2col", "winograd", "direct",
/// "fourier";
/// anything else throws, naming the variable and the accepted values.
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

/// The path conv2d takes for input channels C and output channels K of the given kernel on H x W
/// images under `mode` (the static rule, documented at its definition).
ConvPath conv2d_path(ConvPathMode mode, int64_t C, int64_t K, int64_t kh, int64_t kw,
                     int64_t stride, int64_t padding, int64_t groups, int64_t H, int64_t W);

/// "im2col", "winograd", "direct", "direct-data" or "fourier".
const char* conv_path_name(ConvPath path);

}  // namespace bnlab::detail

// conv2d's path rule and BNLAB_CONV (see core/ops/conv_path.h). The path is chosen per call from
// the shape alone, never from timings, so a run's numerics do not depend on the machine's load.
#include "core/ops/conv_path.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/ops/conv_direct.h"
#include "core/ops/conv_fourier.h"
#include "core/ops/conv_winograd.h"

namespace bnlab::detail {

namespace {

std::atomic<ConvPathMode>& mode_slot() {
  static std::atomic<ConvPathMode> mode{parse_conv_path_mode(std::getenv("BNLAB_CONV"))};
  return mode;
}

}  // namespace

ConvPathMode parse_conv_path_mode(const char* value) {
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "auto") == 0)
    return ConvPathMode::automatic;
  if (std::strcmp(value, "im2col") == 0) return ConvPathMode::im2col;
  if (std::strcmp(value, "winograd") == 0) return ConvPathMode::winograd;
  if (std::strcmp(value, "direct") == 0) return ConvPathMode::direct;
  if (std::strcmp(value, "fourier") == 0) return ConvPathMode::fourier;
  BNLAB_FAIL("BNLAB_CONV: unknown value '", value,
             "'; expected auto, im2col, winograd, direct or fourier");
}

ConvPathMode conv_path_mode() { return mode_slot().load(); }

ConvPathMode set_conv_path_mode(ConvPathMode mode) { return mode_slot().exchange(mode); }

// Winograd: eligible shapes with at least 32 input and 32 output channels. Measured
// (bench/conv_paths, batch 128, docs/performance.md "Winograd F(4x4, 3x3) convolution"): from 32
// channels on Winograd is 1.2-2x faster; at 16->16 it is level (forward+backward 0.88-1.11x over
// runs), at 8 channels or 3 input channels slower (0.5-0.96x): the transforms cost per channel
// what the GEMMs save, and the GEMMs are too thin to save much.
// Direct: eligible shapes with at most kMaxDirectChannels input channels (thin first layers) take
// the direct forward and weight gradient on a CPU with AVX2 or AVX-512F; eligible 5x5 convs with
// more channels take the direct forward and input gradient with AVX-512F. Measured
// (bench/conv_paths and single-pass timings, docs/performance.md "Direct convolution"): with
// AVX-512F the direct forward is 1.25-1.6x im2col's; the direct weight gradient wins at 1-3 input
// channels but is 1.5x slower at 32 -> 64 (one small item per (channel block, c, i)); the
// transposed direct conv for dx is 1.04-1.1x im2col's at 8 and 32 input channels, 4x slower at 1
// (8 output lanes, 1 used). With AVX2 (against OpenBLAS's Haswell kernels) the thin layers still
// gain (forward+dw 1.07-1.17x), but at 8 and 32 channels dx is 0.75-0.97x.
// Fourier: eligible shapes (small images) with kernels of 25 taps or more and more than
// kMaxDirectChannels input channels, on a CPU with AVX2 or AVX-512F. Measured (bench/conv_paths,
// batch 64, AVX-512F, docs/performance.md "Frequency-domain convolution"): at 5x5 on 8x8 and 14x14
// images forward + backward is 2.2-2.5x im2col's from 8 to 64 channels, against 1.2x for the
// direct kernels at lenet's 32 -> 64; at 3x3 it is 1.1x, behind Winograd.
ConvPath conv2d_path(ConvPathMode mode, int64_t C, int64_t K, int64_t kh, int64_t kw,
                     int64_t stride, int64_t padding, int64_t groups, int64_t H, int64_t W) {
  constexpr int64_t kMinWinogradChannels = 32, kMaxDirectChannels = 4, kMinFourierTaps = 25;
  const bool winograd = conv2d_winograd_eligible(kh, kw, stride, padding, groups);
  const bool direct = conv2d_direct_eligible(kh, kw, stride, padding, groups);
  const bool fourier = conv2d_fourier_eligible(H, W, kh, kw, stride, padding, groups);
  switch (mode) {
    case ConvPathMode::im2col:
      return ConvPath::im2col;
    case ConvPathMode::winograd:
      return winograd ? ConvPath::winograd : ConvPath::im2col;
    case ConvPathMode::direct:
      return direct ? ConvPath::direct : ConvPath::im2col;
    case ConvPathMode::fourier:
      return fourier ? ConvPath::fourier : ConvPath::im2col;
    case ConvPathMode::automatic:
      break;
  }
  if (winograd && C >= kMinWinogradChannels && K >= kMinWinogradChannels) return ConvPath::winograd;
  const DirectIsa isa = direct_conv_isa();
  if (direct && isa != DirectIsa::portable && C <= kMaxDirectChannels) return ConvPath::direct;
  if (fourier && isa != DirectIsa::portable && kh * kw >= kMinFourierTaps && C > kMaxDirectChannels)
    return ConvPath::fourier;
  if (direct && isa != DirectIsa::portable) {
    if (kh == 5 && isa == DirectIsa::avx512) return ConvPath::direct_data;
  }
  return ConvPath::im2col;
}

const char* conv_path_name(ConvPath path) {
  switch (path) {
    case ConvPath::winograd:
      return "winograd";
    case ConvPath::direct:
      return "direct";
    case ConvPath::direct_data:
      return "direct-data";
    case ConvPath::fourier:
      return "fourier";
    case ConvPath::im2col:
      break;
  }
  return "im2col";
}

}  // namespace bnlab::detail

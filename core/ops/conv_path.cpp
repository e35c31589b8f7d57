// conv2d's path rule and BNLAB_CONV (see core/ops/conv_path.h). The path is chosen per call from
// the shape alone, never from timings, so a run's numerics do not depend on the machine's load.
#include "core/ops/conv_path.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
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
  BNLAB_FAIL("BNLAB_CONV: unknown value '", value, "'; expected auto, im2col or winograd");
}

ConvPathMode conv_path_mode() { return mode_slot().load(); }

ConvPathMode set_conv_path_mode(ConvPathMode mode) { return mode_slot().exchange(mode); }

// Winograd: eligible shapes with at least 32 input and 32 output channels. Measured
// (bench/conv_paths, batch 128, docs/performance.md "Winograd F(4x4, 3x3) convolution"): from 32
// channels on Winograd is 1.2-2x faster; at 16->16 it is level (forward+backward 0.88-1.11x over
// runs), at 8 channels or 3 input channels slower (0.5-0.96x): the transforms cost per channel
// what the GEMMs save, and the GEMMs are too thin to save much.
ConvPath conv2d_path(ConvPathMode mode, int64_t C, int64_t K, int64_t kh, int64_t kw,
                     int64_t stride, int64_t padding, int64_t groups) {
  constexpr int64_t kMinChannels = 32;
  if (mode == ConvPathMode::im2col || !conv2d_winograd_eligible(kh, kw, stride, padding, groups))
    return ConvPath::im2col;
  if (mode == ConvPathMode::winograd) return ConvPath::winograd;
  return C >= kMinChannels && K >= kMinChannels ? ConvPath::winograd : ConvPath::im2col;
}

const char* conv_path_name(ConvPath path) {
  return path == ConvPath::winograd ? "winograd" : "im2col";
}

}  // namespace bnlab::detail

// Fused uint8 -> float conversion with normalization, crop-with-padding and flip (see
// transforms.h). Reference: torchvision.transforms (RandomCrop, RandomHorizontalFlip, Normalize).
#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace bnlab {

PixelAffine make_pixel_affine(const NormalizeOptions& normalize, int64_t C) {
  const auto n_mean = static_cast<int64_t>(normalize.mean.size());
  const auto n_std = static_cast<int64_t>(normalize.std.size());
  BNLAB_CHECK(n_mean == n_std, "normalize: ", n_mean, " means but ", n_std, " stds");
  BNLAB_CHECK(n_mean == 0 || n_mean == 1 || n_mean == C, "normalize: ", n_mean,
              " mean/std values for images with ", C, " channels; expected 1 or ", C);
  PixelAffine a;
  for (int64_t c = 0; c < C; ++c) {
    float mean = n_mean == 0 ? 0.0f : normalize.mean[static_cast<size_t>(n_mean == 1 ? 0 : c)];
    float std = n_std == 0 ? 1.0f : normalize.std[static_cast<size_t>(n_std == 1 ? 0 : c)];
    BNLAB_CHECK(std > 0.0f && std::isfinite(std), "normalize: std for channel ", c, " is ", std,
                "; must be positive and finite");
    BNLAB_CHECK(std::isfinite(mean), "normalize: mean for channel ", c, " is ", mean,
                "; must be finite");
    // (v / 255 - mean) / std = v * (1 / (255 std)) + (-mean / std): one multiply-add per pixel.
    a.scale.push_back(1.0f / (255.0f * std));
    a.bias.push_back(-mean / std);
  }
  return a;
}

SampleAugment draw_augment(const AugmentOptions& options, Rng& rng) {
  SampleAugment s;
  if (options.crop_padding > 0) {
    auto span = static_cast<uint32_t>(2 * options.crop_padding + 1);
    s.dy = static_cast<int64_t>(rng.below(span)) - options.crop_padding;
    s.dx = static_cast<int64_t>(rng.below(span)) - options.crop_padding;
  }
  if (options.horizontal_flip) s.flip = rng.below(2) == 1;
  return s;
}

void convert_image(const uint8_t* src, int64_t C, int64_t H, int64_t W, const PixelAffine& affine,
                   const SampleAugment& aug, float* dst) {
  const int64_t HW = H * W;
  // Fast path (MNIST-style batches): a straight multiply-add over each channel plane, which the
  // compiler vectorizes (zero-extend bytes, convert, fma).
  if (aug.dy == 0 && aug.dx == 0 && !aug.flip) {
    for (int64_t c = 0; c < C; ++c) {
      const float s = affine.scale[static_cast<size_t>(c)];
      const float b = affine.bias[static_cast<size_t>(c)];
      const uint8_t* in = src + c * HW;
      float* out = dst + c * HW;
      for (int64_t i = 0; i < HW; ++i) out[i] = static_cast<float>(in[i]) * s + b;
    }
    return;
  }
  // General path, one output row at a time. Output column x reads source column
  //   sx = x + dx             (no flip)
  //   sx = W - 1 - x + dx     (flip: mirror the cropped window)
  // and the valid x (0 <= sx < W) form one contiguous run; the rest is padding (pixel 0 -> bias).
  const int64_t dx = aug.dx;
  const int64_t x_lo = aug.flip ? std::max<int64_t>(0, dx) : std::max<int64_t>(0, -dx);
  const int64_t x_hi = aug.flip ? std::min<int64_t>(W, W + dx) : std::min<int64_t>(W, W - dx);
  for (int64_t c = 0; c < C; ++c) {
    const float s = affine.scale[static_cast<size_t>(c)];
    const float b = affine.bias[static_cast<size_t>(c)];
    for (int64_t y = 0; y < H; ++y) {
      float* out = dst + c * HW + y * W;
      const int64_t sy = y + aug.dy;
      if (sy < 0 || sy >= H || x_lo >= x_hi) {
        std::fill(out, out + W, b);
        continue;
      }
      const uint8_t* in = src + c * HW + sy * W;
      std::fill(out, out + x_lo, b);
      if (aug.flip) {
        for (int64_t x = x_lo; x < x_hi; ++x)
          out[x] = static_cast<float>(in[W - 1 - x + dx]) * s + b;
      } else {
        for (int64_t x = x_lo; x < x_hi; ++x) out[x] = static_cast<float>(in[x + dx]) * s + b;
      }
      std::fill(out + x_hi, out + W, b);
    }
  }
}

}  // namespace bnlab

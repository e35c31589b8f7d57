// Per-sample transforms fused into the uint8 -> float conversion: per-channel normalization, random
// crop with zero padding, horizontal flip. One pass reads the image's bytes and writes the batch's
// floats.
//
// Shapes: one image [C, H, W] uint8 in, [C, H, W] float out (the crop keeps the size, like
// torchvision's RandomCrop(size=H, padding=p)). Order and conventions follow torchvision's CIFAR
// recipe RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor -> Normalize(mean, std):
//   crop:  the image is padded by p zero *pixels* on every side, then an H x W window at
//          offset (p + dy, p + dx), dy, dx uniform in [-p, p], is taken; that is,
//          out[c, y, x] = in[c, y + dy, x + dx], and 0 outside the image.
//   flip:  then, with probability 1/2, out[c, y, x] = cropped[c, y, W - 1 - x].
//   value: v / 255, then (v - mean[c]) / std[c]. Padding is applied before normalization, so a
//          padded position holds the normalized value of pixel 0, i.e. -mean[c] / std[c] (0 only
//          without normalization), as in torchvision.
// References: torchvision.transforms.RandomCrop / RandomHorizontalFlip / Normalize
// (https://pytorch.org/vision/stable/transforms.html); K. He et al., "Deep Residual Learning",
// 2015, sec. 4.2 (4-pixel padding, random 32x32 crops, horizontal flips on CIFAR-10).
#pragma once

#include <cstdint>
#include <vector>

#include "core/random.h"

namespace bnlab {

/// Mean and std per channel, in units of pixel / 255. Empty: no normalization (values v / 255 in
/// [0, 1]). A single value applies to every channel.
struct NormalizeOptions {
  std::vector<float> mean = {};  ///< per channel (or one for all)
  std::vector<float> std = {};   ///< per channel (or one for all)
};

/// Training-time augmentation, off by default.
struct AugmentOptions {
  int64_t crop_padding = 0;      ///< p > 0 enables random crop with p zero pixels of padding
  bool horizontal_flip = false;  ///< mirror left-right with probability 1/2
  /// True if any augmentation is on.
  bool enabled() const { return crop_padding > 0 || horizontal_flip; }
};

/// One sample's draw: crop offsets in [-p, p] and the flip decision.
struct SampleAugment {
  int64_t dy = 0;     ///< vertical crop offset
  int64_t dx = 0;     ///< horizontal crop offset
  bool flip = false;  ///< mirror left-right
};

/// Per-channel affine for a uint8 value v: v * scale[c] + bias[c] == (v / 255 - mean[c]) / std[c].
struct PixelAffine {
  std::vector<float> scale;  ///< [C]
  std::vector<float> bias;   ///< [C]
};

/// Throws if mean/std do not have 0, 1 or `channels` entries, a std is not positive and finite, or
/// a mean is not finite.
PixelAffine make_pixel_affine(const NormalizeOptions& normalize, int64_t channels);

/// Draws dy, dx (if crop_padding > 0, in that order) and flip (if horizontal_flip) from rng.
SampleAugment draw_augment(const AugmentOptions& options, Rng& rng);

/// src [C, H, W] uint8 -> dst [C, H, W] float with crop offsets, flip and normalization as
/// described above; positions outside the source image get bias[c] (the value of pixel 0).
void convert_image(const uint8_t* src, int64_t C, int64_t H, int64_t W, const PixelAffine& affine,
                   const SampleAugment& augment, float* dst);

}  // namespace bnlab

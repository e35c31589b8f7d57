// data/transforms: the fused uint8 -> float conversion on a known image -- normalization values,
// crop with zero padding shifting pixels exactly (padding = the normalized value of pixel 0),
// horizontal flip mirroring exactly, crop then flip -- and the augmentation draws' ranges.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <set>

#include "core/error.h"
#include "data/transforms.h"

using namespace bnlab;

namespace {

constexpr int64_t C = 2, H = 4, W = 5;

// A known image [2, 4, 5]: value 1 + 100 c + 10 y + x, so every pixel is distinct and non-zero.
std::vector<uint8_t> known_image() {
  std::vector<uint8_t> img(C * H * W);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        img[(c * H + y) * W + x] = static_cast<uint8_t>(1 + 100 * c + 10 * y + x);
  return img;
}

// The source pixel value for out (c, y, x) after crop (dy, dx) and optional flip, 0 for padding.
int reference(const std::vector<uint8_t>& img, int64_t c, int64_t y, int64_t x, int64_t dy,
              int64_t dx, bool flip) {
  int64_t cx = flip ? W - 1 - x : x;  // flip mirrors the cropped window
  int64_t sy = y + dy, sx = cx + dx;
  if (sy < 0 || sy >= H || sx < 0 || sx >= W) return 0;
  return img[(c * H + sy) * W + sx];
}

}  // namespace

TEST_CASE("data.transforms: normalization is (v / 255 - mean) / std per channel") {
  std::vector<uint8_t> img = known_image();
  PixelAffine a = make_pixel_affine({{0.5f, 0.25f}, {0.5f, 2.0f}}, C);
  std::vector<float> out(img.size());
  convert_image(img.data(), C, H, W, a, {}, out.data());
  for (int64_t c = 0; c < C; ++c) {
    const float mean = c == 0 ? 0.5f : 0.25f, std = c == 0 ? 0.5f : 2.0f;
    for (int64_t p = 0; p < H * W; ++p) {
      float v = img[c * H * W + p];
      CHECK(out[c * H * W + p] == doctest::Approx((v / 255.0f - mean) / std).epsilon(1e-6));
    }
  }
  // No normalization: v / 255; one value broadcasts over the channels.
  PixelAffine plain = make_pixel_affine({}, 3);
  CHECK(plain.scale == std::vector<float>(3, 1.0f / 255.0f));
  CHECK(plain.bias == std::vector<float>(3, 0.0f));
  PixelAffine one = make_pixel_affine({{0.1307f}, {0.3081f}}, 3);
  CHECK(one.bias[2] == doctest::Approx(-0.1307 / 0.3081));

  CHECK_THROWS_WITH_AS(make_pixel_affine({{0.1f, 0.2f}, {0.3f, 0.4f}}, 3),
                       doctest::Contains("2 mean/std values for images with 3 channels"), Error);
  CHECK_THROWS_WITH_AS(make_pixel_affine({{0.1f}, {0.0f}}, 1),
                       doctest::Contains("must be positive"), Error);
  CHECK_THROWS_WITH_AS(make_pixel_affine({{0.1f}, {}}, 1), doctest::Contains("1 means but 0 stds"),
                       Error);
  // An infinite std made every pixel the same value; an infinite or NaN mean made them inf or NaN.
  const float inf = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(
      make_pixel_affine({{0.1f}, {inf}}, 1),
      doctest::Contains("normalize: std for channel 0 is inf; must be positive and "
                        "finite"),
      Error);
  CHECK_THROWS_WITH_AS(make_pixel_affine({{0.1f, -inf}, {1.0f, 1.0f}}, 2),
                       doctest::Contains("normalize: mean for channel 1 is -inf; must be finite"),
                       Error);
  CHECK_THROWS_WITH_AS(make_pixel_affine({{std::nanf("")}, {1.0f}}, 1),
                       doctest::Contains("mean for channel 0 is nan"), Error);
}

TEST_CASE("data.transforms: crop with padding shifts pixels and pads with pixel 0") {
  std::vector<uint8_t> img = known_image();
  std::vector<float> out(img.size());
  PixelAffine plain = make_pixel_affine({}, C);
  SUBCASE("down-right window: out(y, x) = in(y + 1, x + 2), zeros past the edge") {
    convert_image(img.data(), C, H, W, plain, {.dy = 1, .dx = 2, .flip = false}, out.data());
    // Spot checks by hand: out(0,0) = in(1,2) = 13; out(0,2) = in(1,4) = 15; out(0,3) is padding.
    CHECK(out[0] * 255.0f == doctest::Approx(13));
    CHECK(out[2] * 255.0f == doctest::Approx(15));
    CHECK(out[3] == 0.0f);
    CHECK(out[3 * W] == 0.0f);  // row 3 reads row 4: padding
  }
  SUBCASE("up-left window: out(y, x) = in(y - 2, x - 1)") {
    convert_image(img.data(), C, H, W, plain, {.dy = -2, .dx = -1, .flip = false}, out.data());
    CHECK(out[0] == 0.0f);
    CHECK(out[2 * W + 1] * 255.0f == doctest::Approx(1));            // in(0, 0)
    CHECK(out[H * W + 3 * W + 4] * 255.0f == doctest::Approx(114));  // channel 1, in(1, 3)
  }
  // Every pixel, for every offset up to the padding of 2 and beyond the image.
  for (int64_t dy = -4; dy <= 4; ++dy) {
    for (int64_t dx = -5; dx <= 5; ++dx) {
      for (bool flip : {false, true}) {
        convert_image(img.data(), C, H, W, plain, {.dy = dy, .dx = dx, .flip = flip}, out.data());
        for (int64_t c = 0; c < C; ++c)
          for (int64_t y = 0; y < H; ++y)
            for (int64_t x = 0; x < W; ++x) {
              // Back to the byte value (out = v / 255 up to rounding): the exact source pixel, 0 if
              // padded.
              CHECK(std::lround(out[(c * H + y) * W + x] * 255.0f) ==
                    reference(img, c, y, x, dy, dx, flip));
            }
      }
    }
  }
}

TEST_CASE("data.transforms: padding after normalization is the normalized value of 0") {
  std::vector<uint8_t> img = known_image();
  std::vector<float> out(img.size());
  PixelAffine a = make_pixel_affine({{0.4914f, 0.4822f}, {0.2470f, 0.2435f}}, C);
  convert_image(img.data(), C, H, W, a, {.dy = 0, .dx = 3, .flip = false}, out.data());
  CHECK(out[W - 1] == a.bias[0]);  // column 4 reads column 7: padding
  CHECK(out[W - 1] == doctest::Approx(-0.4914f / 0.2470f));
  CHECK(out[H * W + W - 1] == doctest::Approx(-0.4822f / 0.2435f));
  CHECK(out[0] == doctest::Approx((4 / 255.0f - 0.4914f) / 0.2470f));  // in(0, 3) = 4
}

TEST_CASE("data.transforms: horizontal flip mirrors exactly") {
  std::vector<uint8_t> img = known_image();
  std::vector<float> out(img.size());
  convert_image(img.data(), C, H, W, make_pixel_affine({}, C), {.dy = 0, .dx = 0, .flip = true},
                out.data());
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        CHECK(std::lround(out[(c * H + y) * W + x] * 255.0f) == img[(c * H + y) * W + (W - 1 - x)]);
  // Crop then flip: the cropped window (shifted right by 1) is mirrored; its padded column lands
  // left.
  convert_image(img.data(), C, H, W, make_pixel_affine({}, C), {.dy = 0, .dx = 1, .flip = true},
                out.data());
  CHECK(out[0] == 0.0f);                             // cropped column 4 read column 5: padding
  CHECK(out[1] * 255.0f == doctest::Approx(5));      // cropped column 3 = in column 4
  CHECK(out[W - 1] * 255.0f == doctest::Approx(2));  // cropped column 0 = in column 1
}

TEST_CASE("data.transforms: augmentation draws cover [-p, p] and both flips, seeded") {
  AugmentOptions opts{.crop_padding = 4, .horizontal_flip = true};
  Rng rng(3);
  std::set<int64_t> dys, dxs;
  int flips = 0;
  for (int i = 0; i < 2000; ++i) {
    SampleAugment s = draw_augment(opts, rng);
    CHECK(s.dy >= -4);
    CHECK(s.dy <= 4);
    CHECK(s.dx >= -4);
    CHECK(s.dx <= 4);
    dys.insert(s.dy);
    dxs.insert(s.dx);
    flips += s.flip;
  }
  CHECK(dys.size() == 9);
  CHECK(dxs.size() == 9);
  CHECK(flips > 900);
  CHECK(flips < 1100);
  Rng a(5), b(5);
  SampleAugment sa = draw_augment(opts, a), sb = draw_augment(opts, b);
  CHECK((sa.dy == sb.dy && sa.dx == sb.dx && sa.flip == sb.flip));
  // Disabled options draw nothing.
  SampleAugment none = draw_augment({}, rng);
  CHECK((none.dy == 0 && none.dx == 0 && !none.flip));
  CHECK_FALSE(AugmentOptions{}.enabled());
}

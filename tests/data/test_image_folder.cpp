// data/image_folder: PNG/BMP/JPG files under root/<class>/ (written here with stb_image_write)
// become a [N, C, H, W] uint8 dataset -- classes sorted by name, exact pixels in CHW order,
// grayscale detected, gray replicated when mixed with RGB, optional resize -- and unreadable or
// mismatched images are reported with their path.
#include <doctest/doctest.h>
#include <stb_image_write.h>

#include "core/error.h"
#include "data/datasets.h"
#include "data/image_folder.h"
#include "data_test_util.h"

using namespace bnlab;
using namespace data_test;

namespace {

// An interleaved (HWC) test image with channel value (seed + 10 y + 3 x + 50 c) % 256.
std::vector<uint8_t> hwc_image(int h, int w, int comp, int seed) {
  std::vector<uint8_t> img(static_cast<size_t>(h * w * comp));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comp; ++c)
        img[static_cast<size_t>((y * w + x) * comp + c)] =
            static_cast<uint8_t>((seed + 10 * y + 3 * x + 50 * c) % 256);
  return img;
}

void write_png(const fs::path& path, int h, int w, int comp, int seed) {
  fs::create_directories(path.parent_path());
  std::vector<uint8_t> img = hwc_image(h, w, comp, seed);
  REQUIRE(stbi_write_png(path.string().c_str(), w, h, comp, img.data(), w * comp) != 0);
}

}  // namespace

TEST_CASE("data.image_folder: classes sorted by name, pixels exact in CHW order") {
  TempDir dir("folder");
  fs::path root = dir.path / "pets";
  write_png(root / "dog" / "b.png", 4, 5, 3, 1);
  write_png(root / "dog" / "a.PNG", 4, 5, 3, 2);
  write_png(root / "cat" / "z.png", 4, 5, 3, 3);
  {
    std::vector<uint8_t> img = hwc_image(4, 5, 3, 4);
    REQUIRE(stbi_write_bmp((root / "cat" / "y.bmp").string().c_str(), 5, 4, 3, img.data()) != 0);
  }
  write_bytes((root / "cat" / "notes.txt").string(), {'h', 'i'});  // not an image: ignored
  fs::create_directories(root / "ant");                            // an empty class keeps its index
  ImageDataset d = load_image_folder(root.string());
  CHECK(d.name == "pets");
  CHECK(d.class_names == std::vector<std::string>{"ant", "cat", "dog"});
  REQUIRE(d.size() == 4);
  CHECK(d.labels ==
        std::vector<int64_t>{1, 1, 2, 2});  // cat/y.bmp, cat/z.png, dog/a.PNG, dog/b.png
  CHECK(d.channels == 3);
  CHECK(d.height == 4);
  CHECK(d.width == 5);
  const int seeds[4] = {4, 3, 2, 1};
  for (int64_t i = 0; i < 4; ++i) {
    std::vector<uint8_t> hwc = hwc_image(4, 5, 3, seeds[i]);
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t p = 0; p < 20; ++p)
        CHECK(d.image(i)[c * 20 + p] == hwc[static_cast<size_t>(p * 3 + c)]);
  }
  check_dataset(d, "test");
}

TEST_CASE(
    "data.image_folder: grayscale detected, replicated when mixed, channels forced, resized") {
  TempDir dir("folder");
  fs::path root = dir.path / "digits";
  write_png(root / "0" / "a.png", 6, 6, 1, 7);
  write_png(root / "1" / "b.png", 6, 6, 2, 9);  // gray + alpha counts as gray
  ImageDataset gray = load_image_folder(root.string());
  CHECK(gray.channels == 1);
  CHECK(gray.image(0)[6 * 2 + 3] == hwc_image(6, 6, 1, 7)[6 * 2 + 3]);

  ImageDataset forced = load_image_folder(root.string(), {.channels = 3});
  CHECK(forced.channels == 3);
  for (int64_t c = 0; c < 3; ++c) CHECK(forced.image(0)[c * 36 + 5] == gray.image(0)[5]);

  write_png(root / "2" / "c.png", 6, 6, 3, 11);
  ImageDataset mixed = load_image_folder(root.string());
  CHECK(mixed.channels == 3);
  CHECK(mixed.image(0)[36 + 14] == gray.image(0)[14]);  // gray replicated into G

  write_png(root / "2" / "d.png", 12, 9, 3, 13);
  CHECK_THROWS_WITH_AS(load_image_folder(root.string()), doctest::Contains("d.png is 9x12 but"),
                       Error);
  ImageDataset resized = load_image_folder(root.string(), {.height = 8, .width = 10});
  CHECK(resized.size() == 4);
  CHECK(resized.height == 8);
  CHECK(resized.width == 10);
  CHECK(resized.pixels.size() == 4u * 3 * 8 * 10);
}

TEST_CASE("data.image_folder: unreadable images and empty folders are reported with the path") {
  TempDir dir("folder");
  fs::path root = dir.path / "broken";
  write_png(root / "a" / "ok.png", 3, 3, 3, 1);
  write_bytes((root / "a" / "bad.jpg").string(), {1, 2, 3, 4, 5});
  const std::string bad = (root / "a" / "bad.jpg").string();
  CHECK_THROWS_WITH_AS(load_image_folder(root.string()),
                       doctest::Contains(("cannot read " + bad).c_str()), Error);
  fs::create_directories(dir.path / "empty" / "cls");
  CHECK_THROWS_WITH_AS(load_image_folder((dir.path / "empty").string()),
                       doctest::Contains("holds no .png/.jpg/.jpeg/.bmp images"), Error);
  CHECK_THROWS_WITH_AS(load_image_folder((dir.path / "nothing").string()),
                       doctest::Contains("not found or not a directory"), Error);
  fs::create_directories(dir.path / "flat");
  CHECK_THROWS_WITH_AS(load_image_folder((dir.path / "flat").string()),
                       doctest::Contains("has no class sub-directories"), Error);
}

TEST_CASE("data.image_folder: only PNG, JPEG and BMP content, and no absurd sizes") {
  TempDir dir("folder");
  fs::path root = dir.path / "odd";
  write_png(root / "a" / "ok.png", 3, 3, 3, 1);
  // A GIF named .png: stb_image would decode it, the loader refuses it by its first bytes.
  const std::string gif = (root / "a" / "z.png").string();
  write_bytes(gif, {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0, ';'});
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string()),
      doctest::Contains(("cannot read " + gif + " (not a PNG, JPEG or BMP file").c_str()), Error);

  // A PNG header claiming 10000 x 10000 (IHDR with a valid CRC, no pixels): refused from the
  // header, before stb_image would allocate 300 MB (stb itself only stops at 2^30 bytes).
  std::string ihdr = std::string("IHDR") + std::string("\x00\x00\x27\x10\x00\x00\x27\x10", 8) +
                     std::string("\x08\x02\x00\x00\x00", 5);
  uLong crc = crc32(0, reinterpret_cast<const Bytef*>(ihdr.data()), static_cast<uInt>(ihdr.size()));
  std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + std::string("\x00\x00\x00\x0d", 4) + ihdr;
  for (int shift : {24, 16, 8, 0}) png += static_cast<char>((crc >> shift) & 0xff);
  fs::remove(gif);
  const std::string big = (root / "a" / "big.png").string();
  write_bytes(big, std::vector<uint8_t>(png.begin(), png.end()));
  CHECK_THROWS_WITH_AS(load_image_folder(root.string()),
                       doctest::Contains((big + " is 10000x10000 pixels, over the limit").c_str()),
                       Error);
  CHECK_THROWS_WITH_AS(decode_image(png, "mem.png", 3), doctest::Contains("mem.png is 10000x10000"),
                       Error);
  CHECK_THROWS_WITH_AS(load_image_folder(root.string(), {.height = 100000, .width = 100000}),
                       doctest::Contains("the requested size is 100000x100000 pixels"), Error);
}

TEST_CASE("data.image_folder: decode_image decodes bytes in memory to CHW, resized on request") {
  std::vector<uint8_t> hwc = hwc_image(4, 5, 3, 7);
  std::string png;
  auto append = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(data),
                                           static_cast<size_t>(size));
  };
  REQUIRE(stbi_write_png_to_func(append, &png, 5, 4, 3, hwc.data(), 15) != 0);
  ImageInfo info = image_info(png, "mem.png");
  CHECK(info.width == 5);
  CHECK(info.height == 4);
  CHECK(info.channels == 3);
  DecodedImage img = decode_image(png, "mem.png", 3);
  REQUIRE(img.pixels.size() == 3 * 4 * 5);
  CHECK(img.pixels[2 * 20 + 1 * 5 + 3] == hwc[(1 * 5 + 3) * 3 + 2]);  // c=2, y=1, x=3
  DecodedImage small = decode_image(png, "mem.png", 1, 2, 3);
  CHECK(small.height == 2);
  CHECK(small.width == 3);
  CHECK(small.pixels.size() == 6);
  CHECK_THROWS_WITH_AS(decode_image(png.substr(0, 40), "cut.png", 3),
                       doctest::Contains("cut.png ("), Error);
}

TEST_CASE("data.image_folder: load_dataset(\"folder:PATH\") picks PATH/<split> when present") {
  TempDir dir("folder");
  write_png(dir.path / "train" / "x" / "1.png", 3, 3, 3, 1);
  write_png(dir.path / "train" / "y" / "1.png", 3, 3, 3, 2);
  write_png(dir.path / "val" / "x" / "1.png", 3, 3, 3, 3);
  ImageDataset train = load_dataset("folder:" + dir.path.string(), "train", "");
  CHECK(train.size() == 2);
  CHECK(train.split == "train");
  ImageDataset val = load_dataset("folder:" + dir.path.string(), "val", "");
  CHECK(val.size() == 1);
  CHECK(val.class_names == std::vector<std::string>{"x"});
}

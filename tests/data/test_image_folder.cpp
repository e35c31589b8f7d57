// data/image_folder: PNG/BMP/JPG files under root/<class>/, at any depth in torchvision's order
// (written here with stb_image_write), become a [N, C, H, W] uint8 dataset -- classes sorted by
// name, exact pixels in CHW order, grayscale detected, gray replicated when mixed with RGB,
// optional resize -- and unreadable or mismatched images, empty class folders and folders over the
// decoded-size limit are reported with their path (through load_dataset, suggesting no option its
// callers cannot set); a folder divided into splits names the split it lacks; PNGs with
// zero-length IDAT chunks decode as without them; FIFOs and dangling links named like images, and
// directory cycles, are named; names outside UTF-8 are kept printable.
#include <doctest/doctest.h>
#include <stb_image_write.h>
#include <sys/stat.h>

#include <fstream>
#include <iterator>

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

// A PNG of an interleaved test image, in memory.
std::string png_bytes(int h, int w, int comp, int seed) {
  std::vector<uint8_t> img = hwc_image(h, w, comp, seed);
  std::string png;
  auto append = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(data),
                                           static_cast<size_t>(size));
  };
  REQUIRE(stbi_write_png_to_func(append, &png, w, h, comp, img.data(), w * comp) != 0);
  return png;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// One PNG chunk: length, type, data and the CRC of type and data (PNG spec 5.3).
std::string png_chunk(const std::string& type, const std::string& data) {
  const std::string body = type + data;
  const auto crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
  return be32(static_cast<uint32_t>(data.size())) + body + be32(crc);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
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
  fs::create_directories(root / "ant");  // an empty class, allowed below: keeps its index
  ImageDataset d = load_image_folder(root.string(), {.allow_empty = true});
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

TEST_CASE("data.image_folder: a class's nested folders count, in torchvision's order") {
  // torchvision's make_dataset lists sorted(os.walk(class_dir, followlinks=True)): directories in
  // path order ("c/a" < "c/a b" < "c/a/z" < "c/a0", since ' ' < '/' < '0'), each one's files by
  // name. A depth-first walk would put a/z/ before "a b"/. Each image's first pixel is its seed.
  TempDir dir("folder");
  fs::path root = dir.path / "nested";
  fs::path c = root / "c";
  write_png(c / "b.png", 2, 2, 1, 1);
  write_png(c / "a b" / "x.png", 2, 2, 1, 2);
  write_png(c / "a" / "y.png", 2, 2, 1, 3);
  write_png(c / "a" / "z" / "w.png", 2, 2, 1, 4);
  write_png(c / "a0" / "v.png", 2, 2, 1, 5);
  write_png(c / "img.png" / "inner.png", 2, 2, 1, 6);  // a directory named like an image
  write_png(dir.path / "elsewhere" / "u.png", 2, 2, 1, 7);
  fs::create_directory_symlink(dir.path / "elsewhere", c / "link");  // followed, as os.walk does
  write_bytes((c / "a" / "notes.txt").string(), {'h', 'i'});
  write_png(root / "d" / "deep" / "er" / "t.png", 2, 2, 1, 8);  // a class with nested images only
  ImageDataset d = load_image_folder(root.string());
  CHECK(d.class_names == std::vector<std::string>{"c", "d"});
  REQUIRE(d.size() == 8);
  std::vector<int> seeds;
  for (int64_t i = 0; i < d.size(); ++i) seeds.push_back(d.image(i)[0]);
  CHECK(seeds == std::vector<int>{1, 3, 2, 4, 5, 6, 7, 8});
  CHECK(d.labels == std::vector<int64_t>{0, 0, 0, 0, 0, 0, 0, 1});
}

TEST_CASE("data.image_folder: class and dataset names outside UTF-8 are kept printable") {
  // A directory name may hold any byte but '/' and NUL: a Latin-1 name made `eval --json` fail,
  // and an escape sequence in one reached the terminal.
  TempDir dir("folder");
  fs::path root = dir.path / "d\xe9j\xe0";
  write_png(root / "caf\xe9" / "a.png", 2, 2, 1, 1);
  write_png(root / "\x1b[1mbold" / "a.png", 2, 2, 1, 2);
  write_png(root / "na\xc3\xafve" / "a.png", 2, 2, 1, 3);
  ImageDataset d = load_image_folder(root.string());
  CHECK(d.name == "d\\xE9j\\xE0");
  CHECK(d.class_names == std::vector<std::string>{"\\x1B[1mbold", "caf\\xE9", "na\xc3\xafve"});
}

TEST_CASE(
    "data.image_folder: entries named like images that are not files, and cycles, are named") {
  TempDir dir("folder");
  fs::path root = dir.path / "odd";
  write_png(root / "c" / "ok.png", 2, 2, 1, 1);
  // A FIFO: torchvision lists it and then waits for a writer; it used to be skipped silently.
  const fs::path fifo = root / "c" / "sub" / "f.png";
  fs::create_directories(fifo.parent_path());
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(
      refused_in_child([&] { load_image_folder(root.string()); },
                       "image_folder: " + fifo.string() + " is named like an image but is a FIFO"));
  fs::remove(fifo);
  const fs::path dangling = root / "c" / "gone.jpg";
  fs::create_symlink(dir.path / "nowhere.jpg", dangling);
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string()),
      doctest::Contains(
          (dangling.string() + " is named like an image but is a dangling symbolic link").c_str()),
      Error);
  fs::remove(dangling);
  // A link back to the class folder: os.walk would go round until the path is too long.
  fs::create_directory_symlink(root / "c", root / "c" / "sub" / "up");
  CHECK_THROWS_WITH_AS(load_image_folder(root.string()),
                       doctest::Contains(((root / "c" / "sub" / "up").string() + " links back to " +
                                          fs::canonical(root / "c").string() +
                                          ", a folder that contains it (a directory cycle)")
                                             .c_str()),
                       Error);
  fs::remove(root / "c" / "sub" / "up");
  CHECK(load_image_folder(root.string()).size() == 1);
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

// A symlink loop at the root, or a root it may not list, let a bare std::filesystem error escape:
// "filesystem error: status: Too many levels of symbolic links", without image_folder's context.
TEST_CASE("data.image_folder: a symlink loop or an unlistable root is named, as a level down") {
  TempDir dir("folder");
  const fs::path root = dir.path / "loops";
  write_png(root / "a" / "0.png", 2, 2, 1, 1);
  fs::create_symlink("gone", root / "dangling");  // no class, as before: nothing there
  CHECK(load_image_folder(root.string()).size() == 1);
  fs::create_symlink("loop", root / "loop");  // itself: it may be a class folder, or not
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string()),
      doctest::Contains(("image_folder: cannot access " + (root / "loop").string() +
                         ": Too many levels of symbolic links")
                            .c_str()),
      Error);
  const fs::path self = dir.path / "self";
  fs::create_symlink("self", self);
  CHECK_THROWS_WITH_AS(load_image_folder(self.string()),
                       doctest::Contains(("image_folder: cannot access " + self.string() +
                                          ": Too many levels of symbolic links")
                                             .c_str()),
                       Error);
  // Root may list any folder, so only another user can see this refusal.
  if (::geteuid() != 0) {
    fs::remove(root / "loop");
    fs::permissions(root, fs::perms::owner_exec);
    CHECK_THROWS_WITH_AS(
        load_image_folder(root.string()),
        doctest::Contains(
            ("image_folder: cannot list " + root.string() + ": Permission denied").c_str()),
        Error);
    fs::permissions(root, fs::perms::owner_all);
  }
}

TEST_CASE("data.image_folder: a class folder without images is refused unless allow_empty") {
  // torchvision's ImageFolder raises FileNotFoundError for a class folder with no valid file, and
  // keeps it as a class with allow_empty=True; the loader does the same.
  TempDir dir("folder");
  fs::path root = dir.path / "pets";
  write_png(root / "cat" / "a.png", 3, 3, 3, 1);
  fs::create_directories(root / "dog");
  fs::create_directories(root / "eel");
  write_bytes((root / "eel" / "notes.txt").string(), {'h', 'i'});  // only a non-image file
  const std::string hint =
      " holds no .png/.jpg/.jpeg/.bmp images; every class sub-directory needs at least one "
      "(remove the folder, or set ImageFolderOptions::allow_empty to keep it as a class without "
      "images)";
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string()),
      doctest::Contains(("image_folder: class folder " + (root / "dog").string() + hint).c_str()),
      Error);
  fs::remove(root / "dog");
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string()),
      doctest::Contains(("image_folder: class folder " + (root / "eel").string() + hint).c_str()),
      Error);
  fs::create_directories(root / "dog");
  ImageDataset d = load_image_folder(root.string(), {.allow_empty = true});
  CHECK(d.class_names == std::vector<std::string>{"cat", "dog", "eel"});
  CHECK(d.labels == std::vector<int64_t>{0});
  // Every class empty: nothing to load even so.
  fs::remove_all(root / "cat");
  CHECK_THROWS_WITH_AS(load_image_folder(root.string(), {.allow_empty = true}),
                       doctest::Contains("holds no .png/.jpg/.jpeg/.bmp images in its class"),
                       Error);
}

TEST_CASE("data.image_folder: a folder over max_total_bytes is refused from the headers") {
  CHECK(ImageFolderOptions{}.max_total_bytes == int64_t{4} << 30);
  // Six 8192 x 8192 grayscale PNGs of about 65 KB each (all zeros, deflated), 384 MiB decoded: the
  // header pass knows the total before decoding anything, and refuses it over a 256 MiB limit.
  const std::string row(1 + 8192, '\0');  // filter byte 0, then the pixels
  std::string raw;
  raw.reserve(row.size() * 8192);
  for (int y = 0; y < 8192; ++y) raw += row;
  std::string idat(compressBound(static_cast<uLong>(raw.size())), '\0');
  uLongf idat_size = static_cast<uLongf>(idat.size());
  REQUIRE(compress2(reinterpret_cast<Bytef*>(idat.data()), &idat_size,
                    reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()),
                    9) == Z_OK);
  idat.resize(idat_size);
  const std::string png =
      std::string("\x89PNG\r\n\x1a\n", 8) +
      png_chunk("IHDR", be32(8192) + be32(8192) + std::string("\x08\0\0\0\0", 5)) +
      png_chunk("IDAT", idat) + png_chunk("IEND", "");
  CHECK(png.size() < 70000);
  TempDir dir("folder");
  fs::path root = dir.path / "huge";
  for (int i = 0; i < 6; ++i) {
    fs::create_directories(root / (i < 3 ? "a" : "b"));
    write_bytes((root / (i < 3 ? "a" : "b") / (std::to_string(i) + ".png")).string(),
                std::vector<uint8_t>(png.begin(), png.end()));
  }
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string(), {.max_total_bytes = int64_t{256} << 20}),
      doctest::Contains(("image_folder: " + root.string() +
                         " holds 6 images of 1x8192x8192 (C x H x W), 402653184 bytes decoded, "
                         "over the limit of 268435456 bytes (ImageFolderOptions::max_total_bytes: "
                         "raise it, or give a smaller height and width to resize to)")
                            .c_str()),
      Error);
  // load_dataset's callers (the CLI's folder:PATH) cannot raise the limit: 66 of them pass the
  // default 4 GiB, and the message suggests no option.
  fs::path many = dir.path / "many";
  for (int i = 0; i < 66; ++i) {
    fs::create_directories(many / (i % 2 ? "a" : "b"));
    write_bytes((many / (i % 2 ? "a" : "b") / (std::to_string(i) + ".png")).string(),
                std::vector<uint8_t>(png.begin(), png.end()));
  }
  try {
    load_dataset("folder:" + many.string(), "train", "");
    FAIL("a folder over 4 GiB was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(" bytes decoded, over the limit of 4294967296 bytes (use "
                                     "fewer or smaller images)") != std::string::npos);
    CHECK(std::string(e.what()).find("ImageFolderOptions") == std::string::npos);
  }

  // The limit counts the dataset as stored: channels after conversion, size after resizing.
  fs::path small = dir.path / "small";
  write_png(small / "x" / "1.png", 4, 5, 3, 1);
  write_png(small / "y" / "2.png", 4, 5, 3, 2);
  write_png(small / "y" / "3.png", 4, 5, 3, 3);  // 3 images of 3x4x5: 180 bytes
  CHECK(load_image_folder(small.string(), {.max_total_bytes = 180}).size() == 3);
  CHECK_THROWS_WITH_AS(load_image_folder(small.string(), {.max_total_bytes = 179}),
                       doctest::Contains("holds 3 images of 3x4x5 (C x H x W), 180 bytes decoded, "
                                         "over the limit of 179 bytes"),
                       Error);
  CHECK(load_image_folder(small.string(), {.channels = 1, .max_total_bytes = 60}).size() == 3);
  CHECK(
      load_image_folder(small.string(), {.height = 2, .width = 2, .max_total_bytes = 36}).size() ==
      3);
  CHECK_THROWS_WITH_AS(load_image_folder(small.string(), {.max_total_bytes = 0}),
                       doctest::Contains("max_total_bytes must be > 0, got 0"), Error);
}

TEST_CASE("data.image_folder: zero-length IDAT chunks decode like the PNG without them") {
  // stb_image 2.27 calls memcpy(NULL, src, 0) for a zero-length first IDAT (undefined behaviour,
  // found by fuzz_image under UBSan); decode_image hands it the bytes without such chunks. A legal
  // PNG may hold them (they carry no data), and must decode exactly as without them.
  const std::string png = png_bytes(4, 5, 3, 7);
  // stb_image_write writes the signature, IHDR (25 bytes), one IDAT and IEND (12 bytes).
  REQUIRE(png.substr(37, 4) == "IDAT");
  const std::string empty = png_chunk("IDAT", "");
  const size_t iend = png.size() - 12;
  const std::string first_empty = png.substr(0, 33) + empty + png.substr(33);
  const std::string around =
      png.substr(0, 33) + empty + empty + png.substr(33, iend - 33) + empty + png.substr(iend);
  for (const std::string* variant : {&first_empty, &around}) {
    for (int64_t c : {1, 3}) {
      CHECK(decode_image(*variant, "empty-idat.png", c).pixels ==
            decode_image(png, "plain.png", c).pixels);
      CHECK(decode_image(*variant, "empty-idat.png", c, 3, 2).pixels ==
            decode_image(png, "plain.png", c, 3, 2).pixels);
    }
    CHECK(detail::png_without_empty_idat(*variant) == png);
  }
  CHECK(decode_image(first_empty, "empty-idat.png", 3).pixels[2 * 20 + 1 * 5 + 3] ==
        hwc_image(4, 5, 3, 7)[(1 * 5 + 3) * 3 + 2]);
  // No zero-length IDAT, or not a PNG: no copy.
  CHECK(detail::png_without_empty_idat(png).empty());
  CHECK(detail::png_without_empty_idat("BM" + png.substr(2)).empty());
  // An IDAT as the very first chunk is left for stb to refuse ("first not IHDR"), as before.
  const std::string idat_first = png.substr(0, 8) + empty + png.substr(8);
  CHECK(detail::png_without_empty_idat(idat_first).empty());
  CHECK_THROWS_WITH_AS(decode_image(idat_first, "first.png", 3),
                       doctest::Contains("image_folder: cannot read first.png ("), Error);

  // The kept fuzz input (its first byte is the driver's mode byte) decodes like itself without the
  // empty chunk; replayed under UBSan by fuzz_image, and by tests/fuzz through the driver.
  const std::string kept =
      slurp(fs::path(BNLAB_SOURCE_DIR) / "tests/fuzz/regressions/image/png-zero-length-first-idat")
          .substr(1);
  REQUIRE(kept.substr(33, 12) == empty);
  const std::string kept_without = kept.substr(0, 33) + kept.substr(45);
  CHECK(detail::png_without_empty_idat(kept) == kept_without);
  CHECK(decode_image(kept, "kept.png", 3).pixels == decode_image(kept_without, "k.png", 3).pixels);
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

// A PNG cut inside a chunk's header or CRC, or before IEND, passed the chunk check and stb read
// zeros past the end: "cannot decode X ()" or "(IDA)", from the type of a chunk that is not there.
// A cut JPEG had no check, and stb's failure came with its PNG probe's reason, "(bad png sig)".
TEST_CASE("data.image_folder: a PNG or JPEG cut anywhere is reported as truncated") {
  const std::string png = png_bytes(8, 8, 1, 3);
  for (size_t n = 8; n < png.size(); ++n) {
    CAPTURE(n);
    CHECK_THROWS_WITH_AS(decode_image(png.substr(0, n), "cut.png", 1),
                         doctest::Contains("(truncated PNG: "), Error);
  }
  std::string jpeg;
  auto append = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(data),
                                           static_cast<size_t>(size));
  };
  const std::vector<uint8_t> img = hwc_image(16, 16, 3, 5);
  REQUIRE(stbi_write_jpg_to_func(append, &jpeg, 16, 16, 3, img.data(), 90) != 0);
  CHECK(decode_image(jpeg, "whole.jpg", 3).pixels.size() == 3 * 16 * 16);
  for (size_t n = 3; n < jpeg.size(); ++n) {
    CAPTURE(n);
    CHECK_THROWS_WITH_AS(decode_image(jpeg.substr(0, n), "cut.jpg", 3),
                         doctest::Contains("(truncated JPEG: "), Error);
  }

  // Through a folder, naming the file: cut inside the IEND chunk, and at the end of IDAT.
  TempDir dir("folder");
  const fs::path root = dir.path / "cut";
  write_png(root / "a" / "0.png", 8, 8, 1, 3);
  const std::string cut = (root / "a" / "1.png").string();
  const std::string iend_cut = png.substr(0, png.size() - 2);
  write_bytes(cut, std::vector<uint8_t>(iend_cut.begin(), iend_cut.end()));
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string()),
      doctest::Contains(("cannot read " + cut + " (truncated PNG: chunk IEND at byte " +
                         std::to_string(png.size() - 12) + " lacks its 4-byte CRC")
                            .c_str()),
      Error);
  const std::string idat_cut = png.substr(0, png.size() - 12);
  write_bytes(cut, std::vector<uint8_t>(idat_cut.begin(), idat_cut.end()));
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string()),
      doctest::Contains(("cannot read " + cut + " (truncated PNG: the file ends at byte " +
                         std::to_string(png.size() - 12) + " without an IEND chunk)")
                            .c_str()),
      Error);
  const std::string jpeg_cut = jpeg.substr(0, jpeg.size() / 2);
  fs::remove(cut);
  const std::string cut_jpeg = (root / "a" / "2.jpg").string();
  write_bytes(cut_jpeg, std::vector<uint8_t>(jpeg_cut.begin(), jpeg_cut.end()));
  CHECK_THROWS_WITH_AS(
      load_image_folder(root.string()),
      doctest::Contains(("cannot read " + cut_jpeg + " (truncated JPEG: ").c_str()), Error);
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

// A folder with train/ but no test/ fell back to the folder itself for the test split, read train/
// as a class folder and reported it "holds no images", pointing a CLI user at a C++ option.
TEST_CASE("data.image_folder: a folder divided into splits names the split it lacks") {
  TempDir dir("folder");
  const fs::path root = dir.path / "pets";
  const std::string name = "folder:" + root.string();
  write_png(root / "train" / "cat" / "1.png", 3, 3, 3, 1);
  write_png(root / "train" / "dog" / "1.png", 3, 3, 3, 2);
  CHECK(load_dataset(name, "train", "").size() == 2);
  CHECK_THROWS_WITH_AS(
      load_dataset(name, "test", ""),
      doctest::Contains(("dataset " + name + ": " + (root / "test").string() +
                         "/ is missing: " + root.string() +
                         " is divided into splits (it has train/), so the test split must be " +
                         (root / "test").string() + "/<class>/<image>")
                            .c_str()),
      Error);
  // test/ without train/: the training split is the one missing.
  fs::rename(root / "train", root / "test");
  CHECK_THROWS_WITH_AS(load_dataset(name, "train", ""),
                       doctest::Contains(((root / "train").string() + "/ is missing: " +
                                          root.string() + " is divided into splits (it has test/)")
                                             .c_str()),
                       Error);
  CHECK(load_dataset(name, "test", "").size() == 2);
  // Class folders in the folder itself serve every split, as before.
  fs::rename(root / "test" / "cat", root / "cat");
  fs::rename(root / "test" / "dog", root / "dog");
  fs::remove(root / "test");
  CHECK(load_dataset(name, "test", "").class_names == std::vector<std::string>{"cat", "dog"});
  CHECK(load_dataset(name, "train", "").size() == 2);

  // load_dataset's callers (the CLI's --dataset folder:PATH) cannot set ImageFolderOptions: its
  // errors do not suggest them; load_image_folder's do.
  fs::create_directories(root / "eel");
  try {
    load_dataset(name, "train", "");
    FAIL("an empty class folder was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("class folder " + (root / "eel").string() +
                                     " holds no .png/.jpg/.jpeg/.bmp images; every class "
                                     "sub-directory needs at least one (add images to it, or "
                                     "remove it)") != std::string::npos);
    CHECK(std::string(e.what()).find("ImageFolderOptions") == std::string::npos);
  }
  CHECK_THROWS_WITH_AS(load_image_folder(root.string()),
                       doctest::Contains("ImageFolderOptions::allow_empty"), Error);
  fs::remove(root / "eel");
  write_png(root / "dog" / "2.png", 4, 4, 3, 3);  // another size
  try {
    load_dataset(name, "train", "");
    FAIL("images of two sizes were accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("every image of a folder dataset needs the same size") !=
          std::string::npos);
  }
  CHECK_THROWS_WITH_AS(load_image_folder(root.string()),
                       doctest::Contains("give a fixed size (height, width)"), Error);
}

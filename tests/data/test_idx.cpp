// data/idx: plain and gzip IDX images and labels (gzip detected from the bytes), the MNIST
// directory layout, and every malformed variant -- truncated, wrong magic / type / rank, zero and
// absurd dimensions, trailing bytes, mismatched counts, bad labels, gzip bombs, claims over the
// dataset size limit -- rejected with a message naming the file.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/io.h"
#include "data/byte_reader.h"
#include "data/datasets.h"
#include "data/idx.h"
#include "data_test_util.h"

using namespace bnlab;
using namespace data_test;

namespace {

void check_images(const IdxImages& im, int64_t n, int64_t h, int64_t w) {
  REQUIRE(im.count == n);
  REQUIRE(im.height == h);
  REQUIRE(im.width == w);
  REQUIRE(im.pixels.size() == static_cast<size_t>(n * h * w));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) CHECK(im.pixels[(i * h + y) * w + x] == test_pixel(i, y, x));
}

}  // namespace

TEST_CASE("data.idx: reads plain and gzipped images and labels") {
  TempDir dir("idx");
  write_bytes(dir.file("img"), idx_images_file(5, 4, 3));
  write_gzip(dir.file("img.gz"), idx_images_file(5, 4, 3));
  write_bytes(dir.file("lab"), idx_labels_file({3, 1, 4, 1, 5}));
  write_gzip(dir.file("lab.gz"), idx_labels_file({3, 1, 4, 1, 5}));
  check_images(read_idx_images(dir.file("img")), 5, 4, 3);
  check_images(read_idx_images(dir.file("img.gz")), 5, 4, 3);
  CHECK(read_idx_labels(dir.file("lab")) == std::vector<int64_t>{3, 1, 4, 1, 5});
  CHECK(read_idx_labels(dir.file("lab.gz")) == std::vector<int64_t>{3, 1, 4, 1, 5});
}

TEST_CASE("data.idx: gzip is detected from the bytes, not the file name") {
  TempDir dir("idx");
  write_gzip(dir.file("looks-plain-idx3-ubyte"), idx_images_file(2, 3, 3));
  write_bytes(dir.file("looks-gzipped.gz"), idx_images_file(2, 3, 3));
  check_images(read_idx_images(dir.file("looks-plain-idx3-ubyte")), 2, 3, 3);
  check_images(read_idx_images(dir.file("looks-gzipped.gz")), 2, 3, 3);
}

TEST_CASE("data.idx: load_mnist_like pairs images and labels, plain or .gz names") {
  TempDir dir("idx");
  std::vector<std::string> names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  write_gzip(dir.file("train-images-idx3-ubyte.gz"), idx_images_file(6, 28, 28));
  write_bytes(dir.file("train-labels-idx1-ubyte"), idx_labels_file({0, 9, 8, 7, 6, 5}));
  ImageDataset d = load_mnist_like(dir.path.string(), "train", "mnist", names);
  CHECK(d.size() == 6);
  CHECK(d.channels == 1);
  CHECK(d.height == 28);
  CHECK(d.width == 28);
  CHECK(d.labels == std::vector<int64_t>{0, 9, 8, 7, 6, 5});
  CHECK(d.image(5)[28 * 2 + 3] == test_pixel(5, 2, 3));
  CHECK(d.title() == "mnist/train");
  check_dataset(d, "test");

  CHECK_THROWS_WITH_AS(load_mnist_like(dir.path.string(), "test", "mnist", names),
                       doctest::Contains("t10k-images-idx3-ubyte not found"), Error);
  CHECK_THROWS_WITH_AS(load_mnist_like(dir.path.string(), "validation", "mnist", names),
                       doctest::Contains("unknown split 'validation'"), Error);
}

// A directory or FIFO by a data file's name was "not found (nor .gz)", with a fetch command for a
// dataset that is there; ByteReader refuses one without opening it (opening a FIFO waits for a
// writer).
TEST_CASE("data.idx: a directory or FIFO in place of a data file is refused naming it") {
  TempDir dir("idx");
  const fs::path mnist = dir.path / "mnist";
  const std::string images = (mnist / "t10k-images-idx3-ubyte").string();
  fs::create_directories(images);
  write_bytes((mnist / "t10k-labels-idx1-ubyte").string(), idx_labels_file({1}));
  CHECK_THROWS_WITH_AS(
      load_dataset("mnist", "test", dir.path.string()),
      doctest::Contains(("mnist: " + images + " is a directory, expected a data file").c_str()),
      Error);
  // Not "not found", so no fetch command for a dataset that is there.
  std::string message;
  try {
    load_dataset("mnist", "test", dir.path.string());
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK(message.find("fetch_data.sh") == std::string::npos);

  const std::string labels = (mnist / "train-labels-idx1-ubyte.gz").string();
  write_bytes((mnist / "train-images-idx3-ubyte").string(), idx_images_file(1, 2, 2));
  REQUIRE(::mkfifo(labels.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(load_dataset("mnist", "train", dir.path.string()),
                       doctest::Contains((labels + " is a FIFO, expected a data file").c_str()),
                       Error);
  CHECK(refused_in_child([&] { read_idx_labels(labels); },
                         labels + ": is a FIFO, expected a data file"));
}

// A failed stat was taken for "nothing there", so a symlink loop, or a folder without search
// permission, was "not found (nor .gz)" with a command to fetch a dataset that is there.
TEST_CASE("data.idx: a symlink loop or a folder it cannot search is reported, not called missing") {
  TempDir dir("idx");
  const fs::path mnist = dir.path / "mnist";
  fs::create_directories(mnist);
  write_bytes((mnist / "t10k-labels-idx1-ubyte").string(), idx_labels_file({1}));
  const std::string images = (mnist / "t10k-images-idx3-ubyte.gz").string();
  fs::create_symlink("t10k-images-idx3-ubyte.gz", images);  // itself
  auto message = [&] {
    try {
      load_dataset("mnist", "test", dir.path.string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string loop = message();
  CHECK_MESSAGE(loop.find(images + ": cannot access (Too many levels of symbolic links)") !=
                    std::string::npos,
                loop);
  CHECK(loop.find("not found") == std::string::npos);
  CHECK(loop.find("fetch_data.sh") == std::string::npos);

  // Root may search any folder, so only another user can see this refusal.
  if (::geteuid() != 0) {
    fs::remove(images);
    write_bytes(images, idx_images_file(1, 2, 2));
    fs::permissions(mnist, fs::perms::none);
    std::string denied = message();
    fs::permissions(mnist, fs::perms::owner_all);
    CHECK_MESSAGE(denied.find((mnist / "t10k-images-idx3-ubyte").string() +
                              ": cannot access (Permission denied)") != std::string::npos,
                  denied);
    CHECK(denied.find("fetch_data.sh") == std::string::npos);
  }
}

TEST_CASE("data.idx: truncated files are rejected with the header's claim and the real length") {
  TempDir dir("idx");
  std::vector<uint8_t> full = idx_images_file(10, 4, 5);
  std::vector<uint8_t> cut(full.begin(), full.begin() + 16 + 150);
  write_bytes(dir.file("train-images-idx3-ubyte"), cut);
  write_gzip(dir.file("cut.gz"), cut);
  CHECK_THROWS_WITH_AS(
      read_idx_images(dir.file("train-images-idx3-ubyte")),
      doctest::Contains("train-images-idx3-ubyte: header says 10 images of 4x5 (200 "
                        "bytes), file holds 150 bytes of data"),
      Error);
  CHECK_THROWS_WITH_AS(
      read_idx_images(dir.file("cut.gz")),
      doctest::Contains("cut.gz: header says 10 images of 4x5 (200 bytes), file holds "
                        "150 bytes of data"),
      Error);
  // A gzip stream cut in the middle (not a complete gzip file) is reported the same way.
  write_gzip(dir.file("whole.gz"), full);
  std::ifstream in(dir.file("whole.gz"), std::ios::binary);
  std::vector<uint8_t> gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  gz.resize(gz.size() / 2);
  write_bytes(dir.file("halfgz"), gz);
  CHECK_THROWS_WITH_AS(read_idx_images(dir.file("halfgz")), doctest::Contains("halfgz: "), Error);

  std::vector<uint8_t> labels = idx_labels_file({1, 2, 3, 4});
  labels.pop_back();
  write_bytes(dir.file("labels"), labels);
  CHECK_THROWS_WITH_AS(
      read_idx_labels(dir.file("labels")),
      doctest::Contains("labels: header says 4 labels (4 bytes), file holds 3 bytes"), Error);
  // Too short even for the header.
  write_bytes(dir.file("stub"), {0, 0, 8, 3, 0, 0, 0});
  CHECK_THROWS_WITH_AS(read_idx_images(dir.file("stub")),
                       doctest::Contains("stub: file holds 7 bytes, too short for an IDX header"),
                       Error);
  write_bytes(dir.file("empty"), {});
  CHECK_THROWS_WITH_AS(read_idx_labels(dir.file("empty")),
                       doctest::Contains("empty: file holds 0 bytes, too short"), Error);
}

TEST_CASE("data.idx: trailing bytes are rejected") {
  TempDir dir("idx");
  std::vector<uint8_t> f = idx_images_file(2, 3, 3);
  f.push_back(42);
  write_bytes(dir.file("long"), f);
  write_gzip(dir.file("long.gz"), f);
  CHECK_THROWS_WITH_AS(
      read_idx_images(dir.file("long")),
      doctest::Contains("long: header says 2 images of 3x3 (18 bytes), file holds 19 "
                        "bytes of data"),
      Error);
  CHECK_THROWS_WITH_AS(
      read_idx_images(dir.file("long.gz")),
      doctest::Contains("long.gz: header says 2 images of 3x3 (18 bytes), file holds "
                        "more data"),
      Error);
}

TEST_CASE("data.idx: wrong magic, element type and rank are rejected") {
  TempDir dir("idx");
  std::vector<uint8_t> f = idx_images_file(2, 3, 3);
  f[0] = 0x12;
  f[1] = 0x34;
  write_bytes(dir.file("magic"), f);
  CHECK_THROWS_WITH_AS(read_idx_images(dir.file("magic")),
                       doctest::Contains("magic: not an IDX file (magic bytes 18 52 8 3"), Error);

  f = idx_images_file(2, 3, 3);
  f[2] = 0x0d;
  write_bytes(dir.file("float"), f);
  CHECK_THROWS_WITH_AS(read_idx_images(dir.file("float")),
                       doctest::Contains("float: IDX element type 13 (float32), expected 8"),
                       Error);

  // A label file passed as images, and the other way round.
  write_bytes(dir.file("train-labels-idx1-ubyte"), idx_labels_file({1, 2}));
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_images_file(2, 3, 3));
  CHECK_THROWS_WITH_AS(
      read_idx_images(dir.file("train-labels-idx1-ubyte")),
      doctest::Contains(
          "train-labels-idx1-ubyte: IDX image must have 3 dimensions [N, H, W], header "
          "says 1"),
      Error);
  CHECK_THROWS_WITH_AS(
      read_idx_labels(dir.file("train-images-idx3-ubyte")),
      doctest::Contains("train-images-idx3-ubyte: IDX label must have 1 dimension"), Error);
}

TEST_CASE("data.idx: zero and absurd dimensions are rejected before allocating") {
  TempDir dir("idx");
  std::vector<uint8_t> zero = idx_header(0x08, {3, 0, 28});
  write_bytes(dir.file("zero"), zero);
  CHECK_THROWS_WITH_AS(
      read_idx_images(dir.file("zero")),
      doctest::Contains("zero: IDX image dimension 1 is 0 (header dims [3, 0, 28])"), Error);

  // 2^31 images of 28x28 claim 1.7 TB; the file holds 1234 bytes. Plain files fail on the file size
  // before reading; gzip files on the compressed size (no deflate stream of a few dozen bytes
  // inflates to 1.7 TB), before inflating anything.
  std::vector<uint8_t> absurd = idx_header(0x08, {1u << 31, 28, 28});
  absurd.resize(absurd.size() + 1234, 7);
  write_bytes(dir.file("train-images-idx3-ubyte"), absurd);
  write_gzip(dir.file("train-images-idx3-ubyte.gz"), absurd);
  CHECK_THROWS_WITH_AS(read_idx_images(dir.file("train-images-idx3-ubyte")),
                       doctest::Contains("header says 2147483648 images of 28x28 (1683627180032 "
                                         "bytes), file holds 1234 bytes of data"),
                       Error);
  CHECK_THROWS_WITH_AS(read_idx_images(dir.file("train-images-idx3-ubyte.gz")),
                       doctest::Contains("header says 2147483648 images of 28x28 (1683627180032 "
                                         "bytes), more than a "),
                       Error);

  // Dimensions whose product overflows 64 bits.
  write_bytes(dir.file("overflow"), idx_header(0x08, {0xffffffffu, 0xffffffffu, 0xffffffffu}));
  CHECK_THROWS_WITH_AS(read_idx_images(dir.file("overflow")),
                       doctest::Contains("overflow: header says 4294967295 images of "
                                         "4294967295x4294967295, an absurd size"),
                       Error);

  std::vector<uint8_t> labels = idx_header(0x08, {0xfffffff0u});
  labels.resize(labels.size() + 10, 1);
  write_gzip(dir.file("labels.gz"), labels);
  CHECK_THROWS_WITH_AS(
      read_idx_labels(dir.file("labels.gz")),
      doctest::Contains("labels.gz: header says 4294967280 labels (4294967280 bytes), "
                        "more than a "),
      Error);
}

TEST_CASE("data.idx: a gzip bomb is refused from its header before anything is inflated") {
  // A header claiming 2^31 - 1 images of 28x28 (1.7 TB) over 8 MiB of zeros, which deflate packs
  // about 1000:1 into a few KB. The reader used to inflate all of it, growing its buffer to the 8
  // MiB (a 4 MB bomb of this kind took 42 s and 5 GB), only to find the data short of the claim.
  // Now the claim is compared with what the compressed bytes can inflate to, at most 1032 bytes
  // per byte, and refused from the header alone.
  TempDir dir("idx");
  std::vector<uint8_t> bomb = idx_header(0x08, {0x7fffffffu, 28, 28});
  bomb.resize(bomb.size() + (size_t{8} << 20), 0);
  const std::string path = dir.file("train-images-idx3-ubyte.gz");
  write_gzip(path, bomb, "wb9");
  const auto gz_bytes = static_cast<int64_t>(fs::file_size(path));
  REQUIRE(gz_bytes < 20000);
  const std::string expected =
      path + ": header says 2147483647 images of 28x28 (1683627179248 bytes), more than a " +
      std::to_string(gz_bytes) + "-byte gzip file can hold: deflate expands at most 1032:1, so " +
      "at most " + std::to_string(gz_bytes * 1032 + 4096 - 16) +
      " bytes (corrupt header, or a gzip bomb?)";
  CHECK_THROWS_WITH_AS(read_idx_images(path), doctest::Contains(expected.c_str()), Error);

  // The check needs nothing past the header: the reader has inflated the 16 header bytes only.
  detail::ByteReader in(path);
  uint8_t header[16];
  REQUIRE(in.read(header, 16) == 16);
  CHECK_THROWS_WITH_AS(in.check_claim(int64_t{0x7fffffff} * 784, "the claim"),
                       doctest::Contains("the claim (1683627179248 bytes), more than a "), Error);
  CHECK(in.position() == 16);
}

TEST_CASE("data.idx: gzip at deflate's best ratio still loads under the bomb bound") {
  // 1024 blank 64x64 images: 4 MiB of zeros, zlib's level 9 gets close to deflate's 1032:1.
  TempDir dir("idx");
  std::vector<uint8_t> blank = idx_header(0x08, {1024, 64, 64});
  blank.resize(blank.size() + (size_t{4} << 20), 0);
  write_gzip(dir.file("blank.gz"), blank, "wb9");
  CHECK(fs::file_size(dir.file("blank.gz")) * 1000 < blank.size());  // over 1000:1
  IdxImages im = read_idx_images(dir.file("blank.gz"));
  CHECK(im.count == 1024);
  CHECK(im.pixels.size() == size_t{4} << 20);
}

TEST_CASE("data.idx: BNLAB_MAX_DATASET_BYTES caps what a header may claim") {
  TempDir dir("idx");
  write_bytes(dir.file("img"), idx_images_file(2, 28, 28));  // 1568 bytes of pixels
  write_gzip(dir.file("img.gz"), idx_images_file(2, 28, 28));
  write_bytes(dir.file("lab"), idx_labels_file({1, 2}));
  {
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "1000");
    CHECK(detail::max_dataset_bytes() == 1000);
    const char* over =
        ": header says 2 images of 28x28 (1568 bytes), over the dataset size limit of 1000 bytes "
        "(from BNLAB_MAX_DATASET_BYTES=1000); set BNLAB_MAX_DATASET_BYTES to raise it";
    CHECK_THROWS_WITH_AS(read_idx_images(dir.file("img")),
                         doctest::Contains((dir.file("img") + over).c_str()), Error);
    CHECK_THROWS_WITH_AS(read_idx_images(dir.file("img.gz")),
                         doctest::Contains((dir.file("img.gz") + over).c_str()), Error);
    CHECK(read_idx_labels(dir.file("lab")).size() == 2);  // under the limit
  }
  {
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "1568");  // the limit itself is allowed
    CHECK(read_idx_images(dir.file("img.gz")).count == 2);
  }
  {
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "2k");
    CHECK(detail::max_dataset_bytes() == 2048);
    CHECK(read_idx_images(dir.file("img")).count == 2);
  }
  {
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "1K");
    CHECK_THROWS_WITH_AS(
        read_idx_images(dir.file("img")),
        doctest::Contains("over the dataset size limit of 1024 bytes (1.0 KiB, from "
                          "BNLAB_MAX_DATASET_BYTES=1K)"),
        Error);
  }
  {
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "16G");
    CHECK(detail::max_dataset_bytes() == int64_t{16} << 30);
  }
  for (const char* bad : {"lots", "0", "-5", "12X", "1.5G", "16GB", "99999999999T"}) {
    CAPTURE(bad);
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", bad);
    CHECK_THROWS_WITH_AS(read_idx_images(dir.file("img")),
                         doctest::Contains(("BNLAB_MAX_DATASET_BYTES is '" + std::string(bad) +
                                            "', expected a positive number of bytes, optionally "
                                            "with a K, M, G or T suffix (e.g. 17179869184 or 16G)")
                                               .c_str()),
                         Error);
  }
  // Unset: the smaller of 8 GiB and half of physical memory.
  ScopedEnv env("BNLAB_MAX_DATASET_BYTES", nullptr);
  const int64_t half_memory = ::sysconf(_SC_PHYS_PAGES) * ::sysconf(_SC_PAGESIZE) / 2;
  CHECK(detail::max_dataset_bytes() == std::min(int64_t{8} << 30, half_memory));
  CHECK(read_idx_images(dir.file("img")).count == 2);
}

TEST_CASE("data.byte_reader: gzip is inflated no further than asked, plus one byte") {
  // read_up_to(n) stops after n bytes and has_more() after one more, however much the stream holds:
  // what bounds a reader to a header's claim plus one byte.
  TempDir dir("idx");
  write_gzip(dir.file("zeros.gz"), std::vector<uint8_t>(size_t{16} << 20, 0), "wb9");
  const std::string gz = read_file(dir.file("zeros.gz"));
  detail::ByteReader in(gz, "zeros.gz");
  CHECK(in.is_gzip());
  std::vector<uint8_t> out;
  CHECK(in.read_up_to(out, 100) == 100);
  CHECK(out.size() == 100);
  CHECK(out.capacity() < (size_t{2} << 20));
  CHECK(in.position() == 100);
  CHECK(in.has_more());
  CHECK(in.position() == 101);
}

TEST_CASE("data.idx: image and label counts must agree, labels must be in range") {
  TempDir dir("idx");
  std::vector<std::string> names = {"a", "b", "c"};
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_images_file(4, 2, 2));
  write_bytes(dir.file("train-labels-idx1-ubyte"), idx_labels_file({0, 1, 2}));
  CHECK_THROWS_WITH_AS(load_mnist_like(dir.path.string(), "train", "tiny", names),
                       doctest::Contains("train-images-idx3-ubyte holds 4 images but"), Error);
  CHECK_THROWS_WITH_AS(load_mnist_like(dir.path.string(), "train", "tiny", names),
                       doctest::Contains("train-labels-idx1-ubyte holds 3 labels"), Error);
  write_bytes(dir.file("train-labels-idx1-ubyte"), idx_labels_file({0, 1, 2, 7}));
  CHECK_THROWS_WITH_AS(
      load_mnist_like(dir.path.string(), "train", "tiny", names),
      doctest::Contains("train-labels-idx1-ubyte: label 7 at index 3 is out of range "
                        "for 3 classes"),
      Error);
}

// A label file whose header claimed 10^9 labels passed the size check on its 10^9 bytes, was read
// whole and widened to 8 GB of int64 (std::bad_alloc, naming no file), and only then compared with
// the image count.
TEST_CASE("data.idx: label counts are held to the limit widened, and matched before any payload") {
  TempDir dir("idx");
  std::vector<uint8_t> two_hundred(200, 1);
  write_bytes(dir.file("lab"), idx_labels_file(two_hundred));
  {
    ScopedEnv env("BNLAB_MAX_DATASET_BYTES", "1000");
    CHECK_THROWS_WITH_AS(
        read_idx_labels(dir.file("lab")),
        doctest::Contains((dir.file("lab") + ": header says 200 labels, 1600 bytes once widened to "
                                             "int64, over the dataset size limit of 1000 bytes")
                              .c_str()),
        Error);
    write_bytes(dir.file("lab"), idx_labels_file(std::vector<uint8_t>(125, 1)));
    CHECK(read_idx_labels(dir.file("lab")).size() == 125);  // 1000 bytes widened: the limit
  }

  // The headers disagree, and the payloads are cut short: the counts are compared first, so no
  // payload is read (a truncation error here would mean one was).
  std::vector<std::string> names = {"a", "b", "c"};
  std::vector<uint8_t> labels = idx_header(0x08, {1000000});
  labels.insert(labels.end(), {0, 1, 2});
  write_bytes(dir.file("train-labels-idx1-ubyte"), labels);
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_images_file(2, 2, 2));
  CHECK_THROWS_WITH_AS(
      load_mnist_like(dir.path.string(), "train", "tiny", names),
      doctest::Contains(("train-images-idx3-ubyte holds 2 images but " +
                         dir.file("train-labels-idx1-ubyte") + " holds 1000000 labels")
                            .c_str()),
      Error);
  std::vector<uint8_t> images = idx_header(0x08, {1000000, 2, 2});
  images.insert(images.end(), {0, 1, 2, 3});
  write_bytes(dir.file("train-images-idx3-ubyte"), images);
  write_gzip(dir.file("train-labels-idx1-ubyte"), idx_labels_file({0, 1}));
  CHECK_THROWS_WITH_AS(load_mnist_like(dir.path.string(), "train", "tiny", names),
                       doctest::Contains(("train-images-idx3-ubyte holds 1000000 images but " +
                                          dir.file("train-labels-idx1-ubyte") + " holds 2 labels")
                                             .c_str()),
                       Error);
}

TEST_CASE("data.idx: missing files name the path - load_dataset adds the fetch command") {
  TempDir dir("idx");
  CHECK_THROWS_WITH_AS(read_idx_images(dir.file("nope")),
                       doctest::Contains("nope: cannot open (No such file or directory)"), Error);
  CHECK_THROWS_WITH_AS(read_idx_images(dir.path.string()), doctest::Contains("is a directory"),
                       Error);
  const std::string data_dir = dir.path.string();
  const std::string expected = "mnist: " + data_dir +
                               "/mnist/train-images-idx3-ubyte not found (nor .gz); run: bash "
                               "scripts/fetch_data.sh";
  CHECK_THROWS_WITH_AS(load_dataset("mnist", "train", data_dir),
                       doctest::Contains(expected.c_str()), Error);
  CHECK_THROWS_WITH_AS(load_dataset("fashion-mnist", "test", data_dir),
                       doctest::Contains("fashion-mnist/t10k-images-idx3-ubyte not found"), Error);
  CHECK_THROWS_WITH_AS(load_dataset("fashion-mnist", "test", data_dir),
                       doctest::Contains("BNLAB_DATA"), Error);
  CHECK_THROWS_WITH_AS(load_dataset("imagenet", "train", data_dir),
                       doctest::Contains("unknown dataset 'imagenet'"), Error);
}

TEST_CASE("data.idx: load_dataset reads an MNIST-layout directory") {
  TempDir dir("idx");
  fs::create_directories(dir.path / "fashion-mnist");
  write_gzip((dir.path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").string(),
             idx_images_file(3, 28, 28));
  write_gzip((dir.path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").string(),
             idx_labels_file({9, 0, 1}));
  ImageDataset d = load_dataset("fashion", "test", dir.path.string());
  CHECK(d.name == "fashion-mnist");
  CHECK(d.size() == 3);
  CHECK(d.class_names[9] == "Ankle boot");
  CHECK(d.labels[0] == 9);
}

// The header's shape was taken on trust: a t10k file saying 14x56 (the same bytes per image) was
// evaluated on after the whole run had trained, and one saying so for both splits trained silently.
TEST_CASE("data.idx: MNIST and Fashion-MNIST images not 28x28 are refused naming the file") {
  TempDir dir("idx");
  const fs::path fashion = dir.path / "fashion-mnist";
  fs::create_directories(fashion);
  write_gzip((fashion / "train-images-idx3-ubyte.gz").string(), idx_images_file(3, 28, 28));
  write_gzip((fashion / "train-labels-idx1-ubyte.gz").string(), idx_labels_file({9, 0, 1}));
  const std::string test_images = (fashion / "t10k-images-idx3-ubyte").string();
  write_bytes(test_images, idx_images_file(2, 14, 56));
  write_bytes((fashion / "t10k-labels-idx1-ubyte").string(), idx_labels_file({3, 4}));
  CHECK(load_dataset("fashion-mnist", "train", dir.path.string()).size() == 3);
  CHECK_THROWS_WITH_AS(
      load_dataset("fashion-mnist", "test", dir.path.string()),
      doctest::Contains(
          (test_images + ": header says 2 images of 14x56; fashion-mnist images are 28x28")
              .c_str()),
      Error);
  write_bytes(test_images, idx_images_file(2, 1, 1));
  CHECK_THROWS_WITH_AS(load_dataset("fashion-mnist", "test", dir.path.string()),
                       doctest::Contains((test_images + ": header says 2 images of 1x1").c_str()),
                       Error);

  const fs::path mnist = dir.path / "mnist";
  fs::create_directories(mnist);
  const std::string train_images = (mnist / "train-images-idx3-ubyte").string();
  write_bytes(train_images, idx_images_file(2, 28, 29));
  write_bytes((mnist / "train-labels-idx1-ubyte").string(), idx_labels_file({1, 2}));
  CHECK_THROWS_WITH_AS(
      load_dataset("mnist", "train", dir.path.string()),
      doctest::Contains(
          (train_images + ": header says 2 images of 28x29; mnist images are 28x28").c_str()),
      Error);
}

TEST_CASE("data.idx: decode_idx_* parse bytes in memory, plain or gzip, naming the given name") {
  std::vector<uint8_t> f = idx_images_file(3, 2, 4);
  const std::string plain(f.begin(), f.end());
  IdxImages a = decode_idx_images(plain, "mem-images");
  CHECK(a.count == 3);
  CHECK(a.pixels.size() == 24);
  CHECK(a.pixels[8 + 5] == test_pixel(1, 1, 1));

  // gzip in memory, two members (as `cat a.gz b.gz` makes), then bytes that start no member: read
  // like gzread does, the trailing bytes ignored.
  TempDir dir("idx");
  write_gzip(dir.file("a.gz"), std::vector<uint8_t>(f.begin(), f.begin() + 10));
  write_gzip(dir.file("b.gz"), std::vector<uint8_t>(f.begin() + 10, f.end()));
  std::string gz = read_file(dir.file("a.gz")) + read_file(dir.file("b.gz"));
  IdxImages b = decode_idx_images(gz + "trailing junk", "mem-images.gz");
  CHECK(b.pixels == a.pixels);
  // The same bytes through a file give the same result.
  write_bytes(dir.file("two-members.gz"), std::vector<uint8_t>(gz.begin(), gz.end()));
  CHECK(read_idx_images(dir.file("two-members.gz")).pixels == a.pixels);

  // Errors name the given name; a gzip stream cut short says so.
  CHECK_THROWS_WITH_AS(decode_idx_labels(plain, "mem-labels"),
                       doctest::Contains("mem-labels: IDX label must have 1 dimension"), Error);
  // Cut inside the last member's trailer: the header and all 24 data bytes arrive, the end of the
  // stream does not.
  CHECK_THROWS_WITH_AS(
      decode_idx_images(gz.substr(0, gz.size() - 5), "cut.gz"),
      doctest::Contains("cut.gz: corrupt gzip data after 40 bytes (zlib: unexpected end"), Error);
  std::string bad = gz;
  bad[12] = static_cast<char>(bad[12] ^ 0xff);  // inside the first member's deflate data
  CHECK_THROWS_WITH_AS(decode_idx_images(bad, "flipped.gz"), doctest::Contains("flipped.gz: "),
                       Error);
}

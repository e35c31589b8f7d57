// data/preview: the sample grid PNG (size, label strip, sidecar listing) read back with stb_image,
// and dataset statistics (class balance, exact per-channel mean/std).
#include <doctest/doctest.h>
#include <stb_image.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include "core/error.h"
#include "data/datasets.h"
#include "data/preview.h"
#include "data_test_util.h"
#include "memory_limit.h"

using namespace bnlab;
using namespace data_test;

TEST_CASE("data.preview: write_sample_grid writes a labelled PNG grid and a sidecar") {
  TempDir dir("preview");
  ImageDataset d = synthetic(10, 1, 28, 28, 10);
  const std::string path = dir.file("grid.png");
  CHECK(write_sample_grid(d, 6, path, {.columns = 3}) == 6);
  int w = 0, h = 0, comp = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> img(stbi_load(path.c_str(), &w, &h, &comp, 3),
                                                stbi_image_free);
  REQUIRE(img != nullptr);
  // Scale 4 (28 * 4 = 112 >= 96), 3 columns x 2 rows, 4 px gaps, 14 px label strips (font pixel 2).
  CHECK(w == 4 + 3 * (112 + 4));
  CHECK(h == 4 + 2 * (112 + 14 + 4));
  // Cell (0, 0) top-left pixel is image 0's pixel (0, 0), gray replicated into RGB.
  const uint8_t* p = img.get() + (4 * w + 4) * 3;
  CHECK(p[0] == d.image(0)[0]);
  CHECK(p[1] == d.image(0)[0]);
  CHECK(p[2] == d.image(0)[0]);
  // Something light is drawn in the label strip of the first cell (the text "CLASS0").
  int lit = 0;
  for (int y = 4 + 112; y < 4 + 112 + 14; ++y)
    for (int x = 4; x < 4 + 112; ++x) lit += img.get()[(y * w + x) * 3] == 235;
  CHECK(lit > 20);

  std::ifstream side(path + ".txt");
  std::string header1, header2, line;
  std::getline(side, header1);
  std::getline(side, header2);
  CHECK(header1.find("synthetic/train, 6 images in 2 rows x 3 columns") != std::string::npos);
  std::getline(side, line);
  CHECK(line == "0 0 0 0 class0");
  for (int i = 0; i < 5; ++i) std::getline(side, line);
  CHECK(line == "1 2 5 5 class5");

  // n larger than the dataset draws everything; a seeded sample is reproducible.
  CHECK(write_sample_grid(d, 100, dir.file("all.png")) == 10);
  write_sample_grid(d, 4, dir.file("s1.png"), {.shuffle = true, .seed = 3});
  write_sample_grid(d, 4, dir.file("s2.png"), {.shuffle = true, .seed = 3});
  std::ifstream a(dir.file("s1.png.txt")), b(dir.file("s2.png.txt"));
  std::string sa((std::istreambuf_iterator<char>(a)), {}),
      sb((std::istreambuf_iterator<char>(b)), {});
  CHECK(sa.substr(sa.find('\n')) == sb.substr(sb.find('\n')));
  CHECK_THROWS_WITH_AS(write_sample_grid(d, 4, dir.file("no/such/dir/g.png")),
                       doctest::Contains("cannot write"), Error);
}

// stb_image_write sizes its buffers in ints: a grid of 48 000 28x28 images (a canvas of 2.7 GB)
// was drawn and then failed in the encoder, or ended in std::bad_alloc.
TEST_CASE("data.preview: a grid too large to encode as a PNG is refused before it is drawn") {
  TempDir dir("preview");
  const ImageDataset d = synthetic(48000, 1, 28, 28, 10);
  const int64_t fit = max_sample_grid_images(d);
  // 116 x 130 pixels a cell (scale 4, gaps, label strip): about 45 000 filtered bytes an image,
  // against a limit of about 1.43e9.
  CHECK(fit > 31000);
  CHECK(fit < 32000);
  CHECK(max_sample_grid_images(synthetic(10, 1, 28, 28, 10)) == 10);
  const std::string path = dir.file("big.png");
  const std::string expected = "write_sample_grid: a grid of 48000 images of 28x28 is";
#if BNLAB_TEST_MEMORY_LIMIT
  // Refused with less address space than the canvas alone would take.
  const int code = bnlab::testing::child_exit_code([&] {
    if (!bnlab::testing::limit_address_space(size_t{512} << 20)) return 4;
    try {
      write_sample_grid(d, 48000, path);
    } catch (const Error& e) {
      return bnlab::testing::expect_error_start(e, expected);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      return 3;
    }
    return 2;
  });
  CHECK(code == 0);
#endif
  CHECK_THROWS_WITH_AS(write_sample_grid(d, 48000, path),
                       doctest::Contains(("too large to encode as a PNG; at most " +
                                          std::to_string(fit) + " images of this size fit in one")
                                             .c_str()),
                       Error);
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("data.preview: compute_info counts classes and computes exact mean/std per channel") {
  ImageDataset d;
  d.name = "tiny";
  d.split = "test";
  d.channels = 2;
  d.height = 1;
  d.width = 2;
  // Image 0: channel 0 = {0, 255}, channel 1 = {51, 51}; image 1: channel 0 = {255, 255}, channel 1
  // = {0, 102}.
  d.pixels = {0, 255, 51, 51, 255, 255, 0, 102};
  d.labels = {1, 1};
  d.class_names = {"a", "b", "c"};
  DatasetInfo info = compute_info(d);
  CHECK(info.size == 2);
  CHECK(info.class_counts == std::vector<int64_t>{0, 2, 0});
  CHECK(info.mean[0] == doctest::Approx(0.75));
  CHECK(info.std[0] == doctest::Approx(std::sqrt(0.75 * 0.25)));
  CHECK(info.mean[1] == doctest::Approx(0.2));
  CHECK(info.std[1] == doctest::Approx(std::sqrt((0.0 + 0.0 + 0.04 + 0.04) / 4)));
  std::string text = format_info(info);
  CHECK(text.find("tiny/test: 2 images [2, 1, 2], 3 classes") != std::string::npos);
  CHECK(text.find("mean per channel: 0.7500, 0.2000") != std::string::npos);
}

// The data directory rules are in test_data_dir.cpp.
TEST_CASE("data.datasets: standard normalization constants") {
  CHECK(standard_normalization("mnist").mean == std::vector<float>{0.1307f});
  CHECK(standard_normalization("fashion-mnist").std == std::vector<float>{0.3530f});
  CHECK(standard_normalization("cifar10").std[2] == 0.2616f);
  CHECK_THROWS_WITH_AS(standard_normalization("svhn"),
                       doctest::Contains("no standard normalization"), Error);
}

TEST_CASE("data.datasets: training_normalization computes a folder's statistics from its images") {
  // Two 1x2 images of 2 channels: channel 0 holds 0, 51, 102, 153; channel 1 is constant 255.
  ImageDataset d;
  d.name = "folder:/x";
  d.channels = 2, d.height = 1, d.width = 2;
  d.class_names = {"a"};
  d.pixels = {0, 51, 255, 255, 102, 153, 255, 255};
  d.labels = {0, 0};
  NormalizeOptions n = training_normalization("folder:/x", d);
  REQUIRE(n.mean.size() == 2);
  CHECK(n.mean[0] == doctest::Approx(0.3));  // (0 + 0.2 + 0.4 + 0.6) / 4
  CHECK(n.std[0] == doctest::Approx(std::sqrt(0.05)));
  CHECK(n.mean[1] == doctest::Approx(1.0));
  CHECK(n.std[1] == 1.0f);  // a constant channel is centred, not divided by 0
  // The named datasets keep their published constants, whatever the images.
  CHECK(training_normalization("mnist", d).mean == standard_normalization("mnist").mean);
}

// Real data, when scripts/fetch_data.sh has been run in this checkout (skipped otherwise): the
// standard sizes, and MNIST's well-known statistics.
TEST_CASE("data.datasets: real MNIST / Fashion-MNIST / CIFAR-10 if fetched") {
  const std::string data_dir = std::string(BNLAB_SOURCE_DIR) + "/data";
  std::error_code ec;
  if (fs::exists(data_dir + "/mnist/train-labels-idx1-ubyte", ec)) {
    ImageDataset train = load_dataset("mnist", "train", data_dir);
    CHECK(train.size() == 60000);
    CHECK(load_dataset("mnist", "test", data_dir).size() == 10000);
    DatasetInfo info = compute_info(train);
    CHECK(info.mean[0] == doctest::Approx(0.1307).epsilon(0.001));
    CHECK(info.std[0] == doctest::Approx(0.3081).epsilon(0.001));
  }
  if (fs::exists(data_dir + "/fashion-mnist", ec)) {
    CHECK(load_dataset("fashion-mnist", "test", data_dir).size() == 10000);
  }
  if (fs::exists(data_dir + "/cifar-10/data_batch_5.bin", ec)) {
    CHECK(load_dataset("cifar10", "val", data_dir).size() == 10000);
  }
}

// Helpers for the data tests: a self-deleting temp directory and writers for tiny IDX, gzip and
// CIFAR files and synthetic datasets, so no test needs a download.
#pragma once

#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"
#include "test_util.h"

namespace data_test {

namespace fs = std::filesystem;

using TempDir = bnlab::testing::TempDir;
using bnlab::testing::ScopedCwd;
using bnlab::testing::ScopedEnv;
using bnlab::testing::write_bytes;

// Whether `read` throws a bnlab::Error whose message contains `expected`, run in a forked child:
// for reads of a FIFO, which code without the regular-file check opens and then waits on for a
// writer that never comes. The child's alarm ends such a wait after 30 s (a safety net for a
// regression only; a passing check returns at once), failing the test instead of hanging the run.
inline bool refused_in_child(const std::function<void()>& read, const std::string& expected) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("test: fork failed");
  if (pid == 0) {
    ::alarm(30);
    try {
      read();
    } catch (const bnlab::Error& e) {
      ::_exit(std::string(e.what()).find(expected) != std::string::npos ? 0 : 1);
    } catch (...) {
    }
    ::_exit(2);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// gzip via zlib's gzopen/gzwrite, as gzip(1) would; `mode` may pick the level ("wb9").
inline void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes,
                       const char* mode = "wb") {
  gzFile gz = gzopen(path.c_str(), mode);
  if (gz == nullptr) throw std::runtime_error("test: cannot open " + path);
  if (!bytes.empty()) gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(gz);
}

// IDX header: 0 0 type rank, then big-endian uint32 dimensions.
inline std::vector<uint8_t> idx_header(uint8_t type, const std::vector<uint32_t>& dims) {
  std::vector<uint8_t> h = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    h.push_back(static_cast<uint8_t>(d >> 24));
    h.push_back(static_cast<uint8_t>(d >> 16));
    h.push_back(static_cast<uint8_t>(d >> 8));
    h.push_back(static_cast<uint8_t>(d));
  }
  return h;
}

// Pixel value of image i at (y, x) in the synthetic files: distinct and easy to recompute.
inline uint8_t test_pixel(int64_t i, int64_t y, int64_t x) {
  return static_cast<uint8_t>((i * 31 + y * 7 + x * 3) % 256);
}

inline std::vector<uint8_t> idx_images_file(uint32_t n, uint32_t h, uint32_t w) {
  std::vector<uint8_t> f = idx_header(0x08, {n, h, w});
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x) f.push_back(test_pixel(i, y, x));
  return f;
}

inline std::vector<uint8_t> idx_labels_file(const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> f = idx_header(0x08, {static_cast<uint32_t>(labels.size())});
  f.insert(f.end(), labels.begin(), labels.end());
  return f;
}

// CIFAR-10 records: label byte, then R, G, B planes with pixel (c, p) = (label * 40 + c * 11 + p) %
// 256 offset by `salt` so different files differ.
inline std::vector<uint8_t> cifar10_file(const std::vector<uint8_t>& labels, int salt = 0) {
  std::vector<uint8_t> f;
  for (size_t r = 0; r < labels.size(); ++r) {
    f.push_back(labels[r]);
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p)
        f.push_back(static_cast<uint8_t>((static_cast<int>(r) * 40 + c * 11 + p + salt) % 256));
  }
  return f;
}

// A dataset of N images [C, H, W] whose bytes are a simple function of (image, offset); labels i %
// K.
inline bnlab::ImageDataset synthetic(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K = 10) {
  bnlab::ImageDataset d;
  d.name = "synthetic";
  d.split = "train";
  d.channels = C;
  d.height = H;
  d.width = W;
  d.pixels.resize(static_cast<size_t>(N * C * H * W));
  for (size_t j = 0; j < d.pixels.size(); ++j)
    d.pixels[j] = static_cast<uint8_t>((j * 37 + j / 7) % 256);
  for (int64_t i = 0; i < N; ++i) d.labels.push_back(i % K);
  for (int64_t k = 0; k < K; ++k) d.class_names.push_back("class" + std::to_string(k));
  return d;
}

}  // namespace data_test

// Helpers for the apps tests: a self-deleting temp directory, a tiny learnable MNIST-shaped dataset
// written as IDX files, and a runner that calls the bnlab CLI (BNLAB_CLI_PATH) and captures its
// exit code and combined stdout + stderr.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.h"

namespace apps_test {

namespace fs = std::filesystem;

using TempDir = bnlab::testing::TempDir;
using bnlab::testing::write_bytes;

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("test: cannot read " + path);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// IDX header: 0 0 0x08 (unsigned byte) rank, then big-endian uint32 dimensions.
inline std::vector<uint8_t> idx_header(const std::vector<uint32_t>& dims) {
  std::vector<uint8_t> h = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    h.push_back(static_cast<uint8_t>(d >> 24));
    h.push_back(static_cast<uint8_t>(d >> 16));
    h.push_back(static_cast<uint8_t>(d >> 8));
    h.push_back(static_cast<uint8_t>(d));
  }
  return h;
}

// Writes one split of a learnable 28x28, 10-class dataset: image i has a random label k, noise
// (0..119) everywhere and a brighter 7x7 block (90..209) at position k of a 4x4 grid of blocks (row
// k / 4, column k % 4): easy to learn, but not in one step.
inline void write_mnist_split(const fs::path& dir, const std::string& prefix, uint32_t count,
                              uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&s]() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(s >> 33);
  };
  std::vector<uint8_t> images = idx_header({count, 28, 28});
  std::vector<uint8_t> labels = idx_header({count});
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t k = next() % 10;
    labels.push_back(static_cast<uint8_t>(k));
    uint32_t by = (k / 4) * 7, bx = (k % 4) * 7;
    for (uint32_t y = 0; y < 28; ++y) {
      for (uint32_t x = 0; x < 28; ++x) {
        bool lit = y >= by && y < by + 7 && x >= bx && x < bx + 7;
        uint32_t v = lit ? 90 + next() % 120 : next() % 120;
        images.push_back(static_cast<uint8_t>(v));
      }
    }
  }
  write_bytes((dir / (prefix + "-images-idx3-ubyte")).string(), images);
  write_bytes((dir / (prefix + "-labels-idx1-ubyte")).string(), labels);
}

// <root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte: by default 600 training and 200 test
// images.
inline void write_tiny_mnist(const std::string& root, uint32_t train = 600, uint32_t test = 200) {
  fs::path dir = fs::path(root) / "mnist";
  fs::create_directories(dir);
  write_mnist_split(dir, "train", train, 1);
  write_mnist_split(dir, "t10k", test, 2);
}

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr, interleaved
};

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs `bnlab <args>` (args already shell-quoted where needed) and waits for it.
inline CliResult run_cli(const std::string& args) {
  std::string command = shell_quote(BNLAB_CLI_PATH) + " " + args + " 2>&1";
  CliResult r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("test: popen failed for " + command);
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Splits CSV text into rows of cells; handles double-quoted cells with "" escapes.
inline std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string cell;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        cell += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cell += c;
      }
    } else if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(cell);
      cell.clear();
      any = true;
    } else if (c == '\n') {
      row.push_back(cell);
      rows.push_back(row);
      row.clear();
      cell.clear();
      any = false;
    } else {
      cell += c;
      any = true;
    }
  }
  if (any) {
    row.push_back(cell);
    rows.push_back(row);
  }
  return rows;
}

}  // namespace apps_test

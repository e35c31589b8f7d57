// Helpers shared by the test families: a self-cleaning temporary directory, a scoped environment
// variable, a scoped working directory and a raw file writer.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace bnlab::testing {

// A fresh directory <temp>/bnlab_test_<pid>_<tag>_<n>, removed with its content at scope exit
// (write permission is restored first, so tests may make it read-only).
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "tmp") {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() / ("bnlab_test_" + std::to_string(::getpid()) +
                                                     "_" + tag + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Sets (or, with nullptr, unsets) an environment variable for a scope and restores its old value
// or absence at scope exit, so a test's setting cannot leak into the next test.
struct ScopedEnv {
  std::string name;
  bool had = false;
  std::string old;
  ScopedEnv(std::string variable, const char* value) : name(std::move(variable)) {
    if (const char* v = std::getenv(name.c_str())) {
      had = true;
      old = v;
    }
    if (value != nullptr) {
      ::setenv(name.c_str(), value, 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
  ~ScopedEnv() {
    if (had) {
      ::setenv(name.c_str(), old.c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
};

// Makes `dir` the working directory for a scope and restores the old one at scope exit, also when
// a failed REQUIRE unwinds; declare it after the TempDir it enters, so the directory is left before
// it is removed.
struct ScopedCwd {
  std::filesystem::path old;
  explicit ScopedCwd(const std::filesystem::path& dir) : old(std::filesystem::current_path()) {
    std::filesystem::current_path(dir);
  }
  ~ScopedCwd() {
    std::error_code ec;
    std::filesystem::current_path(old, ec);
  }
  ScopedCwd(const ScopedCwd&) = delete;
  ScopedCwd& operator=(const ScopedCwd&) = delete;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("test: cannot write " + path);
}

// The bytes of a complete PNG's frame as printf(1) escapes: the signature and the IEND chunk, which
// is all render_gnuplot checks. The signature alone is a PNG cut short.
inline const char* const kPngSignatureEscaped = "\\211PNG\\r\\n\\032\\n";
inline const char* const kPngFrameEscaped =
    "\\211PNG\\r\\n\\032\\n\\0\\0\\0\\0IEND\\256B\\140\\202";

// Makes `dir`/gnuplot, a stand-in that writes `png_escaped` (printf(1) escapes) to the file its
// script's `set output` line names, prints nothing and exits 0: what the real one does when its
// write fails on a full disk. Put `dir` first on PATH to use it.
inline void write_fake_gnuplot(const std::string& dir, const std::string& png_escaped) {
  const std::string path = dir + "/gnuplot";
  {
    std::ofstream out(path);
    out << "#!/bin/sh\nout=$(sed -n \"s/^set output '\\(.*\\)'$/\\1/p\" \"$1\")\nprintf '"
        << png_escaped << "' > \"$out\"\n";
    if (!out) throw std::runtime_error("test: cannot write " + path);
  }
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
}

// Elements of `got` that differ from `expected` by more than epsilon * (1 + max(|a|, |b|))
// (doctest's Approx rule); a size mismatch counts every element. Used to compare results across
// thread counts.
inline size_t count_mismatches(const std::vector<float>& expected, const std::vector<float>& got,
                               double epsilon) {
  if (expected.size() != got.size()) return std::max(expected.size(), got.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    double a = expected[i], b = got[i];
    mismatches += std::fabs(a - b) > epsilon * (1.0 + std::max(std::fabs(a), std::fabs(b)));
  }
  return mismatches;
}

}  // namespace bnlab::testing

// data/datasets find_data_dir: each rule that picks the data directory -- an explicit directory,
// $BNLAB_DATA, ./data when it exists, $XDG_DATA_HOME/bnlab, $HOME/.local/share/bnlab, ./data as the
// last resort -- and the "not found" message that names the directory and how it was chosen. Each
// test runs in a scratch working directory and restores the variables it touches (BNLAB_DATA,
// XDG_DATA_HOME, HOME) and the old working directory, also when a check fails.
#include <doctest/doctest.h>

#include "core/error.h"
#include "data/datasets.h"
#include "data_test_util.h"

using namespace bnlab;
using namespace data_test;

namespace {

// The variables find_data_dir reads, set for one scope (nullptr: unset) and restored after it.
struct DataDirEnv {
  ScopedEnv bnlab_data;
  ScopedEnv xdg_data_home;
  ScopedEnv home;
  DataDirEnv(const char* bnlab, const char* xdg, const char* home_dir)
      : bnlab_data("BNLAB_DATA", bnlab),
        xdg_data_home("XDG_DATA_HOME", xdg),
        home("HOME", home_dir) {}
};

// Writes <dir>/mnist/ with 3 training and 2 test images of 28x28.
void write_tiny_mnist(const fs::path& dir) {
  fs::create_directories(dir / "mnist");
  write_bytes((dir / "mnist" / "train-images-idx3-ubyte").string(), idx_images_file(3, 28, 28));
  write_bytes((dir / "mnist" / "train-labels-idx1-ubyte").string(), idx_labels_file({0, 1, 2}));
  write_bytes((dir / "mnist" / "t10k-images-idx3-ubyte").string(), idx_images_file(2, 28, 28));
  write_bytes((dir / "mnist" / "t10k-labels-idx1-ubyte").string(), idx_labels_file({3, 4}));
}

}  // namespace

TEST_CASE("data.data_dir: an explicit directory wins over every default") {
  TempDir cwd("data_dir");
  fs::create_directory(cwd.path / "data");
  ScopedCwd in(cwd.path);
  DataDirEnv env("/from/env", "/xdg", "/home/u");
  DataDir d = find_data_dir("/x");
  CHECK(d.path == "/x");
  CHECK(d.origin == "from --data-dir");
  CHECK(resolve_data_dir("/x") == "/x");
  CHECK(resolve_data_dir("relative/dir") == "relative/dir");
}

TEST_CASE("data.data_dir: $BNLAB_DATA wins over ./data and the XDG directory") {
  TempDir cwd("data_dir");
  fs::create_directory(cwd.path / "data");
  ScopedCwd in(cwd.path);
  DataDirEnv env("/from/env", "/xdg", "/home/u");
  DataDir d = find_data_dir();
  CHECK(d.path == "/from/env");
  CHECK(d.origin == "from $BNLAB_DATA");
  CHECK(resolve_data_dir("") == "/from/env");

  // An empty BNLAB_DATA counts as unset.
  ScopedEnv empty("BNLAB_DATA", "");
  CHECK(find_data_dir().path == "data");
}

TEST_CASE("data.data_dir: ./data is the default when it is a directory in the working directory") {
  TempDir cwd("data_dir");
  DataDirEnv env(nullptr, "/xdg", "/home/u");
  SUBCASE("a directory") {
    fs::create_directory(cwd.path / "data");
    ScopedCwd in(cwd.path);
    DataDir d = find_data_dir();
    CHECK(d.path == "data");
    CHECK(d.origin == "default: ./data exists");
  }
  SUBCASE("a symlink to a directory") {
    fs::create_directory(cwd.path / "elsewhere");
    fs::create_directory_symlink(cwd.path / "elsewhere", cwd.path / "data");
    ScopedCwd in(cwd.path);
    CHECK(find_data_dir().path == "data");
  }
  SUBCASE("a regular file named data does not count") {
    write_bytes(cwd.file("data"), {1, 2, 3});
    ScopedCwd in(cwd.path);
    CHECK(find_data_dir().path == "/xdg/bnlab");
  }
}

TEST_CASE("data.data_dir: without ./data the default is $XDG_DATA_HOME/bnlab") {
  TempDir cwd("data_dir");
  ScopedCwd in(cwd.path);
  DataDirEnv env(nullptr, "/xdg", "/home/u");
  DataDir d = find_data_dir();
  CHECK(d.path == "/xdg/bnlab");
  CHECK(d.origin == "default: ./data not found, so $XDG_DATA_HOME/bnlab");

  // The spec: a relative XDG_DATA_HOME is invalid and ignored.
  ScopedEnv relative("XDG_DATA_HOME", "relative/share");
  d = find_data_dir();
  CHECK(d.path == "/home/u/.local/share/bnlab");
  CHECK(d.origin ==
        "default: ./data not found and $XDG_DATA_HOME is not an absolute path, so "
        "$HOME/.local/share/bnlab");
}

TEST_CASE(
    "data.data_dir: without ./data and XDG_DATA_HOME the default is HOME/.local/share/bnlab") {
  TempDir cwd("data_dir");
  ScopedCwd in(cwd.path);
  SUBCASE("XDG_DATA_HOME unset") {
    DataDirEnv env(nullptr, nullptr, "/home/u");
    DataDir d = find_data_dir();
    CHECK(d.path == "/home/u/.local/share/bnlab");
    CHECK(d.origin ==
          "default: ./data not found and $XDG_DATA_HOME unset, so $HOME/.local/share/bnlab");
  }
  SUBCASE("XDG_DATA_HOME empty") {
    DataDirEnv env(nullptr, "", "/home/u");
    CHECK(find_data_dir().path == "/home/u/.local/share/bnlab");
  }
  SUBCASE("HOME unset too: ./data after all") {
    DataDirEnv env(nullptr, nullptr, nullptr);
    DataDir d = find_data_dir();
    CHECK(d.path == "data");
    CHECK(d.origin == "default: ./data not found, $XDG_DATA_HOME unset and $HOME unset, so ./data");
  }
}

TEST_CASE("data.data_dir: data fetched into the XDG directory loads from any working directory") {
  TempDir tmp("data_dir");
  fs::create_directories(tmp.path / "somewhere" / "else");
  write_tiny_mnist(tmp.path / "xdg" / "bnlab");
  ScopedCwd in(tmp.path / "somewhere" / "else");
  DataDirEnv env(nullptr, tmp.file("xdg").c_str(), "/home/u");
  DataDir d = find_data_dir();
  CHECK(d.path == (tmp.path / "xdg" / "bnlab").string());
  CHECK(load_dataset("mnist", "train", d).size() == 3);
  CHECK(load_dataset("mnist", "test", resolve_data_dir()).size() == 2);
}

TEST_CASE(
    "data.data_dir: a missing dataset names the directory, how it was chosen, the fetch command") {
  TempDir tmp("data_dir");
  SUBCASE("the XDG directory") {
    ScopedCwd in(tmp.path);
    DataDirEnv env(nullptr, tmp.file("xdg").c_str(), "/home/u");
    const std::string dir = (tmp.path / "xdg" / "bnlab").string();
    const std::string expected = "mnist: " + dir +
                                 "/mnist/train-images-idx3-ubyte not found (nor .gz); data "
                                 "directory " +
                                 dir +
                                 " (default: ./data not found, so $XDG_DATA_HOME/bnlab); run: bash "
                                 "scripts/fetch_data.sh --data-dir " +
                                 dir + " mnist";
    CHECK_THROWS_WITH_AS(load_dataset("mnist", "train", find_data_dir()),
                         doctest::Contains(expected.c_str()), Error);
  }
  SUBCASE("$BNLAB_DATA") {
    ScopedCwd in(tmp.path);
    DataDirEnv env(tmp.file("env").c_str(), nullptr, "/home/u");
    const std::string expected = "data directory " + tmp.file("env") +
                                 " (from $BNLAB_DATA); run: bash scripts/fetch_data.sh";
    CHECK_THROWS_WITH_AS(load_dataset("fashion-mnist", "test", find_data_dir()),
                         doctest::Contains(expected.c_str()), Error);
  }
  SUBCASE("./data: the fetch command gets the absolute path") {
    fs::create_directory(tmp.path / "data");
    ScopedCwd in(tmp.path);
    DataDirEnv env(nullptr, nullptr, "/home/u");
    const std::string absolute = (fs::current_path() / "data").string();
    const std::string expected =
        "data directory data (default: ./data exists); run: bash "
        "scripts/fetch_data.sh --data-dir " +
        absolute + " cifar10";
    CHECK_THROWS_WITH_AS(load_dataset("cifar10", "train", find_data_dir()),
                         doctest::Contains(expected.c_str()), Error);
  }
  SUBCASE("--data-dir") {
    ScopedCwd in(tmp.path);
    DataDirEnv env(nullptr, nullptr, "/home/u");
    CHECK_THROWS_WITH_AS(load_dataset("mnist", "train", find_data_dir(tmp.file("given"))),
                         doctest::Contains("(from --data-dir)"), Error);
  }
  SUBCASE("a directory with a space and a quote: the fetch command quotes it for the shell") {
    ScopedCwd in(tmp.path);
    DataDirEnv env(nullptr, nullptr, "/home/u");
    const std::string expected =
        "run: bash scripts/fetch_data.sh --data-dir '" + tmp.file("my data") + "'\\''s' mnist";
    CHECK_THROWS_WITH_AS(load_dataset("mnist", "train", find_data_dir(tmp.file("my data's"))),
                         doctest::Contains(expected.c_str()), Error);
  }
}

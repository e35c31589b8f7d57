// core/io: atomic writes (content replaced, no temp files left, concurrent writers), read_file,
// ensure_directory, and error messages that name the path and the OS's reason.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/io.h"
#include "test_util.h"

using namespace bnlab;
namespace fs = std::filesystem;

namespace {

using TempDir = bnlab::testing::TempDir;

// Names of everything in the directory, to spot leftover temporaries.
std::vector<std::string> listing(const TempDir& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path))
    names.push_back(e.path().filename().string());
  return names;
}

}  // namespace

TEST_CASE("io: write_file_atomic writes, replaces and leaves no temporary file") {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  write_file_atomic(path, "hello");
  CHECK(read_file(path) == "hello");

  // Binary content with NUL bytes, shorter than before: the old content must be gone entirely.
  const std::string binary("a\0b\0\xff", 5);
  write_file_atomic(path, binary);
  CHECK(read_file(path) == binary);

  write_file_atomic(path, "");
  CHECK(read_file(path).empty());

  // Larger than read_file's 64 KiB chunk, to exercise the read loop.
  std::string big(3'000'000, 'x');
  for (size_t i = 0; i < big.size(); i += 7) big[i] = static_cast<char>(i % 251);
  write_file_atomic(path, big);
  CHECK(read_file(path) == big);

  CHECK(listing(dir) == std::vector<std::string>{"out.bin"});
}

TEST_CASE("io: write_file_atomic with a bare relative file name syncs the current directory") {
  TempDir dir;
  struct CwdGuard {
    fs::path old = fs::current_path();
    ~CwdGuard() { fs::current_path(old); }
  };
  {
    CwdGuard guard;
    fs::current_path(dir.path);
    write_file_atomic("relative.txt", "ok");
  }
  CHECK(read_file(dir.file("relative.txt")) == "ok");
}

TEST_CASE("io: concurrent writers to one path leave one complete version and no temporaries") {
  TempDir dir;
  const std::string path = dir.file("shared.txt");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&path, t] {
      for (int i = 0; i < 10; ++i)
        write_file_atomic(path, std::string(10'000, static_cast<char>('a' + t)));
    });
  }
  for (auto& th : threads) th.join();
  std::string content = read_file(path);
  REQUIRE(content.size() == 10'000);
  CHECK(content == std::string(10'000, content[0]));
  CHECK(listing(dir) == std::vector<std::string>{"shared.txt"});
}

TEST_CASE("io: write_file_atomic errors name the path and the reason") {
  TempDir dir;
  SUBCASE("nonexistent directory") {
    const std::string path = dir.file("missing/out.bin");
    CHECK_THROWS_WITH_AS(write_file_atomic(path, "x"),
                         doctest::Contains(("cannot write " + path).c_str()), Error);
    CHECK_THROWS_WITH_AS(write_file_atomic(path, "x"),
                         doctest::Contains("No such file or directory"), Error);
  }
  SUBCASE("parent is a regular file") {
    write_file_atomic(dir.file("plain"), "x");
    const std::string path = dir.file("plain/out.bin");
    CHECK_THROWS_WITH_AS(write_file_atomic(path, "x"), doctest::Contains("Not a directory"), Error);
  }
  SUBCASE("target is a directory") {
    fs::create_directory(dir.path / "sub");
    CHECK_THROWS_WITH_AS(write_file_atomic(dir.file("sub"), "x"),
                         doctest::Contains("Is a directory"), Error);
  }
  SUBCASE("directory not writable") {
    // Root ignores permission bits, so this case only means something for other users.
    if (::geteuid() != 0) {
      fs::create_directory(dir.path / "ro");
      fs::permissions(dir.path / "ro", fs::perms::owner_read | fs::perms::owner_exec);
      const std::string path = dir.file("ro/out.bin");
      CHECK_THROWS_WITH_AS(write_file_atomic(path, "x"), doctest::Contains("Permission denied"),
                           Error);
      CHECK_THROWS_WITH_AS(ensure_directory(dir.file("ro")), doctest::Contains("is not writable"),
                           Error);
      fs::permissions(dir.path / "ro", fs::perms::owner_all);
    }
  }
  // Whatever failed, nothing was left behind next to the target.
  for (const std::string& name : listing(dir)) CHECK(name.find(".tmp.") == std::string::npos);
}

TEST_CASE("io: read_file errors name the path and the reason") {
  TempDir dir;
  const std::string missing = dir.file("nope.bin");
  CHECK_THROWS_WITH_AS(
      read_file(missing),
      doctest::Contains(("cannot open " + missing + ": No such file or directory").c_str()), Error);
  CHECK_THROWS_WITH_AS(read_file(dir.path.string()), doctest::Contains("Is a directory"), Error);
}

TEST_CASE("io: read_file reads files whose size is not known in advance") {
  // /proc files report size 0, so the whole read relies on the end-of-file loop.
  CHECK(read_file("/proc/self/status").find("Name:") != std::string::npos);
}

TEST_CASE("io: ensure_directory creates parents, is idempotent, and rejects files") {
  TempDir dir;
  const std::string nested = dir.file("a/b/c");
  ensure_directory(nested);
  CHECK(fs::is_directory(nested));
  ensure_directory(nested);  // already there: fine
  ensure_directory(nested + "/");

  write_file_atomic(dir.file("file"), "x");
  CHECK_THROWS_WITH_AS(
      ensure_directory(dir.file("file")),
      doctest::Contains((dir.file("file") + " exists and is not a directory").c_str()), Error);
  CHECK_THROWS_WITH_AS(
      ensure_directory(dir.file("file/sub")),
      doctest::Contains(("cannot create directory " + dir.file("file/sub")).c_str()), Error);
}

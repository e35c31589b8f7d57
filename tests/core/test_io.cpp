// core/io: atomic writes (content replaced, no temp files left, concurrent writers; symlinks
// followed, streams written into, directories refused), read_file, ensure_directory, and error
// messages that name the path and the OS's reason.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
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

// The file type bits of `path` itself (not of a link's target); 0 if it does not exist.
mode_t type_of(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? (st.st_mode & S_IFMT) : 0;
}

// Everything that can be read from the non-blocking descriptor `fd` right now.
std::string drain(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
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

// A 100 GB sparse config.json, model.safetensors or metrics.csv (a corrupt run directory) ended in
// "error: std::bad_alloc", naming no file: read_file sized its buffer from the file, unbounded.
TEST_CASE("io: read_file refuses a file over its limit or over memory before allocating") {
  TempDir dir;
  const std::string big = dir.file("config.json");
  write_file_atomic(big, "{}");
  fs::resize_file(big, size_t{1} << 20);  // sparse: no disk, and no memory unless read
  CHECK_THROWS_WITH_AS(read_file(big, 4096),
                       doctest::Contains((big + " is 1048576 bytes (1.0 MiB), over the limit of "
                                                "4096 bytes (4.0 KiB) for this file")
                                             .c_str()),
                       Error);
  CHECK(read_file(big, size_t{1} << 20).size() == size_t{1} << 20);  // the limit itself is allowed

  fs::resize_file(big, kMaxTextFileBytes + 1);
  CHECK_THROWS_WITH_AS(read_file(big),
                       doctest::Contains((big + " is 268435457 bytes (256.0 MiB), over the limit "
                                                "of 268435456 bytes")
                                             .c_str()),
                       Error);

  // Without a limit of its own, a file is still bounded by memory.
  const auto memory = static_cast<uintmax_t>(::sysconf(_SC_PHYS_PAGES)) *
                      static_cast<uintmax_t>(::sysconf(_SC_PAGESIZE));
  fs::resize_file(big, 2 * memory);
  CHECK_THROWS_WITH_AS(
      read_file(big, SIZE_MAX),
      doctest::Contains((big + " is " + std::to_string(2 * memory) + " bytes (").c_str()), Error);
  CHECK_THROWS_WITH_AS(read_file(big, SIZE_MAX), doctest::Contains("of memory this machine has"),
                       Error);

  // A device reports no size; what it yields is counted as it arrives.
  CHECK_THROWS_WITH_AS(read_file("/dev/zero", size_t{1} << 20),
                       doctest::Contains("read_file: /dev/zero holds more than 1048576 bytes, over "
                                         "the limit of 1048576 bytes (1.0 MiB)"),
                       Error);
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

// A symlink is followed as open(2) and torch.save follow it: the link stays, the file it points to
// (through a chain of links, relative ones resolved from their own directory) gets the content,
// and the temporary file lives next to that file, not next to the link.
TEST_CASE("io: write_file_atomic through a symlink writes its target and keeps the link") {
  TempDir dir;
  fs::create_directories(dir.path / "real");
  fs::create_directories(dir.path / "links");
  const std::string target = dir.file("real/target.txt");
  write_file_atomic(target, "old");
  const std::string link = dir.file("links/link.txt");
  fs::create_symlink("../real/target.txt", link);
  const std::string chain = dir.file("chain.txt");
  fs::create_symlink(link, chain);

  write_file_atomic(link, "new");
  CHECK(type_of(link) == S_IFLNK);
  CHECK(fs::read_symlink(link) == "../real/target.txt");
  CHECK(type_of(target) == S_IFREG);
  CHECK(read_file(target) == "new");
  CHECK(fs::equivalent(write_file_target(link), target));

  write_file_atomic(chain, "newer");
  CHECK(type_of(chain) == S_IFLNK);
  CHECK(type_of(link) == S_IFLNK);
  CHECK(read_file(target) == "newer");

  // A dangling link: its target is created, as `echo > link` would.
  const std::string dangling = dir.file("links/dangling.txt");
  fs::create_symlink("../real/created.txt", dangling);
  write_file_atomic(dangling, "created");
  CHECK(type_of(dangling) == S_IFLNK);
  CHECK(read_file(dir.file("real/created.txt")) == "created");

  CHECK(listing(dir).size() == 3);  // real, links, chain.txt
  for (const char* sub : {"real", "links"})
    for (const auto& e : fs::directory_iterator(dir.path / sub))
      CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);

  // A loop is an error, as for open(2); neither link is replaced.
  fs::create_symlink("loop_b", dir.file("loop_a"));
  fs::create_symlink("loop_a", dir.file("loop_b"));
  CHECK_THROWS_WITH_AS(write_file_atomic(dir.file("loop_a"), "x"),
                       doctest::Contains("Too many levels of symbolic links"), Error);
  CHECK(type_of(dir.file("loop_a")) == S_IFLNK);
  CHECK(type_of(dir.file("loop_b")) == S_IFLNK);
}

// The read end is open (non-blocking) before the write, so the writer's open(2) cannot block, and
// the bytes fit the pipe's buffer, so its write(2) cannot either: without the fix the FIFO is
// replaced by a regular file and the read finds nothing, with no wait in either case.
TEST_CASE("io: write_file_atomic writes into a FIFO instead of replacing it") {
  TempDir dir;
  const std::string fifo = dir.file("pipe");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string link = dir.file("pipe_link");
  fs::create_symlink("pipe", link);
  int rd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(rd >= 0);

  write_file_atomic(fifo, "through the pipe\n");
  CHECK(drain(rd) == "through the pipe\n");
  write_file_atomic(link, "and through a link\n");
  CHECK(drain(rd) == "and through a link\n");
  ::close(rd);

  CHECK(type_of(fifo) == S_IFIFO);
  CHECK(type_of(link) == S_IFLNK);
  CHECK(write_file_target(fifo).empty());
  CHECK(listing(dir).size() == 2);
}

// /dev/stdout, /dev/fd/N and /proc/self/fd/N name a descriptor the process has open: the bytes go
// to that descriptor, also when it is a regular file (`--json /dev/stdout > log` appends to the
// log where stdout stands; replacing the file would lose what was printed before).
TEST_CASE("io: write_file_atomic to /dev/fd/N writes into the open descriptor") {
  TempDir dir;
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
  write_file_atomic("/dev/fd/" + std::to_string(fds[1]), "into a pipe\n");
  CHECK(drain(fds[0]) == "into a pipe\n");
  const std::string link = dir.file("fd_link");
  fs::create_symlink("/proc/self/fd/" + std::to_string(fds[1]), link);
  write_file_atomic(link, "through a link\n");
  CHECK(drain(fds[0]) == "through a link\n");
  CHECK(type_of(link) == S_IFLNK);
  ::close(fds[0]);
  ::close(fds[1]);

  const std::string log = dir.file("log.txt");
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "printed before\n", 15) == 15);
  struct stat before {};
  REQUIRE(::stat(log.c_str(), &before) == 0);
  write_file_atomic("/proc/self/fd/" + std::to_string(fd), "written after\n");
  CHECK(write_file_target("/dev/fd/" + std::to_string(fd)).empty());
  ::close(fd);
  struct stat after {};
  REQUIRE(::stat(log.c_str(), &after) == 0);
  CHECK(after.st_ino == before.st_ino);
  CHECK(read_file(log) == "printed before\nwritten after\n");
}

// /dev/null is reached first through a link in the temporary directory: if writes replaced their
// target again, only that link would be lost, and the REQUIREs stop the test before /dev/null
// itself is written (as root, the old code renamed a regular file over /dev/null).
TEST_CASE("io: write_file_atomic writes into a device or socket and never replaces it") {
  TempDir dir;
  const std::string null_link = dir.file("null_link");
  fs::create_symlink("/dev/null", null_link);
  write_file_atomic(null_link, "discarded");
  REQUIRE(type_of(null_link) == S_IFLNK);
  REQUIRE(type_of("/dev/null") == S_IFCHR);
  REQUIRE(write_file_target("/dev/null").empty());
  write_file_atomic("/dev/null", "discarded");
  CHECK(type_of("/dev/null") == S_IFCHR);
  CHECK(listing(dir) == std::vector<std::string>{"null_link"});

  // A socket cannot be opened for writing: the error names it, and it stays a socket.
  const std::string sock = dir.file("sock");
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(s >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(sock.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
  REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  CHECK_THROWS_WITH_AS(write_file_atomic(sock, "x"),
                       doctest::Contains(("cannot write " + sock + ": ").c_str()), Error);
  ::close(s);
  CHECK(type_of(sock) == S_IFSOCK);
}

TEST_CASE("io: write_file_atomic refuses a directory, also behind a symlink") {
  TempDir dir;
  const std::string sub = dir.file("sub");
  fs::create_directory(sub);
  CHECK_THROWS_WITH_AS(write_file_atomic(sub, "x"),
                       doctest::Contains(("cannot write " + sub + ": Is a directory").c_str()),
                       Error);
  const std::string link = dir.file("sub_link");
  fs::create_symlink("sub", link);
  CHECK_THROWS_WITH_AS(write_file_atomic(link, "x"),
                       doctest::Contains(("cannot write " + link + " (a symlink to ").c_str()),
                       Error);
  CHECK_THROWS_WITH_AS(write_file_atomic(link, "x"), doctest::Contains("Is a directory"), Error);
  CHECK(type_of(link) == S_IFLNK);
  CHECK(fs::is_empty(sub));
  CHECK(write_file_target(sub).empty());
  CHECK(listing(dir).size() == 2);
}

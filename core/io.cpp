// File I/O helpers: read_file, write_file_atomic (temp, fsync, rename, fsync dir; or a plain write
// into a stream), ensure_directory.
//
// POSIX file descriptors rather than iostreams or FILE*: we need fsync, O_EXCL and the exact errno
// for the messages, and a raw write(2) loop has no user-space buffer to flush.
#include "core/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "core/error.h"

namespace bnlab {

namespace detail {

size_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page_size = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return size_t{1} << 46;
  return static_cast<size_t>(pages) * static_cast<size_t>(page_size);
}

std::string human_size(size_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace detail

namespace {

// strerror is not thread-safe; the generic category's message is the same text, minus the race.
std::string reason(int err) { return std::generic_category().message(err); }

namespace fs = std::filesystem;

// "107374182400 bytes (100.0 GiB)"; the unit only where it helps.
std::string bytes_text(size_t bytes) {
  const std::string exact = std::to_string(bytes) + " bytes";
  return bytes < 1024 ? exact : exact + " (" + detail::human_size(bytes) + ")";
}

// `size`: "is 107374182400 bytes (100.0 GiB)" or "holds more than ..." (a file whose size fstat
// cannot tell).
[[noreturn]] void refuse_size(const std::string& path, const std::string& size, size_t max_bytes,
                              size_t memory) {
  if (max_bytes <= memory) {
    BNLAB_FAIL("read_file: ", path, " ", size, ", over the limit of ", bytes_text(max_bytes),
               " for this file (corrupt, or not the file expected?)");
  }
  BNLAB_FAIL("read_file: ", path, " ", size, ", more than the ", detail::human_size(memory),
             " of memory this machine has");
}

// The directory holding `path` ("." for a bare file name), to fsync after the rename.
std::string parent_directory(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// Writes all of `bytes` to `fd`; returns 0 or the errno of the failed write(2). write may write
// less than asked (signals, quotas, pipes), so it loops until everything is out.
int write_all(int fd, std::string_view bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    // Chunks of at most 1 GiB: Linux caps a single write at ~2 GiB anyway.
    size_t chunk = std::min<size_t>(left, size_t{1} << 30);
    ssize_t n = ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return 0;
}

// Where a write to a path lands once symlinks are followed.
struct Target {
  std::string path;  // the final target; need not exist (a dangling link's target is created)
  int fd = -1;       // >= 0: the path names this process's open descriptor `fd` (/dev/stdout)
};

// Follows symlinks one hop at a time, as open(2) would, rather than with realpath: realpath fails
// on a dangling link, and on /proc's descriptor links, whose targets ("pipe:[123]", or a file the
// shell opened for `> log`) are no paths to rename over.
Target follow_symlinks(const std::string& path) {
  const std::string own_fds = "/proc/" + std::to_string(static_cast<long>(::getpid())) + "/fd";
  std::string cur = path;
  for (int hops = 0;; ++hops) {
    struct stat st {};
    if (::lstat(cur.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return {cur, -1};
    // Linux's own limit on links in one lookup; a loop fails the way open(2) fails on it.
    if (hops == 40) BNLAB_FAIL("write_file_atomic: cannot write ", path, ": ", reason(ELOOP));
    std::error_code ec;
    const fs::path link(cur);
    // Relative targets start at the link's directory as the kernel resolves it (itself perhaps
    // reached through links, so not lexically).
    const fs::path dir = fs::canonical(link.parent_path().empty() ? "." : link.parent_path(), ec);
    if (ec) BNLAB_FAIL("write_file_atomic: cannot write ", path, ": ", cur, ": ", ec.message());
    // /dev/stdout, /dev/fd/N, /proc/self/fd/N: the user means the descriptor, wherever it points.
    const std::string name = link.filename().string();
    if (dir == own_fds && !name.empty() && name.size() < 10 &&
        std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return {cur, std::stoi(name)};
    }
    const fs::path next = fs::read_symlink(link, ec);
    if (ec) {
      BNLAB_FAIL("write_file_atomic: cannot write ", path, ": reading link ", cur, ": ",
                 ec.message());
    }
    cur = next.is_absolute() ? next.string() : (dir / next).string();
  }
}

// A device, FIFO, socket or open descriptor is a stream: writing means sending the bytes into it;
// there is no file to replace. std::cout and stdio buffers go first, so output the program printed
// before stays before these bytes when both reach the same terminal or pipe.
void write_stream(const std::string& named, const Target& target, std::string_view bytes) {
  std::cout.flush();
  std::fflush(nullptr);
  int fd = target.fd;
  if (fd < 0) {
    // No O_TRUNC (meaningless for a stream); O_NOCTTY so a terminal never becomes ours.
    fd = ::open(target.path.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      BNLAB_FAIL("write_file_atomic: cannot write ", named, ": ", reason(err));
    }
  }
  int err = write_all(fd, bytes);
  if (fd != target.fd) {
    if (::close(fd) != 0 && err == 0) err = errno;
  }
  if (err != 0) BNLAB_FAIL("write_file_atomic: cannot write ", named, ": ", reason(err));
}

// Owns the temporary file until commit(): on any early exit (exception) it closes and unlinks it,
// so a failed write leaves no debris next to the target.
class TempFile {
 public:
  // `named`: the target as the messages name it (the path given, and a link's final target).
  TempFile(const std::string& target, const std::string& named) {
    // pid + a process-wide counter make the name unique across processes and threads. O_EXCL
    // guarantees we never write into someone else's file; a stale one (left by a crashed run that
    // had our pid) is skipped.
    static std::atomic<uint64_t> counter{0};
    for (int attempt = 0; attempt < 100; ++attempt) {
      path_ = target + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." +
              std::to_string(counter.fetch_add(1));
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0 || errno != EEXIST) break;
    }
    if (fd_ < 0) {
      int err = errno;
      BNLAB_FAIL("write_file_atomic: cannot write ", named, ": cannot create temporary file ",
                 path_, ": ", reason(err));
    }
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  // Closes the descriptor; returns the errno of a failed close (NFS may report write errors here).
  int close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }
  void commit() { committed_ = true; }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

std::string write_file_target(const std::string& path) {
  Target target = follow_symlinks(path);
  if (target.fd >= 0) return "";
  struct stat st {};
  if (::stat(target.path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return "";
  return target.path;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  BNLAB_CHECK(!path.empty(), "write_file_atomic: empty path");
  const Target target = follow_symlinks(path);
  const std::string named =
      target.path == path ? path : path + " (a symlink to " + target.path + ")";
  if (target.fd >= 0) {
    write_stream(named, target, bytes);
    return;
  }
  struct stat st {};
  if (::stat(target.path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      BNLAB_FAIL("write_file_atomic: cannot write ", named, ": ", reason(EISDIR));
    }
    if (!S_ISREG(st.st_mode)) {
      write_stream(named, target, bytes);
      return;
    }
  } else if (errno != ENOENT) {
    // ENOTDIR, EACCES on the way: the temporary file could not be created there either.
    int err = errno;
    BNLAB_FAIL("write_file_atomic: cannot write ", named, ": ", reason(err));
  }
  // From here on a regular file (or none yet): replaced atomically, the link (if any) kept.
  const std::string& file = target.path;
  TempFile tmp(file, named);

  if (int err = write_all(tmp.fd(), bytes); err != 0) {
    BNLAB_FAIL("write_file_atomic: cannot write ", named, ": writing ", tmp.path(), ": ",
               reason(err));
  }

  // The data must be on disk before the rename publishes it, or a crash could leave an empty file.
  if (::fsync(tmp.fd()) != 0) {
    int err = errno;
    BNLAB_FAIL("write_file_atomic: cannot write ", named, ": fsync of ", tmp.path(), ": ",
               reason(err));
  }
  if (int err = tmp.close(); err != 0) {
    BNLAB_FAIL("write_file_atomic: cannot write ", named, ": closing ", tmp.path(), ": ",
               reason(err));
  }
  if (::rename(tmp.path().c_str(), file.c_str()) != 0) {
    int err = errno;
    BNLAB_FAIL("write_file_atomic: cannot write ", named, ": renaming ", tmp.path(),
               " over it: ", reason(err));
  }
  tmp.commit();

  // The rename lives in the directory entry; without syncing the directory a crash can undo it.
  // Some filesystems cannot fsync a directory (EINVAL); there is nothing more we can do there.
  std::string dir = parent_directory(file);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    int err = errno;
    BNLAB_FAIL("write_file_atomic: wrote ", named, " but cannot open its directory ", dir,
               " to sync it: ", reason(err));
  }
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc != 0 && err != EINVAL) {
    BNLAB_FAIL("write_file_atomic: wrote ", named, " but fsync of its directory ", dir,
               " failed: ", reason(err));
  }
}

std::string read_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    BNLAB_FAIL("read_file: cannot open ", path, ": ", reason(err));
  }
  // fstat only sizes the buffer: files in /proc report 0 and a file may change while we read, so
  // the loop reads until end of file regardless, straight into the string (no bounce buffer). The
  // size is checked before the buffer is sized, and what arrives as it arrives (a device, or a
  // file that grows, has no size to check up front).
  const size_t memory = detail::physical_memory_bytes();
  const size_t limit = std::min(max_bytes, memory);
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    const auto size = static_cast<size_t>(st.st_size);
    if (size > limit) {
      ::close(fd);
      refuse_size(path, "is " + bytes_text(size), max_bytes, memory);
    }
    out.resize(size);
  }
  size_t filled = 0;
  for (;;) {
    // With the buffer full, a small probe read tells end of file (the usual case: the size was
    // right) from a longer file, without first doubling a possibly huge buffer.
    char probe[4096];
    const bool full = filled == out.size();
    ssize_t n = full ? ::read(fd, probe, sizeof(probe))
                     : ::read(fd, out.data() + filled, out.size() - filled);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      BNLAB_FAIL("read_file: cannot read ", path, ": ", reason(err));
    }
    if (filled + static_cast<size_t>(n) > limit) {
      ::close(fd);
      refuse_size(path, "holds more than " + std::to_string(limit) + " bytes", max_bytes, memory);
    }
    if (full) {
      out.append(probe, static_cast<size_t>(n));
      out.resize(std::min(std::max<size_t>(2 * out.size(), size_t{1} << 16), limit + 1));
    }
    filled += static_cast<size_t>(n);
  }
  out.resize(filled);
  ::close(fd);
  return out;
}

void ensure_directory(const std::string& dir) {
  BNLAB_CHECK(!dir.empty(), "ensure_directory: empty path");
  // A file in the way gets its own message; create_directories would only say "Not a directory".
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec)) {
    BNLAB_FAIL("ensure_directory: ", dir, " exists and is not a directory");
  }
  std::filesystem::create_directories(dir, ec);
  if (ec) BNLAB_FAIL("ensure_directory: cannot create directory ", dir, ": ", ec.message());
  // Fail now, with the directory's name, rather than later on the first file written into it.
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    int err = errno;
    BNLAB_FAIL("ensure_directory: directory ", dir, " is not writable: ", reason(err));
  }
}

bool write_whole_line(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = EIO;  // no progress and no reason given: retrying could spin forever
    if (n <= 0) return false;
    text.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace bnlab

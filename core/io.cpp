// File I/O helpers: read_file, write_file_atomic (temp, fsync, rename, fsync dir),
// ensure_directory.
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
#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace bnlab {

namespace {

// strerror is not thread-safe; the generic category's message is the same text, minus the race.
std::string reason(int err) { return std::generic_category().message(err); }

// The directory holding `path` ("." for a bare file name), to fsync after the rename.
std::string parent_directory(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// Owns the temporary file until commit(): on any early exit (exception) it closes and unlinks it,
// so a failed write leaves no debris next to the target.
class TempFile {
 public:
  explicit TempFile(const std::string& target) {
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
      BNLAB_FAIL("write_file_atomic: cannot write ", target, ": cannot create temporary file ",
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

void write_file_atomic(const std::string& path, std::string_view bytes) {
  BNLAB_CHECK(!path.empty(), "write_file_atomic: empty path");
  TempFile tmp(path);

  // write(2) may write less than asked (signals, quotas); loop until everything is out.
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    // Chunks of at most 1 GiB: Linux caps a single write at ~2 GiB anyway.
    size_t chunk = std::min<size_t>(left, size_t{1} << 30);
    ssize_t n = ::write(tmp.fd(), p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      BNLAB_FAIL("write_file_atomic: cannot write ", path, ": writing ", tmp.path(), ": ",
                 reason(err));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }

  // The data must be on disk before the rename publishes it, or a crash could leave an empty file.
  if (::fsync(tmp.fd()) != 0) {
    int err = errno;
    BNLAB_FAIL("write_file_atomic: cannot write ", path, ": fsync of ", tmp.path(), ": ",
               reason(err));
  }
  if (int err = tmp.close(); err != 0) {
    BNLAB_FAIL("write_file_atomic: cannot write ", path, ": closing ", tmp.path(), ": ",
               reason(err));
  }
  if (::rename(tmp.path().c_str(), path.c_str()) != 0) {
    int err = errno;
    BNLAB_FAIL("write_file_atomic: cannot write ", path, ": renaming ", tmp.path(),
               " over it: ", reason(err));
  }
  tmp.commit();

  // The rename lives in the directory entry; without syncing the directory a crash can undo it.
  // Some filesystems cannot fsync a directory (EINVAL); there is nothing more we can do there.
  std::string dir = parent_directory(path);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    int err = errno;
    BNLAB_FAIL("write_file_atomic: wrote ", path, " but cannot open its directory ", dir,
               " to sync it: ", reason(err));
  }
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc != 0 && err != EINVAL) {
    BNLAB_FAIL("write_file_atomic: wrote ", path, " but fsync of its directory ", dir,
               " failed: ", reason(err));
  }
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    BNLAB_FAIL("read_file: cannot open ", path, ": ", reason(err));
  }
  // fstat only sizes the buffer: files in /proc report 0 and a file may change while we read, so
  // the loop reads until end of file regardless, straight into the string (no bounce buffer).
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.resize(static_cast<size_t>(st.st_size));
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
    if (full) {
      out.append(probe, static_cast<size_t>(n));
      out.resize(std::max<size_t>(2 * out.size(), size_t{1} << 16));
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

void write_whole_line(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace bnlab

// File I/O helpers shared by checkpoints, result CSVs and JSON reports: whole-file read, crash-safe
// (atomic) whole-file write, and mkdir -p.
//
// write_file_atomic never leaves a half-written target behind: a reader sees either the old content
// or the new one, even if the process dies or the machine loses power mid-write. It writes a
// temporary file next to the target, fsyncs it, renames it over the target and fsyncs the directory
// (the classic POSIX recipe; see rename(2) and https://lwn.net/Articles/457667/). What the target
// is decides what "writing" it means, as for open(2) and torch.save: a symlink is followed (the
// link stays, its final target gets the content); a device, FIFO or socket, and /dev/stdout-like
// names of an open descriptor, are streams that get the bytes written into them (no temporary, no
// rename: --out /dev/null discards, --json /dev/stdout prints); a directory is an error.
// Every failure throws bnlab::Error naming the path and the OS's reason, e.g.
//   "read_file: cannot open /x/y: No such file or directory".
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/error.h"  // bnlab::Error, thrown by everything here

namespace bnlab {

/// Replaces `path` with `bytes` atomically. The temporary is "<file>.tmp.<pid>.<n>" in the
/// directory of the file replaced (rename is only atomic within one filesystem) and is removed on
/// failure. If `path` is a symlink (or a chain of them, dangling or not), that file is the link's
/// final target and the link itself stays. If `path` is an existing device, FIFO or socket, or
/// names one of this process's open descriptors (/dev/stdout, /dev/fd/N, /proc/self/fd/N), `bytes`
/// are written straight into it instead, after flushing std::cout and stdio; a FIFO blocks until a
/// reader opens it, like `echo > fifo`. Thread-safe, even on the same path.
void write_file_atomic(const std::string& path, std::string_view bytes);

/// The regular file write_file_atomic(path, ...) creates or replaces: `path`, or the final target
/// of the symlink at `path`. Empty if `path` is a stream (written into, see above) or a directory.
/// For files written beside another one (a PNG's label listing): a symlink's companion belongs
/// next to its target, and a stream has nowhere beside it to write.
std::string write_file_target(const std::string& path);

/// read_file's limit unless the caller gives one: config.json, summary.json, the CSVs and reports
/// bnlab writes are far smaller (metrics.csv has a ~100-byte row per logged step), so a larger
/// file by such a name is corrupt, sparse or someone else's, not one to allocate.
inline constexpr size_t kMaxTextFileBytes = size_t{256} << 20;

/// The whole content of `path` as bytes. Refuses, naming the file and its size, one over
/// `max_bytes` or over this machine's physical memory, before allocating for it (a 100 GB sparse
/// file used to end in std::bad_alloc). Pass SIZE_MAX where memory is the only bound (weights).
std::string read_file(const std::string& path, size_t max_bytes = kMaxTextFileBytes);

namespace detail {
/// The machine's physical memory in bytes (2^46 when it cannot be read): a bound no file read
/// whole, or dataset held in memory, can pass.
size_t physical_memory_bytes();
/// "9.8 KiB", "100.0 GiB": a size in a unit a reader takes in at a glance.
std::string human_size(size_t bytes);
}  // namespace detail

/// Writes `text` to file descriptor `fd` in one write(2) call where the kernel allows it (any text
/// up to PIPE_BUF = 4096 bytes reaches a pipe whole), retrying only the unwritten rest after a
/// short write or EINTR. For messages several processes print into one pipe (mpirun, a test's
/// `2>&1`): an iostream `cerr << a << b` is one write per part, and another process's line can land
/// between them. Returns false, errno saying why, if the text could not all be written: a caller
/// writing to stderr has nowhere left to report that, one writing results to stdout does.
bool write_whole_line(int fd, std::string_view text);

/// Creates `dir` and its missing parents (mkdir -p); throws if it cannot, if `dir` exists but is
/// not a directory, or if it is not writable.
void ensure_directory(const std::string& dir);

}  // namespace bnlab

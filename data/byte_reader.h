// ByteReader: reads a data file's bytes, gunzipping transparently when the data *starts with* the
// gzip magic (1f 8b) -- detected from the bytes, never from the name. Internal to data/ (namespace
// detail).
//
// The parsers use it to validate headers against the amount of data actually present *before*
// allocating what a header claims: for a plain file the payload length is known from the file size
// up front; for a gzip file it is only known by decompressing, so read_up_to() grows its buffer as
// data arrives (never beyond what the header declares) and reports how much there really was.
//
// Sources: a file path, or bytes already in memory with a name that stands in for the path in
// messages (the parse-from-memory entry points, which the fuzz targets use). Gzip data takes one
// code path for both: the compressed bytes (a few MB for MNIST) are held in memory and inflated
// with zlib's inflate, which also reads concatenated gzip members and, like gzread, ignores bytes
// after the last member that do not start another one. Plain files are streamed with stdio.
//
// Decompression is bounded twice, so a small gzip file (a "gzip bomb") cannot make a reader grow
// without end: a header's claim is checked with check_claim() before any payload is inflated
// (against what the compressed bytes could possibly inflate to, and against max_dataset_bytes()),
// and read_up_to(n) / has_more() never inflate more than n + 1 bytes, however much more the
// stream holds.
// Reference: zlib manual, inflate/inflateInit2 (https://zlib.net/manual.html); RFC 1952 (gzip).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bnlab::detail {

// Deflate's largest possible expansion, output bytes per compressed byte. One length/distance pair
// yields at most 258 bytes and needs at least one bit for the length and one for the distance, so
// 2 bits in give at most 258 bytes out, 8 bits at most 1032 (zlib's technical details,
// https://zlib.net/zlib_tech.html, "Maximum Compression Factor"; the codes are RFC 1951, 3.2.5).
constexpr int64_t kMaxDeflateRatio = 1032;

// The most bytes of data a dataset reader takes in: one IDX file's payload, or one CIFAR split's
// batches together. BNLAB_MAX_DATASET_BYTES if set (a whole number of bytes, optionally with a K,
// M, G or T suffix for powers of 1024), else the smaller of 8 GiB and half of this machine's
// physical memory. Read at every call; throws naming the variable for a value that is not a
// positive size.
int64_t max_dataset_bytes();
// "the dataset size limit of <limit> bytes (<GiB>, <where it comes from>; ...)", for messages.
std::string dataset_limit_text(int64_t limit);

// What `path` is when it exists (symlinks followed) but is not a regular file: "a directory",
// "a FIFO", "a socket", "a character device" or "a block device"; "" for a regular file or when
// nothing is there (ENOENT, ENOTDIR). Data files are read only when regular: opening a FIFO waits
// for a writer, forever if none comes, and a directory reads as nothing. Throws
// "<path>: cannot access (<reason>)" when it cannot tell: a symlink loop, a folder it may not
// search.
std::string non_regular_kind(const std::string& path);

// Throws "<who>: <path> is a directory, expected a data file" when non_regular_kind(path) is not
// empty. For a dataset's file looked up by name: a directory by that name is not a missing file,
// and "not found" with a fetch command would send the user the wrong way.
void refuse_non_regular(const std::string& path, const std::string& who);

class ByteReader {
 public:
  // Opens `path`; throws "<path>: cannot open (<reason>)" if it does not exist or is unreadable,
  // and "<path>: is a FIFO, expected a data file" (non_regular_kind) without opening it.
  explicit ByteReader(const std::string& path);
  // Reads `bytes` (which must outlive the reader); `name` replaces the path in messages.
  ByteReader(std::string_view bytes, std::string name);
  ~ByteReader();
  ByteReader(const ByteReader&) = delete;
  ByteReader& operator=(const ByteReader&) = delete;

  const std::string& path() const { return path_; }
  bool is_gzip() const { return inflater_ != nullptr; }
  // Bytes of the source (for plain data this is the data length; for gzip, the compressed length).
  int64_t file_size() const { return file_size_; }
  // Bytes of (decompressed) data consumed so far.
  int64_t position() const { return position_; }
  // Bytes of data left, known only for plain data (-1 for gzip).
  int64_t remaining_if_known() const { return is_gzip() ? -1 : file_size_ - position_; }

  // Reads up to n bytes into dst; returns how many were read (fewer only at the end of the data).
  // Throws with the path on an I/O error or a corrupt or truncated gzip stream.
  int64_t read(uint8_t* dst, int64_t n);
  // Appends up to n bytes to out, growing it in chunks as the data arrives, so a header that claims
  // terabytes costs only as much memory as the file really holds. Returns how many bytes were
  // appended.
  int64_t read_up_to(std::vector<uint8_t>& out, int64_t n);
  // True if at least one more byte of data follows (consumes it, and inflates no more than it).
  bool has_more();

  // Refuses a header's claim that `claimed` more bytes of data follow (`claim` says what they are,
  // e.g. "600 images of 28x28"), before any of them is read: for gzip data, a claim larger than
  // the compressed bytes could inflate to (kMaxDeflateRatio), and for any data a claim over
  // max_dataset_bytes(). The exact length of plain data (remaining_if_known()) is the caller's to
  // compare, with its own message. Throws naming the path, the claim and the limit.
  void check_claim(int64_t claimed, const std::string& claim) const;

 private:
  struct Inflater;  // z_stream and its state, kept out of this header so zlib.h stays out too

  void start_gzip_if_magic();
  int64_t inflate_into(uint8_t* dst, int64_t n);

  std::string path_;
  std::FILE* file_ = nullptr;           // plain file being streamed
  std::string compressed_;              // a gzip file's bytes, read whole
  std::string_view memory_;             // in-memory source: caller's bytes or compressed_
  size_t memory_pos_ = 0;               // next unread byte of memory_ (plain in-memory data)
  std::unique_ptr<Inflater> inflater_;  // set for gzip data
  int64_t file_size_ = 0;
  int64_t position_ = 0;
};

}  // namespace bnlab::detail

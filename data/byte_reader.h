// ByteReader: reads a data file's bytes, gunzipping transparently when the file *starts with* the
// gzip magic (1f 8b) -- detected from the bytes, never from the name. Internal to data/ (namespace
// detail).
//
// The parsers use it to validate headers against the amount of data actually present *before*
// allocating what a header claims: for a plain file the payload length is known from the file size
// up front; for a gzip file it is only known by decompressing, so read_up_to() grows its buffer as
// data arrives (never beyond what the header declares) and reports how much there really was.
// Reference: zlib manual, gzopen/gzread/gzbuffer (https://zlib.net/manual.html).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace bnlab::detail {

class ByteReader {
 public:
  // Opens `path`; throws "<path>: cannot open (<reason>)" if it does not exist or is unreadable.
  explicit ByteReader(const std::string& path);
  ~ByteReader();
  ByteReader(const ByteReader&) = delete;
  ByteReader& operator=(const ByteReader&) = delete;

  const std::string& path() const { return path_; }
  bool is_gzip() const { return gz_ != nullptr; }
  // Bytes on disk (for a plain file this is the data length; for gzip, the compressed length).
  int64_t file_size() const { return file_size_; }
  // Bytes of (decompressed) data consumed so far.
  int64_t position() const { return position_; }
  // Bytes of data left, known only for plain files (-1 for gzip).
  int64_t remaining_if_known() const { return is_gzip() ? -1 : file_size_ - position_; }

  // Reads up to n bytes into dst; returns how many were read (fewer only at the end of the data).
  // Throws with the path on an I/O error or a corrupt gzip stream.
  int64_t read(uint8_t* dst, int64_t n);
  // Appends up to n bytes to out, growing it in chunks as the data arrives, so a header that claims
  // terabytes costs only as much memory as the file really holds. Returns how many bytes were
  // appended.
  int64_t read_up_to(std::vector<uint8_t>& out, int64_t n);
  // True if at least one more byte of data follows (consumes it).
  bool has_more();

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  void* gz_ = nullptr;  // gzFile, kept opaque so zlib.h stays out of this header
  int64_t file_size_ = 0;
  int64_t position_ = 0;
};

}  // namespace bnlab::detail

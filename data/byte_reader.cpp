// ByteReader: plain or gzip file reading with the gzip format detected from the first two bytes.
// Reference: zlib manual (https://zlib.net/manual.html); RFC 1952 (gzip magic 1f 8b).
#include "data/byte_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace bnlab::detail {

namespace {

gzFile as_gz(void* p) { return static_cast<gzFile>(p); }

}  // namespace

ByteReader::ByteReader(const std::string& path) : path_(path) {
  std::error_code ec;
  BNLAB_CHECK(!std::filesystem::is_directory(path, ec), path,
              ": is a directory, expected a data file");
  file_ = std::fopen(path.c_str(), "rb");
  BNLAB_CHECK(file_ != nullptr, path, ": cannot open (", std::strerror(errno), ")");
  // File size via seek: works for any regular file, and tells the plain-file payload length up
  // front.
  std::fseek(file_, 0, SEEK_END);
  file_size_ = static_cast<int64_t>(std::ftell(file_));
  std::fseek(file_, 0, SEEK_SET);
  unsigned char magic[2] = {0, 0};
  size_t got = std::fread(magic, 1, 2, file_);
  std::fseek(file_, 0, SEEK_SET);
  if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    std::fclose(file_);
    file_ = nullptr;
    gzFile gz = gzopen(path.c_str(), "rb");
    BNLAB_CHECK(gz != nullptr, path, ": cannot open gzip stream (", std::strerror(errno), ")");
    gzbuffer(gz, 1 << 18);  // bigger than the 8 KB default: several times faster on large files
    gz_ = gz;
  }
}

ByteReader::~ByteReader() {
  if (file_ != nullptr) std::fclose(file_);
  if (gz_ != nullptr) gzclose(as_gz(gz_));
}

int64_t ByteReader::read(uint8_t* dst, int64_t n) {
  int64_t total = 0;
  while (total < n) {
    // gzread takes an unsigned int count, so large reads go in pieces of at most 1 GiB.
    auto want = static_cast<unsigned>(std::min<int64_t>(n - total, int64_t{1} << 30));
    int64_t got = 0;
    if (gz_ != nullptr) {
      int r = gzread(as_gz(gz_), dst + total, want);
      if (r < 0) {
        int errnum = 0;
        const char* msg = gzerror(as_gz(gz_), &errnum);
        BNLAB_FAIL(path_, ": corrupt gzip data after ", position_ + total, " bytes (zlib: ", msg,
                   ")");
      }
      got = r;
    } else {
      got = static_cast<int64_t>(std::fread(dst + total, 1, want, file_));
      BNLAB_CHECK(!std::ferror(file_), path_, ": read error (", std::strerror(errno), ")");
    }
    if (got == 0) break;
    total += got;
  }
  position_ += total;
  return total;
}

int64_t ByteReader::read_up_to(std::vector<uint8_t>& out, int64_t n) {
  const size_t start = out.size();
  int64_t known = remaining_if_known();
  if (known >= 0) {
    // Plain file: the real amount of data is known, so allocate at most that much, once.
    int64_t take = std::min(n, known);
    out.resize(start + static_cast<size_t>(take));
    int64_t got = read(out.data() + start, take);
    out.resize(start + static_cast<size_t>(got));
    return got;
  }
  // gzip: grow geometrically from 1 MiB as decompressed data arrives, never past n.
  int64_t total = 0;
  int64_t chunk = int64_t{1} << 20;
  while (total < n) {
    int64_t take = std::min(chunk, n - total);
    out.resize(start + static_cast<size_t>(total + take));
    int64_t got = read(out.data() + start + total, take);
    total += got;
    if (got < take) break;
    chunk = std::min<int64_t>(chunk * 2, int64_t{1} << 28);
  }
  out.resize(start + static_cast<size_t>(total));
  return total;
}

bool ByteReader::has_more() {
  uint8_t byte = 0;
  return read(&byte, 1) == 1;
}

}  // namespace bnlab::detail

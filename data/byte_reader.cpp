// ByteReader: plain or gzip data (from a file or memory) with the gzip format detected from the
// first two bytes. Reference: zlib manual (https://zlib.net/manual.html); RFC 1952 (gzip magic 1f
// 8b).
#include "data/byte_reader.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/io.h"

namespace bnlab::detail {

namespace {

bool starts_with_gzip_magic(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == 0x1f &&
         static_cast<uint8_t>(bytes[1]) == 0x8b;
}

constexpr const char* kLimitVariable = "BNLAB_MAX_DATASET_BYTES";

// Added to the deflate bound of a gzip source. The bound is already a true maximum; the slack only
// keeps the check from ever resting on its last bytes.
constexpr int64_t kDeflateSlack = 4096;

// The smaller of 8 GiB and half of physical memory: the datasets bnlab is for (MNIST, CIFAR, image
// folders of small images) are far below it, and a larger claim is far more likely a corrupt or
// hostile header than a dataset that fits in memory next to training.
int64_t default_dataset_limit() {
  return std::min(int64_t{8} << 30, static_cast<int64_t>(physical_memory_bytes() / 2));
}

}  // namespace

int64_t max_dataset_bytes() {
  const char* env = std::getenv(kLimitVariable);
  if (env == nullptr || *env == '\0') return default_dataset_limit();
  const std::string_view text(env);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  int shift = 0;
  if (ec == std::errc() && end + 1 == text.data() + text.size()) {
    switch (*end) {
      case 'k':
      case 'K':
        shift = 10;
        break;
      case 'm':
      case 'M':
        shift = 20;
        break;
      case 'g':
      case 'G':
        shift = 30;
        break;
      case 't':
      case 'T':
        shift = 40;
        break;
      default:
        shift = -1;
    }
    ++end;
  }
  const bool whole = ec == std::errc() && end == text.data() + text.size() && shift >= 0;
  BNLAB_CHECK(whole && value > 0 && value <= (std::numeric_limits<int64_t>::max() >> shift),
              kLimitVariable, " is '", text,
              "', expected a positive number of bytes, optionally with a K, M, G or T suffix "
              "(e.g. 17179869184 or 16G)");
  return value << shift;
}

std::string dataset_limit_text(int64_t limit) {
  const char* env = std::getenv(kLimitVariable);
  const bool from_env = env != nullptr && *env != '\0';
  const std::string source =
      from_env ? std::string("from ") + kLimitVariable + "=" + env
               : std::string("the default: the smaller of 8 GiB and half of this machine's memory");
  return "the dataset size limit of " + std::to_string(limit) + " bytes (" +
         (limit >= 1024 ? human_size(static_cast<size_t>(limit)) + ", " : std::string()) + source +
         "); set " + kLimitVariable + " to raise it";
}

struct ByteReader::Inflater {
  z_stream zs{};
  bool finished = false;  // the last gzip member ended
  ~Inflater() { inflateEnd(&zs); }
};

std::string non_regular_kind(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    // Only these mean nothing is there. A link loop or a folder without search permission hides a
    // file that may well exist, and "not found" with a fetch command would send the user the wrong
    // way.
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return "";
    BNLAB_FAIL(path, ": cannot access (", std::strerror(err), ")");
  }
  switch (st.st_mode & S_IFMT) {
    case S_IFREG:
      return "";
    case S_IFDIR:
      return "a directory";
    case S_IFIFO:
      return "a FIFO";
    case S_IFSOCK:
      return "a socket";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    default:
      return "not a regular file";
  }
}

void refuse_non_regular(const std::string& path, const std::string& who) {
  const std::string kind = non_regular_kind(path);
  BNLAB_CHECK(kind.empty(), who, ": ", path, " is ", kind, ", expected a data file");
}

ByteReader::ByteReader(const std::string& path) : path_(path) {
  const std::string kind = non_regular_kind(path);
  BNLAB_CHECK(kind.empty(), path, ": is ", kind, ", expected a data file");
  file_ = std::fopen(path.c_str(), "rb");
  BNLAB_CHECK(file_ != nullptr, path, ": cannot open (", std::strerror(errno), ")");
  // File size via seek: works for any regular file, and tells the plain-file payload length up
  // front.
  std::fseek(file_, 0, SEEK_END);
  file_size_ = static_cast<int64_t>(std::ftell(file_));
  std::fseek(file_, 0, SEEK_SET);
  char magic[2] = {0, 0};
  size_t got = std::fread(magic, 1, 2, file_);
  std::fseek(file_, 0, SEEK_SET);
  if (starts_with_gzip_magic(std::string_view(magic, got))) {
    std::fclose(file_);
    file_ = nullptr;
    // Read whole, so bounded first: gzip data is larger than what it inflates to by its framing
    // at most, so a compressed file over the limit is no dataset to load.
    const int64_t limit = max_dataset_bytes();
    BNLAB_CHECK(file_size_ <= limit, path, ": a gzip file of ", file_size_, " bytes, over ",
                dataset_limit_text(limit));
    compressed_ = read_file(path, static_cast<size_t>(limit));
    memory_ = compressed_;
    file_size_ = static_cast<int64_t>(compressed_.size());
    start_gzip_if_magic();
  }
}

ByteReader::ByteReader(std::string_view bytes, std::string name)
    : path_(std::move(name)), memory_(bytes), file_size_(static_cast<int64_t>(bytes.size())) {
  start_gzip_if_magic();
}

ByteReader::~ByteReader() {
  if (file_ != nullptr) std::fclose(file_);
}

void ByteReader::start_gzip_if_magic() {
  if (!starts_with_gzip_magic(memory_)) return;
  inflater_ = std::make_unique<Inflater>();
  // 15 + 16: the largest window, and a gzip (not zlib or raw deflate) wrapper.
  int r = inflateInit2(&inflater_->zs, 15 + 16);
  if (r != Z_OK) {
    inflater_.reset();  // inflateEnd on a stream that failed to initialise is not allowed
    BNLAB_FAIL(path_, ": cannot start gzip decompression (zlib error ", r, ")");
  }
}

int64_t ByteReader::inflate_into(uint8_t* dst, int64_t n) {
  z_stream& zs = inflater_->zs;
  int64_t total = 0;
  while (total < n && !inflater_->finished) {
    // zlib counts in uInt: feed and drain at most 1 GiB at a time.
    if (zs.avail_in == 0 && memory_pos_ < memory_.size()) {
      size_t feed = std::min<size_t>(memory_.size() - memory_pos_, size_t{1} << 30);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(memory_.data() + memory_pos_));
      zs.avail_in = static_cast<uInt>(feed);
      memory_pos_ += feed;
    }
    const auto want = static_cast<uInt>(std::min<int64_t>(n - total, int64_t{1} << 30));
    zs.next_out = dst + total;
    zs.avail_out = want;
    int r = inflate(&zs, Z_NO_FLUSH);
    total += want - zs.avail_out;
    if (r == Z_STREAM_END) {
      // Another member may follow (what `cat a.gz b.gz` makes, and gzread reads); anything else
      // after the last member is ignored, as gzread does.
      const size_t next = memory_pos_ - zs.avail_in;
      if (starts_with_gzip_magic(memory_.substr(next))) {
        inflateReset(&zs);
      } else {
        inflater_->finished = true;
      }
      continue;
    }
    if (r == Z_OK) continue;
    if (r == Z_BUF_ERROR && zs.avail_in == 0 && memory_pos_ == memory_.size()) {
      BNLAB_FAIL(path_, ": corrupt gzip data after ", position_ + total,
                 " bytes (zlib: unexpected end of the compressed data; truncated?)");
    }
    BNLAB_FAIL(path_, ": corrupt gzip data after ", position_ + total,
               " bytes (zlib: ", zs.msg != nullptr ? zs.msg : "error " + std::to_string(r), ")");
  }
  return total;
}

int64_t ByteReader::read(uint8_t* dst, int64_t n) {
  int64_t total = 0;
  if (inflater_ != nullptr) {
    total = inflate_into(dst, n);
  } else if (file_ == nullptr) {
    total = std::min<int64_t>(n, static_cast<int64_t>(memory_.size() - memory_pos_));
    if (total > 0) std::memcpy(dst, memory_.data() + memory_pos_, static_cast<size_t>(total));
    memory_pos_ += static_cast<size_t>(total);
  } else {
    while (total < n) {
      const auto want = static_cast<size_t>(std::min<int64_t>(n - total, int64_t{1} << 30));
      const auto got = static_cast<int64_t>(std::fread(dst + total, 1, want, file_));
      BNLAB_CHECK(!std::ferror(file_), path_, ": read error (", std::strerror(errno), ")");
      if (got == 0) break;
      total += got;
    }
  }
  position_ += total;
  return total;
}

int64_t ByteReader::read_up_to(std::vector<uint8_t>& out, int64_t n) {
  const size_t start = out.size();
  int64_t known = remaining_if_known();
  if (known >= 0) {
    // Plain data: the real amount is known, so allocate at most that much, once.
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

void ByteReader::check_claim(int64_t claimed, const std::string& claim) const {
  if (is_gzip()) {
    // All of the stream's data, the bytes already read included, comes from file_size_ compressed
    // bytes (gzip headers and trailers only make them more), so it is at most kMaxDeflateRatio
    // times that. A claim beyond it cannot be true; refusing it here, before inflating, is what
    // stops a bomb that holds gigabytes of zeros under a header claiming terabytes from being
    // inflated in full only to be found short.
    const int64_t most =
        file_size_ > (std::numeric_limits<int64_t>::max() - kDeflateSlack) / kMaxDeflateRatio
            ? std::numeric_limits<int64_t>::max()
            : file_size_ * kMaxDeflateRatio + kDeflateSlack;
    const int64_t left = std::max<int64_t>(0, most - position_);
    BNLAB_CHECK(claimed <= left, path_, ": header says ", claim, " (", claimed,
                " bytes), more than a ", file_size_, "-byte gzip file can hold: deflate expands ",
                "at most ", kMaxDeflateRatio, ":1, so at most ", left,
                " bytes (corrupt header, or a gzip bomb?)");
  }
  const int64_t limit = max_dataset_bytes();
  BNLAB_CHECK(claimed <= limit, path_, ": header says ", claim, " (", claimed, " bytes), over ",
              dataset_limit_text(limit));
}

}  // namespace bnlab::detail

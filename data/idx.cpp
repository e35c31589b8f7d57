// IDX reader: header validation against the real data length first, then one read into the dataset.
// Reference: http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
#include "data/idx.h"

#include <filesystem>

#include "core/error.h"
#include "data/byte_reader.h"

namespace bnlab {

namespace {

namespace fs = std::filesystem;

struct IdxHeader {
  std::vector<int64_t> dims;
};

const char* idx_type_name(uint8_t type) {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0b:
      return "int16";
    case 0x0c:
      return "int32";
    case 0x0d:
      return "float32";
    case 0x0e:
      return "float64";
    default:
      return "unknown";
  }
}

// Reads and checks the magic and dimensions; the reader is left at the first data byte.
IdxHeader read_header(detail::ByteReader& in, int64_t want_rank, const char* what) {
  const std::string& path = in.path();
  uint8_t magic[4] = {0, 0, 0, 0};
  int64_t got = in.read(magic, 4);
  const int64_t header_bytes = 4 + 4 * want_rank;
  BNLAB_CHECK(got == 4, path, ": file holds ", got, " bytes, too short for an IDX header (", what,
              " files need ", header_bytes, " header bytes)");
  BNLAB_CHECK(magic[0] == 0 && magic[1] == 0, path, ": not an IDX file (magic bytes ",
              int(magic[0]), " ", int(magic[1]), " ", int(magic[2]), " ", int(magic[3]),
              "; expected 0 0 8 ", want_rank, " for ", what, ")");
  BNLAB_CHECK(magic[2] == 0x08, path, ": IDX element type ", int(magic[2]), " (",
              idx_type_name(magic[2]), "), expected 8 (unsigned byte) for ", what);
  BNLAB_CHECK(magic[3] == want_rank, path, ": IDX ", what, " must have ", want_rank,
              want_rank == 1 ? " dimension [N]" : " dimensions [N, H, W]", ", header says ",
              int(magic[3]));
  uint8_t raw[12] = {};
  got = in.read(raw, 4 * want_rank);
  BNLAB_CHECK(got == 4 * want_rank, path, ": file holds ", 4 + got,
              " bytes, too short for an IDX header (", what, " files need ", header_bytes,
              " header bytes)");
  IdxHeader h;
  for (int64_t d = 0; d < want_rank; ++d) {
    const uint8_t* p = raw + 4 * d;
    uint32_t v = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    h.dims.push_back(static_cast<int64_t>(v));
  }
  for (int64_t d = 0; d < want_rank; ++d) {
    BNLAB_CHECK(h.dims[d] > 0, path, ": IDX ", what, " dimension ", d, " is 0 (header dims ",
                h.dims, "); every dimension must be at least 1");
  }
  return h;
}

// Reads exactly `expected` data bytes into out, or throws with the header's claim and the real
// length. Nothing is allocated or inflated before the claim is checked: for a plain file against
// its length, for gzip against what the compressed bytes could inflate to, and for both against
// the dataset size limit (ByteReader::check_claim). For gzip the buffer then grows only with the
// data actually decompressed, and inflating stops one byte past the claim (data/byte_reader.h).
void read_payload(detail::ByteReader& in, int64_t expected, const std::string& claim,
                  std::vector<uint8_t>& out) {
  const std::string& path = in.path();
  int64_t known = in.remaining_if_known();
  if (known >= 0) {
    BNLAB_CHECK(
        known == expected, path, ": header says ", claim, " (", expected, " bytes), file holds ",
        known, " bytes of data",
        known > expected ? " (trailing bytes: wrong header or not an IDX file?)" : " (truncated?)");
  }
  in.check_claim(expected, claim);
  out.clear();
  int64_t got = in.read_up_to(out, expected);
  BNLAB_CHECK(got == expected, path, ": header says ", claim, " (", expected,
              " bytes), file holds ", got, " bytes of data (truncated?)");
  BNLAB_CHECK(!in.has_more(), path, ": header says ", claim, " (", expected,
              " bytes), file holds more data than that (trailing bytes: wrong header or not an IDX "
              "file?)");
}

// The image header, checked; `pixels` stays empty until read_images_payload.
IdxImages parse_images_header(detail::ByteReader& in, std::string& claim, int64_t& total) {
  const std::string& path = in.path();
  IdxHeader h = read_header(in, 3, "image");
  IdxImages out;
  out.count = h.dims[0];
  out.height = h.dims[1];
  out.width = h.dims[2];
  // Each dimension is < 2^32, so the product of three may overflow int64: check before using it.
  int64_t per_image = 0;
  bool overflow = __builtin_mul_overflow(out.height, out.width, &per_image) ||
                  __builtin_mul_overflow(per_image, out.count, &total);
  claim = std::to_string(out.count) + " images of " + std::to_string(out.height) + "x" +
          std::to_string(out.width);
  BNLAB_CHECK(!overflow, path, ": header says ", claim, ", an absurd size (over 2^63 bytes)");
  return out;
}

IdxImages parse_images(detail::ByteReader& in) {
  std::string claim;
  int64_t total = 0;
  IdxImages out = parse_images_header(in, claim, total);
  read_payload(in, total, claim, out.pixels);
  return out;
}

// The label count from the header, checked. Labels are widened to int64 in memory, 8 bytes for
// each byte of the file, so the widened size is held to the dataset limit too: a header claiming
// 10^9 labels passed the check of its 10^9 file bytes and then needed 8 GB.
int64_t parse_labels_header(detail::ByteReader& in) {
  IdxHeader h = read_header(in, 1, "label");
  const int64_t count = h.dims[0];                           // < 2^32, so 8 * count cannot overflow
  in.check_claim(count, std::to_string(count) + " labels");  // the file's own bounds first
  const int64_t limit = detail::max_dataset_bytes();
  BNLAB_CHECK(count * int64_t{sizeof(int64_t)} <= limit, in.path(), ": header says ", count,
              " labels, ", count * int64_t{sizeof(int64_t)}, " bytes once widened to int64, over ",
              detail::dataset_limit_text(limit));
  return count;
}

std::vector<int64_t> parse_labels_payload(detail::ByteReader& in, int64_t count) {
  std::vector<uint8_t> bytes;
  read_payload(in, count, std::to_string(count) + " labels", bytes);
  return std::vector<int64_t>(bytes.begin(), bytes.end());
}

std::vector<int64_t> parse_labels(detail::ByteReader& in) {
  const int64_t count = parse_labels_header(in);
  return parse_labels_payload(in, count);
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
  detail::ByteReader in(path);
  return parse_images(in);
}

std::vector<int64_t> read_idx_labels(const std::string& path) {
  detail::ByteReader in(path);
  return parse_labels(in);
}

IdxImages decode_idx_images(std::string_view bytes, const std::string& name_for_errors) {
  detail::ByteReader in(bytes, name_for_errors);
  return parse_images(in);
}

std::vector<int64_t> decode_idx_labels(std::string_view bytes, const std::string& name_for_errors) {
  detail::ByteReader in(bytes, name_for_errors);
  return parse_labels(in);
}

ImageDataset read_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              const std::string& name, const std::string& split,
                              const std::vector<std::string>& class_names) {
  // Both headers before either payload: a count mismatch is found from 24 bytes, not after
  // reading (and widening) everything a corrupt header claims. Then labels, the small payload, so
  // a bad label is reported before the big image read.
  detail::ByteReader label_in(labels_path);
  const int64_t label_count = parse_labels_header(label_in);
  detail::ByteReader image_in(images_path);
  std::string claim;
  int64_t total = 0;
  IdxImages images = parse_images_header(image_in, claim, total);
  BNLAB_CHECK(images.count == label_count, name, " ", split, ": ", images_path, " holds ",
              images.count, " images but ", labels_path, " holds ", label_count, " labels");
  std::vector<int64_t> labels = parse_labels_payload(label_in, label_count);
  const auto num_classes = static_cast<int64_t>(class_names.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    BNLAB_CHECK(labels[i] < num_classes, labels_path, ": label ", labels[i], " at index ", i,
                " is out of range for ", num_classes, " classes");
  }
  read_payload(image_in, total, claim, images.pixels);
  ImageDataset out;
  out.name = name;
  out.split = split;
  out.channels = 1;
  out.height = images.height;
  out.width = images.width;
  out.pixels = std::move(images.pixels);
  out.labels = std::move(labels);
  out.class_names = class_names;
  return out;
}

std::string find_idx_file(const std::string& dir, const std::string& base) {
  std::error_code ec;
  for (const std::string& candidate : {base, base + ".gz"}) {
    fs::path p = fs::path(dir) / candidate;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

ImageDataset load_mnist_like(const std::string& dir, const std::string& split,
                             const std::string& name, const std::vector<std::string>& class_names) {
  BNLAB_CHECK(split == "train" || split == "test", name, ": unknown split '", split,
              "'; expected train or test");
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::string images_base = prefix + "-images-idx3-ubyte";
  const std::string labels_base = prefix + "-labels-idx1-ubyte";
  auto find = [&](const std::string& base) {
    std::string found = find_idx_file(dir, base);
    if (!found.empty()) return found;
    for (const std::string& candidate : {base, base + ".gz"})
      detail::refuse_non_regular((fs::path(dir) / candidate).string(), name);
    BNLAB_FAIL(name, ": ", (fs::path(dir) / base).string(), " not found (nor .gz)");
  };
  const std::string images = find(images_base);
  const std::string labels = find(labels_base);
  ImageDataset out = read_idx_dataset(images, labels, name, split, class_names);
  // The header's shape is otherwise taken on trust: a 14x56 file of the right byte count trained
  // on scrambled images, or failed only at the first evaluation, naming no file.
  BNLAB_CHECK(out.height == 28 && out.width == 28, images, ": header says ", out.size(),
              " images of ", out.height, "x", out.width, "; ", name, " images are 28x28");
  return out;
}

}  // namespace bnlab

// CIFAR binary batch reader and the CIFAR-10 / CIFAR-100 directory protocols.
// Reference: https://www.cs.toronto.edu/~kriz/cifar.html ("Binary version").
#include "data/cifar.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/byte_reader.h"

namespace bnlab {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kCifarPixels = 3 * 32 * 32;
constexpr int64_t kChunkRecords = 512;

struct LayoutInfo {
  int64_t label_bytes;   // bytes before the pixels
  int64_t label_offset;  // which of them is the label we keep
  int64_t num_classes;
  const char* description;
};

LayoutInfo layout_info(CifarLayout layout) {
  switch (layout) {
    case CifarLayout::kCifar10:
      return {1, 0, 10, "CIFAR-10"};
    case CifarLayout::kCifar100Fine:
      return {2, 1, 100, "CIFAR-100 (fine labels)"};
    case CifarLayout::kCifar100Coarse:
      return {2, 0, 20, "CIFAR-100 (coarse labels)"};
  }
  return {1, 0, 10, "CIFAR-10"};
}

std::vector<std::string> numbered_names(int64_t n) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

// " (N with the batches before it)" when earlier batches count towards the size limit too.
std::string with_before(int64_t before, int64_t here) {
  return before > 0 ? " (" + std::to_string(before + here) + " with the batches before it)" : "";
}

// Appends one file's records to out. The split's data, this file's and the batches' before it,
// must stay within the dataset size limit (detail::max_dataset_bytes()): a CIFAR batch has no
// header to check, so a gzip batch is refused as soon as it inflates past the limit (by at most
// one chunk), and a plain one before anything is allocated for it.
void read_one_batch(detail::ByteReader& in, const LayoutInfo& info, ImageDataset& out) {
  const std::string& path = in.path();
  const int64_t record = info.label_bytes + kCifarPixels;
  const int64_t limit = detail::max_dataset_bytes();
  const int64_t before = static_cast<int64_t>(out.labels.size()) * record;
  int64_t known = in.remaining_if_known();
  if (known >= 0) {
    // Plain file: validate the length before allocating anything for it.
    BNLAB_CHECK(known > 0 && known % record == 0, path, ": file holds ", known, " bytes, not a ",
                known == 0 ? "non-empty sequence" : "whole number", " of ", record, "-byte ",
                info.description, " records (", known / record, " records and ", known % record,
                " bytes left over: truncated, or not a ", info.description, " batch?)");
    BNLAB_CHECK(known <= limit - before, path, ": file holds ", known, " bytes of data",
                with_before(before, known), ", over ", detail::dataset_limit_text(limit));
    out.pixels.reserve(out.pixels.size() + static_cast<size_t>(known / record * kCifarPixels));
    out.labels.reserve(out.labels.size() + static_cast<size_t>(known / record));
  }
  // Records go through a small chunk buffer: label bytes to labels, pixel planes copied as-is.
  std::vector<uint8_t> chunk(static_cast<size_t>(kChunkRecords * record));
  int64_t records = 0;
  while (true) {
    int64_t got = in.read(chunk.data(), kChunkRecords * record);
    BNLAB_CHECK(in.position() <= limit - before, path, ": inflates to at least ", in.position(),
                " bytes of data", with_before(before, in.position()), ", over ",
                detail::dataset_limit_text(limit));
    int64_t whole = got / record;
    BNLAB_CHECK(got % record == 0, path, ": file holds ", in.position(), " bytes of data, not a ",
                "whole number of ", record, "-byte ", info.description, " records (",
                records + whole, " records and ", got % record,
                " bytes left over: truncated, or not a ", info.description, " batch?)");
    for (int64_t r = 0; r < whole; ++r) {
      const uint8_t* rec = chunk.data() + r * record;
      int64_t label = rec[info.label_offset];
      BNLAB_CHECK(label < info.num_classes, path, ": record ", records + r, " has label ", label,
                  ", but ", info.description, " labels are 0-", info.num_classes - 1,
                  " (wrong layout, or not a CIFAR batch?)");
      // CIFAR-100 records carry both labels; the one not kept is checked too, so a corrupt record
      // is refused whichever labels are loaded.
      if (info.label_bytes == 2) {
        const int64_t other = info.label_offset == 0 ? 1 : 0;
        const int64_t other_classes = other == 0 ? 20 : 100;
        BNLAB_CHECK(rec[other] < other_classes, path, ": record ", records + r, " has ",
                    other == 0 ? "coarse" : "fine", " label ", int{rec[other]}, ", but CIFAR-100 ",
                    other == 0 ? "coarse" : "fine", " labels are 0-", other_classes - 1,
                    " (corrupt, or not a CIFAR-100 batch?)");
      }
      out.labels.push_back(label);
      out.pixels.insert(out.pixels.end(), rec + info.label_bytes, rec + record);
    }
    records += whole;
    if (got < kChunkRecords * record) break;
  }
  BNLAB_CHECK(records > 0, path, ": file holds no ", info.description, " records");
}

std::string require_file(const std::string& dir, const std::string& file, const std::string& name) {
  fs::path p = fs::path(dir) / file;
  detail::refuse_non_regular(p.string(), name);
  std::error_code ec;
  BNLAB_CHECK(fs::is_regular_file(p, ec), name, ": ", p.string(), " not found");
  return p.string();
}

}  // namespace

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {
      "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return names;
}

std::vector<std::string> read_class_names_file(const std::string& path) {
  const std::string kind = detail::non_regular_kind(path);
  BNLAB_CHECK(kind.empty(), path, ": is ", kind, ", expected a text file of class names");
  std::vector<std::string> names;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    size_t b = line.find_first_not_of(" \t\r\n");
    size_t e = line.find_last_not_of(" \t\r\n");
    if (b == std::string::npos) continue;
    names.push_back(printable_name(std::string_view(line).substr(b, e - b + 1)));
  }
  return names;
}

namespace {

// An empty dataset of the layout, ready for read_one_batch.
ImageDataset empty_cifar(CifarLayout layout, const std::string& name, const std::string& split,
                         std::vector<std::string> class_names) {
  const LayoutInfo info = layout_info(layout);
  if (class_names.empty()) {
    class_names =
        layout == CifarLayout::kCifar10 ? cifar10_class_names() : numbered_names(info.num_classes);
  }
  BNLAB_CHECK(static_cast<int64_t>(class_names.size()) == info.num_classes, name, ": ",
              class_names.size(), " class names given for ", info.description, ", expected ",
              info.num_classes);
  ImageDataset out;
  out.name = name;
  out.split = split;
  out.channels = 3;
  out.height = 32;
  out.width = 32;
  out.class_names = std::move(class_names);
  return out;
}

}  // namespace

ImageDataset read_cifar_batches(const std::vector<std::string>& paths, CifarLayout layout,
                                const std::string& name, const std::string& split,
                                std::vector<std::string> class_names) {
  BNLAB_CHECK(!paths.empty(), name, ": no CIFAR batch files given");
  ImageDataset out = empty_cifar(layout, name, split, std::move(class_names));
  for (const std::string& path : paths) {
    detail::ByteReader in(path);
    read_one_batch(in, layout_info(layout), out);
  }
  return out;
}

ImageDataset decode_cifar_batch(std::string_view bytes, const std::string& name_for_errors,
                                CifarLayout layout) {
  ImageDataset out = empty_cifar(layout, name_for_errors, "", {});
  detail::ByteReader in(bytes, name_for_errors);
  read_one_batch(in, layout_info(layout), out);
  return out;
}

ImageDataset load_cifar10(const std::string& dir, const std::string& split) {
  const std::string name = "cifar10";
  std::vector<std::string> names =
      read_class_names_file((fs::path(dir) / "batches.meta.txt").string());
  if (names.size() != 10) names = cifar10_class_names();
  auto batches = [&](int first, int last) {
    std::vector<std::string> paths;
    for (int b = first; b <= last; ++b) {
      paths.push_back(require_file(dir, "data_batch_" + std::to_string(b) + ".bin", name));
    }
    return paths;
  };
  std::error_code ec;
  const bool has_full_test = fs::is_regular_file(fs::path(dir) / "test_batch.bin", ec);
  const bool has_first1000 = fs::is_regular_file(fs::path(dir) / "test_first1000.bin", ec);
  if (split == "train")
    return read_cifar_batches(batches(1, 4), CifarLayout::kCifar10, name, split, names);
  if (split == "val")
    return read_cifar_batches(batches(5, 5), CifarLayout::kCifar10, name, split, names);
  if (split == "trainval") {
    return read_cifar_batches(batches(1, 5), CifarLayout::kCifar10, name, split, names);
  }
  if (split == "test" || split == "test_first1000") {
    if (split == "test" && has_full_test) {
      return read_cifar_batches({require_file(dir, "test_batch.bin", name)}, CifarLayout::kCifar10,
                                name, "test", names);
    }
    if (has_first1000) {
      return read_cifar_batches({require_file(dir, "test_first1000.bin", name)},
                                CifarLayout::kCifar10, name, "test_first1000", names);
    }
    if (has_full_test) {
      ImageDataset full = read_cifar_batches({require_file(dir, "test_batch.bin", name)},
                                             CifarLayout::kCifar10, name, "test", names);
      BNLAB_CHECK(full.size() >= 1000, name, ": test_batch.bin holds only ", full.size(),
                  " images, fewer than 1000");
      std::vector<int64_t> first(1000);
      for (int64_t i = 0; i < 1000; ++i) first[static_cast<size_t>(i)] = i;
      return subset(full, first, "test_first1000");
    }
    detail::refuse_non_regular((fs::path(dir) / "test_batch.bin").string(), name);
    detail::refuse_non_regular((fs::path(dir) / "test_first1000.bin").string(), name);
    BNLAB_FAIL(name, ": ", (fs::path(dir) / "test_batch.bin").string(), " not found (nor ",
               (fs::path(dir) / "test_first1000.bin").string(), ")");
  }
  BNLAB_FAIL(name, ": unknown split '", split,
             "'; expected train, val, trainval, test or test_first1000");
}

ImageDataset load_cifar100(const std::string& dir, const std::string& split, bool coarse) {
  const std::string name = coarse ? "cifar100-coarse" : "cifar100";
  BNLAB_CHECK(split == "train" || split == "test", name, ": unknown split '", split,
              "'; expected train or test");
  std::vector<std::string> names = read_class_names_file(
      (fs::path(dir) / (coarse ? "coarse_label_names.txt" : "fine_label_names.txt")).string());
  if (names.size() != (coarse ? 20u : 100u)) names.clear();
  return read_cifar_batches({require_file(dir, split + ".bin", name)},
                            coarse ? CifarLayout::kCifar100Coarse : CifarLayout::kCifar100Fine,
                            name, split, names);
}

}  // namespace bnlab

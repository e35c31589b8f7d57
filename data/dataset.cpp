// ImageDataset checks, subsets and the seeded train/validation split.
#include "data/dataset.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/random.h"

namespace bnlab {

void check_dataset(const ImageDataset& data, const std::string& context) {
  BNLAB_CHECK(data.channels > 0 && data.height > 0 && data.width > 0, context, ": dataset '",
              data.title(), "' has non-positive image shape [", data.channels, ", ", data.height,
              ", ", data.width, "]");
  // Checked by division: a wrapped C * H * W or N * C * H * W (0 for C = H = 2^32) would match a
  // short pixel buffer, which the readers then index and loop over by the real dimensions.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  BNLAB_CHECK(
      data.channels <= kMax / data.height && data.channels * data.height <= kMax / data.width,
      context, ": dataset '", data.title(), "' has image shape [", data.channels, ", ", data.height,
      ", ", data.width, "], more bytes per image than int64 can count");
  BNLAB_CHECK(data.size() <= kMax / data.image_bytes(), context, ": dataset '", data.title(),
              "' has ", data.size(), " images of [", data.channels, ", ", data.height, ", ",
              data.width, "], more pixel bytes than int64 can count");
  const auto expected = static_cast<uint64_t>(data.size() * data.image_bytes());
  BNLAB_CHECK(data.pixels.size() == expected, context, ": dataset '", data.title(), "' has ",
              data.pixels.size(), " pixel bytes, expected ", expected, " for ", data.size(),
              " images of [", data.channels, ", ", data.height, ", ", data.width, "]");
  BNLAB_CHECK(data.num_classes() > 0, context, ": dataset '", data.title(), "' has no class names");
  for (int64_t i = 0; i < data.size(); ++i) {
    int64_t y = data.labels[static_cast<size_t>(i)];
    BNLAB_CHECK(y >= 0 && y < data.num_classes(), context, ": dataset '", data.title(), "' label ",
                y, " at index ", i, " is out of range for ", data.num_classes(), " classes");
  }
}

ImageDataset subset(const ImageDataset& data, const std::vector<int64_t>& indices,
                    const std::string& split) {
  ImageDataset out;
  out.name = data.name;
  out.split = split;
  out.channels = data.channels;
  out.height = data.height;
  out.width = data.width;
  out.class_names = data.class_names;
  const auto bytes = static_cast<size_t>(data.image_bytes());
  out.pixels.resize(indices.size() * bytes);
  out.labels.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    int64_t i = indices[k];
    BNLAB_CHECK(i >= 0 && i < data.size(), "subset: index ", i, " out of range for dataset '",
                data.title(), "' of ", data.size(), " images");
    std::memcpy(out.pixels.data() + k * bytes, data.image(i), bytes);
    out.labels[k] = data.labels[static_cast<size_t>(i)];
  }
  return out;
}

TrainValSplit split_train_val(const ImageDataset& data, int64_t val_count, uint64_t seed) {
  BNLAB_CHECK(val_count > 0 && val_count < data.size(), "split_train_val: val_count ", val_count,
              " must be in [1, ", data.size() - 1, "] for dataset '", data.title(), "' of ",
              data.size(), " images");
  // Fisher-Yates over all indices; the first val_count are the validation set.
  std::vector<int64_t> order(static_cast<size_t>(data.size()));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  Rng rng(seed, 0x5eed5711u);
  for (size_t i = order.size() - 1; i > 0; --i) {
    size_t j = rng.below(static_cast<uint32_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  std::vector<int64_t> val(order.begin(), order.begin() + val_count);
  std::vector<int64_t> train(order.begin() + val_count, order.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  std::string prefix = data.split.empty() ? "" : data.split + "-";
  return {subset(data, train, prefix + "train"), subset(data, val, prefix + "val")};
}

namespace {

// The length of the well-formed UTF-8 character at raw[i] that is not a control character, or 0.
size_t printable_char_length(std::string_view raw, size_t i) {
  const auto lead = static_cast<unsigned char>(raw[i]);
  if (lead < 0x80) return lead >= 0x20 && lead != 0x7F ? 1 : 0;
  const size_t length = (lead >> 5) == 0x6    ? 2
                        : (lead >> 4) == 0xE  ? 3
                        : (lead >> 3) == 0x1E ? 4
                                              : 0;
  if (length == 0 || i + length > raw.size()) return 0;
  uint32_t code = lead & (0x7Fu >> length);
  for (size_t k = 1; k < length; ++k) {
    const auto next = static_cast<unsigned char>(raw[i + k]);
    if ((next & 0xC0) != 0x80) return 0;
    code = code << 6 | (next & 0x3Fu);
  }
  static constexpr uint32_t kShortest[5] = {0, 0, 0x80, 0x800, 0x10000};  // no overlong forms
  const bool valid = code >= kShortest[length] && code <= 0x10FFFF &&
                     !(code >= 0xD800 && code <= 0xDFFF) && !(code >= 0x80 && code <= 0x9F);
  return valid ? length : 0;
}

}  // namespace

std::string printable_name(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    if (const size_t length = printable_char_length(raw, i)) {
      out.append(raw.substr(i, length));
      i += length;
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      const auto byte = static_cast<unsigned char>(raw[i++]);
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    }
  }
  return out;
}

}  // namespace bnlab

// ImageDataset: a labelled image set kept in memory as uint8 (converted to float per batch by the
// DataLoader), plus subset and train/validation split helpers.
//
// Layout: pixels hold N images one after another, each [C, H, W] (channel planes, rows, columns;
// the NCHW order of core/tensor.h), so image i starts at pixels[i * C * H * W]. Labels are class
// indices in [0, class_names.size()). Keeping bytes instead of floats is 4x less memory and 4x less
// traffic; the conversion to float and normalization are fused into one pass per batch
// (data/transforms.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bnlab {

/// Images as uint8 pixels [N, C, H, W] with one integer label each, held in memory.
struct ImageDataset {
  /// "mnist", "fashion-mnist", "cifar10", "cifar100", or an image folder's name.
  std::string name = {};
  /// "train", "val", "test", "test_first1000", ... ("" if not from a named split).
  std::string split = {};
  int64_t channels = 0;                       ///< C
  int64_t height = 0;                         ///< H
  int64_t width = 0;                          ///< W
  std::vector<uint8_t> pixels = {};           ///< [N, C, H, W]
  std::vector<int64_t> labels = {};           ///< N values in [0, num_classes())
  std::vector<std::string> class_names = {};  ///< class index -> name

  /// N, the number of images.
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  /// The number of classes.
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  /// Bytes per image: C * H * W.
  int64_t image_bytes() const { return channels * height * width; }
  /// Start of image i's [C, H, W] bytes.
  const uint8_t* image(int64_t i) const { return pixels.data() + i * image_bytes(); }
  /// "mnist/train": how reports name the data.
  std::string title() const { return split.empty() ? name : name + "/" + split; }
};

/// Throws (naming `context` and the dataset) unless pixels hold exactly N*C*H*W bytes (a count
/// that must fit int64), dimensions are positive, there is at least one class and every label is
/// in [0, num_classes()).
void check_dataset(const ImageDataset& data, const std::string& context);

/// The images at `indices` (in that order, repeats allowed), same metadata; split set to `split`.
ImageDataset subset(const ImageDataset& data, const std::vector<int64_t>& indices,
                    const std::string& split);

/// The two parts split_train_val returns.
struct TrainValSplit {
  ImageDataset train;  ///< the images kept for training
  ImageDataset val;    ///< the held-out images
};

/// Holds out `val_count` images chosen by a seeded shuffle (same seed -> same split). Both parts
/// keep the original relative order of their images; split names become "<split>-train" /
/// "<split>-val" (or "train" / "val" when the source had no split name). Throws unless 0 <
/// val_count < size().
TrainValSplit split_train_val(const ImageDataset& data, int64_t val_count, uint64_t seed);

/// A class or dataset name as it may be printed and written into JSON: `raw` with every byte that
/// is a control character (C0, DEL, or part of a C1 character) or not part of valid UTF-8 written
/// as `\xNN`. Such names come from directory names and batches.meta.txt lines, which may hold any
/// bytes; the loaders keep only this form.
std::string printable_name(std::string_view raw);

}  // namespace bnlab

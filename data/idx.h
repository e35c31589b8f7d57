// IDX files (the MNIST / Fashion-MNIST format): unsigned-byte images [N, H, W] and labels [N],
// plain or gzipped (detected from the bytes, not the name).
//
// Format (big-endian): bytes 0-1 are zero, byte 2 the element type (0x08 = unsigned byte, the only
// one accepted), byte 3 the rank; then one uint32 per dimension; then the data, row-major. Every
// header field is validated -- magic, type, rank, dimensions, and the count against the length of
// the data actually present -- before anything the size of the header's claim is allocated; errors
// name the file, e.g.
//   "data/mnist/train-images-idx3-ubyte: header says 60000 images of 28x28 (47040000 bytes),
//    file holds 1234 bytes of data".
// Reference: Y. LeCun et al., "The MNIST database" (http://yann.lecun.com/exdb/mnist/), section
// "FILE FORMATS FOR THE MNIST DATABASE".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"

namespace bnlab {

/// The content of an IDX image file (idx3-ubyte, MNIST's format).
struct IdxImages {
  int64_t count = 0;            ///< number of images
  int64_t height = 0;           ///< rows per image
  int64_t width = 0;            ///< columns per image
  std::vector<uint8_t> pixels;  ///< [count, height, width]
};

/// Reads an idx3-ubyte image file (plain or gzip). Throws with the path on any inconsistency.
IdxImages read_idx_images(const std::string& path);
/// Reads an idx1-ubyte label file (plain or gzip). Throws with the path on any inconsistency.
std::vector<int64_t> read_idx_labels(const std::string& path);
/// The same parsers on a file's bytes already in memory (plain or gzip); `name_for_errors` takes
/// the path's place in messages. The fuzz targets (fuzz/) call these.
IdxImages decode_idx_images(std::string_view bytes, const std::string& name_for_errors);
/// decode_idx_images' counterpart for idx1-ubyte label bytes.
std::vector<int64_t> decode_idx_labels(std::string_view bytes, const std::string& name_for_errors);

/// Pairs an image file with a label file into a single-channel dataset; checks the counts agree and
/// the labels are below class_names.size().
ImageDataset read_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              const std::string& name, const std::string& split,
                              const std::vector<std::string>& class_names);

/// The path of dir/base or dir/base.gz, whichever exists (plain first); "" if neither does.
std::string find_idx_file(const std::string& dir, const std::string& base);

/// MNIST-layout directory: split "train" reads train-{images-idx3,labels-idx1}-ubyte[.gz], "test"
/// reads t10k-*. Throws naming the missing file when one is absent, or the file that is not a
/// regular file (a directory or FIFO by that name), or the image file when its images are not
/// 28x28 (MNIST's and Fashion-MNIST's size).
ImageDataset load_mnist_like(const std::string& dir, const std::string& split,
                             const std::string& name, const std::vector<std::string>& class_names);

}  // namespace bnlab

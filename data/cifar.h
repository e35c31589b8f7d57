// CIFAR-10 and CIFAR-100 binary batches, several files concatenated into one ImageDataset.
//
// Record layouts (no header; a file is a sequence of records):
//   CIFAR-10:  1 label byte (0-9), then 3072 pixel bytes                       = 3073 bytes
//   CIFAR-100: 1 coarse label byte (0-19), 1 fine label byte (0-99), 3072 pixels = 3074 bytes
// The 3072 pixel bytes are three 32x32 planes, R then G then B, each row-major: exactly the
// [C, H, W] layout ImageDataset keeps, so a record's pixels are copied as they are. Files may be
// gzipped (detected from the bytes). A file whose length is not a positive multiple of the record
// size, or with a label out of range, is rejected with its path before its data is used.
// Reference: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
// https://www.cs.toronto.edu/~kriz/cifar.html ("Binary version").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"

namespace bnlab {

/// The record layout of a CIFAR binary batch file.
enum class CifarLayout {
  kCifar10,         ///< label byte + 3072 pixels
  kCifar100Fine,    ///< coarse + fine label bytes + 3072 pixels; labels = fine (100 classes)
  kCifar100Coarse,  ///< same records; labels = coarse (20 superclasses)
};

/// Reads and concatenates batch files in the given order. class_names may be empty: then the
/// CIFAR-10 names, or "0".."99" / "0".."19" for CIFAR-100, are used.
ImageDataset read_cifar_batches(const std::vector<std::string>& paths, CifarLayout layout,
                                const std::string& name, const std::string& split,
                                std::vector<std::string> class_names = {});

/// One batch file's bytes already in memory (plain or gzip), with the default class names;
/// `name_for_errors` takes the path's place in messages. The fuzz targets (fuzz/) call this.
ImageDataset decode_cifar_batch(std::string_view bytes, const std::string& name_for_errors,
                                CifarLayout layout);

/// The ten CIFAR-10 class names in label order (airplane ... truck).
const std::vector<std::string>& cifar10_class_names();

/// Non-empty lines of a names file (batches.meta.txt, fine_label_names.txt), trimmed and made
/// printable (printable_name: control characters and bytes outside UTF-8 as `\xNN`); {} if absent.
/// Throws naming the path if it exists but is not a regular file (a FIFO would block the read).
std::vector<std::string> read_class_names_file(const std::string& path);

/// A CIFAR-10 directory (data_batch_{1..5}.bin plus test_batch.bin and/or test_first1000.bin).
/// Splits:
///   "train"          data_batch_1-4 (40000): the default protocol trains here ...
///   "val"            data_batch_5 (10000)   ... and validates here;
///   "trainval"       data_batch_1-5 (50000), the official training set;
///   "test"           test_batch.bin (10000) if present, else test_first1000.bin -- and then the
///                    dataset's split is "test_first1000", so reports say which test set it was;
///   "test_first1000" test_first1000.bin, or the first 1000 records of test_batch.bin.
/// Throws naming the missing file.
ImageDataset load_cifar10(const std::string& dir, const std::string& split);

/// A CIFAR-100 directory (train.bin, test.bin, optional fine_label_names.txt /
/// coarse_label_names.txt). Splits "train" and "test"; coarse selects the 20 superclass labels.
ImageDataset load_cifar100(const std::string& dir, const std::string& split, bool coarse = false);

}  // namespace bnlab

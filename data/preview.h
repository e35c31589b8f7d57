// Looking at a dataset: a PNG grid of sample images labelled with their class names (drawn in a
// built-in 3x5 pixel font, and listed in a sidecar text file), and summary statistics (sizes, class
// balance, per-channel mean/std) for `bnlab data show` / `bnlab data info`.
// Reference: stb_image_write (https://github.com/nothings/stb).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace bnlab {

/// Layout of write_sample_grid's PNG.
struct GridOptions {
  int64_t columns = 0;   ///< 0: ceil(sqrt(n))
  int64_t scale = 0;     ///< integer magnification; 0: the smallest making each image >= 96 px wide
  bool shuffle = false;  ///< a seeded random sample of n images instead of the first n
  uint64_t seed = 0;     ///< seed of the sample when shuffle is on
  bool sidecar = true;   ///< also write the listing (sample_grid_listing_path): row, column,
                         ///< dataset index, label, class name
};

/// Writes an RGB PNG grid of min(n, size) images with each image's class name (upper-cased,
/// truncated to the cell width; characters outside A-Z 0-9 - / _ . become '?') under it. Returns
/// the number drawn. Both files are replaced atomically (write_file_atomic): a failed write throws
/// naming the file and the OS's reason, and leaves no partial file behind. A `path` that is a
/// stream
/// (/dev/stdout, a FIFO, a device) gets the PNG alone. A grid of more images than
/// max_sample_grid_images is refused before anything is allocated.
int64_t write_sample_grid(const ImageDataset& data, int64_t n, const std::string& path,
                          const GridOptions& options = {});

/// The most images of `data` write_sample_grid can put in one PNG with `options` (at most
/// data.size()): stb_image_write's sizes are ints, so a grid of more is refused before it is drawn.
int64_t max_sample_grid_images(const ImageDataset& data, const GridOptions& options = {});

/// Where write_sample_grid lists the labels of a grid written to `path`: "<file>.txt" beside the
/// file the PNG lands in (for a symlink, beside its target, not the link), or empty when `path` is
/// a stream: "/dev/null.txt" or "/dev/stdout.txt" would be a file nobody asked for in /dev.
std::string sample_grid_listing_path(const std::string& path);

/// What compute_info reports about a dataset.
struct DatasetInfo {
  std::string name;                      ///< ImageDataset::name
  std::string split;                     ///< ImageDataset::split
  int64_t size = 0;                      ///< N
  int64_t channels = 0;                  ///< C
  int64_t height = 0;                    ///< H
  int64_t width = 0;                     ///< W
  std::vector<std::string> class_names;  ///< class index -> name
  std::vector<int64_t> class_counts;     ///< images per class
  std::vector<double> mean;              ///< per channel, pixel / 255 units
  std::vector<double> std;  ///< per channel, pixel / 255 units (population std over all pixels)
  int64_t pixel_bytes = 0;  ///< memory held by the uint8 pixels
};

/// Sizes, class counts and per-channel mean/std. Sums are exact integers, so the result does not
/// depend on the thread count.
DatasetInfo compute_info(const ImageDataset& data);

/// A few human-readable lines: shape, size, memory, mean/std per channel, and a class balance
/// table.
std::string format_info(const DatasetInfo& info);

}  // namespace bnlab

// Image folders: root/<class>/<image>.{png,jpg,jpeg,bmp} (case-insensitive extensions), read with
// stb_image into a uint8 ImageDataset [N, C, H, W].
//
// Classes are the sub-directories of root sorted by name (byte order), so label k is the k-th name;
// images within a class are sorted by file name; other files are ignored. Channels: 1 if every
// image is grayscale (or gray + alpha), else 3 (gray replicated; alpha dropped), unless forced by
// options. Size: every image must have the same size unless options give a fixed height and width,
// to which each image is resized (stb_image_resize). A file that stb_image cannot read is reported
// with its path and stb's reason. Reference: torchvision.datasets.ImageFolder
// (https://pytorch.org/vision/stable/datasets.html); stb_image (https://github.com/nothings/stb).
#pragma once

#include <cstdint>
#include <string>

#include "data/dataset.h"

namespace bnlab {

struct ImageFolderOptions {
  int64_t channels = 0;  // 0 = automatic (1 if all images are grayscale, else 3); or 1 or 3
  int64_t height =
      0;  // with width: resize every image to height x width; 0 = keep (sizes must agree)
  int64_t width = 0;
};

// Loads root/<class>/* as above; the dataset's name is root's last path component, split "".
ImageDataset load_image_folder(const std::string& root, const ImageFolderOptions& options = {});

}  // namespace bnlab

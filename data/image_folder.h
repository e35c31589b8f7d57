// Image folders: root/<class>/<image>.{png,jpg,jpeg,bmp} (case-insensitive extensions), read with
// stb_image into a uint8 ImageDataset [N, C, H, W].
//
// Classes are the sub-directories of root sorted by name (byte order), so label k is the k-th name
// (kept as printable_name makes it: a byte outside UTF-8 or a control character as \xNN).
// A class's images are its image files at any depth below its folder, symbolic links followed, in
// torchvision's order: directories by path, each one's files by name; other files are ignored. An
// entry named like an image that is not a file (a FIFO, socket, device or dangling link), a
// directory that cannot be listed and a link back to a folder above it are errors. A class
// directory without images is an error (torchvision raises FileNotFoundError), unless options allow
// empty classes (torchvision's allow_empty=True): they then keep their label and hold no images.
// Channels: 1 if every image is grayscale (or gray + alpha), else 3 (gray replicated; alpha
// dropped), unless forced by options. Size: every image must have the same size unless options
// give a fixed height and width, to which each image is resized (stb_image_resize). A file that
// stb_image cannot read is reported with its path and stb's reason.
//
// Only PNG, JPEG and BMP content is passed to stb (checked from the first bytes, whatever the
// extension), so the other formats stb_image knows stay out of reach. Images over kMaxImagePixels
// (a corrupt or hostile header) are refused before anything is decoded, and so is a folder whose
// decoded dataset (images x C x H x W bytes, known from the headers) exceeds
// options.max_total_bytes. JPEG Huffman tables are checked before stb_image sees them (its 2.27
// release, Debian 12's, writes out of bounds on a table with more than 256 codes), and PNG IDAT
// chunks of length zero, for which it calls memcpy with a null pointer, are dropped from the bytes
// it decodes.
// Reference: torchvision.datasets.ImageFolder (https://pytorch.org/vision/stable/datasets.html);
// stb_image (https://github.com/nothings/stb).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"

namespace bnlab {

/// How load_image_folder converts the images it finds.
struct ImageFolderOptions {
  int64_t channels = 0;  ///< 0 = automatic (1 if all images are grayscale, else 3); or 1 or 3
  int64_t height =
      0;  ///< with width: resize every image to height x width; 0 = keep (sizes must agree)
  int64_t width = 0;  ///< see height
  /// The largest decoded dataset accepted, in bytes (images x channels x height x width), checked
  /// from the image headers before any pixel is decoded. A handful of small, highly compressible
  /// files can claim gigabytes (a 65 KB PNG decodes to 64 MiB at 8192 x 8192); raise it for a
  /// larger dataset that fits in memory.
  int64_t max_total_bytes = int64_t{4} << 30;
  /// Keep a class directory that holds no images as a class (its label is used by no image),
  /// instead of refusing the folder; torchvision's ImageFolder(allow_empty=True).
  bool allow_empty = false;
};

/// The largest image accepted, in pixels (width * height): 8192 x 8192. stb_image itself allows
/// 2^24 per side, so a 40-byte header could make it allocate gigabytes.
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

/// An image file's header facts (image_info).
struct ImageInfo {
  int64_t width = 0;     ///< pixels per row
  int64_t height = 0;    ///< rows
  int64_t channels = 0;  ///< channels as stored: 1 gray, 2 gray+alpha, 3, 4
};

/// A decoded image (decode_image).
struct DecodedImage {
  int64_t channels = 0;         ///< C
  int64_t height = 0;           ///< H
  int64_t width = 0;            ///< W
  std::vector<uint8_t> pixels;  ///< [channels, height, width]
};

/// An image file's size and channels from its header, without decoding; throws (naming
/// `name_for_errors`) for content that is not PNG, JPEG or BMP, an unreadable header, or an image
/// over kMaxImagePixels.
ImageInfo image_info(std::string_view bytes, const std::string& name_for_errors);

/// Decodes an image file's bytes to `channels` (1 or 3) planes, resized to height x width when both
/// are > 0 (else kept at the image's size); the image folder loader's decoder, and what fuzz/
/// tests.
DecodedImage decode_image(std::string_view bytes, const std::string& name_for_errors,
                          int64_t channels, int64_t height = 0, int64_t width = 0);

/// Loads `root/<class>/**` as above; the dataset's name is root's last path component, split "".
ImageDataset load_image_folder(const std::string& root, const ImageFolderOptions& options = {});

namespace detail {

// load_image_folder with the default options, for load_dataset (folder:PATH), whose callers cannot
// set them: its errors suggest no ImageFolderOptions setting.
ImageDataset load_image_folder_without_options(const std::string& root);

// What decode_image hands stb_image for a PNG with zero-length IDAT chunks (after the first chunk):
// a copy without them, since stb 2.27 calls memcpy(NULL, src, 0) for a zero-length first IDAT
// (image_folder.cpp says more). "" when `bytes` is not a PNG or has no such chunk, so no copy is
// made. Expects chunks whose lengths check_png_chunks has accepted (image_info runs it first).
std::string png_without_empty_idat(std::string_view bytes);

}  // namespace detail

}  // namespace bnlab

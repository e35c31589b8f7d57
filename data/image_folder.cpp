// Image-folder loader on stb_image: a header pass (stbi_info: sizes, channel counts, unreadable
// files) decides the dataset shape before one allocation; then a decode pass fills it. Reference:
// https://github.com/nothings/stb (stb_image.h, stb_image_resize.h). libstb provides the
// implementations, so no STB_*_IMPLEMENTATION is defined here.
#include "data/image_folder.h"

#include <stb_image.h>
#include <stb_image_resize.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"

namespace bnlab {

namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

struct Entry {
  std::string path;
  int64_t label;
  int width, height, comp;
};

const char* stb_reason() {
  const char* r = stbi_failure_reason();
  return r != nullptr ? r : "unknown error";
}

}  // namespace

ImageDataset load_image_folder(const std::string& root_str, const ImageFolderOptions& options) {
  const fs::path root(root_str);
  std::error_code ec;
  BNLAB_CHECK(fs::is_directory(root, ec), "image_folder: ", root_str,
              " not found or not a directory");
  BNLAB_CHECK(options.channels == 0 || options.channels == 1 || options.channels == 3,
              "image_folder: channels must be 0 (auto), 1 or 3, got ", options.channels);
  BNLAB_CHECK(
      (options.height == 0) == (options.width == 0) && options.height >= 0 && options.width >= 0,
      "image_folder: give both height and width (or neither), got ", options.height, "x",
      options.width);

  // Classes: sub-directories sorted by name.
  std::vector<std::string> classes;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory()) classes.push_back(entry.path().filename().string());
  }
  std::sort(classes.begin(), classes.end());
  BNLAB_CHECK(!classes.empty(), "image_folder: ", root_str,
              " has no class sub-directories (expected root/<class>/<image>.png|jpg|bmp)");

  // Header pass: every image's size and channel count, without decoding.
  std::vector<Entry> entries;
  for (size_t k = 0; k < classes.size(); ++k) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(root / classes[k])) {
      if (entry.is_regular_file() && is_image_file(entry.path()))
        files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    for (const std::string& f : files) {
      Entry e{f, static_cast<int64_t>(k), 0, 0, 0};
      BNLAB_CHECK(stbi_info(f.c_str(), &e.width, &e.height, &e.comp) == 1,
                  "image_folder: cannot read ", f, " (", stb_reason(), ")");
      entries.push_back(e);
    }
  }
  BNLAB_CHECK(!entries.empty(), "image_folder: ", root_str,
              " holds no .png/.jpg/.jpeg/.bmp images in its class directories");

  int64_t C = options.channels;
  if (C == 0) {
    bool all_gray =
        std::all_of(entries.begin(), entries.end(), [](const Entry& e) { return e.comp <= 2; });
    C = all_gray ? 1 : 3;
  }
  int64_t H = options.height, W = options.width;
  const bool resize = H > 0;
  if (!resize) {
    H = entries[0].height;
    W = entries[0].width;
    for (const Entry& e : entries) {
      BNLAB_CHECK(e.height == H && e.width == W, "image_folder: ", e.path, " is ", e.width, "x",
                  e.height, " but ", entries[0].path, " is ", W, "x", H,
                  "; give a fixed size (height, width) to resize every image");
    }
  }

  ImageDataset out;
  out.name =
      root.filename().empty() ? root.parent_path().filename().string() : root.filename().string();
  out.channels = C;
  out.height = H;
  out.width = W;
  out.class_names = classes;
  const int64_t CHW = C * H * W;
  out.pixels.resize(entries.size() * static_cast<size_t>(CHW));
  out.labels.resize(entries.size());

  // Decode pass: stb converts to C interleaved channels (HWC); we store planes (CHW).
  std::vector<uint8_t> resized;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    int w = 0, h = 0, comp = 0;
    std::unique_ptr<uint8_t, void (*)(void*)> img(
        stbi_load(e.path.c_str(), &w, &h, &comp, static_cast<int>(C)), stbi_image_free);
    BNLAB_CHECK(img != nullptr, "image_folder: cannot decode ", e.path, " (", stb_reason(), ")");
    BNLAB_CHECK(resize || (h == H && w == W), "image_folder: ", e.path, " decoded as ", w, "x", h,
                ", expected ", W, "x", H);
    const uint8_t* hwc = img.get();
    if (resize && (h != H || w != W)) {
      resized.resize(static_cast<size_t>(CHW));
      BNLAB_CHECK(stbir_resize_uint8(hwc, w, h, 0, resized.data(), static_cast<int>(W),
                                     static_cast<int>(H), 0, static_cast<int>(C)) == 1,
                  "image_folder: cannot resize ", e.path, " from ", w, "x", h, " to ", W, "x", H);
      hwc = resized.data();
    }
    uint8_t* chw = out.pixels.data() + i * static_cast<size_t>(CHW);
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t p = 0; p < H * W; ++p) chw[c * H * W + p] = hwc[p * C + c];
    }
    out.labels[i] = e.label;
  }
  return out;
}

}  // namespace bnlab

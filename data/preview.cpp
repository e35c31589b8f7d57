// Sample grids (stb_image_write PNG + a 3x5 bitmap font) and dataset statistics.
// Reference: https://github.com/nothings/stb (stb_image_write.h; libstb provides the
// implementation).
#include "data/preview.h"

#include <stb_image_write.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "core/error.h"
#include "core/io.h"
#include "core/random.h"

namespace bnlab {

namespace {

// 3x5 glyphs: five rows top to bottom, three bits per row (4 = left column, 1 = right column).
struct Glyph {
  char ch;
  uint8_t rows[5];
};

constexpr Glyph kFont[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}}, {'3', {7, 1, 7, 1, 7}},
    {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}}, {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}},
    {'8', {7, 5, 7, 5, 7}}, {'9', {7, 5, 7, 1, 7}}, {'A', {2, 5, 7, 5, 5}}, {'B', {6, 5, 6, 5, 6}},
    {'C', {3, 4, 4, 4, 3}}, {'D', {6, 5, 5, 5, 6}}, {'E', {7, 4, 6, 4, 7}}, {'F', {7, 4, 6, 4, 4}},
    {'G', {3, 4, 5, 5, 3}}, {'H', {5, 5, 7, 5, 5}}, {'I', {7, 2, 2, 2, 7}}, {'J', {1, 1, 1, 5, 2}},
    {'K', {5, 5, 6, 5, 5}}, {'L', {4, 4, 4, 4, 7}}, {'M', {5, 7, 7, 5, 5}}, {'N', {6, 5, 5, 5, 5}},
    {'O', {2, 5, 5, 5, 2}}, {'P', {6, 5, 6, 4, 4}}, {'Q', {2, 5, 5, 6, 3}}, {'R', {6, 5, 6, 5, 5}},
    {'S', {3, 4, 2, 1, 6}}, {'T', {7, 2, 2, 2, 2}}, {'U', {5, 5, 5, 5, 7}}, {'V', {5, 5, 5, 5, 2}},
    {'W', {5, 5, 7, 7, 5}}, {'X', {5, 5, 2, 5, 5}}, {'Y', {5, 5, 2, 2, 2}}, {'Z', {7, 1, 2, 4, 7}},
    {'-', {0, 0, 7, 0, 0}}, {'/', {1, 1, 2, 4, 4}}, {'_', {0, 0, 0, 0, 7}}, {'.', {0, 0, 0, 0, 2}},
    {' ', {0, 0, 0, 0, 0}}, {'?', {7, 1, 2, 0, 2}},
};

const Glyph& glyph(char ch) {
  char up = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  for (const Glyph& g : kFont) {
    if (g.ch == up) return g;
  }
  return kFont[sizeof(kFont) / sizeof(kFont[0]) - 1];  // '?'
}

// An RGB canvas [height, width, 3].
struct Canvas {
  int64_t width, height;
  std::vector<uint8_t> rgb;
  void set(int64_t x, int64_t y, uint8_t r, uint8_t g, uint8_t b) {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    uint8_t* p = rgb.data() + (y * width + x) * 3;
    p[0] = r;
    p[1] = g;
    p[2] = b;
  }
};

// Draws `text` with its top-left at (x, y), each font pixel a ts x ts square, at most max_chars
// chars.
void draw_text(Canvas& canvas, const std::string& text, int64_t x, int64_t y, int64_t ts,
               int64_t max_chars) {
  const auto count = std::min<int64_t>(static_cast<int64_t>(text.size()), max_chars);
  for (int64_t i = 0; i < count; ++i) {
    const Glyph& g = glyph(text[static_cast<size_t>(i)]);
    for (int64_t row = 0; row < 5; ++row) {
      for (int64_t col = 0; col < 3; ++col) {
        if (((g.rows[row] >> (2 - col)) & 1) == 0) continue;
        for (int64_t dy = 0; dy < ts; ++dy) {
          for (int64_t dx = 0; dx < ts; ++dx) {
            canvas.set(x + (i * 4 + col) * ts + dx, y + row * ts + dy, 235, 235, 235);
          }
        }
      }
    }
  }
}

// Where the images of a grid of n go: cols x rows cells of cell_w x (img_h + label_h) pixels.
struct GridLayout {
  int64_t cols, rows, scale, cell_w, img_h, ts, label_h, gap, width, height;
};

GridLayout grid_layout(const ImageDataset& data, int64_t n, const GridOptions& options) {
  GridLayout g{};
  const int64_t H = data.height, W = data.width;
  g.cols = options.columns > 0 ? std::min(options.columns, n)
                               : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  g.rows = (n + g.cols - 1) / g.cols;
  g.scale = options.scale > 0 ? options.scale : std::max<int64_t>(1, (96 + W - 1) / W);
  g.cell_w = W * g.scale;
  g.img_h = H * g.scale;
  g.ts = g.cell_w >= 80 ? 2 : 1;  // font pixel size
  g.label_h = 7 * g.ts;           // 5 glyph rows plus a margin above and below
  g.gap = 4;
  g.width = g.gap + g.cols * (g.cell_w + g.gap);
  g.height = g.gap + g.rows * (g.img_h + g.label_h + g.gap);
  return g;
}

// stb_image_write keeps sizes in ints. The filtered image ((3 * width + 1) * height bytes) is one
// allocation; its deflate stream, up to 9/8 of it for incompressible pixels (fixed Huffman codes,
// 9 bits for half the literals), grows in a buffer whose capacity goes 2, 5, 11, ..., 3 * 2^k - 1
// and overflows an int past 3 * 2^29 - 1. So the filtered image may hold 8/9 of that, less the
// stream's few framing bytes, whatever the pixels are.
bool png_encodable(const GridLayout& g) {
  constexpr int64_t kMaxFiltered = (3 * (int64_t{1} << 29) - 1) / 9 * 8 - 64;
  if (g.width > kMaxFiltered || g.height > kMaxFiltered) return false;
  return (3 * g.width + 1) <= kMaxFiltered / g.height;
}

}  // namespace

int64_t max_sample_grid_images(const ImageDataset& data, const GridOptions& options) {
  // The grid only grows with n (more columns, then more rows): bisect for the last that encodes.
  int64_t lo = 0, hi = data.size();
  while (lo < hi) {
    const int64_t mid = hi - (hi - lo) / 2;
    if (png_encodable(grid_layout(data, mid, options)))
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

int64_t write_sample_grid(const ImageDataset& data, int64_t n, const std::string& path,
                          const GridOptions& options) {
  check_dataset(data, "write_sample_grid");
  BNLAB_CHECK(n >= 1, "write_sample_grid: n is ", n, "; must be at least 1");
  BNLAB_CHECK(data.channels == 1 || data.channels == 3, "write_sample_grid: ", data.title(),
              " has ", data.channels, " channels; can draw 1 or 3");
  n = std::min(n, data.size());

  // Which images: the first n, or a seeded sample.
  std::vector<int64_t> picks(static_cast<size_t>(data.size()));
  for (size_t i = 0; i < picks.size(); ++i) picks[i] = static_cast<int64_t>(i);
  if (options.shuffle) {
    Rng rng(options.seed);
    for (size_t i = picks.size() - 1; i > 0; --i) {
      std::swap(picks[i], picks[rng.below(static_cast<uint32_t>(i + 1))]);
    }
  }
  picks.resize(static_cast<size_t>(n));

  const int64_t C = data.channels, H = data.height, W = data.width;
  const GridLayout layout = grid_layout(data, n, options);
  const auto [cols, rows, scale, cell_w, img_h, ts, label_h, gap, width, height] = layout;
  // Before the canvas: one too large to encode would be allocated (gigabytes) only to fail.
  if (!png_encodable(layout)) {
    BNLAB_FAIL("write_sample_grid: a grid of ", n, " images of ", H, "x", W, " is ", width, "x",
               height, " pixels, too large to encode as a PNG; at most ",
               max_sample_grid_images(data, options), " images of this size fit in one");
  }
  const int64_t max_chars = std::max<int64_t>(1, (cell_w + ts) / (4 * ts));

  Canvas canvas{width, height, {}};
  canvas.rgb.assign(static_cast<size_t>(canvas.width * canvas.height * 3), 24);

  for (int64_t k = 0; k < n; ++k) {
    const int64_t idx = picks[static_cast<size_t>(k)];
    const int64_t x0 = gap + (k % cols) * (cell_w + gap);
    const int64_t y0 = gap + (k / cols) * (img_h + label_h + gap);
    const uint8_t* img = data.image(idx);
    // Nearest-neighbour upscaling; gray is replicated into R, G and B.
    for (int64_t y = 0; y < img_h; ++y) {
      for (int64_t x = 0; x < cell_w; ++x) {
        const int64_t p = (y / scale) * W + (x / scale);
        const uint8_t r = img[p];
        const uint8_t g = C == 3 ? img[H * W + p] : r;
        const uint8_t b = C == 3 ? img[2 * H * W + p] : r;
        canvas.set(x0 + x, y0 + y, r, g, b);
      }
    }
    const std::string& name =
        data.class_names[static_cast<size_t>(data.labels[static_cast<size_t>(idx)])];
    draw_text(canvas, name, x0, y0 + img_h + ts, ts, max_chars);
  }

  // Encoded in memory and written by write_file_atomic: stbi_write_png's own file output ignores
  // failed writes (a full disk left a truncated grid.png and a "wrote" message).
  std::string png;
  const int ok = stbi_write_png_to_func(
      [](void* context, void* data, int size) {
        static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                                   static_cast<size_t>(size));
      },
      &png, static_cast<int>(canvas.width), static_cast<int>(canvas.height), 3, canvas.rgb.data(),
      static_cast<int>(canvas.width * 3));
  BNLAB_CHECK(ok != 0, "write_sample_grid: cannot encode ", path, " as PNG (", canvas.width, "x",
              canvas.height, " pixels)");
  write_file_atomic(path, png);

  const std::string listing = sample_grid_listing_path(path);
  if (options.sidecar && !listing.empty()) {
    std::ostringstream out;
    out << "# " << path << ": " << data.title() << ", " << n << " images in " << rows << " rows x "
        << cols << " columns\n# row col index label class\n";
    for (int64_t k = 0; k < n; ++k) {
      const int64_t idx = picks[static_cast<size_t>(k)];
      const int64_t y = data.labels[static_cast<size_t>(idx)];
      out << k / cols << " " << k % cols << " " << idx << " " << y << " "
          << data.class_names[static_cast<size_t>(y)] << "\n";
    }
    write_file_atomic(listing, out.str());
  }
  return n;
}

std::string sample_grid_listing_path(const std::string& path) {
  const std::string file = write_file_target(path);
  return file.empty() ? file : file + ".txt";
}

DatasetInfo compute_info(const ImageDataset& data) {
  check_dataset(data, "compute_info");
  DatasetInfo info;
  info.name = data.name;
  info.split = data.split;
  info.size = data.size();
  info.channels = data.channels;
  info.height = data.height;
  info.width = data.width;
  info.class_names = data.class_names;
  info.class_counts.assign(data.class_names.size(), 0);
  for (int64_t y : data.labels) ++info.class_counts[static_cast<size_t>(y)];
  info.pixel_bytes = static_cast<int64_t>(data.pixels.size());

  const int64_t N = data.size(), C = data.channels, HW = data.height * data.width;
  const uint8_t* px = data.pixels.data();
  for (int64_t c = 0; c < C; ++c) {
    // Integer sums are exact (and so independent of the reduction order): 255^2 * 2^40 < 2^64.
    uint64_t sum = 0, sum_sq = 0;
#pragma omp parallel for reduction(+ : sum, sum_sq) schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const uint8_t* plane = px + (i * C + c) * HW;
      uint64_t s = 0, ss = 0;
      for (int64_t p = 0; p < HW; ++p) {
        s += plane[p];
        ss += uint64_t{plane[p]} * plane[p];
      }
      sum += s;
      sum_sq += ss;
    }
    const double count = static_cast<double>(N) * static_cast<double>(HW);
    const double mean = static_cast<double>(sum) / count;
    const double var = std::max(0.0, static_cast<double>(sum_sq) / count - mean * mean);
    info.mean.push_back(mean / 255.0);
    info.std.push_back(std::sqrt(var) / 255.0);
  }
  return info;
}

std::string format_info(const DatasetInfo& info) {
  std::ostringstream os;
  os << (info.split.empty() ? info.name : info.name + "/" + info.split) << ": " << info.size
     << " images [" << info.channels << ", " << info.height << ", " << info.width << "], "
     << info.class_names.size() << " classes, " << std::fixed << std::setprecision(1)
     << static_cast<double>(info.pixel_bytes) / (1024.0 * 1024.0) << " MiB as uint8\n";
  os << std::setprecision(4);
  os << "mean per channel: ";
  for (size_t c = 0; c < info.mean.size(); ++c) os << (c ? ", " : "") << info.mean[c];
  os << "\nstd per channel:  ";
  for (size_t c = 0; c < info.std.size(); ++c) os << (c ? ", " : "") << info.std[c];
  os << "\nclass balance:\n";
  size_t width = 5;
  for (const std::string& name : info.class_names) width = std::max(width, name.size());
  for (size_t k = 0; k < info.class_names.size(); ++k) {
    const double share = info.size > 0 ? 100.0 * static_cast<double>(info.class_counts[k]) /
                                             static_cast<double>(info.size)
                                       : 0.0;
    os << "  " << std::setw(3) << k << "  " << std::left << std::setw(static_cast<int>(width))
       << info.class_names[k] << std::right << "  " << std::setw(7) << info.class_counts[k] << "  "
       << std::setprecision(1) << std::setw(5) << share << "%\n";
  }
  return os.str();
}

}  // namespace bnlab

// Writes the fuzz seed corpora, tests/fuzz/corpus/<target>/<seed>: small valid files and edge cases
// for each driver in fuzz/drivers.h (whose comments give the input layouts). The seeds are
// committed; this program documents how they were made and remakes them:
//   scripts/fuzz.sh --make-corpus
// Standalone on purpose (zlib and Debian's libstb only), so it builds with plain g++.
#include <stb_image_write.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

fs::path root;

void seed(const std::string& target, const std::string& name, const Bytes& bytes) {
  fs::create_directories(root / target);
  std::ofstream out(root / target / name, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

Bytes gzip(const Bytes& in) {
  z_stream zs{};
  deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  Bytes out(deflateBound(&zs, in.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// The drivers' mode byte (a string literal "\x00" would be empty).
Bytes mode(int m) { return Bytes(1, static_cast<char>(m)); }

Bytes be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

Bytes idx(uint8_t type, const std::vector<uint32_t>& dims, size_t data_bytes) {
  Bytes f = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) f += be32(d);
  for (size_t i = 0; i < data_bytes; ++i) f += static_cast<char>(i * 7 % 256);
  return f;
}

void idx_seeds() {
  const Bytes images = idx(8, {2, 3, 4}, 24), labels = idx(8, {5}, 0) + Bytes{3, 1, 4, 1, 5};
  seed("idx", "images", mode(0) + images);
  seed("idx", "labels", mode(1) + labels);
  seed("idx", "images-gzip-wrapped", mode(2) + images);
  seed("idx", "labels-gzip-wrapped", mode(3) + labels);
  seed("idx", "images-gz", mode(0) + gzip(images));
  seed("idx", "images-gz-two-members",
       mode(0) + gzip(images.substr(0, 20)) + gzip(images.substr(20)));
  seed("idx", "images-gz-trailing-garbage", mode(0) + gzip(images) + "junk");
  Bytes gz = gzip(images);
  seed("idx", "images-gz-cut", mode(0) + gz.substr(0, gz.size() / 2));
  seed("idx", "absurd-count", mode(0) + idx(8, {1u << 31, 28, 28}, 16));
  seed("idx", "absurd-count-gz", mode(2) + idx(8, {1u << 31, 28, 28}, 16));
  seed("idx", "overflow", mode(0) + idx(8, {0xffffffffu, 0xffffffffu, 0xffffffffu}, 0));
  seed("idx", "truncated", mode(0) + idx(8, {10, 4, 5}, 150));
  seed("idx", "trailing", mode(0) + idx(8, {2, 3, 3}, 19));
  seed("idx", "zero-dim", mode(1) + idx(8, {0}, 0));
  seed("idx", "float-type", mode(0) + idx(0x0d, {2, 3, 3}, 18));
  seed("idx", "short", Bytes("\x00\x00\x00\x08\x03\x00", 6));
}

// CIFAR-10 records (label_bytes 1: `label`) or CIFAR-100 ones (2: coarse label `label`, fine label
// `fine`), each record's labels one more than the previous record's.
Bytes cifar_records(int count, int label_bytes, uint8_t label, uint8_t fine = 0) {
  Bytes f;
  for (int r = 0; r < count; ++r) {
    f += static_cast<char>(label + r);
    if (label_bytes == 2) f += static_cast<char>(fine + r);
    for (int p = 0; p < 3072; ++p) f += static_cast<char>((r * 40 + p) % 256);
  }
  return f;
}

void cifar_seeds() {
  seed("cifar", "cifar10-one", mode(0) + cifar_records(1, 1, 3));
  seed("cifar", "cifar100-fine-one", mode(1) + cifar_records(1, 2, 12, 42));
  seed("cifar", "cifar100-coarse-one", mode(2) + cifar_records(1, 2, 7, 7));
  seed("cifar", "cifar100-fine-bad-coarse", mode(1) + cifar_records(1, 2, 20, 42));
  seed("cifar", "cifar10-two-gzip-wrapped", mode(4) + cifar_records(2, 1, 5));
  seed("cifar", "cifar10-two-gz", mode(0) + gzip(cifar_records(2, 1, 5)));
  seed("cifar", "cifar10-bad-label", mode(0) + cifar_records(1, 1, 10));
  seed("cifar", "cifar10-truncated", mode(0) + cifar_records(1, 1, 3).substr(0, 3000));
  seed("cifar", "empty", mode(0));
}

Bytes safetensors(const std::string& header, const Bytes& data) {
  Bytes h = header;
  while (h.size() % 8) h += ' ';
  uint64_t n = h.size();
  return Bytes(reinterpret_cast<const char*>(&n), 8) + h + data;
}

Bytes floats(std::vector<float> v) {
  return Bytes(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

void safetensors_seeds() {
  seed(
      "safetensors", "f32-with-metadata",
      safetensors(
          R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})",
          floats({1, 2, 3, 4, 5, 6})));
  int64_t i64[2] = {7, -3};
  seed(
      "safetensors", "i64-and-f32",
      safetensors(
          R"({"n":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}})",
          Bytes(reinterpret_cast<const char*>(i64), 16) + floats({0.5f})));
  double f64[2] = {1.5, -2.25};
  seed("safetensors", "f64",
       safetensors(R"({"d":{"dtype":"F64","shape":[1,2],"data_offsets":[0,16]}})",
                   Bytes(reinterpret_cast<const char*>(f64), 16)));
  seed(
      "safetensors", "empty-and-scalar",
      safetensors(
          R"({"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
          floats({3})));
  seed("safetensors", "no-tensors", safetensors("{}", ""));
  Bytes huge = safetensors(R"({})", "");
  huge[7] = 0x7f;
  seed("safetensors", "huge-header-length", huge);
  seed("safetensors", "offsets-past-end",
       safetensors(R"({"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}})",
                   floats({1})));
  seed("safetensors", "shape-overflow",
       safetensors(
           R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})",
           floats({1})));
  seed(
      "safetensors", "overlap",
      safetensors(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
          floats({1, 2})));
  seed("safetensors", "bf16",
       safetensors(R"({"h":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", "abcd"));
  seed(
      "safetensors", "duplicate-key",
      safetensors(
          R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
          floats({1})));
  seed("safetensors", "not-json", safetensors("{\"w\": [1, 2", "x"));
}

void to_bytes(void* ctx, void* data, int size) {
  static_cast<Bytes*>(ctx)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}

Bytes be32s(uint32_t v) { return be32(v); }

// A PNG with only the signature and an IHDR chunk (correct CRC) claiming w x h: a header to
// stbi_info, no pixels.
Bytes png_header_only(uint32_t w, uint32_t h) {
  Bytes ihdr = "IHDR" + be32s(w) + be32s(h) + Bytes{8, 2, 0, 0, 0};
  uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(ihdr.data()), static_cast<uInt>(ihdr.size())));
  return Bytes("\x89PNG\r\n\x1a\n", 8) + be32s(13) + ihdr + be32s(crc);
}

void image_seeds() {
  std::vector<uint8_t> px(8 * 8 * 4);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 37 % 256);
  Bytes png_gray, png_rgb, png_rgba, bmp, jpg, jpg_gray;
  stbi_write_png_to_func(to_bytes, &png_gray, 4, 3, 1, px.data(), 4);
  stbi_write_png_to_func(to_bytes, &png_rgb, 5, 4, 3, px.data(), 15);
  stbi_write_png_to_func(to_bytes, &png_rgba, 3, 3, 4, px.data(), 12);
  stbi_write_bmp_to_func(to_bytes, &bmp, 5, 4, 3, px.data());
  stbi_write_jpg_to_func(to_bytes, &jpg, 8, 8, 3, px.data(), 90);
  stbi_write_jpg_to_func(to_bytes, &jpg_gray, 8, 8, 1, px.data(), 50);
  seed("image", "png-gray", mode(0) + png_gray);
  seed("image", "png-rgb", mode(1) + png_rgb);
  seed("image", "png-rgba-resized", Bytes("\x03\x07\x05", 3) + png_rgba);
  seed("image", "bmp-rgb", mode(1) + bmp);
  seed("image", "bmp-resized-gray", Bytes("\x02\x02\x09", 3) + bmp);
  seed("image", "jpeg-rgb", mode(1) + jpg);
  seed("image", "jpeg-gray-resized", Bytes("\x03\x1f\x00", 3) + jpg_gray);
  seed("image", "png-header-claims-10000x10000", mode(1) + png_header_only(10000, 10000));
  seed("image", "png-truncated", mode(1) + png_rgb.substr(0, png_rgb.size() / 2));
  seed("image", "gif-content", mode(1) + Bytes("GIF89a\x01\x00\x01\x00\x00\x00\x00;", 14));
  seed("image", "text", mode(1) + "hello, not an image\n");
}

void grid_seeds() {
  seed("grid", "fig1", "norm=none,batch");
  seed("grid", "two-factors", "norm=none,batch\nlr-mult=1,5,30");
  seed("grid", "preset-lr", "preset lr");
  seed("grid", "preset-and-vary", "preset fig1\ndropout=0,0.5");
  seed("grid", "init-values", "init=normal:0.01,normal:0.1,xavier-uniform");
  seed("grid", "slug-collision", "dataset=folder:a/b,folder:a_b");
  seed("grid", "duplicate-value", "norm=batch,batch");
  seed("grid", "repeated-factor", "norm=none\nnorm=batch");
  seed("grid", "bad-number", "lr=abc");
  seed("grid", "many",
       "batch-size=1,2,3,4,5,6,7,8,9,10\nlr-mult=1,2,3,4,5,6,7,8,9,10\n"
       "dropout=0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9\ngroups=1,2,3,4,5,6,7,8,9,10\n"
       "momentum=0,0.5,0.9");
  seed("grid", "unknown", "colour=red,blue");
  seed("grid", "empty-value", "norm=none,,batch");
}

void schedule_seeds() {
  const char* specs[][2] = {
      {"constant", "1000\nconstant"},
      {"step", "1000\nstep:100:0.5"},
      {"multistep", "1000\nmultistep:100,200:0.1"},
      {"exp", "1000\nexp:0.99"},
      {"exp-growing", "1000\nexp:2"},
      {"cosine", "1000\ncosine:0.001"},
      {"warmup-cosine", "1000\nwarmup:100:0.1+cosine"},
      {"warmup-only", "10\nwarmup:10"},
      {"cosine-no-room", "10\nwarmup:10+cosine"},
      {"zero-total", "0\ncosine"},
      {"step-zero", "1000\nstep:0"},
      {"multistep-unsorted", "1000\nmultistep:5,3"},
      {"warmup-twice", "1000\nwarmup:5+warmup:5"},
      {"huge-numbers", "9223372036854775807\nstep:9223372036854775807:1e308"},
      {"step-overflows", "8\nstep:1:1e30"},
      {"warmup-exp-overflows", "1000\nwarmup:100+exp:1.5"},
      {"cosine-eta-min-past-float", "1000\ncosine:1e39"},
  };
  for (const auto& s : specs) seed("schedule", s[0], s[1]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus OUT_DIR (tests/fuzz/corpus)\n");
    return 2;
  }
  root = argv[1];
  idx_seeds();
  cifar_seeds();
  safetensors_seeds();
  image_seeds();
  grid_seeds();
  schedule_seeds();
  return 0;
}

// The fuzz inputs replayed in the normal test suite: every seed (tests/fuzz/corpus/<target>/) and
// every kept finding (tests/fuzz/regressions/<target>/) goes through the same driver as in fuzz/
// (fuzz/drivers.h), which throws for anything but a valid result or a bnlab::Error naming the
// input. The table pins what each named input must give: loads fine, or an error containing a
// phrase.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "fuzz/drivers.h"

namespace {

namespace fs = std::filesystem;

struct Expect {
  const char* target;
  const char* dir;    // "corpus" or "regressions"
  const char* input;  // file name
  const char* error;  // nullptr: must load; else a phrase the error message must contain
};

// clang-format off
const Expect kExpected[] = {
    {"idx", "corpus", "images", nullptr},
    {"idx", "corpus", "labels-gzip-wrapped", nullptr},
    {"idx", "corpus", "images-gz", nullptr},
    {"idx", "corpus", "images-gz-two-members", nullptr},
    {"idx", "corpus", "images-gz-trailing-garbage", nullptr},
    {"idx", "corpus", "images-gz-cut", "fuzz-idx-file: corrupt gzip data after"},
    {"idx", "corpus", "absurd-count", "header says 2147483648 images of 28x28 (1683627180032 bytes), file holds 16 bytes of data"},
    {"idx", "corpus", "absurd-count-gz", "header says 2147483648 images of 28x28 (1683627180032 bytes), more than a "},
    {"idx", "corpus", "overflow", "images of 4294967295x4294967295, an absurd size"},
    {"idx", "corpus", "truncated", "header says 10 images of 4x5 (200 bytes), file holds 150 bytes"},
    {"idx", "corpus", "trailing", "file holds 19 bytes of data"},
    {"idx", "corpus", "zero-dim", "IDX label dimension 0 is 0"},
    {"idx", "corpus", "float-type", "IDX element type 13 (float32)"},
    {"idx", "corpus", "short", "too short for an IDX header"},
    {"cifar", "corpus", "cifar10-one", nullptr},
    {"cifar", "corpus", "cifar100-fine-one", nullptr},
    {"cifar", "corpus", "cifar100-coarse-one", nullptr},
    {"cifar", "corpus", "cifar100-fine-bad-coarse", "record 0 has coarse label 20, but CIFAR-100 coarse labels are 0-19"},
    {"cifar", "corpus", "cifar10-two-gz", nullptr},
    {"cifar", "corpus", "cifar10-bad-label", "record 0 has label 10"},
    {"cifar", "corpus", "cifar10-truncated", "file holds 3000 bytes, not a whole number of 3073-byte CIFAR-10 records"},
    {"cifar", "corpus", "empty", "file holds 0 bytes, not a non-empty sequence"},
    {"safetensors", "corpus", "f32-with-metadata", nullptr},
    {"safetensors", "corpus", "i64-and-f32", nullptr},
    {"safetensors", "corpus", "f64", nullptr},
    {"safetensors", "corpus", "empty-and-scalar", nullptr},
    {"safetensors", "corpus", "huge-header-length", "exceeds the 100000000-byte limit"},
    {"safetensors", "corpus", "offsets-past-end", "run past the end of the 4-byte data buffer"},
    {"safetensors", "corpus", "shape-overflow", "has too many elements"},
    {"safetensors", "corpus", "overlap", "overlap"},
    {"safetensors", "corpus", "bf16", "dtype \"BF16\" is not supported"},
    {"safetensors", "corpus", "duplicate-key", "duplicate key \"w\""},
    {"safetensors", "corpus", "not-json", "header is not valid JSON"},
    {"image", "corpus", "png-gray", nullptr},
    {"image", "corpus", "png-rgba-resized", nullptr},
    {"image", "corpus", "bmp-rgb", nullptr},
    {"image", "corpus", "jpeg-rgb", nullptr},
    {"image", "corpus", "jpeg-gray-resized", nullptr},
    {"image", "corpus", "png-header-claims-10000x10000", "fuzz-image.png is 10000x10000 pixels, over the limit"},
    {"image", "corpus", "gif-content", "not a PNG, JPEG or BMP file: starts with bytes 71 73 70 56"},
    {"image", "corpus", "text", "not a PNG, JPEG or BMP file"},
    // Found by fuzz_image: stb_image 2.27 wrote past a 257-entry array (UBSan: index 257 out of bounds).
    {"image", "regressions", "jpeg-dht-table-over-256-codes", "corrupt JPEG: a Huffman table declares"},
    // Found by fuzz_image (a timeout): stb read 62M pixels of a BMP from 233 bytes, zeros past the end.
    {"image", "regressions", "bmp-15466501x4-in-236-bytes", "truncated BMP: 15466501x4 pixels at 24 bits need"},
    // Found by fuzz_image (malloc limit): stb grew its buffer to a 1.2 GB IDAT length from 96 bytes.
    {"image", "regressions", "png-idat-claims-1.2GB", "truncated PNG: chunk IDAT at byte 33 claims"},
    // Found by fuzz_image (a timeout): an unknown BMP compression value, which stb reads as raw pixels.
    {"image", "regressions", "bmp-compression-0x60000100-resized", "truncated BMP: 14876677x4 pixels"},
    // Found by fuzz_image (UBSan): a zero-length first IDAT made stb_image call memcpy(NULL, src, 0).
    {"image", "regressions", "png-zero-length-first-idat", nullptr},
    {"image", "regressions", "jpeg-scan-undefined-ac-table", "which no DHT segment before it defines"},
    {"grid", "corpus", "fig1", nullptr},
    {"grid", "corpus", "preset-and-vary", nullptr},
    {"grid", "corpus", "init-values", nullptr},
    {"grid", "corpus", "many", "the grid has more than 10000 arms (10 x 10 x 10 x 10 x 3 values so far)"},
    {"grid", "corpus", "slug-collision", "would share the run directory"},
    {"grid", "corpus", "duplicate-value", "value 'batch' appears twice in factor 'norm=batch,batch'"},
    {"grid", "corpus", "repeated-factor", "factor 'norm' is given twice"},
    {"grid", "corpus", "bad-number", "lr=abc: must be a finite number > 0, got 'abc'"},
    {"grid", "corpus", "unknown", "unknown factor 'colour'"},
    // Found by fuzz_grid (nlohmann's type_error escaped): the duplicate-setting check compared the
    // arms' configs as JSON, and dumping a folder path outside UTF-8 throws.
    {"grid", "regressions", "non-utf8-folder", nullptr},
    {"schedule", "corpus", "warmup-cosine", nullptr},
    {"schedule", "corpus", "exp-growing", nullptr},
    // Rates past float's range within the run: first_step_above must name the first such step.
    {"schedule", "corpus", "step-overflows", nullptr},
    {"schedule", "corpus", "warmup-exp-overflows", nullptr},
    {"schedule", "corpus", "cosine-eta-min-past-float", nullptr},
    {"schedule", "corpus", "cosine-no-room", "cosine needs total_steps (10) greater than the warm-up steps (10)"},
    {"schedule", "corpus", "step-zero", "step_size must be >= 1"},
    {"schedule", "corpus", "multistep-unsorted", "strictly increasing"},
    {"schedule", "corpus", "warmup-twice", "a warm-up can only come first"},
    // Found by fuzz_schedule: the cosine's lr was -inf at step 0 with eta_min 1e308 (an overflow).
    {"schedule", "regressions", "cosine-huge-eta-min", nullptr},
    // Found by fuzz_schedule (UBSan): first_step_above's end of the cosine's monotone part, T_max + 1,
    // overflowed int64 for a run of 2^63 - 1 steps, so the search covered no step at all.
    {"schedule", "regressions", "cosine-tmax-int64-max", nullptr},
};
// clang-format on

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

fs::path fuzz_dir() { return fs::path(BNLAB_SOURCE_DIR) / "tests" / "fuzz"; }

}  // namespace

TEST_CASE("fuzz: seeds and kept findings give a result or a bnlab::Error naming the input") {
  std::map<std::string, const Expect*> expected;  // "target/dir/input"
  for (const Expect& e : kExpected)
    expected[std::string(e.target) + "/" + e.dir + "/" + e.input] = &e;
  size_t replayed = 0;
  for (const auto& [target, driver] : bnlab::fuzz::drivers()) {
    for (const char* dir : {"corpus", "regressions"}) {
      const fs::path d = fuzz_dir() / dir / target;
      if (!fs::is_directory(d)) continue;
      for (const auto& entry : fs::directory_iterator(d)) {
        const std::string key = target + "/" + dir + "/" + entry.path().filename().string();
        CAPTURE(key);
        // Throws (failing the test) for anything but a result or a bnlab::Error naming the input.
        bnlab::fuzz::Outcome out;
        REQUIRE_NOTHROW(out = driver(slurp(entry.path())));
        ++replayed;
        auto it = expected.find(key);
        // Every kept finding must say what it is expected to give.
        CHECK_MESSAGE((it != expected.end() || std::string(dir) == "corpus"),
                      "add an entry for this regression input to kExpected");
        if (it == expected.end()) continue;
        CAPTURE(out.error);
        if (it->second->error == nullptr) {
          CHECK(out.ok);
        } else {
          CHECK_FALSE(out.ok);
          CHECK(out.error.find(it->second->error) != std::string::npos);
        }
        expected.erase(it);
      }
    }
  }
  CHECK(replayed >= std::size(kExpected));
  for (const auto& [key, e] : expected) FAIL_CHECK("expected input is missing: ", key);
}

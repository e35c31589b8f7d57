// core/serialize: safetensors round trips (bit-exact), the header's form, a byte-exact golden file
// built by hand, loading files laid out like the reference writer's, every rejection with its
// message, and load_into's checks and all-or-nothing copy.
#include <doctest/doctest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io.h"
#include "core/serialize.h"
#include "test_util.h"

using namespace bnlab;
namespace fs = std::filesystem;

namespace {

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }

// Little-endian bytes of an integer, built with shifts so the test does not trust the host.
std::string le_bytes(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
std::string le64(uint64_t v) { return le_bytes(v, 8); }
std::string f32(float v) { return le_bytes(bits_of(v), 4); }
std::string f64(double v) { return le_bytes(std::bit_cast<uint64_t>(v), 8); }

// A file from a header and a data buffer, with no padding (readers must not require any).
std::string make_file(const std::string& json, const std::string& data) {
  return le64(json.size()) + json + data;
}

// Checks that decoding `bytes` throws a bnlab::Error containing `phrase` and naming the file.
void check_rejects(const std::string& bytes, const std::string& phrase) {
  CAPTURE(phrase);
  CHECK_THROWS_WITH_AS(decode_safetensors(bytes, "bad.safetensors"),
                       doctest::Contains(phrase.c_str()), Error);
  CHECK_THROWS_WITH_AS(decode_safetensors(bytes, "bad.safetensors"),
                       doctest::Contains("safetensors: bad.safetensors: "), Error);
}

// Same names, dtypes, shapes and bit patterns (so NaN payloads and -0.0 count).
void check_same(const std::vector<NamedTensor>& a, const std::vector<NamedTensor>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].name);
    CHECK(a[i].name == b[i].name);
    CHECK(a[i].dtype == b[i].dtype);
    REQUIRE(a[i].tensor.shape() == b[i].tensor.shape());
    CHECK(std::memcmp(a[i].tensor.data(), b[i].tensor.data(),
                      static_cast<size_t>(a[i].tensor.numel()) * sizeof(float)) == 0);
  }
}

using TempDir = bnlab::testing::TempDir;

// Tensors covering the awkward cases: special float bit patterns, int64 counters, a 0-d scalar, an
// empty tensor, an odd-sized F32 tensor before an I64 one (alignment), and a non-ASCII name.
std::vector<NamedTensor> awkward_tensors() {
  const std::vector<uint32_t> patterns = {
      0x7fc12345,  // quiet NaN with a payload
      0xffc00001,  // negative quiet NaN
      0x7f800001,  // signaling NaN
      0x80000000,  // -0.0
      0x00000001,  // smallest denormal
      0x807fffff,  // largest negative denormal
      0x7f7fffff,  // FLT_MAX
      0xff800000,  // -inf
      0x7f800000,  // +inf
      0x3f800000,  // 1.0
  };
  Tensor special = Tensor::empty({2, 5});
  std::memcpy(special.data(), patterns.data(), patterns.size() * sizeof(uint32_t));
  // Integers a float holds exactly, up to -2^63 (the int64 minimum).
  Tensor counts =
      Tensor::from({0.0f, 1.0f, -5.0f, 16777216.0f, 1e18f, -9223372036854775808.0f}, {6});
  return {
      {"odd", Tensor::from({1, 2, 3}, {3})},
      {"special", special},
      {"bn.num_batches_tracked", counts, DType::I64},
      {"scalar", Tensor::scalar(3.5f)},
      {"empty", Tensor::zeros({0, 3})},
      {"слой.вес", Tensor::from({-1.25f}, {1, 1})},
  };
}

}  // namespace

TEST_CASE("serialize: round trip is bit-exact") {
  SUBCASE("special floats, I64, 0-d, empty, unicode names, metadata") {
    const std::vector<NamedTensor> in = awkward_tensors();
    const Metadata meta = {{"format", "pt"}, {"epoch", "3"}, {"note", "ключ \"quoted\"\n\ttab"}};
    const std::string bytes = encode_safetensors(in, meta);
    SafetensorsFile out = decode_safetensors(bytes, "memory");
    check_same(in, out.tensors);
    CHECK(out.metadata == meta);
    // Decoding and encoding again reproduces the file byte for byte.
    CHECK(encode_safetensors(out.tensors, out.metadata) == bytes);
  }
  SUBCASE("no tensors") {
    const std::string bytes = encode_safetensors({});
    CHECK(bytes == le64(8) + "{}      ");
    SafetensorsFile out = decode_safetensors(bytes, "memory");
    CHECK(out.tensors.empty());
    CHECK(out.metadata.empty());
  }
  SUBCASE("decoded tensors own their storage") {
    Tensor w = Tensor::from({1, 2}, {2});
    SafetensorsFile out = decode_safetensors(encode_safetensors({{"w", w}}), "memory");
    out.tensors[0].tensor.data()[0] = 9.0f;
    CHECK(w.data()[0] == 1.0f);
  }
}

TEST_CASE(
    "serialize: header is 8-byte aligned JSON in caller order, data grouped by element size") {
  const std::vector<NamedTensor> in = {
      {"odd", Tensor::from({1, 2, 3}, {3})},
      {"steps", Tensor::from({4, 5}, {2}), DType::I64},
      {"one", Tensor::from({6}, {1})},
  };
  const std::string bytes = encode_safetensors(in);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  CHECK(n % 8 == 0);
  const std::string header = bytes.substr(8, n);
  CHECK(header.find_last_not_of(' ') == header.rfind('}'));

  nlohmann::json h = nlohmann::json::parse(header);
  CHECK(!h.contains("__metadata__"));  // omitted when empty
  CHECK(h["steps"]["dtype"] == "I64");
  CHECK(h["steps"]["shape"] == nlohmann::json::array({2}));
  CHECK(h["odd"]["dtype"] == "F32");
  // The I64 tensor comes first in the data buffer, so it sits at an 8-byte aligned file offset
  // even though "odd" (12 bytes) precedes it in the header.
  CHECK(h["steps"]["data_offsets"] == nlohmann::json::array({0, 16}));
  CHECK(h["odd"]["data_offsets"] == nlohmann::json::array({16, 28}));
  CHECK(h["one"]["data_offsets"] == nlohmann::json::array({28, 32}));
  CHECK(bytes.size() == 8 + n + 32);
  // Entries are written in the caller's order and each reads dtype, shape, data_offsets.
  CHECK(header.find("\"odd\"") < header.find("\"steps\""));
  CHECK(header.find("\"steps\"") < header.find("\"one\""));
  CHECK(header.find("{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[16,28]}") !=
        std::string::npos);
  // The I64 values are real little-endian int64s.
  CHECK(bytes.substr(8 + n, 16) == le64(4) + le64(5));
}

TEST_CASE("serialize: encoding matches a file built by hand byte for byte") {
  // Layout: u64 header length 144 (138 bytes of JSON + 6 spaces of padding), the header, then the
  // data: n (int64 7) first, being 8-byte, then a. The reference writer would also list "n" first
  // in the header (it sorts by dtype, then name); we keep the caller's order there.
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
      R"("n":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})";
  REQUIRE(json.size() == 138);
  const std::string expected = std::string("\x90\0\0\0\0\0\0\0", 8) + json + "      " +
                               std::string("\x07\0\0\0\0\0\0\0", 8) +  // n = 7
                               std::string("\x00\x00\x80\x3f", 4) +    // 1.0f
                               std::string("\x00\x00\x00\xc0", 4);     // -2.0f
  const std::string got = encode_safetensors(
      {{"a", Tensor::from({1.0f, -2.0f}, {2})}, {"n", Tensor::scalar(7.0f), DType::I64}},
      {{"format", "pt"}});
  CHECK(got == expected);

  SafetensorsFile back = decode_safetensors(expected, "golden");
  REQUIRE(back.tensors.size() == 2);
  CHECK(back.tensors[0].name == "a");
  CHECK(back.tensors[0].tensor.to_vector() == std::vector<float>{1.0f, -2.0f});
  CHECK(back.tensors[1].name == "n");
  CHECK(back.tensors[1].dtype == DType::I64);
  CHECK(back.tensors[1].tensor.shape() == Shape{});
  CHECK(back.tensors[1].tensor.item() == 7.0f);
  CHECK(back.metadata == Metadata{{"format", "pt"}});
}

TEST_CASE("serialize: reproduces the reference implementation's own expected bytes") {
  // The expected outputs of test_serialization, test_serialization_forced_alignement and test_empty
  // in huggingface/safetensors (safetensors/src/tensor.rs), written as JSON text plus length.
  const std::string data = f32(0) + f32(1) + f32(2) + f32(3) + f32(4) + f32(5);
  const std::vector<float> values = {0, 1, 2, 3, 4, 5};

  // 64 bytes of JSON: already a multiple of 8, no padding.
  CHECK(encode_safetensors({{"attn.0", Tensor::from(values, {1, 2, 3})}}) ==
        le64(64) + R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})" + data);
  // 65 bytes of JSON, padded with 7 spaces to 72.
  CHECK(encode_safetensors({{"attn0", Tensor::from(values, {1, 1, 2, 3})}}) ==
        le64(72) + R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" +
            "       " + data);
  CHECK(encode_safetensors({}) == le64(8) + "{}      ");
  CHECK(encode_safetensors({}, {{"framework", "pt"}}) ==
        le64(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
}

TEST_CASE("serialize: loads files laid out differently, F64 rounded to float") {
  // Key order, whitespace, metadata last and no padding: all valid, as other writers may produce.
  const std::string json =
      "{ \"b\" : {\"data_offsets\": [0, 16], \"dtype\": \"F64\", \"shape\": [2]},\n"
      "  \"a\": {\"shape\": [1, 1], \"extra\": true, \"dtype\": \"F32\", "
      "\"data_offsets\": [16, 20]},\n  \"__metadata__\": {\"k\": \"v\"} }";
  const std::string bytes = make_file(json, f64(0.5) + f64(-1e-3) + f32(2.0f));
  SafetensorsFile file = decode_safetensors(bytes, "other");
  REQUIRE(file.tensors.size() == 2);
  CHECK(file.tensors[0].name == "b");  // header order, not sorted
  CHECK(file.tensors[0].dtype == DType::F32);
  CHECK(file.tensors[0].tensor.to_vector() == std::vector<float>{0.5f, static_cast<float>(-1e-3)});
  CHECK(file.tensors[1].name == "a");
  CHECK(file.tensors[1].tensor.shape() == Shape{1, 1});
  CHECK(file.tensors[1].tensor.item() == 2.0f);
  CHECK(file.metadata == Metadata{{"k", "v"}});
}

TEST_CASE("serialize: rejects truncated files at every kind of cut") {
  const std::string bytes = encode_safetensors(
      {{"a", Tensor::from({1, 2, 3}, {3})}, {"n", Tensor::from({1, 2}, {2}), DType::I64}});
  const size_t header_end = bytes.size() - 28;
  for (size_t cut : {size_t{0}, size_t{1}, size_t{7}}) {
    CAPTURE(cut);
    check_rejects(bytes.substr(0, cut), "too short for the 8-byte header length");
  }
  for (size_t cut : {size_t{8}, size_t{20}, header_end - 1}) {
    CAPTURE(cut);
    check_rejects(bytes.substr(0, cut), "runs past the end of the file");
  }
  for (size_t cut : {header_end, header_end + 4, bytes.size() - 1}) {
    CAPTURE(cut);
    check_rejects(bytes.substr(0, cut), "data buffer (file truncated?)");
  }
  CHECK_NOTHROW(decode_safetensors(bytes, "whole"));
}

TEST_CASE("serialize: rejects bad header lengths and invalid JSON") {
  check_rejects(le64(200'000'000) + "{}",
                "header length 200000000 exceeds the 100000000-byte limit");
  check_rejects(le64(1000) + "{}", "header length 1000 runs past the end of the file (10 bytes");
  check_rejects(le64(0), "header is not valid JSON");
  check_rejects(make_file(R"({"a":{"dtype":"F32",)", ""), "header is not valid JSON");
  check_rejects(make_file(R"({"a":1,})", ""), "header is not valid JSON");
  check_rejects(make_file("{\"\xff\":1}", ""), "header is not valid JSON");  // not UTF-8
  // Everything after a NUL was ignored: the header below read as {}.
  check_rejects(make_file(std::string("{}\0{\"a\":", 7) + "garbage", ""),
                "header is not valid JSON: a NUL byte at offset 2 of 14");
  check_rejects(make_file("[1, 2]", ""), "header must be a JSON object, got array");
  check_rejects(make_file(R"({"a":[1]})", ""), "tensor 'a': entry must be an object, got array");
}

TEST_CASE("serialize: absurd header lengths, offsets and shapes are refused before allocating") {
  // Each would ask for exabytes if believed; the file is a few bytes. (decode_safetensors allocates
  // tensors only after the whole header is checked against the file's real length.)
  check_rejects(le64(UINT64_MAX) + "{}", "header length 18446744073709551615 exceeds");
  check_rejects(
      make_file(
          R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551611,18446744073709551615]}})",
          f32(1)),
      "run past the end of the 4-byte data buffer");
  check_rejects(
      make_file(R"({"a":{"dtype":"F64","shape":[1152921504606846976,8],"data_offsets":[0,8]}})",
                f64(1)),
      "has too many elements");
  // A zero dimension makes any other dimension harmless: no elements, no bytes.
  SafetensorsFile f = decode_safetensors(
      make_file(R"({"a":{"dtype":"F32","shape":[0,9223372036854775807],"data_offsets":[0,0]}})",
                ""),
      "empty.safetensors");
  REQUIRE(f.tensors.size() == 1);
  CHECK(f.tensors[0].tensor.numel() == 0);
}

TEST_CASE("serialize: rejects malformed tensor entries") {
  const std::string data8(8, '\0');
  check_rejects(make_file(R"({"a":{"dtype":"BF17","shape":[2],"data_offsets":[0,8]}})", data8),
                "tensor 'a': unknown dtype \"BF17\"");
  check_rejects(make_file(R"({"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}})", data8),
                "tensor 'a': dtype \"BF16\" is not supported");
  check_rejects(make_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", data8),
                "missing \"dtype\"");
  check_rejects(make_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", data8),
                "missing \"shape\"");
  check_rejects(make_file(R"({"a":{"dtype":"F32","shape":[2]}})", data8),
                "missing \"data_offsets\"");
  check_rejects(make_file(R"({"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", data8),
                "\"dtype\" must be a string, got number");
  check_rejects(make_file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", data8),
                "\"shape\" must be an array, got number");
  check_rejects(make_file(R"({"a":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})", data8),
                "negative dimension -1 in shape [-1,2]");
  check_rejects(make_file(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", data8),
                "must hold non-negative integers, found 2.0");
  check_rejects(
      make_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
                data8),
      "has too many elements");
  check_rejects(
      make_file(R"({"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})",
                data8),
      "does not fit in int64");
  for (const char* offsets : {"[0]", "[0,-8]", "\"0,8\"", "[0,8,8]", "[0,8.0]"}) {
    check_rejects(make_file(std::string(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":)") +
                                offsets + "}}",
                            data8),
                  "\"data_offsets\" must be two non-negative integers");
  }
  check_rejects(make_file(R"({"__metadata__":{"k":1}})", ""),
                "\"__metadata__\" values must be strings; \"k\" is number");
  check_rejects(make_file(R"({"__metadata__":[1]})", ""), "\"__metadata__\" must be an object");
}

TEST_CASE("serialize: rejects byte ranges that do not tile the data buffer") {
  const std::string f2 = R"({"dtype":"F32","shape":[2],)";
  const std::string f1 = R"({"dtype":"F32","shape":[1],)";
  check_rejects(
      make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "tensor 'a': data_offsets [0,8] cover 8 bytes but shape [3] of F32 needs 12");
  check_rejects(make_file(R"({"a":)" + f2 + R"("data_offsets":[8,0]}})", std::string(8, '\0')),
                "data_offsets [8,0] end before begin");
  check_rejects(make_file(R"({"a":)" + f2 + R"("data_offsets":[4,12]}})", std::string(8, '\0')),
                "data_offsets [4,12] run past the end of the 8-byte data buffer");
  check_rejects(make_file(R"({"a":)" + f2 + R"("data_offsets":[0,8]},"b":)" + f2 +
                              R"("data_offsets":[4,12]}})",
                          std::string(12, '\0')),
                "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
  check_rejects(make_file(R"({"a":)" + f2 + R"("data_offsets":[0,8]},"b":)" + f2 +
                              R"("data_offsets":[0,8]}})",
                          std::string(8, '\0')),
                "tensors 'a' [0, 8] and 'b' [0, 8] overlap");
  check_rejects(make_file(R"({"a":)" + f1 + R"("data_offsets":[0,4]},"b":)" + f1 +
                              R"("data_offsets":[8,12]}})",
                          std::string(12, '\0')),
                "gap in the data buffer: bytes [4, 8) before tensor 'b' belong to no tensor");
  check_rejects(
      make_file(R"({"a":)" + f2 + R"("data_offsets":[0,8]}})", std::string(12, '\0')),
      "4 trailing bytes after the last tensor (data buffer is 12 bytes, tensors cover 8)");
  check_rejects(make_file("{}", "x"), "1 trailing bytes");
  // A zero-size tensor inside another's range is an overlap for the reference too.
  check_rejects(
      make_file(R"({"a":)" + f2 + R"("data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],)" +
                    R"("data_offsets":[4,4]}})",
                std::string(8, '\0')),
      "overlap");
}

TEST_CASE("serialize: rejects duplicate keys and unrepresentable values") {
  const std::string entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  check_rejects(make_file(R"({"a":)" + entry + R"(,"a":)" + entry + "}", std::string(8, '\0')),
                "duplicate key \"a\" in header");
  check_rejects(make_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                          std::string(8, '\0')),
                "duplicate key \"dtype\" in header");
  const std::string i64 = R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})";
  check_rejects(
      make_file(i64, le64(16777217)),
      "tensor 'a': I64 value 16777217 at index 0 is not exactly representable as float32");
  check_rejects(make_file(i64, le64(0x7fffffffffffffffULL)), "not exactly representable");
  check_rejects(make_file(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", f64(1e300)),
                "tensor 'a': F64 value 1e+300 at index 0 is outside the float32 range");
  // Large but exact integers, and F64 infinities, load fine.
  CHECK(
      decode_safetensors(make_file(i64, le64(uint64_t{1} << 40)), "ok").tensors[0].tensor.item() ==
      1099511627776.0f);
  CHECK(std::isinf(
      decode_safetensors(
          make_file(R"({"a":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})", f64(-HUGE_VAL)),
          "ok")
          .tensors[0]
          .tensor.item()));
}

TEST_CASE("serialize: encoding rejects what the format cannot hold") {
  Tensor w = Tensor::from({1.0f, 1.5f}, {2});
  CHECK_THROWS_WITH_AS(encode_safetensors({{"w", w}, {"w", w}}),
                       doctest::Contains("duplicate tensor name 'w'"), Error);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"__metadata__", w}}), doctest::Contains("is reserved"),
                       Error);
  CHECK_THROWS_WITH_AS(
      encode_safetensors({{"w", w, DType::I64}}),
      doctest::Contains("tensor 'w' has dtype I64 but value 1.5 at index 1 is not an integer"),
      Error);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"w", Tensor::scalar(NAN), DType::I64}}),
                       doctest::Contains("is not an integer in int64 range"), Error);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"w", Tensor::scalar(1e19f), DType::I64}}),
                       doctest::Contains("is not an integer in int64 range"), Error);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"w", Tensor()}}),
                       doctest::Contains("tensor 'w' is undefined"), Error);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"bad\xff", w}}), doctest::Contains("not valid UTF-8"),
                       Error);
  CHECK_THROWS_WITH_AS(encode_safetensors({{"w", w}}, {{"k", "\xc3"}}),
                       doctest::Contains("not valid UTF-8"), Error);
}

TEST_CASE("serialize: save and load through files") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const std::vector<NamedTensor> first = awkward_tensors();
  save_safetensors(path, first, {{"epoch", "1"}});
  SafetensorsFile loaded = load_safetensors(path);
  check_same(first, loaded.tensors);
  CHECK(loaded.metadata == Metadata{{"epoch", "1"}});

  // Saving again replaces the file atomically and leaves nothing else in the directory.
  save_safetensors(path, {{"w", Tensor::from({7}, {1})}});
  CHECK(load_safetensors(path).tensors.size() == 1);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);

  // A failed encode names the path and does not touch the existing file.
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"w", Tensor::scalar(0.5f), DType::I64}}),
                       doctest::Contains(("safetensors: " + path + ": tensor 'w'").c_str()), Error);
  CHECK(load_safetensors(path).tensors[0].tensor.item() == 7.0f);

  const std::string missing = dir.file("missing.safetensors");
  CHECK_THROWS_WITH_AS(
      load_safetensors(missing),
      doctest::Contains(("cannot open " + missing + ": No such file or directory").c_str()), Error);
  const std::string nodir = dir.file("nodir/model.safetensors");
  CHECK_THROWS_WITH_AS(save_safetensors(nodir, first),
                       doctest::Contains(("cannot write " + nodir).c_str()), Error);

  const std::string cut = dir.file("cut.safetensors");
  write_file_atomic(cut, read_file(path).substr(0, 20));
  CHECK_THROWS_WITH_AS(load_safetensors(cut),
                       doctest::Contains(("safetensors: " + cut + ": header").c_str()), Error);
}

// A 100 GB sparse model.safetensors ended in "error: std::bad_alloc", naming no file.
TEST_CASE("serialize: a file larger than memory is refused naming it, a large one is read") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_file_atomic(path, "");
  const auto memory = static_cast<uintmax_t>(::sysconf(_SC_PHYS_PAGES)) *
                      static_cast<uintmax_t>(::sysconf(_SC_PAGESIZE));
  fs::resize_file(path, 2 * memory);  // sparse: costs no disk
  CHECK_THROWS_WITH_AS(
      load_safetensors(path),
      doctest::Contains(
          ("read_file: " + path + " is " + std::to_string(2 * memory) + " bytes (").c_str()),
      Error);
  // Weights are not held to the limit of text files: this one is read, and its header judged.
  fs::resize_file(path, kMaxTextFileBytes + 1);
  CHECK_THROWS_WITH_AS(load_safetensors(path),
                       doctest::Contains(("safetensors: " + path + ": ").c_str()), Error);
}

TEST_CASE("serialize: load_into copies by name once everything matches") {
  Tensor w = Tensor::zeros({2, 3});
  Tensor b = Tensor::zeros({2});
  const std::vector<NamedTensor> targets = {{"0.weight", w}, {"0.bias", b}};
  // Checkpoint order differs from the model's: matching is by name.
  load_into({{"0.bias", Tensor::from({7, 8}, {2})}, {"0.weight", Tensor::full({2, 3}, 1.5f)}},
            targets, true);
  CHECK(b.to_vector() == std::vector<float>{7, 8});
  CHECK(w.to_vector() == std::vector<float>(6, 1.5f));

  // Non-strict ignores extra checkpoint entries.
  load_into({{"0.weight", Tensor::full({2, 3}, 2.0f)},
             {"0.bias", Tensor::zeros({2})},
             {"optimizer.step", Tensor::scalar(3)}},
            targets, false);
  CHECK(w.data()[0] == 2.0f);

  // Loading a tensor into itself is harmless.
  load_into(targets, targets, true);
  CHECK(w.data()[0] == 2.0f);
}

TEST_CASE("serialize: load_into reports every problem and leaves targets unchanged on failure") {
  Tensor w = Tensor::full({10, 50}, 1.0f);
  Tensor b = Tensor::full({10}, 1.0f);
  Tensor g = Tensor::full({4}, 1.0f);
  const std::vector<NamedTensor> targets = {{"1.weight", w}, {"1.bias", b}, {"2.gamma", g}};
  const Tensor good_w = Tensor::full({10, 50}, 5.0f);
  const Tensor good_b = Tensor::full({10}, 5.0f);
  const Tensor good_g = Tensor::full({4}, 5.0f);

  CHECK_THROWS_WITH_AS(
      load_into({{"1.weight", good_w}}, targets, true),
      doctest::Contains("load_state_dict: missing keys in checkpoint: 1.bias, 2.gamma"), Error);
  // strict=false tolerates missing keys, as PyTorch does: only what is there is copied.
  load_into({{"1.weight", good_w}}, targets, false);
  CHECK(w.data()[0] == 5.0f);
  CHECK(b.data()[0] == 1.0f);
  w.fill_(1.0f);
  CHECK_THROWS_WITH_AS(
      load_into({{"1.weight", good_w},
                 {"1.bias", good_b},
                 {"2.gamma", good_g},
                 {"extra", good_b},
                 {"more", good_b}},
                targets, true),
      doctest::Contains("load_state_dict: unexpected keys in checkpoint: extra, more"), Error);
  CHECK_THROWS_WITH_AS(
      load_into({{"1.weight", Tensor::zeros({10, 100})}, {"1.bias", good_b}, {"2.gamma", good_g}},
                targets, true),
      doctest::Contains(
          "load_state_dict: size mismatch for 1.weight: checkpoint has [10, 100], model has "
          "[10, 50]"),
      Error);
  // Several problems at once are all listed.
  try {
    load_into({{"1.weight", Tensor::zeros({10, 100})}, {"1.bias", good_b}, {"x", good_b}}, targets,
              true);
    FAIL("load_into should have thrown");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("missing keys in checkpoint: 2.gamma") != std::string::npos);
    CHECK(msg.find("unexpected keys in checkpoint: x") != std::string::npos);
    CHECK(msg.find("size mismatch for 1.weight") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(load_into({{"1.weight", good_w}, {"1.weight", good_w}}, targets, true),
                       doctest::Contains("duplicate key 1.weight in checkpoint"), Error);

  // None of the failed loads above (each had valid entries, e.g. 1.bias) changed any target.
  for (const Tensor& t : {w, b, g}) {
    for (float v : t.to_vector()) REQUIRE(v == 1.0f);
  }
}

// safetensors encode/decode and load_into; serialize.h describes the format and our layout.
//
// Decoding is written for untrusted input: the header is parsed and every entry checked against the
// file size before any tensor is allocated, sizes are computed in uint64 with overflow checks, and
// the data buffer must be tiled exactly (no overlap, no gap, no trailing bytes), as the reference
// loader requires (safetensors/src/tensor.rs, Metadata::validate).
#include "core/serialize.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/io.h"

namespace bnlab {

// Data and the header length are little-endian on disk and copied with memcpy; a big-endian host
// would need byte swaps everywhere, which we do not implement.
static_assert(std::endian::native == std::endian::little,
              "bnlab serialization assumes little-endian");

namespace {

// The reference refuses headers above this size (MAX_HEADER_SIZE in safetensors/src/tensor.rs);
// it also bounds the memory a hostile header can make us spend on JSON parsing.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

// The dtypes we load; the other dtypes of the format are named in "not supported" errors.
enum class FileDtype { F32, F64, I64 };
const char* const kKnownUnsupported[] = {"BOOL", "U8",  "I8",   "F8_E5M2", "F8_E4M3", "I16",
                                         "U16",  "F16", "BF16", "I32",     "U32",     "U64"};

size_t dtype_bytes(FileDtype d) { return d == FileDtype::F32 ? 4 : 8; }

const char* dtype_name(DType d) { return d == DType::F32 ? "F32" : "I64"; }

// A float holds an int64 value exactly iff it is integral and inside [-2^63, 2^63); the upper bound
// is exclusive because 2^63 itself is a float but not an int64.
bool float_is_int64(float v) {
  return std::trunc(v) == v && v >= -9223372036854775808.0f && v < 9223372036854775808.0f;
}

// One validated header entry; `begin`/`end` are offsets into the data buffer.
struct Entry {
  std::string name;
  FileDtype dtype;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::string encode(const std::vector<NamedTensor>& tensors, const Metadata& metadata,
                   const std::string& context) {
  const std::string where = "safetensors: " + context + ": ";

  // Validate names and values before laying anything out.
  std::set<std::string_view> seen;
  for (const NamedTensor& t : tensors) {
    BNLAB_CHECK(t.name != kMetadataKey, where, "\"", kMetadataKey,
                "\" is reserved and cannot name a tensor");
    BNLAB_CHECK(seen.insert(t.name).second, where, "duplicate tensor name '", t.name, "'");
    BNLAB_CHECK(t.tensor.defined(), where, "tensor '", t.name, "' is undefined");
    if (t.dtype == DType::I64) {
      const float* x = t.tensor.data();
      for (int64_t i = 0; i < t.tensor.numel(); ++i) {
        BNLAB_CHECK(float_is_int64(x[i]), where, "tensor '", t.name, "' has dtype I64 but value ",
                    x[i], " at index ", i, " is not an integer in int64 range");
      }
    }
  }

  // Data layout: 8-byte dtypes first, then 4-byte ones, each group in the caller's order. With
  // the header padded to 8 bytes, every tensor starts at a multiple of its element size.
  std::vector<size_t> layout;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].dtype == DType::I64) layout.push_back(i);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].dtype == DType::F32) layout.push_back(i);
  }
  std::vector<uint64_t> begin(tensors.size());
  uint64_t offset = 0;
  for (size_t i : layout) {
    begin[i] = offset;
    offset +=
        static_cast<uint64_t>(tensors[i].tensor.numel()) * (tensors[i].dtype == DType::I64 ? 8 : 4);
  }
  const uint64_t data_bytes = offset;

  // Header, assembled entry by entry: a JSON object type would either sort the keys (json) or
  // search linearly on every insert (ordered_json), and we want the caller's order in linear time.
  // Each piece is still produced by nlohmann, so escaping and UTF-8 checks are the library's.
  std::string json = "{";
  try {
    if (!metadata.empty()) {
      json += nlohmann::json(kMetadataKey).dump() + ":" + nlohmann::json(metadata).dump();
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const NamedTensor& t = tensors[i];
      uint64_t nbytes = static_cast<uint64_t>(t.tensor.numel()) * (t.dtype == DType::I64 ? 8 : 4);
      // ordered_json keeps the reference's key order: dtype, shape, data_offsets.
      nlohmann::ordered_json entry = nlohmann::ordered_json::object();
      entry["dtype"] = dtype_name(t.dtype);
      entry["shape"] = t.tensor.shape();
      entry["data_offsets"] = {begin[i], begin[i] + nbytes};
      if (json.size() > 1) json += ",";
      json += nlohmann::json(t.name).dump() + ":" + entry.dump();  // compact, like serde_json
    }
  } catch (const nlohmann::json::exception& e) {
    // dump() throws on strings that are not valid UTF-8 (the format requires UTF-8).
    BNLAB_FAIL(where, "a tensor name or metadata string is not valid UTF-8 (", e.what(), ")");
  }
  json += "}";
  // Pad with spaces (valid trailing JSON whitespace) so the data buffer starts 8-byte aligned.
  json.append((8 - json.size() % 8) % 8, ' ');

  // Assemble: u64 header length, header, data.
  std::string out;
  out.reserve(8 + json.size() + data_bytes);
  const uint64_t n = json.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += json;
  out.resize(8 + json.size() + data_bytes);
  char* data = out.data() + 8 + json.size();
  for (size_t i : layout) {
    const NamedTensor& t = tensors[i];
    const float* x = t.tensor.data();
    const int64_t count = t.tensor.numel();
    char* dst = data + begin[i];
    if (t.dtype == DType::F32) {
      // memcpy, not a value loop: keeps NaN payloads and every other bit pattern exact.
      std::memcpy(dst, x, static_cast<size_t>(count) * sizeof(float));
    } else {
      for (int64_t j = 0; j < count; ++j) {
        int64_t v = static_cast<int64_t>(x[j]);
        std::memcpy(dst + j * 8, &v, 8);
      }
    }
  }
  return out;
}

// Reads one tensor entry of the header, checking types, dtype, shape, and that its byte range fits
// in the data buffer and matches the shape.
Entry parse_entry(const std::string& name, const nlohmann::json& value, uint64_t buffer_bytes,
                  const std::string& where) {
  const std::string at = where + "tensor '" + name + "': ";
  BNLAB_CHECK(value.is_object(), at, "entry must be an object, got ", value.type_name());
  Entry e;
  e.name = name;

  // dtype: one we load, or an error that says whether the name is known at all.
  auto it = value.find("dtype");
  BNLAB_CHECK(it != value.end(), at, "missing \"dtype\"");
  BNLAB_CHECK(it->is_string(), at, "\"dtype\" must be a string, got ", it->type_name());
  const std::string& dtype = it->get_ref<const std::string&>();
  if (dtype == "F32") {
    e.dtype = FileDtype::F32;
  } else if (dtype == "F64") {
    e.dtype = FileDtype::F64;
  } else if (dtype == "I64") {
    e.dtype = FileDtype::I64;
  } else {
    bool known = std::find(std::begin(kKnownUnsupported), std::end(kKnownUnsupported), dtype) !=
                 std::end(kKnownUnsupported);
    BNLAB_FAIL(at, known ? "dtype " : "unknown dtype ", "\"", dtype, "\"",
               known ? " is not supported" : "", " (bnlab loads F32, F64 and I64)");
  }

  // shape: non-negative integers whose product, times the element size, fits in int64.
  it = value.find("shape");
  BNLAB_CHECK(it != value.end(), at, "missing \"shape\"");
  BNLAB_CHECK(it->is_array(), at, "\"shape\" must be an array, got ", it->type_name());
  uint64_t numel = 1;
  bool overflow = false;
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (const nlohmann::json& d : *it) {
    BNLAB_CHECK(!(d.is_number_integer() && !d.is_number_unsigned()), at, "negative dimension ",
                d.dump(), " in shape ", it->dump());
    BNLAB_CHECK(d.is_number_unsigned(), at, "shape ", it->dump(),
                " must hold non-negative integers, found ", d.dump());
    uint64_t v = d.get<uint64_t>();
    BNLAB_CHECK(v <= kMax, at, "dimension ", v, " in shape ", it->dump(), " does not fit in int64");
    e.shape.push_back(static_cast<int64_t>(v));
    overflow = overflow || __builtin_mul_overflow(numel, v, &numel) || numel > kMax;
  }
  uint64_t nbytes = 0;
  overflow =
      overflow || __builtin_mul_overflow(numel, dtype_bytes(e.dtype), &nbytes) || nbytes > kMax;
  BNLAB_CHECK(!overflow, at, "shape ", e.shape, " has too many elements (size overflows int64)");

  // data_offsets: [begin, end], begin <= end <= buffer size, end - begin == numel * element size.
  it = value.find("data_offsets");
  BNLAB_CHECK(it != value.end(), at, "missing \"data_offsets\"");
  BNLAB_CHECK(it->is_array() && it->size() == 2 && (*it)[0].is_number_unsigned() &&
                  (*it)[1].is_number_unsigned(),
              at, "\"data_offsets\" must be two non-negative integers [begin, end], got ",
              it->dump());
  e.begin = (*it)[0].get<uint64_t>();
  e.end = (*it)[1].get<uint64_t>();
  BNLAB_CHECK(e.begin <= e.end, at, "data_offsets ", it->dump(), " end before begin");
  BNLAB_CHECK(e.end <= buffer_bytes, at, "data_offsets ", it->dump(), " run past the end of the ",
              buffer_bytes, "-byte data buffer (file truncated?)");
  BNLAB_CHECK(e.end - e.begin == nbytes, at, "data_offsets ", it->dump(), " cover ",
              e.end - e.begin, " bytes but shape ", e.shape, " of ", dtype, " needs ", nbytes);
  return e;
}

// Fills a new float tensor from the entry's bytes, converting I64/F64 as serialize.h describes.
Tensor read_tensor(const Entry& e, const char* data, const std::string& where) {
  Tensor t = Tensor::empty(e.shape);
  float* x = t.data();
  const int64_t count = t.numel();
  const char* src = data + e.begin;
  switch (e.dtype) {
    case FileDtype::F32:
      std::memcpy(x, src, static_cast<size_t>(count) * sizeof(float));
      break;
    case FileDtype::I64:
      for (int64_t i = 0; i < count; ++i) {
        int64_t v;
        std::memcpy(&v, src + i * 8, 8);
        float f = static_cast<float>(v);
        // float_is_int64 first: casting a float >= 2^63 back to int64 would be undefined.
        BNLAB_CHECK(float_is_int64(f) && static_cast<int64_t>(f) == v, where, "tensor '", e.name,
                    "': I64 value ", v, " at index ", i,
                    " is not exactly representable as float32");
        x[i] = f;
      }
      break;
    case FileDtype::F64:
      for (int64_t i = 0; i < count; ++i) {
        double v;
        std::memcpy(&v, src + i * 8, 8);
        float f = static_cast<float>(v);
        BNLAB_CHECK(!std::isfinite(v) || std::isfinite(f), where, "tensor '", e.name,
                    "': F64 value ", v, " at index ", i, " is outside the float32 range");
        x[i] = f;
      }
      break;
  }
  return t;
}

// A SAX handler that throws on a duplicate key in any object and records the top-level keys in
// order. (nlohmann's parse callbacks could do this too, but its callback parser rescans the parent
// object after every nested one, which is quadratic: 8 s for a 20k-tensor header.)
class KeyTracker : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit KeyTracker(const std::string& where) : where_(where) {}
  const std::vector<std::string>& top_level() const { return top_level_; }

  bool start_object(std::size_t) override {
    open_.emplace_back();
    return true;
  }
  bool end_object() override {
    open_.pop_back();
    return true;
  }
  bool key(string_t& key) override {
    BNLAB_CHECK(open_.back().insert(key).second, where_, "duplicate key \"", key, "\" in header");
    if (open_.size() == 1) top_level_.push_back(key);
    return true;
  }
  // The text was already parsed successfully, so values need no attention and errors cannot occur.
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception&) override {
    return false;
  }

 private:
  const std::string& where_;
  std::vector<std::set<std::string>> open_;  // keys seen so far in each object being parsed
  std::vector<std::string> top_level_;
};

}  // namespace

std::string encode_safetensors(const std::vector<NamedTensor>& tensors, const Metadata& metadata) {
  return encode(tensors, metadata, "encode");
}

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const Metadata& metadata) {
  write_file_atomic(path, encode(tensors, metadata, path));
}

SafetensorsFile decode_safetensors(std::string_view bytes, const std::string& name_for_errors) {
  const std::string where = "safetensors: " + name_for_errors + ": ";

  // 1. The header length, bounded by the limit and by what the file actually holds.
  BNLAB_CHECK(bytes.size() >= 8, where, "file is ", bytes.size(),
              " bytes, too short for the 8-byte header length (truncated?)");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  BNLAB_CHECK(n <= kMaxHeaderBytes, where, "header length ", n, " exceeds the ", kMaxHeaderBytes,
              "-byte limit (not a safetensors file?)");
  BNLAB_CHECK(n <= bytes.size() - 8, where, "header length ", n, " runs past the end of the file (",
              bytes.size(), " bytes; truncated?)");
  const std::string_view text = bytes.substr(8, n);
  const std::string_view buffer = bytes.substr(8 + n);

  // 2. The JSON header: a plain DOM parse (which reports syntax errors), then a SAX pass over the
  //    same text for what the DOM loses: nlohmann keeps the last of duplicate keys silently and
  //    sorts keys, so KeyTracker rejects duplicates and records the tensors' file order.
  // nlohmann's parse ends at a NUL byte, so "{...}\0 anything" read as its first part; the
  // reference parser (serde_json) and Python's json refuse it.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    BNLAB_FAIL(where, "header is not valid JSON: a NUL byte at offset ", nul, " of ", n);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    BNLAB_FAIL(where, "header is not valid JSON: ", e.what());
  }
  KeyTracker keys(where);
  nlohmann::json::sax_parse(text.begin(), text.end(), &keys);
  const std::vector<std::string>& top_keys = keys.top_level();
  BNLAB_CHECK(header.is_object(), where, "header must be a JSON object, got ", header.type_name());

  // 3. Every entry, in file order, checked on its own.
  SafetensorsFile file;
  std::vector<Entry> entries;
  for (const std::string& key : top_keys) {
    const nlohmann::json& value = header.at(key);
    if (key == kMetadataKey) {
      BNLAB_CHECK(value.is_object(), where, "\"", kMetadataKey, "\" must be an object, got ",
                  value.type_name());
      for (const auto& [k, v] : value.items()) {
        BNLAB_CHECK(v.is_string(), where, "\"", kMetadataKey, "\" values must be strings; \"", k,
                    "\" is ", v.type_name());
        file.metadata[k] = v.get<std::string>();
      }
    } else {
      entries.push_back(parse_entry(key, value, buffer.size(), where));
    }
  }

  // 4. The byte ranges must tile the data buffer exactly: sorted by offset, each starts where the
  //    previous one ended and the last ends at the end of the file. (An empty tensor's empty range
  //    may sit on any boundary.)
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry* e : by_offset) {
    BNLAB_CHECK(e->begin >= covered, where, "tensors '", previous->name, "' [", previous->begin,
                ", ", previous->end, "] and '", e->name, "' [", e->begin, ", ", e->end,
                "] overlap");
    BNLAB_CHECK(e->begin == covered, where, "gap in the data buffer: bytes [", covered, ", ",
                e->begin, ") before tensor '", e->name, "' belong to no tensor");
    covered = e->end;
    previous = e;
  }
  BNLAB_CHECK(covered == buffer.size(), where, buffer.size() - covered,
              " trailing bytes after the last tensor (data buffer is ", buffer.size(),
              " bytes, tensors cover ", covered, ")");

  // 5. Only now allocate and convert.
  for (const Entry& e : entries) {
    DType dtype = e.dtype == FileDtype::I64 ? DType::I64 : DType::F32;
    file.tensors.push_back({e.name, read_tensor(e, buffer.data(), where), dtype});
  }
  return file;
}

SafetensorsFile load_safetensors(const std::string& path) {
  // Weights may be as large as the model: only memory bounds them.
  return decode_safetensors(read_file(path, SIZE_MAX), path);
}

void load_into(const std::vector<NamedTensor>& loaded, const std::vector<NamedTensor>& targets,
               bool strict, const std::set<std::string>& non_negative) {
  // Collect every problem first, so one failed load tells the user everything that is wrong.
  std::vector<std::string> problems;
  std::map<std::string_view, const NamedTensor*> source;
  for (const NamedTensor& t : loaded) {
    if (!source.emplace(t.name, &t).second) {
      problems.push_back("load_state_dict: duplicate key " + t.name + " in checkpoint");
    }
  }
  std::set<std::string_view> wanted;
  std::vector<std::string> missing;
  std::vector<std::string> mismatched;
  for (const NamedTensor& t : targets) {
    if (!wanted.insert(t.name).second) {
      problems.push_back("load_state_dict: duplicate key " + t.name + " in model");
      continue;
    }
    auto it = source.find(t.name);
    if (it == source.end()) {
      missing.push_back(t.name);
      continue;
    }
    const Tensor& src = it->second->tensor;
    if (!t.tensor.defined() || !src.defined()) {
      mismatched.push_back("load_state_dict: undefined tensor for " + t.name);
    } else if (src.shape() != t.tensor.shape()) {
      mismatched.push_back("load_state_dict: size mismatch for " + t.name + ": checkpoint has " +
                           to_string(src.shape()) + ", model has " + to_string(t.tensor.shape()));
    } else if (t.dtype == DType::I64) {
      // A model's int64 tensors are counts (num_batches_tracked): a fraction would make the next
      // save fail, and a negative count gives BatchNorm's cumulative average a momentum of 1/0.
      const float* x = src.data();
      for (int64_t i = 0; i < src.numel(); ++i) {
        if (float_is_int64(x[i]) && x[i] >= 0.0f) continue;
        std::ostringstream os;
        os << "load_state_dict: " << t.name << " is a count stored as int64 and must be a "
           << "non-negative integer; checkpoint has " << x[i] << " at index " << i;
        mismatched.push_back(os.str());
        break;
      }
    } else if (non_negative.count(t.name)) {
      // A negative variance makes BatchNorm's sqrt NaN, and every output with it: PyTorch loads
      // one silently. One pass over C floats per layer.
      const float* x = src.data();
      for (int64_t i = 0; i < src.numel(); ++i) {
        if (x[i] >= 0.0f) continue;
        std::ostringstream os;
        os << "load_state_dict: " << t.name << " must not be negative or NaN; checkpoint has "
           << x[i] << " at index " << i;
        mismatched.push_back(os.str());
        break;
      }
    }
  }
  std::vector<std::string> unexpected;
  if (strict) {
    for (const NamedTensor& t : loaded) {
      if (!wanted.count(t.name)) unexpected.push_back(t.name);
    }
  }
  // Same order as PyTorch's report: missing, unexpected, then size mismatches. As in PyTorch,
  // strict=false tolerates missing keys (those targets keep their values) as well as unexpected
  // ones.
  if (strict && !missing.empty()) {
    problems.push_back("load_state_dict: missing keys in checkpoint: " + join(missing, ", "));
  }
  if (!unexpected.empty()) {
    problems.push_back("load_state_dict: unexpected keys in checkpoint: " + join(unexpected, ", "));
  }
  problems.insert(problems.end(), mismatched.begin(), mismatched.end());
  if (!problems.empty()) BNLAB_FAIL(join(problems, "\n"));

  // Everything checked: copy. memmove, as a checkpoint tensor may share storage with its target.
  for (const NamedTensor& t : targets) {
    auto it = source.find(t.name);
    if (it == source.end()) continue;  // missing under strict=false
    const Tensor& src = it->second->tensor;
    std::memmove(t.tensor.data(), src.data(), static_cast<size_t>(src.numel()) * sizeof(float));
    t.tensor.bump_version();
  }
}

}  // namespace bnlab

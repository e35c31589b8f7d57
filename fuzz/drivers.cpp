// The fuzz drivers (drivers.h): parse, check the result's invariants or the error's message.
#include "fuzz/drivers.h"

#include <zlib.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/serialize.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "optim/schedule.h"
#include "train/ablation.h"

namespace bnlab::fuzz {

namespace {

void require(bool condition, const std::string& what) {
  if (!condition) throw ContractViolation(what);
}

// Runs `parse`; a bnlab::Error must mention `must_mention` (the input's name or the parser).
template <class Parse>
Outcome attempt(const std::string& must_mention, Parse&& parse) {
  try {
    parse();
    return {true, ""};
  } catch (const Error& e) {
    std::string message = e.what();
    require(message.find(must_mention) != std::string::npos,
            "error message does not name '" + must_mention + "': " + message);
    return {false, message};
  }
}

// gzip (RFC 1952) of `bytes`, as gzip(1) would write it.
std::string gzip(std::string_view bytes) {
  z_stream zs{};
  require(deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK,
          "deflateInit2 failed");
  std::string out(deflateBound(&zs, static_cast<uLong>(bytes.size())), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int r = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  require(r == Z_STREAM_END, "deflate failed");
  return out;
}

std::vector<std::string> lines(std::string_view text) {
  std::vector<std::string> out;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    out.emplace_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

}  // namespace

Outcome run_idx(std::string_view input) {
  if (input.empty()) return {false, "empty input"};
  const uint8_t mode = static_cast<uint8_t>(input[0]);
  std::string file(input.substr(1));
  if (mode & 2) file = gzip(file);
  const std::string name = "fuzz-idx-file";
  return attempt(name, [&] {
    if (mode & 1) {
      std::vector<int64_t> labels = decode_idx_labels(file, name);
      require(!labels.empty(), "IDX labels: empty result");
      for (int64_t l : labels) require(l >= 0 && l <= 255, "IDX labels: label out of byte range");
    } else {
      IdxImages images = decode_idx_images(file, name);
      require(images.count > 0 && images.height > 0 && images.width > 0, "IDX images: empty dims");
      require(
          static_cast<int64_t>(images.pixels.size()) == images.count * images.height * images.width,
          "IDX images: pixel count does not match the dimensions");
    }
  });
}

Outcome run_cifar(std::string_view input) {
  if (input.empty()) return {false, "empty input"};
  const uint8_t mode = static_cast<uint8_t>(input[0]);
  const CifarLayout layouts[] = {CifarLayout::kCifar10, CifarLayout::kCifar100Fine,
                                 CifarLayout::kCifar100Coarse};
  const CifarLayout layout = layouts[mode % 3];
  std::string file(input.substr(1));
  if (mode & 4) file = gzip(file);
  const std::string name = "fuzz-cifar-batch";
  return attempt(name, [&] {
    ImageDataset d = decode_cifar_batch(file, name, layout);
    const int64_t classes = static_cast<int64_t>(d.class_names.size());
    require(d.size() > 0, "CIFAR: empty result");
    require(d.pixels.size() == static_cast<size_t>(d.size()) * 3 * 32 * 32,
            "CIFAR: pixel count does not match the record count");
    for (int64_t l : d.labels) require(l >= 0 && l < classes, "CIFAR: label out of range");
  });
}

Outcome run_safetensors(std::string_view input) {
  const std::string name = "fuzz.safetensors";
  return attempt(name, [&] {
    SafetensorsFile f = decode_safetensors(input, name);
    // What loads must save and load back unchanged (a checkpoint we read is one we can write).
    std::string again;
    try {
      again = encode_safetensors(f.tensors, f.metadata);
    } catch (const Error& e) {
      require(false, std::string("safetensors: a decoded file does not re-encode: ") + e.what());
    }
    SafetensorsFile g = decode_safetensors(again, name + " (re-encoded)");
    require(g.tensors.size() == f.tensors.size() && g.metadata == f.metadata,
            "safetensors: round trip changed the tensor list or metadata");
    for (size_t i = 0; i < f.tensors.size(); ++i) {
      const NamedTensor& a = f.tensors[i];
      const NamedTensor& b = g.tensors[i];
      require(a.name == b.name && a.dtype == b.dtype && a.tensor.shape() == b.tensor.shape(),
              "safetensors: round trip changed tensor '" + a.name + "'");
      require(std::memcmp(a.tensor.data(), b.tensor.data(),
                          static_cast<size_t>(a.tensor.numel()) * sizeof(float)) == 0,
              "safetensors: round trip changed the values of '" + a.name + "'");
    }
  });
}

Outcome run_image(std::string_view input) {
  if (input.size() < 3) return {false, "short input"};
  const uint8_t mode = static_cast<uint8_t>(input[0]);
  const int64_t channels = (mode & 1) ? 3 : 1;
  const bool resize = (mode & 2) != 0;
  const int64_t height = resize ? static_cast<uint8_t>(input[1]) % 32 + 1 : 0;
  const int64_t width = resize ? static_cast<uint8_t>(input[2]) % 32 + 1 : 0;
  const std::string_view file = input.substr(resize ? 3 : 1);
  const std::string name = "fuzz-image.png";
  return attempt(name, [&] {
    ImageInfo info = image_info(file, name);
    DecodedImage img = decode_image(file, name, channels, height, width);
    require(img.channels == channels, "image: wrong channel count");
    require(resize ? img.height == height && img.width == width
                   : img.height == info.height && img.width == info.width,
            "image: decoded size differs from the header's or the requested size");
    require(img.pixels.size() == static_cast<size_t>(img.channels * img.height * img.width),
            "image: pixel count does not match the size");
  });
}

Outcome run_grid(std::string_view input) {
  return attempt("ablate:", [&] {
    AblationSpec spec;
    for (const std::string& line : lines(input)) {
      if (line.rfind("preset ", 0) == 0) {
        for (Factor& f : preset_factors(line.substr(7))) spec.factors.push_back(f);
      } else {
        spec.factors.push_back(parse_factor(line));
      }
    }
    std::vector<Arm> arms = expand_arms(spec);
    size_t expected = 1;
    for (const Factor& f : spec.factors) expected *= f.values.size();
    require(arms.size() == expected, "grid: arm count is not the product of the value counts");
    std::set<std::string> names;
    for (const Arm& a : arms) {
      require(names.insert(a.name).second, "grid: duplicate arm name " + a.name);
      require(a.settings.size() == spec.factors.size(), "grid: an arm misses a setting");
    }
  });
}

Outcome run_schedule(std::string_view input) {
  std::vector<std::string> parts = lines(input);
  int64_t total_steps = 1000;
  std::string spec = parts[0];
  if (parts.size() >= 2) {
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(parts[0].data(), parts[0].data() + parts[0].size(), v);
    if (ec == std::errc() && ptr == parts[0].data() + parts[0].size()) total_steps = v;
    spec = parts[1];
  }
  return attempt("parse_schedule:", [&] {
    std::unique_ptr<LrSchedule> s = parse_schedule(spec, total_steps);
    const int64_t max = std::numeric_limits<int64_t>::max();
    const int64_t past_end = total_steps > max - 7 ? max : total_steps + 7;
    // Within the run every rate must be a finite float (what the optimizers take) up to the step
    // first_step_above names, which check_schedule_fits refuses a run for; past the run's end a
    // growing schedule may reach +inf.
    const double limit = std::numeric_limits<float>::max();
    const int64_t over = s->first_step_above(0.1, limit, total_steps);
    auto where = [&](int64_t step, double lr) {
      return "schedule '" + spec + "' over " + std::to_string(total_steps) + " steps: lr at step " +
             std::to_string(step) + " is " + std::to_string(lr) + ", first_step_above says " +
             std::to_string(over);
    };
    require(over == -1 || (over >= 0 && over < total_steps), where(over, NAN));
    if (over >= 0) {
      require(!(s->lr(0.1, over) <= limit), where(over, s->lr(0.1, over)));
      if (over > 0) require(s->lr(0.1, over - 1) <= limit, where(over - 1, s->lr(0.1, over - 1)));
    }
    const int64_t last = total_steps > 0 ? total_steps - 1 : 0;
    for (int64_t step : {int64_t{0}, int64_t{1}, total_steps / 2, last, total_steps, past_end,
                         int64_t{1} << 40, max}) {
      if (step < 0) continue;
      double lr = s->lr(0.1, step);
      require(!std::isnan(lr) && lr >= 0, where(step, lr));
      if (step < total_steps && (over < 0 || step < over)) require(lr <= limit, where(step, lr));
    }
  });
}

const std::vector<std::pair<std::string, Driver>>& drivers() {
  static const std::vector<std::pair<std::string, Driver>> all = {
      {"idx", run_idx},     {"cifar", run_cifar}, {"safetensors", run_safetensors},
      {"image", run_image}, {"grid", run_grid},   {"schedule", run_schedule}};
  return all;
}

}  // namespace bnlab::fuzz

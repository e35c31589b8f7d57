// Checkpoint files of a run directory; the format and the crash-safety argument are in
// train/checkpoint.h.
#include "train/checkpoint.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <regex>

#include "core/error.h"
#include "core/serialize.h"
#include "train/run_dir.h"

namespace bnlab {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFormat = "bnlab-train-state-1";
// Model tensors inside train_state.safetensors; '/' never occurs in a module path or optimizer
// state name, so the two sets cannot collide.
constexpr const char* kModelPrefix = "model/";

template <typename T>
std::string bits_of(T value) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t> bits;
  std::memcpy(&bits, &value, sizeof bits);
  return std::to_string(bits);
}

}  // namespace

void save_checkpoint(const std::string& dir, const Model& model, const Optimizer& opt,
                     const CheckpointState& s) {
  std::vector<NamedTensor> weights = model.net->state_dict();
  save_safetensors((fs::path(dir) / "model.safetensors").string(), weights,
                   {{"format", "pytorch state_dict"},
                    {"model", model.spec.name},
                    {"step", std::to_string(s.step)}});
  // What eval --json measured was the model just replaced (a resumed run's older one).
  remove_eval_reports(dir);

  std::vector<NamedTensor> state;
  for (const NamedTensor& w : weights) state.push_back({kModelPrefix + w.name, w.tensor, w.dtype});
  for (auto& [name, t] : opt.state_tensors()) state.push_back({name, t, DType::F32});
  Rng::State r = model.dropout_rng->state();
  // Floating-point values that must round-trip exactly are stored by their bits.
  Metadata meta{{"format", kStateFormat},
                {"step", std::to_string(s.step)},
                {"optimizer_step_count", std::to_string(opt.step_count())},
                {"elapsed_s", std::to_string(s.elapsed)},
                {"dropout_rng_state", std::to_string(r.state)},
                {"dropout_rng_inc", std::to_string(r.inc)},
                {"dropout_rng_has_spare", r.has_spare ? "1" : "0"},
                {"dropout_rng_spare_bits", bits_of(r.spare)},
                {"running_loss_sum_bits", bits_of(s.loss_sum)},
                {"running_correct", std::to_string(s.correct)},
                {"running_seen", std::to_string(s.seen)}};
  save_safetensors((fs::path(dir) / "train_state.safetensors").string(), state, meta);
}

std::optional<int64_t> checkpoint_step(const std::string& dir) {
  const fs::path path = fs::path(dir) / "train_state.safetensors";
  if (!fs::exists(path)) return std::nullopt;
  const Metadata meta = load_safetensors(path.string()).metadata;
  const auto it = meta.find("step");
  if (it == meta.end() || it->second.empty() || it->second.size() > 18) return std::nullopt;
  for (char ch : it->second)
    if (ch < '0' || ch > '9') return std::nullopt;
  return std::stoll(it->second);
}

CheckpointState load_checkpoint(const std::string& dir, Model& model, Optimizer& opt) {
  std::string state_path = (fs::path(dir) / "train_state.safetensors").string();
  SafetensorsFile state = load_safetensors(state_path);
  auto meta = [&](const char* key) -> const std::string& {
    auto it = state.metadata.find(key);
    BNLAB_CHECK(it != state.metadata.end(), state_path, ": metadata has no '", key, "'");
    return it->second;
  };
  // Unsigned decimal metadata; a missing key reads as `fallback` when one is given (keys added
  // after the first checkpoints were written).
  auto meta_u64 = [&](const char* key, std::optional<uint64_t> fallback = std::nullopt) {
    if (fallback && !state.metadata.count(key)) return *fallback;
    const std::string& text = meta(key);
    try {
      size_t used = 0;
      uint64_t v = std::stoull(text, &used);
      if (used == text.size() && text[0] != '-') return v;
    } catch (const std::exception&) {
    }
    BNLAB_FAIL(state_path, ": metadata '", key, "' is '", text, "', expected a whole number");
  };
  BNLAB_CHECK(meta("format") == kStateFormat, state_path, ": format '", meta("format"),
              "', expected ", kStateFormat);

  std::vector<NamedTensor> weights;
  std::vector<std::pair<std::string, Tensor>> opt_state;
  const size_t prefix_len = std::strlen(kModelPrefix);
  for (NamedTensor& e : state.tensors) {
    if (e.name.compare(0, prefix_len, kModelPrefix) == 0) {
      weights.push_back({e.name.substr(prefix_len), e.tensor, e.dtype});
    } else {
      opt_state.emplace_back(e.name, e.tensor);
    }
  }
  // Checkpoints written before train_state held the weights: take them from model.safetensors.
  if (weights.empty())
    weights = load_safetensors((fs::path(dir) / "model.safetensors").string()).tensors;

  // Every value is checked like the flag it came from before anything is changed: a hand-edited
  // or corrupt state must not resume a run from garbage.
  auto meta_in = [&](const char* key, uint64_t hi,
                     std::optional<uint64_t> fallback = std::nullopt) {
    uint64_t v = meta_u64(key, fallback);
    BNLAB_CHECK(v <= hi, state_path, ": metadata '", key, "' is ", v, ", over the limit ", hi);
    return v;
  };
  constexpr uint64_t kMaxCount = uint64_t{1} << 62;  // steps and image counts: int64-safe sums
  CheckpointState s;
  s.step = static_cast<int64_t>(meta_in("step", kMaxCount));
  const uint64_t opt_steps = meta_in("optimizer_step_count", kMaxCount);
  const std::string& has_spare = meta("dropout_rng_has_spare");
  BNLAB_CHECK(has_spare == "0" || has_spare == "1", state_path,
              ": metadata 'dropout_rng_has_spare' is '", has_spare, "', expected 0 or 1");
  Rng::State r{meta_u64("dropout_rng_state"), meta_u64("dropout_rng_inc"), 0.0f, has_spare == "1"};
  auto spare_bits = static_cast<uint32_t>(meta_in("dropout_rng_spare_bits", UINT32_MAX));
  std::memcpy(&r.spare, &spare_bits, sizeof spare_bits);
  uint64_t loss_bits = meta_u64("running_loss_sum_bits", 0);
  std::memcpy(&s.loss_sum, &loss_bits, sizeof loss_bits);
  s.correct = static_cast<int64_t>(meta_in("running_correct", kMaxCount, 0));
  s.seen = static_cast<int64_t>(meta_in("running_seen", kMaxCount, 0));
  BNLAB_CHECK(s.correct <= s.seen, state_path, ": metadata 'running_correct' (", s.correct,
              ") exceeds 'running_seen' (", s.seen, ")");
  BNLAB_CHECK(s.seen == 0 || std::isfinite(s.loss_sum), state_path,
              ": metadata 'running_loss_sum_bits' is not a finite number");
  {
    const std::string& text = meta("elapsed_s");
    char* end = nullptr;
    s.elapsed = text.empty() ? NAN : std::strtod(text.c_str(), &end);
    BNLAB_CHECK(end == text.c_str() + text.size() && std::isfinite(s.elapsed) && s.elapsed >= 0,
                state_path, ": metadata 'elapsed_s' is '", text,
                "', expected a finite number of seconds >= 0");
  }

  // Everything parsed: only now change the model, optimizer and generator.
  try {
    model.net->load_state_dict(weights);
    opt.load_state_tensors(opt_state);
  } catch (const Error& e) {
    throw Error(state_path + ": " + e.what(), e.where());
  }
  opt.set_step_count(static_cast<int64_t>(opt_steps));
  model.dropout_rng->set_state(r);
  return s;
}

void remove_stale_temporaries(const std::string& dir) {
  static const std::regex kTemporary(R"(.+\.tmp\.[0-9]+\.[0-9]+)");
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec) && std::regex_match(e.path().filename().string(), kTemporary))
      fs::remove(e.path(), ec);
  }
}

}  // namespace bnlab

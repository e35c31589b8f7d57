// The settings of a run (TrainConfig), each defined once: its config.json key, its flag, its help
// text and the rule its value must satisfy. The flags of `bnlab train` and `bnlab ablate`,
// config.json (written and read back), the check that a resumed run's flags agree with its saved
// config, and ablation factors all come from this one table, so a setting cannot be validated in
// one place and not in another.
//
// Every value enters through Knob::set, from text (a flag, an ablation factor value) or from a
// config.json value turned into text, and the same rule rejects it: a whole number that does not
// fit (no clamping to INT64_MAX, no "-1" wrapping to 2^64-1), a float that is not finite as a
// float (1e39), a value outside its range, a name that is not one of the choices. Set's messages
// name neither flag nor file; callers prefix the one they read ("--lr: ...",
// "run/config.json: key 'lr': ...").
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/trainer.h"

namespace bnlab {

struct Knob {
  enum class Kind { kString, kInt, kUInt, kFloat, kBool };
  std::string key;    // config.json key; "model.norm" is j["model"]["norm"]
  std::string flag;   // "--norm"; "" for a setting with no flag
  std::string alias;  // a short flag ("-b") or ""
  std::string help;
  Kind kind = Kind::kString;
  // Parses `text`, checks it and stores it in cfg; throws bnlab::Error("must be ..., got '...'").
  std::function<void(TrainConfig&, const std::string&)> set;
  // The value as text that set() reads back to the same value (floats bit-exactly).
  std::function<std::string(const TrainConfig&)> get;
  bool resume_may_change = false;  // --resume accepts a new value (run length, threads, data dir)
  bool optional_in_json = false;   // configs written before the key existed keep the default
  bool factor = false;  // `bnlab ablate --vary NAME=...` may vary it (NAME: the flag without "--")
};

// The table, in the order flags are listed in --help and keys are written to config.json.
const std::vector<Knob>& knobs();
// The knob with this flag ("--lr" or "-b"), or nullptr.
const Knob* find_knob_by_flag(const std::string& flag);

// Rules between settings, checked once all are set: steps or epochs > 0, the schedule against the
// run length and --lr (check_schedule_fits, when --steps fixes the length), the probe unit against
// the model's probe layer. Throws bnlab::Error naming the settings by flag.
void check_config(const TrainConfig& cfg);

// The schedule against a run of `steps` steps (--steps, or the epochs' steps once the data is
// known): it must parse for that length, and its rate for --lr must stay a finite float at every
// step. Throws bnlab::Error naming --schedule and the first step whose rate overflows.
void check_schedule_fits(const TrainConfig& cfg, int64_t steps);

// Strict text -> number conversions the knobs and the other numeric flags share. Each accepts the
// whole text only, in [lo, hi], and throws bnlab::Error("must be ..., got '...'").
int64_t parse_whole_number(const std::string& text, int64_t lo, int64_t hi);
uint64_t parse_unsigned(const std::string& text);
double parse_real(const std::string& text, double lo, double hi, bool lo_open, bool hi_open);

}  // namespace bnlab

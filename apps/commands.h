// The bnlab subcommands. Each add_*_command registers its flags on the parent CLI11 app and returns
// the function that runs it once parsing succeeded (return value: the process exit code).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

namespace bnlab::apps {

using Runner = std::function<int()>;

struct Command {
  CLI::App* app;
  Runner run;
};

Command add_train_command(CLI::App& parent);
Command add_eval_command(CLI::App& parent);
Command add_ablate_command(CLI::App& parent);
Command add_data_command(CLI::App& parent);
Command add_bench_command(CLI::App& parent);
Command add_study_command(CLI::App& parent);

// A mistake in how the command was called (conflicting flags, an empty --out), found after CLI11
// parsed the flags: main prints it like a bad flag and exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Validators shared by the subcommands, for every numeric flag: a finite number > 0 (CLI11's
// PositiveNumber lets NaN through, and its message spells out a range up to 1.8e308), and a finite
// number >= 0.
extern const CLI::Validator kFinitePositive;
extern const CLI::Validator kFiniteNonNegative;
// A finite number in [lo, hi]: CLI::Range lets NaN through (every comparison with it is false).
CLI::Validator finite_number_in(double lo, double hi);
// A whole number in [lo, hi], whole text only: "1e20", "2.5" and numbers past int64 are refused
// rather than clamped (train/knobs.h parse_whole_number).
CLI::Validator whole_number_in(int64_t lo, int64_t hi);
// A comma-separated list of whole numbers in [lo, hi] ("1,2").
CLI::Validator whole_number_list_in(int64_t lo, int64_t hi);
// 0 to 2^64-1; "-1" is refused rather than wrapped.
extern const CLI::Validator kUnsigned64;
// The value rule of the training flag `flag` (train/knobs.h), for a command that takes the flag
// without a TrainConfig to set: `eval --dataset` refuses what `train --dataset` refuses.
CLI::Validator knob_value(const std::string& flag);
// Throws UsageError unless `split` is a split of `dataset` (dataset_splits); a folder's splits are
// its sub-directories, so any name passes. Call it before any data is read.
void check_split(const std::string& dataset, const std::string& split);

}  // namespace bnlab::apps

// The bnlab subcommands. Each add_*_command registers its flags on the parent CLI11 app and returns
// the function that runs it once parsing succeeded (return value: the process exit code).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
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

// Validators shared by the subcommands, for every numeric flag: a finite number > 0 (CLI11's
// PositiveNumber lets NaN through, and its message spells out a range up to 1.8e308), and a finite
// number >= 0.
extern const CLI::Validator kFinitePositive;
extern const CLI::Validator kFiniteNonNegative;

}  // namespace bnlab::apps

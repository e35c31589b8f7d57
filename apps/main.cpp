// bnlab: the command-line front door. main only dispatches: bad flags print the problem and the
// subcommand's usage and exit 2 (CLI11); library errors print "error: ..." and exit 1, and so does
// output that did not reach stdout (a full disk): results must not be lost with exit 0.
//
// Every message goes out in one write(2) (core/io.h write_whole_line): under mpirun, or in a
// test's `2>&1`, several processes share one pipe, and a line written in parts can be split by
// another process's output.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <vector>

#include "apps/commands.h"
#include "core/blas.h"
#include "core/cpu_isa.h"
#include "core/distributed.h"
#include "core/error.h"
#include "core/io.h"
#include "core/version.h"
#include "data/datasets.h"
#include "train/interrupt.h"
#include "train/knobs.h"

namespace bnlab::apps {

const CLI::Validator kFinitePositive(
    [](std::string& s) -> std::string {
      try {
        double v = std::stod(s);
        if (std::isfinite(v) && v > 0) return "";
      } catch (const std::exception&) {
      }
      return "must be a finite number > 0, got '" + s + "'";
    },
    "POSITIVE");

const CLI::Validator kFiniteNonNegative(
    [](std::string& s) -> std::string {
      try {
        double v = std::stod(s);
        if (std::isfinite(v) && v >= 0) return "";
      } catch (const std::exception&) {
      }
      return "must be a finite number >= 0, got '" + s + "'";
    },
    "NONNEGATIVE");

namespace {

// CLI11 validators return "" for a good value and the message otherwise.
template <typename Check>
CLI::Validator validator(Check check, const std::string& name) {
  return CLI::Validator(
      [check](std::string& s) -> std::string {
        try {
          check(s);
          return "";
        } catch (const bnlab::Error& e) {
          return e.what();
        }
      },
      name);
}

}  // namespace

CLI::Validator finite_number_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        try {
          size_t used = 0;
          const double v = std::stod(s, &used);
          if (used == s.size() && std::isfinite(v) && v >= lo && v <= hi) return "";
        } catch (const std::exception&) {
        }
        char range[64];
        std::snprintf(range, sizeof range, "must be a number from %g to %g", lo, hi);
        return range + (", got '" + s + "'");
      },
      "NUMBER");
}

CLI::Validator whole_number_in(int64_t lo, int64_t hi) {
  return validator([lo, hi](const std::string& s) { parse_whole_number(s, lo, hi); }, "INT");
}

CLI::Validator whole_number_list_in(int64_t lo, int64_t hi) {
  return validator(
      [lo, hi](const std::string& s) {
        size_t start = 0;
        while (true) {
          size_t comma = s.find(',', start);
          parse_whole_number(s.substr(start, comma - start), lo, hi);
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
      },
      "LIST");
}

const CLI::Validator kUnsigned64 =
    validator([](const std::string& s) { parse_unsigned(s); }, "UINT64");

CLI::Validator knob_value(const std::string& flag) {
  const Knob* k = find_knob_by_flag(flag);
  return validator(
      [k](const std::string& s) {
        TrainConfig scratch;
        k->set(scratch, s);
      },
      "TEXT");
}

void check_split(const std::string& dataset, const std::string& split) {
  if (dataset.rfind("folder:", 0) == 0) return;
  const std::vector<std::string> splits = dataset_splits(dataset);
  if (std::find(splits.begin(), splits.end(), split) != splits.end()) return;
  std::string names;
  for (size_t i = 0; i < splits.size(); ++i)
    names += (i == 0 ? "" : i + 1 == splits.size() ? " or " : ", ") + splits[i];
  throw UsageError("--split: must be " + names + " for " + dataset + ", got '" + split + "'");
}

namespace {

// Where an error was thrown (file:line) is for developers: shown with --debug, BNLAB_DEBUG=1 or
// in a debug build, never in a user's message.
bool show_error_locations(bool debug_flag) {
#ifndef NDEBUG
  return true;
#else
  const char* env = std::getenv("BNLAB_DEBUG");
  return debug_flag || (env != nullptr && *env != '\0' && std::string(env) != "0");
#endif
}

// Levenshtein distance, for "did you mean" (a flag or a command is short: the quadratic table is
// nothing).
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The candidate closest to `word`, if at most two edits away ("" otherwise).
std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 3;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

// "did you mean --epochs?" for an unknown --flag close to one the subcommand has ("" otherwise).
std::string did_you_mean(const CLI::App& app, const std::string& arg) {
  if (arg.rfind("--", 0) != 0) return "";
  const std::string given = arg.substr(0, arg.find('='));
  std::vector<std::string> flags;
  for (const CLI::Option* o : app.get_options())
    for (const std::string& name : o->get_lnames()) flags.push_back("--" + name);
  const std::string best = closest(given, flags);
  return best.empty() ? "" : given + ": did you mean " + best + "?\n";
}

// The names of `app`'s subcommands (option groups are nameless subcommands: left out).
std::vector<std::string> command_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands(nullptr))
    if (!sub->get_name().empty()) names.push_back(sub->get_name());
  return names;
}

// The word given where `selected` wanted one of its subcommands ("" if there is none): the first
// word CLI11 left over, when `selected` has subcommands, none was given, and it is not a --flag.
std::string unknown_command(const std::vector<std::string>& leftovers, const CLI::App& selected) {
  if (leftovers.empty() || leftovers[0].rfind('-', 0) == 0 || !selected.get_subcommands().empty())
    return "";
  return command_names(selected).empty() ? "" : leftovers[0];
}

void report_stdout_error(int err) {
  bnlab::write_whole_line(STDERR_FILENO,
                          std::string("bnlab: error writing standard output") +
                              (err != 0 ? std::string(": ") + std::strerror(err) : "") + "\n");
}

// Results lost to a full disk or a closed pipe must not exit 0 (coreutils' close_stdout): stdout
// is flushed here and a write that failed, now or earlier, is reported. A command that failed
// already keeps its own exit code.
int check_stdout(int code) {
  errno = 0;
  std::cout.flush();
  // std::cout writes through C's stdout (sync_with_stdio), but skips the flush while its failbit
  // is set (ablate's ranks other than 0): stdout itself is flushed too.
  const bool flushed = std::fflush(stdout) == 0;
  int err = errno;
  if (flushed && std::ferror(stdout) == 0 && !std::cout.bad()) return code;
  // The write that failed was an earlier one (a long output), its errno long overwritten. A write
  // of nothing, harmless, gets it again from a device that refuses every write (/dev/full).
  if (err == 0 && ::write(STDOUT_FILENO, "", 0) < 0) err = errno;
  report_stdout_error(err);
  return code == 0 ? 1 : code;
}

void print_error(const std::exception& e, bool with_location) {
  std::string line = std::string("error: ") + e.what();
  if (const auto* be = dynamic_cast<const bnlab::Error*>(&e);
      be != nullptr && with_location && !be->where().empty()) {
    line += " (at " + be->where() + ")";
  }
  bnlab::write_whole_line(STDERR_FILENO, line + "\n");
}

int run_bnlab(int argc, char** argv) {
  set_command_line(argc, argv);  // printed back as the resume command after SIGINT/SIGTERM
  CLI::App app{
      "bnlab: see what batch normalization does. Train, evaluate and ablate networks on MNIST,\n"
      "Fashion-MNIST and CIFAR-10 with and without BatchNorm.\n\n"
      "  bnlab ablate                 the BN paper's Figure 1 on MNIST (default study)\n"
      "  bnlab study                  every claim about BN, with controls and verdicts\n"
      "  bnlab train --model lenet --norm batch --epochs 2\n"
      "  bnlab eval --checkpoint runs/train\n"
      "  bnlab data show --dataset cifar10 --out grid.png"};
  app.set_version_flag("--version", std::string("bnlab ") + version() + " (" + git_commit() + ")");
  app.require_subcommand(1);
  // A flag given twice takes its last value (argparse's rule), for every subcommand's options.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  bool debug = false;
  app.add_flag("--debug", debug, "Error messages name the source file:line that threw them")
      ->envname("BNLAB_DEBUG");
  app.fallthrough();  // --debug also after the subcommand name

  std::vector<Command> commands{add_train_command(app),  add_eval_command(app),
                                add_ablate_command(app), add_data_command(app),
                                add_bench_command(app),  add_study_command(app)};
  auto* info =
      app.add_subcommand("info", "Print the build: version, BLAS and its threading, thread count");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help, --version: CLI11 prints them, in one write
      std::ostringstream out, err;
      app.exit(e, out, err);
      if (!bnlab::write_whole_line(STDOUT_FILENO, out.str())) {
        report_stdout_error(errno);
        return 1;
      }
      bnlab::write_whole_line(STDERR_FILENO, err.str());
      return 0;
    }
    // A bad flag gets the problem and where the flags are listed, not the whole --help text.
    std::string command = "bnlab";
    const CLI::App* selected = &app;
    while (!selected->get_subcommands().empty()) {
      selected = selected->get_subcommands().front();
      command += " " + selected->get_name();
    }
    // A word CLI11 did not know is said first, whatever else it found: it checks for required
    // flags and subcommands before it looks at what is left over, so `eval --checkpont x` was
    // "--checkpoint is required" and `traing` "A subcommand is required", neither naming the typo.
    // With fallthrough, the words no subcommand knew are left with the top-level app.
    const std::vector<std::string> leftovers = app.remaining(true);
    const std::string word = unknown_command(leftovers, *selected);
    std::string message = std::string(e.what()) + "\n";
    if (!word.empty()) {
      const std::string near = closest(word, command_names(*selected));
      message = "unknown command '" + word + "'" +
                (near.empty() ? "" : "; did you mean '" + near + "'?") + "\n";
    } else if (!leftovers.empty()) {
      // In the order given (CLI11's own message lists them backwards).
      message = std::string("The following argument") + (leftovers.size() > 1 ? "s were" : " was") +
                " not expected:";
      for (const std::string& w : leftovers) message += " " + w;
      message += "\n";
      for (const std::string& w : leftovers) message += did_you_mean(*selected, w);
    }
    bnlab::write_whole_line(STDERR_FILENO, "error: " + message + "Run '" + command +
                                               " --help' for the " +
                                               (word.empty() ? "flags" : "commands") + ".\n");
    return 2;
  }
  try {
    // A bad BNLAB_MAX_ISA stops here, before any work, rather than at the first kernel.
    (void)bnlab::cpu_isa();
    for (const Command& c : commands)
      if (c.app->parsed()) return c.run();
    if (info->parsed()) {
      std::cout << "bnlab " << version() << " (" << git_commit() << ")\n"
                << "SIMD:    " << bnlab::cpu_isa_name(bnlab::cpu_isa())
                << (bnlab::cpu_isa() < bnlab::cpu_isa_supported()
                        ? std::string(" (the CPU has ") +
                              bnlab::cpu_isa_name(bnlab::cpu_isa_supported()) +
                              "; capped by BNLAB_MAX_ISA)"
                        : std::string())
                << "\n"
                << "GEMM:    " << bnlab::gemm_path_name() << "\n"
                << "BLAS:    OpenBLAS, " << bnlab::blas_parallel_mode()
                << " threading: " << bnlab::blas_config() << "\n"
                << "threads: " << bnlab::num_threads() << "\n";
    }
  } catch (const UsageError& e) {
    bnlab::write_whole_line(
        STDERR_FILENO, std::string("error: ") + e.what() + "\nRun with --help for the flags.\n");
    return 2;
  } catch (const std::exception& e) {
    std::cout.flush();  // what the run printed so far comes before the error
    print_error(e, show_error_locations(debug));
    bnlab::abort_job_if_distributed(1);  // under mpirun: end the ranks waiting for this one
    return 1;
  }
  return 0;
}

}  // namespace

}  // namespace bnlab::apps

int main(int argc, char** argv) {
  return bnlab::apps::check_stdout(bnlab::apps::run_bnlab(argc, argv));
}

// bnlab: the command-line front door. main only dispatches: bad flags print the problem and the
// subcommand's usage and exit 2 (CLI11); library errors print "error: ..." and exit 1.
#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>

#include "apps/commands.h"
#include "apps/interrupt.h"
#include "core/blas.h"
#include "core/distributed.h"
#include "core/error.h"

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

}  // namespace bnlab::apps

int main(int argc, char** argv) {
  using namespace bnlab::apps;
  set_command_line(argc, argv);  // printed back as the resume command after SIGINT/SIGTERM
  CLI::App app{
      "bnlab: see what batch normalization does. Train, evaluate and ablate networks on MNIST,\n"
      "Fashion-MNIST and CIFAR-10 with and without BatchNorm.\n\n"
      "  bnlab ablate                 the BN paper's Figure 1 on MNIST (default study)\n"
      "  bnlab train --model lenet --norm batch --epochs 2\n"
      "  bnlab eval --checkpoint runs/train\n"
      "  bnlab data show --dataset cifar10 --out grid.png"};
  app.set_version_flag("--version", std::string("bnlab ") + BNLAB_VERSION);
  app.failure_message(CLI::FailureMessage::help);
  app.require_subcommand(1);

  std::vector<Command> commands{add_train_command(app), add_eval_command(app),
                                add_ablate_command(app), add_data_command(app),
                                add_bench_command(app)};
  auto* info =
      app.add_subcommand("info", "Print the build: version, BLAS and its threading, thread count");
  info->failure_message(CLI::FailureMessage::help);
  for (const Command& c : commands) c.app->failure_message(CLI::FailureMessage::help);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints --help/--version output, or the error and the usage
    return code == 0 ? 0 : 2;
  }
  try {
    for (const Command& c : commands)
      if (c.app->parsed()) return c.run();
    if (info->parsed()) {
      std::cout << "bnlab " << BNLAB_VERSION << "\n"
                << "BLAS:    OpenBLAS, " << bnlab::blas_parallel_mode()
                << " threading: " << bnlab::blas_config() << "\n"
                << "threads: " << bnlab::num_threads() << "\n";
    }
  } catch (const bnlab::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    bnlab::abort_job_if_distributed(1);  // under mpirun: end the ranks waiting for this one
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    bnlab::abort_job_if_distributed(1);
    return 1;
  }
  return 0;
}

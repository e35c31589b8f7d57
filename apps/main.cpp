// bnlab: the command-line front door. Subcommands live in their own files; main only dispatches and turns
// library errors into "error: ..." with exit code 1 (bad flags exit 2 with usage, via CLI11).
#include <CLI/CLI.hpp>

#include <iostream>

#include "core/blas.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"bnlab: see what batch normalization does. Train, evaluate and ablate networks on MNIST, "
               "Fashion-MNIST and CIFAR-10, with and without BatchNorm."};
  app.set_version_flag("--version", std::string("bnlab ") + BNLAB_VERSION);
  app.require_subcommand(0, 1);

  auto* info = app.add_subcommand("info", "Print the build's configuration: BLAS, threads, version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    if (info->parsed() || app.get_subcommands().empty()) {
      std::cout << "bnlab " << BNLAB_VERSION << "\n"
                << "BLAS:    OpenBLAS (" << bnlab::blas_parallel_mode() << ") " << bnlab::blas_config()
                << "\n"
                << "threads: " << bnlab::num_threads() << "\n";
      if (app.get_subcommands().empty()) std::cout << "\n" << app.help();
    }
  } catch (const bnlab::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

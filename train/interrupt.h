// Graceful SIGINT/SIGTERM for `bnlab train` and `bnlab ablate`. The first signal only sets a flag
// (the one async-signal-safe thing a handler may do here); the training loop polls it at step
// boundaries, saves a checkpoint and stops, and the command prints how to resume and exits
// 128 + signal (130 for SIGINT, 143 for SIGTERM). A second signal exits at once with that code.
#pragma once

#include <string>
#include <vector>

#include "core/shell_quote.h"  // shell_quote, which quoted_command_line applies to each word

namespace bnlab {

// Installs the handlers for SIGINT and SIGTERM (idempotent).
void install_interrupt_handlers();
// The first signal received since the handlers were installed, or 0.
int interrupt_signal();
inline bool interrupt_requested() { return interrupt_signal() != 0; }
// "SIGINT", "SIGTERM", or "signal N".
std::string signal_name(int sig);

// The command line bnlab was started with, kept by main() so a command can print itself back
// (argv[0] as typed, so the printed command works from the same directory).
void set_command_line(int argc, const char* const* argv);
const std::vector<std::string>& command_line();
// command_line() with each word shell-quoted, space-separated.
std::string quoted_command_line();

}  // namespace bnlab

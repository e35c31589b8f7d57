// SIGINT/SIGTERM handling: a flag set by the handler, polled by the training loop.
#include "train/interrupt.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace bnlab {

namespace {

// Lock-free, so reading and writing it in a signal handler is async-signal-safe.
std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

std::vector<std::string>& stored_command_line() {
  static std::vector<std::string> words;
  return words;
}

extern "C" void on_interrupt(int sig) {
  int expected = 0;
  if (!g_signal.compare_exchange_strong(expected, sig)) {
    // Second signal: the user wants out now. _exit is async-signal-safe; exit() is not.
    ::_exit(128 + sig);
  }
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  // Restart interrupted reads and writes: the loop, not a failing syscall, reacts to the signal.
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int interrupt_signal() { return g_signal.load(); }

std::string signal_name(int sig) {
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

void set_command_line(int argc, const char* const* argv) {
  stored_command_line().assign(argv, argv + argc);
}

const std::vector<std::string>& command_line() { return stored_command_line(); }

std::string quoted_command_line() {
  std::string out;
  for (const std::string& w : command_line()) out += (out.empty() ? "" : " ") + shell_quote(w);
  return out;
}

}  // namespace bnlab

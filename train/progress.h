// Progress display for long work: on a terminal a one-line bar redrawn in place (percent, ETA,
// step, loss, accuracy, images/s); otherwise plain greppable lines ("step 500/5000 | loss 0.412 |
// ...") every `log_every` steps, so logs stay readable. The bar is cut to the terminal's width;
// TERM=dumb, and CI set, get the plain lines.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace bnlab {

class Progress {
 public:
  // `label` prefixes every line (e.g. an ablation arm). log_every <= 0 picks ~20 lines per run.
  // out == nullptr: silent.
  Progress(std::string label, int64_t total_steps, int64_t log_every = 0, FILE* out = stdout,
           bool force_plain = false);
  ~Progress();

  // Reports the state after `step` steps (1-based). Cheap: redraws at most ~10 times a second.
  void update(int64_t step, double loss, double accuracy, double images_per_second);
  // Prints a line that must not be overwritten (evaluation results), keeping the bar below it.
  void line(const std::string& text);
  void finish();

  static bool is_terminal(FILE* f);

 private:
  std::string label_;
  int64_t total_;
  int64_t log_every_;
  FILE* out_;
  bool tty_;
  bool bar_visible_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::string last_bar_;
};

// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);

}  // namespace bnlab

#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace bnlab {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", static_cast<long>(s / 3600),
                  static_cast<long>(s / 60 % 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", static_cast<long>(s / 60),
                  static_cast<long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lds", static_cast<long>(s));
  }
  return buf;
}

bool Progress::is_terminal(FILE* f) {
  return f != nullptr && isatty(fileno(f)) != 0 && std::getenv("CI") == nullptr;
}

Progress::Progress(std::string label, int64_t total_steps, int64_t log_every, FILE* out,
                   bool force_plain)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total_steps, 1)),
      log_every_(log_every > 0 ? log_every : std::max<int64_t>(total_ / 20, 1)),
      out_(out),
      tty_(!force_plain && is_terminal(out)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::seconds(1)) {}

Progress::~Progress() { finish(); }

void Progress::update(int64_t step, double loss, double accuracy, double images_per_second) {
  if (!out_) return;
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double eta =
      step > 0 ? elapsed / static_cast<double>(step) * static_cast<double>(total_ - step) : NAN;
  if (tty_) {
    if (step < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 24;
    int filled = static_cast<int>(width * std::min<int64_t>(step, total_) / total_);
    char buf[256];
    std::snprintf(
        buf, sizeof buf, "%s [%s%s] %3d%% %ld/%ld | loss %.4f | acc %.4f | %.0f img/s | ETA %s",
        label_.c_str(), std::string(static_cast<size_t>(filled), '#').c_str(),
        std::string(static_cast<size_t>(width - filled), '.').c_str(),
        static_cast<int>(100 * step / total_), static_cast<long>(step), static_cast<long>(total_),
        loss, accuracy, images_per_second, format_duration(eta).c_str());
    last_bar_ = buf;
    std::fprintf(out_, "\r\033[K%s", buf);
    std::fflush(out_);
    bar_visible_ = true;
  } else if (step % log_every_ == 0 || step == total_) {
    std::fprintf(out_,
                 "%s step %ld/%ld | loss %.4f | acc %.4f | %.0f img/s | elapsed %s | eta %s\n",
                 label_.c_str(), static_cast<long>(step), static_cast<long>(total_), loss, accuracy,
                 images_per_second, format_duration(elapsed).c_str(), format_duration(eta).c_str());
    std::fflush(out_);
  }
}

void Progress::line(const std::string& text) {
  if (!out_) return;
  if (tty_ && bar_visible_) {
    std::fprintf(out_, "\r\033[K%s\n%s", text.c_str(), last_bar_.c_str());
  } else {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (out_ && tty_ && bar_visible_) {
    std::fprintf(out_, "\n");
    std::fflush(out_);
  }
}

}  // namespace bnlab

#include "train/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

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

// A terminal that can take the redrawn bar: TERM=dumb (Emacs' shell, some CI consoles) has no
// cursor control, and the bar's "\r\033[K" would print as garbage there.
bool Progress::is_terminal(FILE* f) {
  const char* term = std::getenv("TERM");
  return f != nullptr && isatty(fileno(f)) != 0 && std::getenv("CI") == nullptr &&
         (term == nullptr || std::strcmp(term, "dumb") != 0);
}

namespace {

// The terminal's width in columns; 0 if it does not say. Asked at every draw, so that a resized
// window is followed.
size_t terminal_columns(FILE* out) {
  winsize ws{};
  return ::ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0;
}

size_t utf8_columns(const std::string& text) {
  size_t n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// `text` cut to `room` columns, between UTF-8 characters (an arm's label may hold any).
std::string cut_to_columns(std::string text, size_t room) {
  size_t cut = 0, columns = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const bool continuation = (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
    if (!continuation) {
      if (columns == room) break;
      ++columns;
    }
    cut = i + 1;
  }
  text.resize(cut);
  return text;
}

}  // namespace

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
    char figures[192];
    std::snprintf(
        figures, sizeof figures, " %3d%% %ld/%ld | loss %.4f | acc %.4f | %.0f img/s | ETA %s",
        static_cast<int>(100 * step / total_), static_cast<long>(step), static_cast<long>(total_),
        loss, accuracy, images_per_second, format_duration(eta).c_str());
    auto bar = [&](size_t cells) {
      const auto filled = static_cast<size_t>(static_cast<int64_t>(cells) *
                                              std::min<int64_t>(step, total_) / total_);
      return label_ + " [" + std::string(filled, '#') + std::string(cells - filled, '.') + "]" +
             figures;
    };
    // Kept one column short of the terminal's edge: a line that reaches it (or wraps) leaves the
    // cursor on the next row, and "\r\033[K" clears only that row, so every redraw would leave a
    // copy behind. The bar's cells give way first, so that the figures and the ETA stay; what is
    // still too wide is cut.
    const size_t full_cells = 24;
    std::string text = bar(full_cells);
    if (const size_t columns = terminal_columns(out_); columns > 0) {
      const size_t room = columns - 1, length = utf8_columns(text);
      if (length > room) {
        const size_t over = length - room;
        text = cut_to_columns(bar(over < full_cells ? full_cells - over : 0), room);
      }
    }
    last_bar_ = text;
    std::fprintf(out_, "\r\033[K%s", last_bar_.c_str());
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

// train/progress: plain lines every log_every steps (and the last) when the output is not a
// terminal; on a terminal the redrawn bar fits the window's width, less one column (a wrapped bar
// leaves a copy behind at every redraw), UTF-8 cut between characters; TERM=dumb gets plain lines.
// The terminal is a pseudo-terminal whose size the test sets.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "train/progress.h"

using namespace bnlab;

namespace {

// An environment variable set (or unset) for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A pseudo-terminal `columns` wide; out() is its terminal side as a FILE.
class Pty {
 public:
  explicit Pty(unsigned short columns) {
    winsize ws{};
    ws.ws_col = columns;
    ws.ws_row = 24;
    REQUIRE(::openpty(&master_, &slave_, nullptr, nullptr, &ws) == 0);
    ::fcntl(master_, F_SETFL, O_NONBLOCK);
    out_ = ::fdopen(slave_, "w");
    REQUIRE(out_ != nullptr);
  }
  ~Pty() {
    std::fclose(out_);
    ::close(master_);
  }
  Pty(const Pty&) = delete;
  Pty& operator=(const Pty&) = delete;

  FILE* out() const { return out_; }

  // What the terminal received so far.
  std::string read_all() {
    std::fflush(out_);
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::read(master_, buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
    return text;
  }

 private:
  int master_ = -1, slave_ = -1;
  FILE* out_ = nullptr;
};

// The bar's redraws: the text after each "\r\033[K", up to the next control character.
std::vector<std::string> redraws(const std::string& screen) {
  std::vector<std::string> out;
  const std::string clear = "\r\033[K";
  for (size_t at = screen.find(clear); at != std::string::npos; at = screen.find(clear, at)) {
    at += clear.size();
    size_t end = at;
    while (end < screen.size() && screen[end] != '\r' && screen[end] != '\n') ++end;
    out.push_back(screen.substr(at, end - at));
  }
  return out;
}

size_t utf8_columns(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

TEST_CASE("train.progress: not a terminal, a plain line every log_every steps and the last") {
  FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    Progress p("arm", 10, 4, f);
    for (int64_t step = 1; step <= 10; ++step) p.update(step, 0.5, 0.25, 100.0);
  }
  std::rewind(f);
  std::string text;
  for (int c; (c = std::fgetc(f)) != EOF;) text += static_cast<char>(c);
  std::fclose(f);
  CAPTURE(text);
  CHECK(text.find("\033[") == std::string::npos);
  CHECK(text.rfind("arm step 4/10 | loss 0.5000 | acc 0.2500 | 100 img/s | elapsed ", 0) == 0);
  CHECK(text.find("arm step 8/10 |") != std::string::npos);
  CHECK(text.find("arm step 10/10 |") != std::string::npos);
  CHECK(text.find("step 5/10") == std::string::npos);
}

// The bar's two draws (its first update and its last) on a terminal `columns` wide.
std::vector<std::string> draw_bar(unsigned short columns) {
  Pty pty(columns);
  REQUIRE(Progress::is_terminal(pty.out()));
  {
    Progress p("norm-batch/seed-1", 60000, 0, pty.out());
    p.update(1, 2.3025, 0.1, 12345.0);         // the first update draws
    p.update(60000, 0.0123, 0.9876, 23456.0);  // and the last
  }
  const std::string screen = pty.read_all();
  CAPTURE(screen);
  std::vector<std::string> bars = redraws(screen);
  REQUIRE(bars.size() == 2);
  return bars;
}

TEST_CASE("train.progress: on a terminal the bar fits the window, less one column") {
  ScopedEnv no_ci("CI", nullptr);
  ScopedEnv term("TERM", "xterm");
  // Wide enough for all of it: 24 cells, the figures, the ETA.
  const std::vector<std::string> wide = draw_bar(200);
  CHECK(wide[1].find(" [########################] 100% 60000/60000 | ") != std::string::npos);
  CHECK(wide[1].size() >= 30);
  CHECK(wide[1].substr(wide[1].size() - 8) == "| ETA 0s");
  const size_t full = utf8_columns(wide[1]);
  // Ten columns short: the cells give way, the figures and the ETA stay.
  const std::vector<std::string> narrower = draw_bar(static_cast<unsigned short>(full - 9));
  CAPTURE(narrower[1]);
  CHECK(utf8_columns(narrower[1]) == full - 10);
  CHECK(narrower[1].find(" [##############] 100% ") != std::string::npos);
  CHECK(narrower[1].substr(narrower[1].size() - 8) == "| ETA 0s");
  // Narrower than the text without its cells: cut, at the width less one.
  for (unsigned short columns : {40, 72}) {
    CAPTURE(columns);
    for (const std::string& bar : draw_bar(columns)) {
      CAPTURE(bar);
      CHECK(bar.rfind("norm-batch/seed-1 [", 0) == 0);
      CHECK(utf8_columns(bar) == size_t(columns - 1));
    }
  }
}

TEST_CASE("train.progress: a label in UTF-8 is cut between characters") {
  ScopedEnv no_ci("CI", nullptr);
  ScopedEnv term("TERM", "xterm");
  const std::string label =
      "\xc3\xa9t\xc3\xa9-\xce\xb7=\xce\xb7\xce\xb7\xce\xb7\xce\xb7";  // été-η=ηηηη
  // Up to the label's 10 characters: the cut falls inside it.
  for (unsigned short columns = 2; columns <= 11; ++columns) {
    CAPTURE(columns);
    Pty pty(columns);
    {
      Progress p(label, 10, 0, pty.out());
      p.update(10, 1.0, 0.5, 10.0);
    }
    const std::vector<std::string> bars = redraws(pty.read_all());
    REQUIRE(bars.size() == 1);
    CHECK(utf8_columns(bars[0]) == size_t(columns - 1));
    CHECK(label.rfind(bars[0], 0) == 0);  // a prefix of whole characters of the label
    CHECK(bars[0].size() <= label.size());
  }
}

TEST_CASE("train.progress: TERM=dumb gets plain lines, not the redrawn bar") {
  ScopedEnv no_ci("CI", nullptr);
  ScopedEnv term("TERM", "dumb");
  Pty pty(80);
  CHECK_FALSE(Progress::is_terminal(pty.out()));
  {
    Progress p("train", 4, 2, pty.out());
    for (int64_t step = 1; step <= 4; ++step) p.update(step, 1.0, 0.5, 10.0);
  }
  const std::string screen = pty.read_all();
  CAPTURE(screen);
  CHECK(screen.find("\033[") == std::string::npos);
  CHECK(screen.find("train step 2/4 |") != std::string::npos);
  CHECK(screen.find("train step 4/4 |") != std::string::npos);
}

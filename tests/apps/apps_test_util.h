// Helpers for the apps tests: a self-deleting temp directory, a tiny learnable MNIST-shaped dataset
// written as IDX files, and a runner that calls the bnlab CLI (BNLAB_CLI_PATH) and captures its
// exit code and combined stdout + stderr; CliProcess, the CLI as a child process the test can
// signal, and run_shell for a command line the CLI printed.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.h"

namespace apps_test {

namespace fs = std::filesystem;

using TempDir = bnlab::testing::TempDir;
using bnlab::testing::write_bytes;

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("test: cannot read " + path);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// A safetensors file as its JSON header and its data bytes.
struct SafetensorsParts {
  nlohmann::json header;
  std::string data;
};

inline SafetensorsParts split_safetensors(const std::string& path) {
  std::string bytes = read_text(path);
  REQUIRE(bytes.size() >= 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  REQUIRE(8 + n <= bytes.size());
  return {nlohmann::json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// IDX header: 0 0 0x08 (unsigned byte) rank, then big-endian uint32 dimensions.
inline std::vector<uint8_t> idx_header(const std::vector<uint32_t>& dims) {
  std::vector<uint8_t> h = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    h.push_back(static_cast<uint8_t>(d >> 24));
    h.push_back(static_cast<uint8_t>(d >> 16));
    h.push_back(static_cast<uint8_t>(d >> 8));
    h.push_back(static_cast<uint8_t>(d));
  }
  return h;
}

// Writes one split of a learnable 28x28, 10-class dataset: image i has a random label k, noise
// (0..119) everywhere and a brighter 7x7 block (90..209) at position k of a 4x4 grid of blocks (row
// k / 4, column k % 4): easy to learn, but not in one step.
inline void write_mnist_split(const fs::path& dir, const std::string& prefix, uint32_t count,
                              uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&s]() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(s >> 33);
  };
  std::vector<uint8_t> images = idx_header({count, 28, 28});
  std::vector<uint8_t> labels = idx_header({count});
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t k = next() % 10;
    labels.push_back(static_cast<uint8_t>(k));
    uint32_t by = (k / 4) * 7, bx = (k % 4) * 7;
    for (uint32_t y = 0; y < 28; ++y) {
      for (uint32_t x = 0; x < 28; ++x) {
        bool lit = y >= by && y < by + 7 && x >= bx && x < bx + 7;
        uint32_t v = lit ? 90 + next() % 120 : next() % 120;
        images.push_back(static_cast<uint8_t>(v));
      }
    }
  }
  write_bytes((dir / (prefix + "-images-idx3-ubyte")).string(), images);
  write_bytes((dir / (prefix + "-labels-idx1-ubyte")).string(), labels);
}

// <root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte: by default 600 training and 200 test
// images.
inline void write_tiny_mnist(const std::string& root, uint32_t train = 600, uint32_t test = 200) {
  fs::path dir = fs::path(root) / "mnist";
  fs::create_directories(dir);
  write_mnist_split(dir, "train", train, 1);
  write_mnist_split(dir, "t10k", test, 2);
}

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr, interleaved
};

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a full shell command line (e.g. one the CLI printed) with its output captured.
inline CliResult run_shell(const std::string& command_line) {
  CliResult r;
  FILE* pipe = popen((command_line + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("test: popen failed for " + command_line);
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Runs `bnlab <args>` (args already shell-quoted where needed) and waits for it.
inline CliResult run_cli(const std::string& args) {
  return run_shell(shell_quote(BNLAB_CLI_PATH) + " " + args);
}

// Splits CSV text into rows of cells; handles double-quoted cells with "" escapes.
inline std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string cell;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        cell += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cell += c;
      }
    } else if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(cell);
      cell.clear();
      any = true;
    } else if (c == '\n') {
      row.push_back(cell);
      rows.push_back(row);
      row.clear();
      cell.clear();
      any = false;
    } else {
      cell += c;
      any = true;
    }
  }
  if (any) {
    row.push_back(cell);
    rows.push_back(row);
  }
  return rows;
}

// The bnlab CLI as a child process (fork + exec, no shell) whose stdout and stderr go to one pipe,
// for tests that signal it. With `block_output` the pipe is shrunk to one page and filled before
// the child starts, so the child blocks at its first write until the test reads; the test lets
// writes through one at a time (release_writes_until) up to the line it waits for, e.g. the
// header's last one, so that it can signal a run that has made progress but cannot have finished,
// whatever the machine's speed.
class CliProcess {
 public:
  CliProcess(const std::vector<std::string>& args, bool block_output) {
    std::vector<std::string> argv_strings{BNLAB_CLI_PATH};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("test: pipe2 failed");
    read_fd_ = fds[0];
    if (block_output) {
      ::fcntl(fds[1], F_SETPIPE_SZ, 4096);
      ::fcntl(fds[1], F_SETFL, O_NONBLOCK);
      const char filler[2] = {'#', '\n'};
      while (::write(fds[1], filler, 2) == 2) filler_bytes_ += 2;
      ::fcntl(fds[1], F_SETFL, 0);
      pipe_bytes_ = filler_bytes_;
    }
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("test: fork failed");
    if (pid_ == 0) {  // only async-signal-safe calls between fork and exec
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    // Kept with block_output, to refill the pipe (release_writes_until).
    if (block_output) {
      write_fd_ = fds[1];
    } else {
      ::close(fds[1]);
    }
  }
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;
  ~CliProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(read_fd_);
    if (write_fd_ >= 0) ::close(write_fd_);
  }

  pid_t pid() const { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }

  // True once one of the child's threads sleeps inside write(2): with block_output, that is the
  // child waiting for the test to read. Polls /proc; fails the test after `seconds`.
  bool wait_until_blocked_in_write(double seconds = 60) const {
    for (int i = 0; i < static_cast<int>(seconds * 200); ++i) {
      bool gone = false;
      if (blocked_write_bytes(gone) >= 0) return true;
      if (gone) return false;
      ::usleep(5000);
    }
    return false;
  }

  // With block_output: lets the child's writes through one at a time until its output holds
  // `text`, and leaves the child blocked at its next write. Each round the child, blocked writing
  // n bytes into the full pipe, is stopped (SIGSTOP), the pipe drained and refilled to leave
  // exactly n bytes free, and the child continued: a pipe write of up to PIPE_BUF bytes goes in
  // whole, into the last page only where it fits, so that one write fits and the next blocks.
  // Each round starts once the pipe is full again: until the continued child's write is in, /proc
  // may still show it asleep in that write, and taking it for the next one would size the room
  // for the wrong write. False if the child ended, or did not block or stop within `seconds`.
  bool release_writes_until(const std::string& text, double seconds = 60) {
    if (write_fd_ < 0) return false;
    for (;;) {
      if (!wait_until_pipe_full(seconds) || !wait_until_blocked_in_write(seconds)) return false;
      bool gone = false;
      const int64_t pending = blocked_write_bytes(gone);
      if (pending < 0 || pending > static_cast<int64_t>(pipe_bytes_)) return false;
      ::kill(pid_, SIGSTOP);
      if (!wait_until_stopped(seconds)) return false;
      drain();
      const bool found = output_.find(text) != std::string::npos;
      fill(found ? pipe_bytes_ : pipe_bytes_ - static_cast<size_t>(pending));
      ::kill(pid_, SIGCONT);
      if (found) return true;
    }
  }

  // What release_writes_until has read of the child's output so far.
  const std::string& output_so_far() const { return output_; }

  // True once `sig` (sent with signal()) is no longer pending in the child: the kernel has handed
  // it to a handler. Two equal signals sent without this wait can merge into one. Polls /proc;
  // fails the test after `seconds`.
  bool wait_until_taken(int sig, double seconds = 60) const {
    const unsigned long long bit = 1ULL << (sig - 1);
    auto pending = [&](const fs::path& status_file, const std::string& field) {
      std::ifstream in(status_file);
      std::string line;
      while (std::getline(in, line))
        if (line.rfind(field, 0) == 0)
          return (std::stoull(line.substr(field.size()), nullptr, 16) & bit) != 0;
      return false;
    };
    const std::string proc = "/proc/" + std::to_string(pid_);
    for (int i = 0; i < static_cast<int>(seconds * 200); ++i) {
      std::error_code ec;
      bool any = pending(proc + "/status", "ShdPnd:");
      for (const auto& task : fs::directory_iterator(proc + "/task", ec))
        any = any || pending(task.path() / "status", "SigPnd:");
      if (ec) return false;  // the child is gone
      if (!any) return true;
      ::usleep(5000);
    }
    return false;
  }

  // Reads the output to the end (without the filler) and reaps the child. exit_code is the exit
  // status, or 128 + the signal that killed it.
  CliResult finish() {
    CliResult r;
    if (write_fd_ >= 0) {  // else the pipe never reaches its end
      ::close(write_fd_);
      write_fd_ = -1;
    }
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(read_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      r.output.append(buf, static_cast<size_t>(n));
    }
    r.output.erase(0, std::min(filler_bytes_, r.output.size()));
    r.output.insert(0, output_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    r.exit_code = WIFEXITED(status)     ? WEXITSTATUS(status)
                  : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                        : -1;
    return r;
  }

 private:
  static std::string read_proc(const fs::path& path) {
    std::ifstream in(path);
    std::string text;
    std::getline(in, text);
    return text;
  }

  // The size of the write a thread of the child sleeps in, or -1 if none does; `gone` once the
  // child has no threads left to look at.
  int64_t blocked_write_bytes(bool& gone) const {
    std::error_code ec;
    for (const auto& task : fs::directory_iterator(task_dir(), ec)) {
      if (task_state(task.path()) != 'S') continue;
      // "nr fd buf count ...", the arguments in hex.
      std::istringstream call(read_proc(task.path() / "syscall"));
      std::string nr, fd, buffer, count;
      if (call >> nr >> fd >> buffer >> count && nr == std::to_string(SYS_write))
        return static_cast<int64_t>(std::stoull(count, nullptr, 16));
    }
    gone = static_cast<bool>(ec);
    return -1;
  }

  // True once the pipe holds pipe_bytes_ (the child's released write is in: any write it makes
  // now blocks); false if the child exits first or after `seconds`.
  bool wait_until_pipe_full(double seconds) const {
    for (int i = 0; i < static_cast<int>(seconds * 200); ++i) {
      int queued = 0;
      if (::ioctl(read_fd_, FIONREAD, &queued) != 0) return false;
      if (static_cast<size_t>(queued) >= pipe_bytes_) return true;
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid_)
        return false;  // exited (not reaped: finish() does)
      ::usleep(2000);
    }
    return false;
  }

  // True once every thread of the child is stopped (after SIGSTOP). Polls /proc.
  bool wait_until_stopped(double seconds) const {
    for (int i = 0; i < static_cast<int>(seconds * 200); ++i) {
      std::error_code ec;
      bool all = true;
      for (const auto& task : fs::directory_iterator(task_dir(), ec))
        all = all && task_state(task.path()) == 'T';
      if (ec) return false;
      if (all) return true;
      ::usleep(5000);
    }
    return false;
  }

  // Reads what the pipe holds now (the child is stopped), without the filler in front of it.
  void drain() {
    const int flags = ::fcntl(read_fd_, F_GETFL);
    ::fcntl(read_fd_, F_SETFL, flags | O_NONBLOCK);
    std::string got;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(read_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    ::fcntl(read_fd_, F_SETFL, flags);
    const size_t filler = std::min(filler_bytes_, got.size());
    filler_bytes_ -= filler;
    output_.append(got, filler, std::string::npos);
  }

  // Writes `bytes` of filler into the (drained) pipe, in one write: one page, which the child's
  // next write joins if it fits.
  void fill(size_t bytes) {
    if (bytes == 0) return;
    const std::string filler(bytes, '#');
    if (::write(write_fd_, filler.data(), bytes) == static_cast<ssize_t>(bytes))
      filler_bytes_ += bytes;
  }

  std::string task_dir() const { return "/proc/" + std::to_string(pid_) + "/task"; }

  // A thread's state letter from /proc/.../stat: 'S' sleeping, 'T' stopped, ...
  static char task_state(const fs::path& task) {
    std::string stat = read_proc(task / "stat");
    size_t close_paren = stat.rfind(')');
    return close_paren != std::string::npos && close_paren + 2 < stat.size() ? stat[close_paren + 2]
                                                                             : '?';
  }

  pid_t pid_ = -1;
  int read_fd_ = -1;
  int write_fd_ = -1;        // the pipe's write end, kept with block_output
  size_t filler_bytes_ = 0;  // filler at the front of what the pipe holds
  size_t pipe_bytes_ = 0;    // the pipe's capacity (one page)
  std::string output_;       // the child's output read so far (release_writes_until)
};

}  // namespace apps_test

#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io.h"
#include "train/checkpoint.h"

namespace bnlab {

namespace fs = std::filesystem;

namespace {

// clang-format off
const char* const kRunFiles[] = {
    "config.json",    "metrics.csv",    "model.safetensors", "train_state.safetensors",
    "summary.json",   "curves.png",     "curves.gp",         "best.safetensors",
    "grad_norms.csv", "grad_norms.dat", "grad_norms.gp",     "grad_norms.png",
    "ics.csv",        "ics.dat",        "ics.gp",            "ics.png",
    "smoothness.csv", "smoothness.gp",  "smoothness.png",    "mechanism.csv"};
// clang-format on

struct Holder {
  int fd = -1;
  ~Holder() {
    if (fd >= 0) ::close(fd);  // releases the flock
  }
};

// The locks this process holds, by canonical directory; weak, so the last RunDirLock releases.
std::mutex held_mutex;
std::map<std::string, std::weak_ptr<Holder>> held_locks;

bool report_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-';
}

// A name eval_report_name can produce: a report of an earlier model, stale once the run is
// replaced.
bool is_eval_report_name(const std::string& name) {
  const std::string prefix = "eval_", suffix = ".json";
  return name.size() > prefix.size() + suffix.size() && name.rfind(prefix, 0) == 0 &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         std::all_of(name.begin(), name.end(), [](char c) { return report_char(c) || c == '_'; });
}

// A report `bnlab eval --json` wrote: a name eval_report_name can produce and the content it
// writes (apps/cmd_eval.cpp), a JSON object with these keys. A file of the user's that only shares
// the name's form is not one: --overwrite and a resume's checkpoint leave it where it is.
bool is_eval_report(const fs::path& path) {
  if (!is_eval_report_name(path.filename().string())) return false;
  std::error_code ec;
  // A regular file, and no larger than a report of thousands of classes could be: never read a
  // FIFO or someone's huge file to find out.
  if (!fs::is_regular_file(path, ec) || fs::file_size(path, ec) > (size_t{64} << 20) || ec)
    return false;
  std::string text;
  try {
    text = read_file(path.string());
  } catch (const Error&) {
    return false;
  }
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("dataset") && j.contains("split") && j.contains("images") &&
         j.contains("accuracy") && j.contains("per_class") && j.contains("confusion");
}

std::string read_holder_pid(int fd) {
  char buf[32] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  return pid.empty() ? "unknown" : pid;
}

}  // namespace

RunDirLock::RunDirLock(const std::string& dir) {
  ensure_directory(dir);
  std::string key = fs::weakly_canonical(fs::path(dir)).string();
  std::lock_guard<std::mutex> guard(held_mutex);
  if (auto existing = held_locks[key].lock()) {
    holder_ = existing;
    return;
  }
  std::string path = (fs::path(dir) / ".lock").string();
  // Not through a symbolic link: the holder's pid is written over the lock file's contents, so a
  // .lock linked to another file emptied that file.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  BNLAB_CHECK(fd >= 0 || errno != ELOOP, "run directory ", dir, ": its lock file ", path,
              " is a symbolic link, which bnlab does not follow; remove it");
  BNLAB_CHECK(fd >= 0, "run directory ", dir, ": cannot open its lock file ", path, ": ",
              std::strerror(errno));
  auto holder = std::make_shared<Holder>();
  holder->fd = fd;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    BNLAB_CHECK(err == EWOULDBLOCK, "run directory ", dir, ": cannot lock ", path, ": ",
                std::strerror(err));
    BNLAB_FAIL("run directory ", dir, " is in use by another bnlab process (pid ",
               read_holder_pid(fd), "); wait for it to finish, or choose another --out");
  }
  // Who holds it, for the message the next process prints; advisory only.
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) == 0) {
    [[maybe_unused]] ssize_t n = ::pwrite(fd, pid.data(), pid.size(), 0);
  }
  held_locks[key] = holder;
  holder_ = holder;
}

std::vector<std::string> run_files_in(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const char* name : kRunFiles)
    if (fs::exists(fs::path(dir) / name, ec)) found.emplace_back(name);
  std::vector<std::string> reports;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (is_eval_report(entry.path())) reports.push_back(entry.path().filename().string());
  }
  std::sort(reports.begin(), reports.end());  // directory order is arbitrary; messages list these
  found.insert(found.end(), reports.begin(), reports.end());
  return found;
}

std::string eval_report_name(const std::string& dataset, const std::string& split) {
  std::string name = "eval_" + dataset + "_" + split + ".json";
  for (char& c : name)
    if (!report_char(c)) c = '_';
  return name;
}

void remove_eval_reports(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> reports;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (is_eval_report(entry.path())) reports.push_back(entry.path());
  for (const fs::path& report : reports) {
    fs::remove(report, ec);
    BNLAB_CHECK(!ec, "run directory ", dir, ": cannot remove ", report.filename().string(), ": ",
                ec.message());
  }
}

void clear_run(const std::string& dir) {
  for (const std::string& name : run_files_in(dir)) {
    std::error_code ec;
    fs::remove(fs::path(dir) / name, ec);
    BNLAB_CHECK(!ec, "run directory ", dir, ": cannot remove ", name, ": ", ec.message());
  }
  remove_stale_temporaries(dir);
}

}  // namespace bnlab

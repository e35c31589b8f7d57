// A run directory (`bnlab train --out DIR`, each arm of `bnlab ablate`) belongs to one process at a
// time. RunDirLock holds an exclusive flock(2) on DIR/.lock for the run's life, so a second
// process aimed at the same directory fails at once, naming the holder, instead of interleaving
// its config.json and checkpoints with the first one's. flock is released by the kernel when the
// process dies, however it dies, so a killed run never leaves a stale lock; the .lock file itself
// stays (removing it would let a third process lock a new inode while the second holds the old).
//
// Within one process the lock is shared: `bnlab train` takes it before it looks at the directory,
// and train() takes it again for library users; the second acquisition joins the first instead of
// deadlocking on it (flock locks of two open() calls conflict even in one process).
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace bnlab {

class RunDirLock {
 public:
  RunDirLock() = default;
  // Creates `dir` if needed and locks it; throws bnlab::Error naming the process that holds it.
  explicit RunDirLock(const std::string& dir);
  bool held() const { return holder_ != nullptr; }

 private:
  std::shared_ptr<void> holder_;
};

// The files a run writes into its directory (config.json, metrics.csv, the checkpoints,
// summary.json, the plots) and the reports `bnlab eval --json` adds to it, that exist in `dir`.
std::vector<std::string> run_files_in(const std::string& dir);

// The report `bnlab eval --json` writes into a run directory: eval_<dataset>_<split>.json, every
// character but letters, digits, '.' and '-' made '_' (a folder dataset's name holds its path,
// whose '/' would name another directory). Named here so that --overwrite finds what eval wrote.
std::string eval_report_name(const std::string& dataset, const std::string& split);

// Removes the reports `bnlab eval --json` wrote into `dir` (named by eval_report_name and holding
// what eval writes; a file of the user's that only has such a name stays): they describe the
// model.safetensors that a new checkpoint (a resumed run's) has just replaced.
void remove_eval_reports(const std::string& dir);

// Removes the run files and temporaries of killed writes from `dir` (--overwrite); other files
// stay.
void clear_run(const std::string& dir);

}  // namespace bnlab

// Training checkpoints: the files a run directory holds so that `bnlab train --resume` (and a rerun
// of `bnlab ablate`) continues exactly where a run stopped, and what a crash at any moment leaves.
//
// One file is the commit point. train_state.safetensors is self-contained: the model's state_dict
// (under "model/<name>"), the optimizer's state tensors, and in its __metadata__ the step, the
// dropout generator's state and the running train-loss/accuracy sums since the last evaluation.
// It is written last, with write_file_atomic (temp file, fsync, rename, directory fsync), so a
// process killed at any moment -- even with SIGKILL between two files -- leaves either the old or
// the new complete state, never a mix. model.safetensors is the PyTorch-compatible export of the
// same weights, written just before (its metadata carries the step); `bnlab eval` reads it, resume
// never does (except for checkpoints from before this format, which had no "model/" tensors). See
// docs/ARCHITECTURE.md, "Checkpoints".
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "optim/optimizer.h"
#include "train/models.h"

namespace bnlab {

struct CheckpointState {
  int64_t step = 0;    // optimizer steps taken
  double elapsed = 0;  // training seconds so far (all processes)
  // The running train loss/accuracy sums since the last evaluation point: zero at an evaluation
  // point, non-zero for a checkpoint taken in between (after SIGINT/SIGTERM).
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
};

// Writes model.safetensors, then train_state.safetensors (the commit point), into `dir`; removes
// the eval --json reports there, which measured the model replaced.
void save_checkpoint(const std::string& dir, const Model& model, const Optimizer& opt,
                     const CheckpointState& state);

// Restores model (weights and buffers), optimizer and dropout generator from `dir`; returns the
// step and running sums the checkpoint was taken with. Throws naming the file on any problem.
CheckpointState load_checkpoint(const std::string& dir, Model& model, Optimizer& opt);

// The step of the checkpoint in `dir`, from train_state.safetensors' metadata (no model built), so
// resume can be checked against it before any data is read; nullopt without a checkpoint or with a
// step that is not a whole number (load_checkpoint reports that one). Throws naming the file when
// it cannot be read as safetensors.
std::optional<int64_t> checkpoint_step(const std::string& dir);

// Removes "<file>.tmp.<pid>.<n>" leftovers of writes killed mid-way (write_file_atomic's temporary
// names) from `dir`; called when a run resumes, as only one process writes a run directory.
void remove_stale_temporaries(const std::string& dir);

}  // namespace bnlab

// The non-finite guard of the training loop (`--on-nan stop|skip|continue`).
//
// Every step pays for one check: the loss, and one pass over the parameter gradients looking at
// each float's exponent bits (no allocation). Only when something is NaN or infinite does the
// guard diagnose the step: it replays the step's forward pass (same batch, dropout generator
// rewound, no grad, BatchNorm buffers restored afterwards) with a forward hook on every module to
// find the first layer whose output is non-finite, and names the parameter whose gradient went
// non-finite first in backward order. Then, per the mode:
//   stop      the run ends as diverged at this step (the default; `bnlab train` exits 3);
//   skip      the step's optimizer update is dropped, and so are its BatchNorm running-statistics
//             updates (restored from a copy taken before the step); training goes on;
//   continue  the update is applied as it is (the weights will usually turn NaN); the event is
//             counted.
// The first few events are reported in full; later ones are only counted (summary.json).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/random.h"
#include "train/models.h"

namespace bnlab {

enum class OnNonFinite { kStop, kSkip, kContinue };

// "stop" | "skip" | "continue"; throws naming the value otherwise.
OnNonFinite parse_on_nan(const std::string& value);

class NonFiniteGuard {
 public:
  // Caches the parameter list, the module tree and (skip) one copy of every buffer.
  NonFiniteGuard(Model& model, OnNonFinite mode);

  // Before the step's forward pass: remembers the dropout generator state and, for skip, copies
  // the buffers into the guard's copy. No allocation.
  void before_step();

  // After backward: is the loss or any parameter gradient NaN or infinite? No allocation.
  bool found(float loss) const;

  struct Verdict {
    bool stop = false;          // end the run (diverged)
    bool apply_update = false;  // run optimizer.step() for this step
    std::string message;        // the report line ("" once reports are suppressed)
  };
  // Only after found() returned true. Diagnoses step `step` (1-based) whose batch was `images`,
  // applies the mode (skip restores the buffers) and says what the loop should do.
  Verdict handle(int64_t step, float loss, const Tensor& images);

  int64_t events() const { return events_; }          // steps found non-finite
  int64_t first_step() const { return first_step_; }  // -1 when none

  // The report of one non-finite step (exposed for tests): which layer output and which
  // parameter gradient went non-finite first. Leaves the model as it found it.
  std::string diagnose(int64_t step, float loss, const Tensor& images);

 private:
  struct NamedModule {
    std::string path;  // "3", "features.1.bn"; "" for the model itself
    Module* module;
  };
  Model& model_;
  OnNonFinite mode_;
  std::vector<NamedModule> modules_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Tensor> buffers_, saved_buffers_;  // saved_buffers_: skip mode only
  Rng::State rng_before_step_{};
  int64_t events_ = 0, first_step_ = -1;
};

}  // namespace bnlab

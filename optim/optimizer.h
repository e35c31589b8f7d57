// Optimizer: the base of Sgd, Adam, AdamW and RMSprop. Parameter groups, zero_grad, the step loop,
// the per-parameter state, and that state as named tensors for checkpoints that resume exactly.
//
// Parameters are leaf Tensors (requires_grad). step() runs under NoGradGuard and, for every
// parameter of every group that has a gradient, calls the subclass's update_param(), which writes
// p.data() in place. Parameters without a gradient are skipped, state included, as PyTorch does.
//
// Per-parameter state lives in vectors aligned with the parameters (llm.c's m/v buffers): "slots"
// named after PyTorch's state keys (momentum_buffer, exp_avg, exp_avg_sq, square_avg, ...), each
// one tensor per parameter, allocated zeroed once in the constructor; a step allocates nothing.
// Parameters are numbered across groups in order, as in torch's state_dict(), so state tensors are
// named "state.<index>.<slot>", plus "state.<index>.step", the number of updates that parameter
// received (a float32 scalar, as torch stores it; exact up to 2^24 updates). Every parameter has
// every key, so a load can list what is missing. torch's SGD keeps no step; ours does because a
// momentum buffer's first update (b = g) differs from later ones, and torch tells them apart by the
// buffer's absence, which a zero-allocated buffer cannot express.
//
// Reference: https://pytorch.org/docs/stable/optim.html
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace bnlab {

/// A set of parameters sharing a learning rate and a weight decay (torch's param_groups). The
/// optimizer's other hyperparameters (betas, momentum, ...) come from its options and are the same
/// for every group.
struct ParamGroup {
  std::vector<Tensor> params;  ///< the group's parameters (leaves that require grad)
  float lr = 0.0f;             ///< learning rate
  float weight_decay = 0.0f;   ///< weight decay (the optimizer's own kind: L2 or decoupled)
};

/// Two groups built from a module's named parameters: those of rank >= 2 (weights of dense and conv
/// layers) with `weight_decay`, and those of rank <= 1 (biases, BatchNorm/LayerNorm gamma and beta)
/// with weight decay 0, the common practice (e.g. Goyal et al. 2017, "Accurate, Large Minibatch
/// SGD", section 5.1): decaying a normalization layer's scale or a bias only fights the loss
/// without regularizing anything. Empty groups are left out; order within a group is the order
/// given.
std::vector<ParamGroup> split_weight_decay(
    const std::vector<std::pair<std::string, Tensor>>& named_params, float lr, float weight_decay);

/// The base of every optimizer: parameter groups, step(), zero_grad(), and per-parameter state
/// that checkpoints save and restore. A new optimizer implements update_param().
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// One update of every parameter that has a gradient, under NoGradGuard; then step_count() += 1.
  void step();
  /// Drops every parameter's gradient (torch's zero_grad(set_to_none=True), its default).
  void zero_grad();

  /// The canonical name used in errors: "sgd", "adam", "adamw", "rmsprop".
  const char* name() const { return name_; }
  /// Groups may be edited between steps (lr, weight_decay); adding or removing parameters is not
  /// supported.
  std::vector<ParamGroup>& param_groups() { return groups_; }
  /// The parameter groups (read-only).
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  /// Number of parameters over all groups (the range of `<index>` in state names).
  int64_t num_params() const { return static_cast<int64_t>(num_params_); }

  float lr() const { return groups_.front().lr; }  ///< group 0's learning rate
  void set_lr(float lr);                           ///< every group's; throws unless finite and >= 0

  /// Completed step() calls (what LR schedules are indexed by). Saved by checkpoints next to the
  /// state.
  int64_t step_count() const { return step_count_; }
  /// Restores step_count() (when resuming); throws if negative.
  void set_step_count(int64_t count);

  /// The per-parameter state as "state.<i>.step" and "state.<i>.<slot>" for every parameter,
  /// parameter by parameter. The slot tensors share the optimizer's buffers (like torch's
  /// state_dict()): serialize them before the next step. Empty for an optimizer without state (SGD
  /// without momentum).
  virtual std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  /// Copies a state_tensors() list back in. Validates everything first and changes nothing on
  /// error: unexpected and missing names are listed, shapes must match the parameters', steps must
  /// be non-negative integers below 2^63.
  virtual void load_state_tensors(const std::vector<std::pair<std::string, Tensor>>& state);

 protected:
  /// `slots`: the state kept per parameter, e.g. {"exp_avg", "exp_avg_sq"}; each is allocated
  /// zeroed with the parameter's shape. Validates the groups (non-empty, defined leaves, no
  /// parameter twice, lr and weight_decay finite and >= 0).
  Optimizer(const char* name, std::vector<ParamGroup> groups, std::vector<std::string> slots);

  /// Updates parameter `index` (global index), data p [n], from its gradient g [n]. `step` is the
  /// number of updates this parameter has had, this one included (1 on its first). state(s, index)
  /// is slot s.
  virtual void update_param(size_t index, const ParamGroup& group, float* p, const float* g,
                            int64_t n, int64_t step) = 0;

  /// Slot `slot` of parameter `index`: numel floats, zeroed at construction.
  float* state(size_t slot, size_t index) { return slots_[slot][index].data(); }

 private:
  const char* name_;
  std::vector<ParamGroup> groups_;
  size_t num_params_ = 0;
  std::vector<Shape> shapes_;  ///< [param index]: each parameter's shape at construction
  std::vector<std::string> slot_names_;
  std::vector<std::vector<Tensor>> slots_;  ///< [slot][param index]
  std::vector<int64_t> param_steps_;        ///< [param index]: updates received
  int64_t step_count_ = 0;
};

namespace detail {
// Throws "<optimizer>: invalid <what> <value>; expected a finite value >= 0" unless it is one.
void check_nonnegative(const char* optimizer, const char* what, float value);
// Throws "<optimizer>: invalid <what> <value>; expected a value in [0, 1)" unless it is one.
void check_unit_interval(const char* optimizer, const char* what, float value);
// Elementwise loops over at least this many elements are split across OpenMP threads.
constexpr int64_t kOptimParallelThreshold = 1 << 15;
}  // namespace detail

}  // namespace bnlab

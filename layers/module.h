// Module: the base of every layer and model. Parameters, buffers and child modules are registered
// by name in the constructor (PyTorch's idiom), which gives PyTorch's state_dict key names
// ("0.weight", "features.3.running_mean") for free, and train()/eval() that recurse through
// children.
//
// Sequential chains children named "0", "1", ... exactly as torch.nn.Sequential does, so a bnlab
// checkpoint loads into the equivalent PyTorch model and back.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/serialize.h"
#include "core/tensor.h"

namespace bnlab {

class Module;

/// What Module::register_forward_hook returns (torch's RemovableHandle): remove() takes away that
/// hook and no other, so library code that hooks a module (evaluate()'s probe, the non-finite
/// guard's diagnosis) leaves the user's hooks registered. Removing twice, or through a
/// default-constructed handle, does nothing. The module must still exist when remove() is called.
class ForwardHookHandle {
 public:
  ForwardHookHandle() = default;
  /// Unregisters the hook this handle was returned for.
  void remove();

 private:
  friend class Module;
  ForwardHookHandle(Module* module, uint64_t id) : module_(module), id_(id) {}
  Module* module_ = nullptr;
  uint64_t id_ = 0;
};

/// What Module::forward_fused ran: the fused op's output and how many of the modules it was offered
/// ran inside it.
struct FusedForward {
  Tensor output;       ///< undefined: not fused
  size_t modules = 0;  ///< the first `modules` of `next` ran inside the op (>= 1 when fused)
};

/// The base of every layer and model: parameters, buffers and children registered by name in the
/// constructor (PyTorch's idiom), giving PyTorch's state_dict names and recursive train()/eval().
/// Subclasses implement forward() and type_name(). Not copyable; hold modules by shared_ptr.
class Module {
 public:
  /// (name, tensor) pairs, names dotted by nesting ("fc1.weight").
  using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
  /// Called after forward with (module, input, output), as torch's register_forward_hook.
  using ForwardHook = std::function<void(const Module&, const Tensor&, const Tensor&)>;

  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The layer's computation. Layers compose ops; they never write their own backward.
  virtual Tensor forward(const Tensor& x) = 0;
  /// forward, then the registered hooks.
  Tensor operator()(const Tensor& x);
  /// next[k-1](...next[0](forward(x))) computed as one fused op for some k >= 1, returned with k;
  /// or {} when this module fuses with none of them (the default). Sequential::forward offers each
  /// hook-free child the hook-free children that follow it (at most three, never empty; unhooked
  /// Identity children skipped, a hooked child ends the list). An override must return exactly
  /// what the forwards would, side effects (running statistics) included. The fusions:
  /// BatchNorm1d/2d + ReLU and BatchNorm2d + ReLU + MaxPool2d(2) in training
  /// (layers/batch_norm.h), Conv2d + ReLU, Conv2d + ReLU + MaxPool2d with gradients as
  /// relu(max_pool2d(conv2d)) (layers/conv2d.h; equal up to the sign of zeros), and Conv2d +
  /// BatchNorm2d (+ ReLU (+ MaxPool2d(2))) in training, the conv computing the statistics' first
  /// pass.
  virtual FusedForward forward_fused(std::span<Module* const> next, const Tensor& x);

  /// One canonical type name ("Dense", "BatchNorm2d") used in printing and errors.
  virtual std::string type_name() const = 0;
  /// The constructor arguments worth printing, e.g. "784 -> 100, bias".
  virtual std::string extra_repr() const { return ""; }

  /// Parameters of this module and all descendants, depth first in registration order, each tensor
  /// once: a tied layer (a module registered twice, or a tensor in two modules) is listed where it
  /// is first found, as in PyTorch, so an optimizer can take the list.
  std::vector<Tensor> parameters() const;
  /// parameters() with their dotted names ("block.conv.weight"); a tied tensor under its first
  /// name.
  NamedTensors named_parameters() const;
  /// The buffers (e.g. BatchNorm's running statistics) with their dotted names, each tensor once
  /// under its first name, as named_parameters().
  NamedTensors named_buffers() const;
  /// Total number of parameter elements, a tied tensor counted once.
  int64_t num_parameters() const;
  /// The direct children with their names, in registration order: the registrations themselves, so
  /// a module registered twice appears twice (torch's `_modules`; its named_children() would list
  /// it once).
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }

  /// Parameters then buffers, under PyTorch's key names; num_batches_tracked entries carry
  /// DType::I64. Every name is kept, as in PyTorch: a tied tensor appears under each of its names
  /// (saved as one copy per name; loading copies each into the one tensor).
  std::vector<NamedTensor> state_dict() const;
  /// Validates every key and shape first (listing all missing/unexpected keys), that the int64
  /// counts (num_batches_tracked) are non-negative integers and that no variance (running_var) is
  /// negative or NaN, then copies. A failed load leaves the module unchanged. strict=false ignores
  /// missing and unexpected keys (not mismatched shapes or bad values).
  void load_state_dict(const std::vector<NamedTensor>& state, bool strict = true);

  /// Training mode (on) or evaluation mode (off) for this module and every descendant.
  void train(bool on = true);
  /// train(false): BatchNorm uses its running statistics, Dropout is the identity.
  void eval() { train(false); }
  /// True in training mode (the default).
  bool is_training() const { return training_; }
  /// Drops every parameter's gradient.
  void zero_grad();

  /// Adds a hook that operator() calls after forward (after the hooks added before it); the handle
  /// removes it again, and only it.
  ForwardHookHandle register_forward_hook(ForwardHook hook);
  /// Removes every forward hook of this module, other code's too (remove one by its handle).
  void clear_forward_hooks() { hooks_.clear(); }
  /// True when a forward hook is registered (fold_batch_norm then leaves this module as it is).
  bool has_forward_hooks() const { return !hooks_.empty(); }

  /// "Sequential(\n  (0): Dense(784 -> 100, bias)\n ...)", like printing an nn.Module.
  std::string to_string() const;

 protected:
  /// Registers a learnable leaf tensor (marked requires_grad; one computed by an op is refused)
  /// under `name`; returns it. Names of
  /// parameters, buffers and children are one namespace, as nn.Module's: each unique, none empty
  /// or holding a '.'; register_parameter, register_buffer and add_child throw otherwise.
  Tensor register_parameter(const std::string& name, Tensor value);
  /// What load_state_dict accepts in a float buffer: any value, or none negative and none NaN (a
  /// variance, whose square root the layer takes).
  enum class BufferValues { kAny, kNonNegative };
  /// Registers saved-but-not-learned state (in state_dict(), not in parameters()); `dtype` is how
  /// it is stored on disk. DType::I64 is for counts: load_state_dict accepts only non-negative
  /// integers for them; `values` is what it accepts in a float buffer.
  Tensor register_buffer(const std::string& name, Tensor value, DType dtype = DType::F32,
                         BufferValues values = BufferValues::kAny);
  /// Registers `module` as the child `name` and returns it, typed, for the caller to keep.
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }
  /// Registers `module` as the child `name`; it takes this module's train/eval mode. Throws when
  /// `module` is null, is this module or contains it (directly or deeper).
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  /// Puts `module` in the place of the existing child `name` (same name, same position); it takes
  /// this module's train/eval mode. Throws when there is no such child, and on what add_child
  /// refuses.
  void replace_child(const std::string& name, std::shared_ptr<Module> module);

 private:
  struct Buffer {
    std::string name;
    Tensor tensor;
    DType dtype;
    BufferValues values;
  };
  /// `non_negative`: the names of the buffers registered BufferValues::kNonNegative.
  void collect(const std::string& prefix, NamedTensors* params, std::vector<NamedTensor>* buffers,
               std::set<std::string>* non_negative = nullptr) const;
  void print(std::ostream& os, int indent) const;
  /// Throws unless `name` can be this module's new parameter, buffer or child (`kind`): not empty,
  /// no '.', and not already one of the three. state_dict() joins names with '.'.
  void check_new_name(const char* kind, const std::string& name) const;

  NamedTensors params_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  struct Hook {
    uint64_t id;  ///< what its ForwardHookHandle names
    ForwardHook fn;
  };
  friend class ForwardHookHandle;
  std::vector<Hook> hooks_;
  uint64_t next_hook_id_ = 1;
  bool training_ = true;
};

/// Chains modules; children are named "0", "1", ... as in torch.nn.Sequential.
class Sequential : public Module {
 public:
  Sequential() = default;
  /// The modules, named "0", "1", ... in this order.
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  /// Appends `module` as the next numbered child; returns *this. Throws when `module` is null, is
  /// this Sequential or contains it.
  Sequential& add(std::shared_ptr<Module> module);
  /// Constructs an M from `args`, appends it, and returns it.
  template <typename M, typename... Args>
  std::shared_ptr<M> emplace(Args&&... args) {
    auto m = std::make_shared<M>(std::forward<Args>(args)...);
    add(m);
    return m;
  }
  /// The number of modules.
  size_t size() const { return children().size(); }
  /// The i-th module; throws bnlab::Error when i >= size().
  Module& operator[](size_t i) const;
  /// Replaces the i-th module by `module`, which keeps the name "i" (torch's `seq[i] = module`)
  /// and takes this Sequential's train/eval mode. Refuses what add() refuses.
  void set(size_t i, std::shared_ptr<Module> module);

  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sequential"; }
};

/// A table of the model's direct children (recursing into nested Sequentials): name, layer, output
/// shape for an input of `input_shape` (batch included), parameter count. Runs one forward in eval
/// mode without grad. A module registered more than once (tied) has a row per use, each with the
/// output shape of that call; a repeated use's layer says `[same as NAME]` (its first row) and its
/// parameters `(shared)`, so the rows add up to the total, which counts each tensor once.
std::string summary(Module& model, const Shape& input_shape);

}  // namespace bnlab

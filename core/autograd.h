// Reverse-mode autodiff: the Node recorded by each op, the backward engine, NoGradGuard.
//
// An op records a Node on its output only when grad mode is on and one of its inputs requires a
// grad. The Node holds the inputs (strong references, in order) and a backward closure that
// receives the output and the output's gradient and ADDS into the inputs' gradients. The closure
// never captures the output itself: out -> node -> closure -> out would be a shared_ptr cycle.
//
// Gradient buffers belong to their tensor (TensorImpl::grad) and are created by the first
// contribution. A writer that covers every element asks grad_target() and, when the buffer is
// fresh, ASSIGNS its contribution (GEMM beta 0, `=` instead of `+=`, a copy): the buffer is never
// zero-filled just to be added into. Scatters and partial writers ask grad_buffer(), which
// zero-fills on creation. A view's backward (same elements, same order) hands the output's buffer
// itself to its input (pass_grad_through). Either way the sum over all contributions is what ends
// up in the buffer.
//
// backward() builds an iterative (explicit-stack) topological order, runs each node once in reverse
// order, frees intermediate gradients as soon as they are consumed, and releases every node it ran.
// A second backward through a released graph throws instead of double counting.
//
// Leaf gradients accumulate across backward() calls on purpose (gradient accumulation over
// micro-batches); optimizer.zero_grad() / Tensor::zero_grad() clears them.
//
// Stale graphs: a closure reads its inputs (and sometimes its output) when backward() runs, not
// when the forward did. So each node notes, at attach, the version (Tensor::version) of what its
// backward reads, as its op declares with a Reads, and the engine throws, naming the op and the
// input, before running a node one of those was written in place since (fill_, copy_, an optimizer
// step, load_state_dict; raw data() writers declare theirs with bump_version()). Only what the
// backward reads, as PyTorch checks only saved tensors: add's backward reads neither operand.
// And an intermediate written in place before a consumer used it (y = x * 2; y.fill_(0); sum(y))
// throws at that consumer's backward: PyTorch records the write as an op of its own, so x gets
// no gradient from it; bnlab records no in-place write, so it would hand the gradient of the
// written values to x. Consumers that ran before the write are unaffected, as in PyTorch. Only
// the first Reads::kInputs inputs are checked (an op with more, cat, records no versions).
#pragma once

#include <functional>
#include <vector>

#include "core/tensor.h"

namespace bnlab {

/// Which values (not just shapes) an op's backward closure reads of its first kInputs inputs and
/// of its output: the ones backward() checks against in-place writes made after the forward
/// (Tensor::version). Only those, as PyTorch checks only what an op saved: `y = a + b;
/// a.fill_(0); y.backward()` is fine, since add's backward reads neither operand.
struct Reads {
  /// Inputs whose version a node can keep; an op with more must read none of its inputs.
  static constexpr size_t kInputs = 3;
  /// When a value is read: a mask of the inputs whose gradient needs it (bit j: input j; bit 7
  /// also stands for the inputs past it). kAlways: whenever the closure runs; kNever: not read.
  using When = uint8_t;
  static constexpr When kNever = 0;      ///< never read
  static constexpr When kAlways = 0xff;  ///< read whatever gradient is computed
  /// Read only to compute input j's gradient (matmul's `a` is read for `b`'s gradient).
  static constexpr When for_grad_of(size_t j) { return static_cast<When>(1u << j); }

  /// inputs[i]: when input i's value is read. The default, everything always, is the strict
  /// choice for an op whose backward was not looked at.
  When inputs[kInputs] = {kAlways, kAlways, kAlways};
  When output = kAlways;  ///< when the output's value is read (exp, sigmoid, softmax: y itself)

  /// Reads no value, only dout and shapes (add, sum, reshape, cat, ...).
  static constexpr Reads nothing() { return {{kNever, kNever, kNever}, kNever}; }
  /// Reads the output only (exp, tanh, softmax, ...).
  static constexpr Reads only_output() { return {{kNever, kNever, kNever}, kAlways}; }
  /// Reads its inputs (all kAlways) and not the output.
  static constexpr Reads only_inputs() { return {{kAlways, kAlways, kAlways}, kNever}; }
  /// A product's: input 0 is read for input 1's gradient and input 1 for input 0's (matmul, mul,
  /// linear's x and weight); input 2 and the output are not read.
  static constexpr Reads crosswise() { return {{for_grad_of(1), for_grad_of(0), kNever}, kNever}; }
};

/// The graph record an op attaches to its output: its inputs and its backward closure.
struct Node {
  /// Receives the output, its gradient `dout` and the inputs; ADDS into the inputs' gradients.
  using Backward =
      std::function<void(const Tensor& out, const Tensor& dout, const std::vector<Tensor>& inputs)>;
  const char* op = "";         ///< the op's one canonical name, e.g. "matmul"
  std::vector<Tensor> inputs;  ///< in the op's argument order (undefined for an absent bias)
  Backward backward;           ///< the op's backward closure
  Reads reads;                 ///< which input and output values `backward` reads
  /// Versions at the forward of the first Reads::kInputs inputs, then of the output: backward()
  /// throws if one that `reads` names has changed, or if an input that wants a gradient was
  /// written after its producer made it (its version here is not the producer's output version).
  uint64_t versions[Reads::kInputs + 1] = {};
  bool released = false;  ///< set once backward ran; a second backward through it throws

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  /// Frees what the node holds without recursing once per graph link, so a graph of any depth
  /// dropped without backward() (a running loss never detached) cannot overflow the stack.
  ~Node();
};

/// Is graph recording on (no NoGradGuard active on this thread)?
bool grad_enabled();

/// Turns graph recording off for its scope (e.g. optimizer updates, evaluation, running-stat
/// updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// True when grad mode is on and any defined input requires a grad: only then does an op record a
/// node.
bool needs_grad(std::initializer_list<Tensor> inputs);

/// Records `op` as the producer of `out`, whose backward reads what `reads` says, and notes the
/// versions of those values. Undefined inputs (an absent bias) are kept as undefined handles so
/// the closure can index inputs by position. Throws if `reads` names an input past
/// Reads::kInputs (a bug in the op).
void attach(Tensor& out, const char* op, std::vector<Tensor> inputs, Reads reads,
            Node::Backward backward);
/// attach with the default Reads: every input and the output are checked.
inline void attach(Tensor& out, const char* op, std::vector<Tensor> inputs,
                   Node::Backward backward) {
  attach(out, op, std::move(inputs), Reads{}, std::move(backward));
}

/// The gradient buffer of `input` to add into (allocated and zeroed on first use, sized from the
/// input's own shape), or nullptr when `input` is undefined or does not require a grad.
float* grad_buffer(const Tensor& input);

/// Where a backward closure writes one input's gradient: see grad_target.
struct GradTarget {
  float* data = nullptr;  ///< the gradient buffer; nullptr when the input needs no gradient
  /// True when `data` was allocated by this call and not filled: the writer must ASSIGN every
  /// element (its contribution is the whole gradient so far). False: ADD into it.
  bool fresh = false;
  /// Whether the input needs a gradient at all.
  explicit operator bool() const { return data != nullptr; }
  /// The `beta` of a GEMM that writes this gradient: 0 (overwrite) when fresh, else 1 (add).
  float beta() const { return fresh ? 0.0f : 1.0f; }
};

/// The gradient buffer of `input` for a writer that covers every element: on first use it is
/// allocated but NOT zeroed (`fresh`), saving a pass over memory; the caller then assigns all of it
/// instead of adding. Ask just before writing: when two inputs are one tensor, the second request
/// sees the first's buffer (not fresh) and adds. Writers that touch only some elements (scatters)
/// use grad_buffer.
GradTarget grad_target(const Tensor& input);

/// Adds `g` into the gradient of `input` after checking the two shapes are equal (naming `op` if
/// not).
void accumulate_grad(const char* op, const Tensor& input, const Tensor& g);

/// For a backward whose input's gradient is its `dout` unchanged (reshape, view, flatten and the
/// like: the same elements in the same order): `input` takes dout's buffer as its gradient when it
/// has none yet, instead of a copy; otherwise dout is added into it. Only for the `dout` a closure
/// received: the engine frees that buffer from the output right after the closure returns, so the
/// input is then its one owner. Same element count required.
void pass_grad_through(const Tensor& input, const Tensor& dout);

namespace detail {
void run_backward(const Tensor& root, const Tensor* seed);
}

}  // namespace bnlab

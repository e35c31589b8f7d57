// Reverse-mode autodiff: the Node recorded by each op, the backward engine, NoGradGuard.
//
// An op records a Node on its output only when grad mode is on and one of its inputs requires a
// grad. The Node holds the inputs (strong references, in order) and a backward closure that
// receives the output and the output's gradient and ADDS into the inputs' gradients. The closure
// never captures the output itself: out -> node -> closure -> out would be a shared_ptr cycle.
//
// backward() builds an iterative (explicit-stack) topological order, runs each node once in reverse
// order, frees intermediate gradients as soon as they are consumed, and releases every node it ran.
// A second backward through a released graph throws instead of double counting.
//
// Leaf gradients accumulate across backward() calls on purpose (gradient accumulation over
// micro-batches); optimizer.zero_grad() / Tensor::zero_grad() clears them.
#pragma once

#include <functional>
#include <vector>

#include "core/tensor.h"

namespace bnlab {

/// The graph record an op attaches to its output: its inputs and its backward closure.
struct Node {
  /// Receives the output, its gradient `dout` and the inputs; ADDS into the inputs' gradients.
  using Backward =
      std::function<void(const Tensor& out, const Tensor& dout, const std::vector<Tensor>& inputs)>;
  const char* op = "";         ///< the op's one canonical name, e.g. "matmul"
  std::vector<Tensor> inputs;  ///< in the op's argument order (undefined for an absent bias)
  Backward backward;           ///< the op's backward closure
  bool released = false;       ///< set once backward ran; a second backward through it throws
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

/// Records `op` as the producer of `out`. Undefined inputs (an absent bias) are kept as undefined
/// handles so the closure can index inputs by position.
void attach(Tensor& out, const char* op, std::vector<Tensor> inputs, Node::Backward backward);

/// The gradient buffer of `input` to add into (allocated and zeroed on first use, sized from the
/// input's own shape), or nullptr when `input` is undefined or does not require a grad.
float* grad_buffer(const Tensor& input);

/// Adds `g` into the gradient of `input` after checking the two shapes are equal (naming `op` if
/// not).
void accumulate_grad(const char* op, const Tensor& input, const Tensor& g);

namespace detail {
void run_backward(const Tensor& root, const Tensor* seed);
}

}  // namespace bnlab

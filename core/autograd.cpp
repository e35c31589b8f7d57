// The backward engine: topological order with an explicit stack, one pass in reverse, graph
// release; and the gradient buffers.
//
// Ownership of gradients: a tensor's grad buffer is its own (TensorImpl::grad) and holds the sum of
// every contribution so far. The first contribution creates it: through grad_target() unfilled, and
// that writer assigns all of it; through grad_buffer() zero-filled, for writers that add into only
// part of it; through pass_grad_through(), a view's backward, as the output's own buffer handed
// over (the output's reference is dropped right after its node ran). Later contributions add.
// Non-leaf buffers are freed once their node ran; leaf buffers stay until zero_grad().
#include "core/autograd.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

namespace bnlab {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

bool needs_grad(std::initializer_list<Tensor> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

// Dropping a graph's output frees its node, whose inputs free their nodes, and so on: one nested
// destructor call per graph link. A 300000-step running loss never detached overflowed the 8 MiB
// stack this way. So a node freed while another is being freed on the same thread hands over what
// it holds (its inputs and the closure, which may hold tensors too) instead of freeing it, and the
// outermost one frees those in a loop: at most two destructors deep. (The engine already clears
// every node it ran, so this is the path of graphs dropped without backward().)
namespace {

struct HeldByNode {
  std::vector<Tensor> inputs;
  Node::Backward backward;
};
// The outermost freeing node's list on this thread, null when none is being freed. A pointer (to a
// vector on that destructor's stack), so that nothing here has a thread_local destructor that a
// node freed during thread or program exit could outlive.
thread_local std::vector<HeldByNode>* t_deferred = nullptr;

}  // namespace

Node::~Node() {
  if (t_deferred) {
    if (!inputs.empty() || backward)
      t_deferred->push_back({std::move(inputs), std::move(backward)});
    return;
  }
  std::vector<HeldByNode> deferred;
  t_deferred = &deferred;
  { HeldByNode mine{std::move(inputs), std::move(backward)}; }
  while (!deferred.empty()) {
    HeldByNode next = std::move(deferred.back());
    deferred.pop_back();
  }  // `next` is freed here; the nodes it was the last owner of defer theirs into `deferred`
  t_deferred = nullptr;
}

void attach(Tensor& out, const char* op, std::vector<Tensor> inputs, Reads reads,
            Node::Backward backward) {
  auto node = std::make_shared<Node>();
  node->op = op;
  const size_t kept = std::min(inputs.size(), Reads::kInputs);
  for (size_t i = kept; i < Reads::kInputs; ++i) reads.inputs[i] = Reads::kNever;
  if (inputs.size() > Reads::kInputs) {
    // No room for the versions of more inputs: such an op (cat) must read none of them.
    for (size_t i = 0; i < kept; ++i) {
      BNLAB_CHECK(reads.inputs[i] == Reads::kNever, "attach: '", op, "' has ", inputs.size(),
                  " inputs and reads input ", i, "; only an op of at most ", Reads::kInputs,
                  " inputs can read them");
    }
  }
  for (size_t i = 0; i < kept; ++i) {
    if (inputs[i].defined()) node->versions[i] = inputs[i].impl()->storage->version();
  }
  node->versions[Reads::kInputs] = out.impl()->storage->version();
  node->reads = reads;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

GradTarget grad_target(const Tensor& input) {
  if (!input.defined() || !input.requires_grad()) return {};
  TensorImpl& impl = *input.impl();
  if (impl.grad) return {impl.grad->data(), false};
  impl.grad = std::make_shared<detail::Storage>(impl.storage->size());
  return {impl.grad->data(), true};
}

float* grad_buffer(const Tensor& input) {
  GradTarget t = grad_target(input);
  if (t.fresh) std::memset(t.data, 0, input.impl()->grad->size() * sizeof(float));
  return t.data;
}

void pass_grad_through(const Tensor& input, const Tensor& dout) {
  if (!input.defined() || !input.requires_grad()) return;
  TensorImpl& impl = *input.impl();
  const std::shared_ptr<detail::Storage>& g = dout.impl()->storage;
  BNLAB_CHECK(g->size() == impl.storage->size(), "backward: gradient of shape ", dout.shape(),
              " passed through to an input of shape ", input.shape());
  // Handed over, not copied: a copy was a serial pass over lenet's flattened activations
  // (800 KB) in every training step.
  if (!impl.grad) {
    impl.grad = g;
    return;
  }
  float* dst = impl.grad->data();
  const float* src = g->data();
  const size_t n = g->size();
  for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

void accumulate_grad(const char* op, const Tensor& input, const Tensor& g) {
  if (!input.defined() || !input.requires_grad()) return;
  BNLAB_CHECK(g.shape() == input.shape(), op, " backward: gradient of shape ", g.shape(),
              " for an input of shape ", input.shape());
  GradTarget dst = grad_target(input);
  const float* src = g.data();
  const int64_t n = g.numel();
  if (dst.fresh) {
    std::memcpy(dst.data, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst.data[i] += src[i];
}

namespace detail {

namespace {

// Throws if a value `node`'s backward reads for the gradients in `wanted` (a Reads::When mask)
// was written in place after the forward: the closure would compute gradients from the new
// values without a word.
void check_versions(const Node& node, const TensorImpl& out, Reads::When wanted) {
  const size_t kept = std::min(node.inputs.size(), Reads::kInputs);
  for (size_t i = 0; i < kept; ++i) {
    const Tensor& input = node.inputs[i];
    if (!(node.reads.inputs[i] & wanted) || !input.defined()) continue;
    const uint64_t now = input.impl()->storage->version();
    BNLAB_CHECK(now == node.versions[i], "backward of '", node.op, "': input ", i, " ",
                input.shape(), " was modified in place after the forward used it (version ", now,
                ", expected ", node.versions[i],
                "); recompute the forward after the write, or write into a clone()");
  }
  if (!(node.reads.output & wanted)) return;
  const uint64_t now = out.storage->version();
  BNLAB_CHECK(now == node.versions[Reads::kInputs], "backward of '", node.op, "': its output ",
              out.shape, " was modified in place after the forward saved it (version ", now,
              ", expected ", node.versions[Reads::kInputs],
              "); recompute the forward after the write, or write into a clone()");
}

// Throws if an input of `node` that wants a gradient was written in place between its producer's
// forward and this node's: the engine would hand the gradient of the written values to the
// producer as if they were its output. (PyTorch records the write as an op of its own; bnlab does
// not record in-place writes, so it refuses.) A consumer that ran before the write saw the
// producer's values, so its gradient is right and flows as usual, as in PyTorch.
void check_inputs_as_produced(const Node& node) {
  const size_t kept = std::min(node.inputs.size(), Reads::kInputs);
  for (size_t i = 0; i < kept; ++i) {
    const Tensor& input = node.inputs[i];
    if (!input.defined() || !input.requires_grad()) continue;
    const Node* producer = input.impl()->grad_fn.get();
    if (!producer) continue;  // a leaf: its values are its own, written or not
    const uint64_t produced = producer->versions[Reads::kInputs];
    BNLAB_CHECK(node.versions[i] == produced, "backward of '", node.op, "': input ", i, " ",
                input.shape(), " was written in place after '", producer->op,
                "' produced it and before '", node.op, "' used it (version ", node.versions[i],
                ", produced at ", produced,
                "); in-place writes are not recorded, so its gradient cannot reach '", producer->op,
                "'; write into a clone(), or into a leaf");
  }
}

// Post-order of the tensors reachable from `root` through grad_fn inputs, without recursion: each
// stack entry remembers how many of its node's inputs it has already descended into.
std::vector<std::shared_ptr<TensorImpl>> topological_order(
    const std::shared_ptr<TensorImpl>& root) {
  std::vector<std::shared_ptr<TensorImpl>> order;
  std::unordered_set<const TensorImpl*> visited;
  std::vector<std::pair<std::shared_ptr<TensorImpl>, size_t>> stack;
  stack.emplace_back(root, 0);
  visited.insert(root.get());
  while (!stack.empty()) {
    auto& [impl, next_input] = stack.back();
    const Node* node = impl->grad_fn.get();
    if (node && next_input < node->inputs.size()) {
      const Tensor& input = node->inputs[next_input++];
      if (input.defined() && input.requires_grad() && !visited.count(input.impl().get())) {
        visited.insert(input.impl().get());
        stack.emplace_back(input.impl(), 0);
      }
      continue;
    }
    order.push_back(impl);
    stack.pop_back();
  }
  return order;
}

}  // namespace

void run_backward(const Tensor& root, const Tensor* seed) {
  BNLAB_CHECK(root.defined(), "backward: called on an undefined tensor");
  BNLAB_CHECK(root.requires_grad(), "backward: tensor of shape ", root.shape(),
              " does not require grad (no input of the computation requires grad, or it ran under "
              "NoGradGuard)");
  if (seed) {
    BNLAB_CHECK(seed->shape() == root.shape(), "backward: seed of shape ", seed->shape(),
                " for a tensor of shape ", root.shape());
  } else {
    BNLAB_CHECK(root.numel() == 1, "backward: output of shape ", root.shape(),
                " is not a scalar; pass a seed gradient of that shape");
  }
  if (root.grad_fn()) {
    BNLAB_CHECK(!root.grad_fn()->released, "backward: the graph through '", root.grad_fn()->op,
                "' was already freed by an earlier backward(); recompute the forward pass");
  }

  NoGradGuard no_grad;  // closures compute with tensors; they must not record a graph themselves
  std::vector<std::shared_ptr<TensorImpl>> order = topological_order(root.impl());

  // Seed the root.
  // data() and numel() are out-of-line calls: hoisted, or a non-scalar seed costs two calls per
  // element (20 % of a conv benchmark's backward).
  const GradTarget root_grad = grad_target(root);
  const float* seed_data = seed ? seed->data() : nullptr;
  const int64_t root_numel = root.numel();
  for (int64_t i = 0; i < root_numel; ++i) {
    const float s = seed_data ? seed_data[i] : 1.0f;
    root_grad.data[i] = root_grad.fresh ? s : root_grad.data[i] + s;
  }

  // Reverse post-order: every consumer of a tensor runs before the tensor's own node.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const std::shared_ptr<TensorImpl>& impl = *it;
    if (!impl->grad_fn) continue;  // a leaf: its grad stays for the optimizer
    Node& node = *impl->grad_fn;
    BNLAB_CHECK(!node.released, "backward: the graph through '", node.op,
                "' was already freed by an earlier backward(); recompute the forward pass");
    // A leaf's set_requires_grad(false) between forward and backward leaves nodes with no input
    // that wants a gradient any more, whose closures (written for an input that did, when they
    // were attached) would write through a null buffer. Skipped, its gradient dropped, as
    // PyTorch's AccumulateGrad does for such a leaf.
    Reads::When wanted = 0;  // bit j: input j wants a gradient (bit 7: or one past it)
    for (size_t j = 0; j < node.inputs.size(); ++j) {
      const Tensor& t = node.inputs[j];
      if (t.defined() && t.requires_grad()) wanted |= Reads::for_grad_of(std::min<size_t>(j, 7));
    }
    if (impl->grad && wanted) {
      check_versions(node, *impl, wanted);
      check_inputs_as_produced(node);
      Tensor out(impl);
      Tensor dout = Tensor::wrap(impl->shape, impl->grad);
      node.backward(out, dout, node.inputs);
      for (const Tensor& input : node.inputs) {
        if (input.defined() && input.impl()->grad) {
          BNLAB_CHECK(input.impl()->grad->size() == input.impl()->storage->size(), node.op,
                      " backward: gradient buffer does not match input shape ", input.shape());
        }
      }
    }
    // Non-leaf gradients are not kept (as in PyTorch): free as soon as consumed, with the node's
    // inputs.
    impl->grad.reset();
    node.inputs.clear();
    node.backward = nullptr;
    node.released = true;
  }
}

}  // namespace detail
}  // namespace bnlab

// Module registration, traversal, state_dict, train/eval, printing and the summary table.
#include "layers/module.h"

#include <algorithm>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>
#include <typeinfo>
#include <unordered_set>

#include "core/autograd.h"
#include "layers/activation.h"

namespace bnlab {

namespace {

bool contains(const Module& m, const Module* target) {
  if (&m == target) return true;
  for (const auto& [name, child] : m.children())
    if (contains(*child, target)) return true;
  return false;
}

void check_child(const Module& parent, const std::string& name,
                 const std::shared_ptr<Module>& module) {
  BNLAB_CHECK(module != nullptr, "module: child '", name, "' is null");
  // A cycle would make every recursion over the children (parameters(), train(), printing) run
  // until the stack overflows. Refusing it here keeps the module graph acyclic, which is also what
  // lets contains() recurse without a visited set.
  BNLAB_CHECK(!contains(*module, &parent), "module: child '", name, "' (", module->type_name(),
              ") is this module or contains it; a module cannot contain itself");
}

}  // namespace

Tensor Module::operator()(const Tensor& x) {
  Tensor y = forward(x);
  for (const Hook& hook : hooks_) hook.fn(*this, x, y);
  return y;
}

ForwardHookHandle Module::register_forward_hook(ForwardHook hook) {
  const uint64_t id = next_hook_id_++;
  hooks_.push_back({id, std::move(hook)});
  return {this, id};
}

void ForwardHookHandle::remove() {
  if (module_ == nullptr) return;
  std::vector<Module::Hook>& hooks = module_->hooks_;
  hooks.erase(std::remove_if(hooks.begin(), hooks.end(),
                             [this](const Module::Hook& h) { return h.id == id_; }),
              hooks.end());
  module_ = nullptr;
}

FusedForward Module::forward_fused(std::span<Module* const>, const Tensor&) { return {}; }

// Two entries under one name (or a '.' that makes "a.b" the key of child a's b too) made a
// state_dict() with duplicate keys, which could be neither saved nor loaded; nn.Module refuses
// these names when they are registered, and so does this.
void Module::check_new_name(const char* kind, const std::string& name) const {
  BNLAB_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name(), ": ", kind,
              " name '", name, "' must be non-empty and hold no '.'");
  const char* taken = nullptr;
  for (const auto& [n, t] : params_)
    if (n == name) taken = "parameter";
  for (const Buffer& b : buffers_)
    if (b.name == name) taken = "buffer";
  for (const auto& [n, m] : children_)
    if (n == name) taken = "child";
  if (taken == nullptr) return;
  if (std::string_view(taken) == kind)
    BNLAB_FAIL(type_name(), ": ", kind, " '", name, "' registered twice");
  BNLAB_FAIL(type_name(), ": ", kind, " '", name, "' has the name of a ", taken,
             " already registered");
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  BNLAB_CHECK(value.defined(), type_name(), ": parameter '", name, "' is undefined");
  check_new_name("parameter", name);
  // A computed tensor would get no gradient of its own (it passes it on to its inputs), and the
  // optimizer would refuse it later without naming this module.
  BNLAB_CHECK(
      value.is_leaf(), type_name(), ": parameter '", name, "' ", value.shape(),
      " is not a leaf: it was computed by '", value.grad_fn()->op,
      "'; register value.detach() (or a tensor made without a graph), as torch.nn.Parameter "
      "requires");
  if (!value.requires_grad()) value.set_requires_grad();
  params_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value, DType dtype,
                               BufferValues values) {
  BNLAB_CHECK(value.defined(), type_name(), ": buffer '", name, "' is undefined");
  check_new_name("buffer", name);
  buffers_.push_back({name, value, dtype, values});
  return value;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_child(*this, name, module);
  check_new_name("child", name);
  module->train(training_);
  children_.emplace_back(name, std::move(module));
}

void Module::replace_child(const std::string& name, std::shared_ptr<Module> module) {
  check_child(*this, name, module);
  for (auto& [n, m] : children_) {
    if (n != name) continue;
    module->train(training_);
    m = std::move(module);
    return;
  }
  BNLAB_FAIL("module: no child '", name, "' to replace");
}

void Module::collect(const std::string& prefix, NamedTensors* params,
                     std::vector<NamedTensor>* buffers, std::set<std::string>* non_negative) const {
  if (params)
    for (const auto& [name, t] : params_) params->emplace_back(prefix + name, t);
  if (buffers)
    for (const Buffer& b : buffers_) buffers->push_back({prefix + b.name, b.tensor, b.dtype});
  if (non_negative)
    for (const Buffer& b : buffers_)
      if (b.values == BufferValues::kNonNegative) non_negative->insert(prefix + b.name);
  for (const auto& [name, child] : children_)
    child->collect(prefix + name + ".", params, buffers, non_negative);
}

namespace {
// Keeps the first entry of each tensor. A tied layer (one module registered twice, or one tensor
// registered in two modules) would otherwise list its tensors under every name, and an optimizer
// refuses a parameter given twice; an update applied twice would be wrong anyway. PyTorch's
// named_parameters()/named_buffers() deduplicate the same way, by identity, the first name found
// winning; its state_dict() keeps every name, and so does ours.
Module::NamedTensors unique_tensors(const Module::NamedTensors& all) {
  std::unordered_set<const TensorImpl*> seen;
  Module::NamedTensors out;
  // A loop, not erase_if: the predicate would keep state, and the order of its calls is the
  // library's to choose.
  for (const auto& entry : all) {
    if (seen.insert(entry.second.impl().get()).second) out.push_back(entry);
  }
  return out;
}
}  // namespace

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

Module::NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", &out, nullptr);
  return unique_tensors(out);
}

Module::NamedTensors Module::named_buffers() const {
  std::vector<NamedTensor> buffers;
  collect("", nullptr, &buffers);
  NamedTensors out;
  for (auto& b : buffers) out.emplace_back(b.name, b.tensor);
  return unique_tensors(out);
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& t : parameters()) n += t.numel();
  return n;
}

std::vector<NamedTensor> Module::state_dict() const {
  NamedTensors params;
  std::vector<NamedTensor> buffers;
  collect("", &params, &buffers);
  std::vector<NamedTensor> out;
  for (auto& [name, t] : params) out.push_back({name, t, DType::F32});
  for (auto& b : buffers) out.push_back(b);
  return out;
}

void Module::load_state_dict(const std::vector<NamedTensor>& state, bool strict) {
  std::set<std::string> non_negative;
  collect("", nullptr, nullptr, &non_negative);
  load_into(state, state_dict(), strict, non_negative);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (const Tensor& t : parameters()) t.zero_grad();
}

void Module::print(std::ostream& os, int indent) const {
  os << type_name() << "(";
  if (children_.empty()) {
    os << extra_repr() << ")";
    return;
  }
  os << extra_repr() << "\n";
  for (const auto& [name, child] : children_) {
    os << std::string(static_cast<size_t>(indent + 2), ' ') << "(" << name << "): ";
    child->print(os, indent + 2);
    os << "\n";
  }
  os << std::string(static_cast<size_t>(indent), ' ') << ")";
}

std::string Module::to_string() const {
  std::ostringstream os;
  print(os, 0);
  return os.str();
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) add(std::move(m));
}

Sequential& Sequential::add(std::shared_ptr<Module> module) {
  add_child(std::to_string(children().size()), std::move(module));
  return *this;
}

Module& Sequential::operator[](size_t i) const {
  BNLAB_CHECK(i < size(), "Sequential: index ", i, " is out of range for ", size(), " modules");
  return *children()[i].second;
}

void Sequential::set(size_t i, std::shared_ptr<Module> module) {
  BNLAB_CHECK(i < size(), "Sequential: set(", i, ") is out of range for ", size(), " modules");
  replace_child(std::to_string(i), std::move(module));
}

Tensor Sequential::forward(const Tensor& x) {
  // Adjacent children may run as one fused op (Module::forward_fused: BatchNorm + ReLU (+
  // MaxPool2d(2)) in training, Conv2d + ReLU (+ MaxPool2d, pooled before the relu, in training),
  // Conv2d + BatchNorm2d on batch statistics (+ what that BatchNorm fuses with)),
  // with results bit-identical (the conv + relu + pool: up to the sign of zeros) to running them
  // one after the other. Not when one of them has a forward hook: a hook must see its own module's
  // output, which the fused op never forms. Decided anew on each call (a virtual call and type
  // checks), so hooks added or removed between steps and train()/eval() take effect at once and the
  // model's structure is never rewritten (fold_batch_norm, which changes results at float rounding,
  // is an explicit rewrite instead). Unhooked Identity children between the two are skipped:
  // fold_batch_norm leaves one where each folded BatchNorm was, between the Conv2d and the ReLU
  // that fuse in inference.
  const auto& kids = children();
  auto skippable = [&](size_t j) {
    return j < kids.size() && typeid(*kids[j].second) == typeid(Identity) &&
           !kids[j].second->has_forward_hooks();
  };
  constexpr size_t kMaxOffered = 3;  // the longest fusion: Conv2d + BatchNorm2d + ReLU + MaxPool2d
  Tensor h = x;
  for (size_t i = 0; i < kids.size(); ++i) {
    Module& m = *kids[i].second;
    // The hook-free children after m, with their indices.
    Module* next[kMaxOffered];
    size_t index[kMaxOffered];
    size_t offered = 0;
    for (size_t j = i + 1; !m.has_forward_hooks() && j < kids.size() && offered < kMaxOffered;
         ++j) {
      if (skippable(j)) continue;
      if (kids[j].second->has_forward_hooks()) break;
      next[offered] = kids[j].second.get();
      index[offered++] = j;
    }
    if (offered > 0) {
      FusedForward fused = m.forward_fused(std::span<Module* const>(next, offered), h);
      if (fused.output.defined()) {
        BNLAB_CHECK(fused.modules >= 1 && fused.modules <= offered, m.type_name(),
                    ": forward_fused reports ", fused.modules, " fused modules of the ", offered,
                    " offered");
        h = fused.output;
        i = index[fused.modules -
                  1];  // the children up to here ran inside the op (or were identities)
        continue;
      }
    }
    h = m(h);
  }
  return h;
}

namespace {
struct SummaryRow {
  std::string name, layer, shape, params;
};

void add_rows(const std::string& prefix, const Module& m,
              std::vector<std::pair<std::string, const Module*>>* out) {
  for (const auto& [name, child] : m.children()) {
    if (dynamic_cast<const Sequential*>(child.get())) {
      add_rows(prefix + name + ".", *child, out);
    } else {
      out->emplace_back(prefix + name, child.get());
    }
  }
}
}  // namespace

std::string summary(Module& model, const Shape& input_shape) {
  std::vector<std::pair<std::string, const Module*>> leaves;
  add_rows("", model, &leaves);
  if (leaves.empty()) leaves.emplace_back(model.type_name(), &model);
  // A tied module is one object under several rows. Hooked once per row it would record every
  // call that many times, and one shape per module would give all its rows the last call's; so
  // each distinct module gets one hook that appends, and its k-th row takes its k-th call (the
  // order a Sequential runs its rows in). Hooks are removed again afterwards.
  std::map<const Module*, std::string> first_row;  // a module's first row names its later ones
  std::map<const Module*, std::vector<Shape>> shapes;
  std::vector<ForwardHookHandle> hooked;
  for (auto& [name, m] : leaves) {
    if (!first_row.emplace(m, name).second) continue;
    hooked.push_back(const_cast<Module*>(m)->register_forward_hook(
        [&shapes](const Module& mod, const Tensor&, const Tensor& y) {
          shapes[&mod].push_back(y.shape());
        }));
  }
  bool was_training = model.is_training();
  model.eval();
  {
    NoGradGuard no_grad;
    try {
      model(Tensor::zeros(input_shape));
    } catch (...) {
      for (ForwardHookHandle& h : hooked) h.remove();
      model.train(was_training);
      throw;
    }
  }
  for (ForwardHookHandle& h : hooked) h.remove();
  model.train(was_training);

  std::vector<SummaryRow> rows;
  std::map<const Module*, size_t> uses;
  size_t w_name = 5, w_layer = 5, w_shape = 12, w_params = 10;
  for (auto& [name, m] : leaves) {
    std::string layer = m->type_name();
    if (!m->extra_repr().empty()) layer += "(" + m->extra_repr() + ")";
    const size_t use = uses[m]++;
    const std::vector<Shape>& calls = shapes[m];
    std::string shape = use < calls.size() ? bnlab::to_string(calls[use]) : "-";
    // A repeated use owns no parameters of its own (num_parameters() counts each tensor once,
    // torchinfo shows "(recursive)"), so the rows add up to the total.
    std::string params = std::to_string(m->num_parameters());
    if (use > 0) {
      layer += " [same as " + first_row[m] + "]";
      params = "(shared)";
    }
    w_name = std::max(w_name, name.size());
    w_layer = std::max(w_layer, layer.size());
    w_shape = std::max(w_shape, shape.size());
    w_params = std::max(w_params, params.size());
    rows.push_back({name, std::move(layer), std::move(shape), std::move(params)});
  }
  std::ostringstream os;
  os << std::left << std::setw(static_cast<int>(w_name)) << "name"
     << "  " << std::setw(static_cast<int>(w_layer)) << "layer"
     << "  " << std::setw(static_cast<int>(w_shape)) << "output shape"
     << "  " << std::right << std::setw(static_cast<int>(w_params)) << "params"
     << "\n";
  for (const SummaryRow& r : rows) {
    os << std::left << std::setw(static_cast<int>(w_name)) << r.name << "  "
       << std::setw(static_cast<int>(w_layer)) << r.layer << "  "
       << std::setw(static_cast<int>(w_shape)) << r.shape << "  " << std::right
       << std::setw(static_cast<int>(w_params)) << r.params << "\n";
  }
  os << "input " << bnlab::to_string(input_shape)
     << ", total parameters: " << model.num_parameters() << "\n";
  return os.str();
}

}  // namespace bnlab

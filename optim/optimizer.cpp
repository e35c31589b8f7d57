// Optimizer base: group validation, the step loop that skips parameters without a gradient, and the
// per-parameter state as named tensors (validated on load, all-or-nothing).
//
// Reference: https://pytorch.org/docs/stable/optim.html (Optimizer.step, zero_grad, state_dict)
#include "optim/optimizer.h"

#include <cmath>
#include <map>
#include <sstream>
#include <unordered_map>

#include "core/autograd.h"

namespace bnlab {

namespace detail {

void check_nonnegative(const char* optimizer, const char* what, float value) {
  BNLAB_CHECK(std::isfinite(value) && value >= 0.0f, optimizer, ": invalid ", what, " ", value,
              "; expected a finite value >= 0");
}

void check_unit_interval(const char* optimizer, const char* what, float value) {
  BNLAB_CHECK(value >= 0.0f && value < 1.0f, optimizer, ": invalid ", what, " ", value,
              "; expected a value in [0, 1)");
}

}  // namespace detail

namespace {

// "a, b, c" with at most `limit` items, then "... (N more)".
std::string join_names(const std::vector<std::string>& names, size_t limit = 10) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < limit; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > limit) os << ", ... (" << names.size() - limit << " more)";
  return os.str();
}

std::string state_name(size_t index, const std::string& slot) {
  return "state." + std::to_string(index) + "." + slot;
}

}  // namespace

std::vector<ParamGroup> split_weight_decay(
    const std::vector<std::pair<std::string, Tensor>>& named_params, float lr, float weight_decay) {
  ParamGroup decay{{}, lr, weight_decay};
  ParamGroup no_decay{{}, lr, 0.0f};
  for (const auto& [name, p] : named_params) {
    BNLAB_CHECK(p.defined(), "split_weight_decay: parameter '", name, "' is undefined");
    (p.dim() <= 1 ? no_decay : decay).params.push_back(p);
  }
  std::vector<ParamGroup> groups;
  if (!decay.params.empty()) groups.push_back(std::move(decay));
  if (!no_decay.params.empty()) groups.push_back(std::move(no_decay));
  return groups;
}

Optimizer::Optimizer(const char* name, std::vector<ParamGroup> groups,
                     std::vector<std::string> slots)
    : name_(name), groups_(std::move(groups)), slot_names_(std::move(slots)) {
  std::unordered_map<const TensorImpl*, size_t>
      seen;  // parameter -> its index, to catch duplicates
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& group = groups_[g];
    detail::check_nonnegative(name_, "learning rate", group.lr);
    detail::check_nonnegative(name_, "weight_decay", group.weight_decay);
    for (size_t j = 0; j < group.params.size(); ++j) {
      const Tensor& p = group.params[j];
      BNLAB_CHECK(p.defined(), name_, ": parameter ", j, " of group ", g, " is undefined");
      BNLAB_CHECK(p.is_leaf(), name_, ": parameter ", num_params_, " (shape ", p.shape(),
                  ") is not a leaf: it was computed by '", p.grad_fn()->op,
                  "'; optimize leaf tensors only");
      auto [it, inserted] = seen.emplace(p.impl().get(), num_params_);
      BNLAB_CHECK(inserted, name_, ": parameter ", num_params_, " is the same tensor as parameter ",
                  it->second, "; a parameter may appear only once over all groups");
      shapes_.push_back(p.shape());
      ++num_params_;
    }
  }
  BNLAB_CHECK(num_params_ > 0, name_, ": got an empty parameter list");
  // All state is allocated here, once, zeroed, so that a step allocates nothing.
  slots_.resize(slot_names_.size());
  for (auto& slot : slots_) {
    slot.reserve(num_params_);
    for (const Shape& shape : shapes_) slot.push_back(Tensor::zeros(shape));
  }
  param_steps_.assign(num_params_, 0);
}

void Optimizer::step() {
  // Validate everything first so that a bad edit of param_groups() cannot leave a half-applied
  // step.
  size_t index = 0;
  for (const ParamGroup& group : groups_) {
    detail::check_nonnegative(name_, "learning rate", group.lr);
    detail::check_nonnegative(name_, "weight_decay", group.weight_decay);
    for (const Tensor& p : group.params) {
      BNLAB_CHECK(index < num_params_ && p.defined() && p.shape() == shapes_[index], name_,
                  ": the parameter groups changed after construction (parameter ", index,
                  "); build a new optimizer instead");
      ++index;
    }
  }
  BNLAB_CHECK(index == num_params_, name_, ": the parameter groups changed after construction (",
              index, " parameters, ", num_params_,
              " at construction); build a new optimizer instead");

  NoGradGuard no_grad;
  index = 0;
  for (const ParamGroup& group : groups_) {
    for (const Tensor& p : group.params) {
      // The raw grad buffer rather than p.grad(): no handle is allocated per step.
      const std::shared_ptr<detail::Storage>& grad = p.impl()->grad;
      if (grad) {  // no gradient: no update and no state change, as in torch
        int64_t step = ++param_steps_[index];
        update_param(index, group, p.data(), grad->data(), p.numel(), step);
        // A graph recorded before this step and still holding p must not backpropagate with the
        // new values: its backward() now throws.
        p.bump_version();
      }
      ++index;
    }
  }
  ++step_count_;
}

void Optimizer::zero_grad() {
  for (const ParamGroup& group : groups_)
    for (const Tensor& p : group.params) p.zero_grad();
}

void Optimizer::set_lr(float lr) {
  detail::check_nonnegative(name_, "learning rate", lr);
  for (ParamGroup& group : groups_) group.lr = lr;
}

void Optimizer::set_step_count(int64_t count) {
  BNLAB_CHECK(count >= 0, name_, ": step count must be >= 0; got ", count);
  step_count_ = count;
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  if (slot_names_.empty()) return out;
  out.reserve(num_params_ * (slot_names_.size() + 1));
  for (size_t i = 0; i < num_params_; ++i) {
    out.emplace_back(state_name(i, "step"), Tensor::scalar(static_cast<float>(param_steps_[i])));
    for (size_t s = 0; s < slot_names_.size(); ++s)
      out.emplace_back(state_name(i, slot_names_[s]), slots_[s][i]);
  }
  return out;
}

void Optimizer::load_state_tensors(const std::vector<std::pair<std::string, Tensor>>& state) {
  // Expected names -> (parameter index, slot index; kStep for the step counter).
  constexpr size_t kStep = static_cast<size_t>(-1);
  std::map<std::string, std::pair<size_t, size_t>> expected;
  std::vector<std::string> expected_order;
  if (!slot_names_.empty()) {
    for (size_t i = 0; i < num_params_; ++i) {
      expected_order.push_back(state_name(i, "step"));
      expected[expected_order.back()] = {i, kStep};
      for (size_t s = 0; s < slot_names_.size(); ++s) {
        expected_order.push_back(state_name(i, slot_names_[s]));
        expected[expected_order.back()] = {i, s};
      }
    }
  }

  // 1. Names: every expected one exactly once, nothing else.
  std::map<std::string, const Tensor*> given;
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : state) {
    if (!expected.count(name)) {
      unexpected.push_back(name);
      continue;
    }
    BNLAB_CHECK(given.emplace(name, &t).second, name_, " optimizer state: ", name,
                " appears more than once");
  }
  std::vector<std::string> missing;
  for (const std::string& name : expected_order)
    if (!given.count(name)) missing.push_back(name);
  if (!missing.empty() || !unexpected.empty()) {
    std::ostringstream os;
    os << name_ << " optimizer state does not match this optimizer (" << num_params_
       << " parameters, state per parameter: "
       << (slot_names_.empty() ? std::string("none") : "step, " + join_names(slot_names_)) << ")";
    if (!missing.empty()) os << "; missing keys: " << join_names(missing);
    if (!unexpected.empty()) os << "; unexpected keys: " << join_names(unexpected);
    BNLAB_FAIL(os.str());
  }

  // 2. Shapes and values.
  for (const auto& [name, t] : given) {
    auto [i, s] = expected.at(name);
    BNLAB_CHECK(t->defined(), name_, " optimizer state: ", name, " is undefined");
    if (s == kStep) {
      BNLAB_CHECK(t->numel() == 1 && t->dim() <= 1, name_, " optimizer state: ", name,
                  " must be a scalar; got shape ", t->shape());
      float v = t->item();
      BNLAB_CHECK(std::isfinite(v) && v >= 0.0f && v == std::floor(v), name_,
                  " optimizer state: ", name, " must be a non-negative integer; got ", v);
      // The copy below converts to int64, undefined for 2^63 and above (1e30 made Adam's weights
      // NaN). Not bounded at 2^24, where float stops counting exactly: state_tensors() writes such
      // rounded steps itself after that many updates, and they must load again.
      BNLAB_CHECK(v < 9223372036854775808.0f, name_, " optimizer state: ", name,
                  " must be below 2^63, an int64 step count; got ", v);
    } else {
      BNLAB_CHECK(t->shape() == shapes_[i], name_, " optimizer state: ", name, " has shape ",
                  t->shape(), ", parameter ", i, " has shape ", shapes_[i]);
    }
  }

  // 3. Copy (into the buffers allocated at construction; the caller's tensors are not kept).
  for (const auto& [name, t] : given) {
    auto [i, s] = expected.at(name);
    if (s == kStep)
      param_steps_[i] = static_cast<int64_t>(t->item());
    else if (slots_[s][i].data() != t->data())  // loading our own state_tensors() is a no-op
      slots_[s][i].copy_(*t);
  }
}

}  // namespace bnlab

// The non-finite guard: a cheap per-step check, and a diagnosis that replays the step's forward
// pass only when the check fires (see train/nonfinite_guard.h).
#include "train/nonfinite_guard.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/finite.h"

namespace bnlab {

namespace {

// Reports in full for the first few events; a diverging run under `continue` would otherwise
// print (and replay) every remaining step.
constexpr int64_t kMaxReports = 3;

bool all_finite(const Tensor& t) { return detail::all_finite(t.data(), t.numel()); }

std::string describe_loss(float loss) {
  if (std::isnan(loss)) return "nan";
  if (std::isinf(loss)) return loss > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os << loss;
  return os.str();
}

}  // namespace

OnNonFinite parse_on_nan(const std::string& value) {
  if (value == "stop") return OnNonFinite::kStop;
  if (value == "skip") return OnNonFinite::kSkip;
  if (value == "continue") return OnNonFinite::kContinue;
  BNLAB_FAIL("train: --on-nan must be stop, skip or continue; got '", value, "'");
}

NonFiniteGuard::NonFiniteGuard(Model& model, OnNonFinite mode) : model_(model), mode_(mode) {
  // The module tree in pre-order with PyTorch's dotted paths; an explicit stack, no recursion.
  std::vector<NamedModule> stack{{"", model.net.get()}};
  while (!stack.empty()) {
    NamedModule m = stack.back();
    stack.pop_back();
    modules_.push_back(m);
    const auto& children = m.module->children();
    for (auto it = children.rbegin(); it != children.rend(); ++it)
      stack.push_back({m.path.empty() ? it->first : m.path + "." + it->first, it->second.get()});
  }
  params_ = model.net->named_parameters();
  for (auto& [name, t] : model.net->named_buffers()) {
    buffers_.push_back(t);
    if (mode_ == OnNonFinite::kSkip) saved_buffers_.push_back(t.clone());
  }
}

void NonFiniteGuard::before_step() {
  rng_before_step_ = model_.dropout_rng->state();
  for (size_t i = 0; i < saved_buffers_.size(); ++i) {
    std::memcpy(saved_buffers_[i].data(), buffers_[i].data(),
                static_cast<size_t>(buffers_[i].numel()) * sizeof(float));
  }
}

bool NonFiniteGuard::found(float loss) const {
  if (!std::isfinite(loss)) return true;
  for (const auto& [name, p] : params_) {
    // The raw grad buffer: Tensor::grad() would allocate a handle every step.
    const std::shared_ptr<detail::Storage>& g = p.impl()->grad;
    if (g && !detail::all_finite(g->data(), static_cast<int64_t>(g->size()))) return true;
  }
  return false;
}

std::string NonFiniteGuard::diagnose(int64_t step, float loss, const Tensor& images) {
  auto describe_module = [&](const std::string& path) {
    for (const NamedModule& m : modules_) {
      if (m.path == path) {
        return (path.empty() ? std::string("the model") : "layer " + path) + " (" +
               m.module->type_name() + ")";
      }
    }
    return "layer " + path;
  };

  // 1. Replay the forward pass with a hook on every module. Hooks run when a module finishes, so
  //    the first non-finite output seen is the innermost, earliest layer that produced one.
  const NamedModule* first_output = nullptr;
  {
    std::vector<Tensor> buffers_after;
    for (const Tensor& b : buffers_) buffers_after.push_back(b.clone());
    Rng::State rng_after = model_.dropout_rng->state();
    model_.dropout_rng->set_state(rng_before_step_);  // the same dropout masks as the step
    std::vector<ForwardHookHandle> hooks;             // removed by handle: the user's hooks stay
    for (const NamedModule& m : modules_) {
      hooks.push_back(m.module->register_forward_hook(
          [&first_output, &m](const Module&, const Tensor&, const Tensor& out) {
            if (first_output == nullptr && out.defined() && !all_finite(out)) first_output = &m;
          }));
    }
    auto restore = [&]() {
      for (ForwardHookHandle& h : hooks) h.remove();
      for (size_t i = 0; i < buffers_.size(); ++i) buffers_[i].copy_(buffers_after[i]);
      model_.dropout_rng->set_state(rng_after);
    };
    try {
      NoGradGuard no_grad;
      (*model_.net)(images);
    } catch (...) {
      restore();
      throw;
    }
    restore();
  }

  // 2. Gradients: backward runs from the loss towards the input, so the non-finite gradient
  //    closest to the loss (the last in parameter order) is the first to have gone bad.
  std::string first_grad;
  int64_t bad_grads = 0;
  std::vector<std::string> bad_values;
  for (auto it = params_.rbegin(); it != params_.rend(); ++it) {
    const auto& [name, p] = *it;
    if (!all_finite(p)) bad_values.push_back(name);
    const std::shared_ptr<detail::Storage>& g = p.impl()->grad;
    if (g && !detail::all_finite(g->data(), static_cast<int64_t>(g->size()))) {
      ++bad_grads;
      if (first_grad.empty()) first_grad = name;
    }
  }

  std::ostringstream os;
  os << "step " << step << ": loss " << describe_loss(loss) << "; first non-finite output: ";
  if (first_output == nullptr) {
    os << "none (every layer output is finite)";
  } else {
    os << describe_module(first_output->path);
  }
  os << "; first non-finite gradient (backward order): ";
  if (first_grad.empty()) {
    os << "none";
  } else {
    size_t dot = first_grad.rfind('.');
    os << first_grad << " of "
       << describe_module(dot == std::string::npos ? "" : first_grad.substr(0, dot)) << ", "
       << bad_grads << " of " << params_.size() << " parameter gradients non-finite";
  }
  if (!bad_values.empty()) {
    os << "; parameters already non-finite: " << bad_values.back();
    if (bad_values.size() > 1) os << " and " << bad_values.size() - 1 << " more";
  }
  return os.str();
}

NonFiniteGuard::Verdict NonFiniteGuard::handle(int64_t step, float loss, const Tensor& images) {
  ++events_;
  if (first_step_ < 0) first_step_ = step;
  Verdict v;
  if (events_ <= kMaxReports || mode_ == OnNonFinite::kStop) {
    v.message = diagnose(step, loss, images);
  } else if (events_ == kMaxReports + 1) {
    v.message = "step " + std::to_string(step) + ": loss " + describe_loss(loss) +
                ", non-finite again; further non-finite steps are only counted "
                "(summary.json: nonfinite_steps)";
  }
  switch (mode_) {
    case OnNonFinite::kStop:
      v.stop = true;
      v.message += "; stopping (diverged)";
      break;
    case OnNonFinite::kSkip:
      // Undo the step's BatchNorm running-statistics update too: a NaN batch would poison them.
      for (size_t i = 0; i < buffers_.size(); ++i) buffers_[i].copy_(saved_buffers_[i]);
      if (!v.message.empty() && events_ <= kMaxReports) v.message += "; skipping its update";
      break;
    case OnNonFinite::kContinue:
      v.apply_update = true;
      if (!v.message.empty() && events_ <= kMaxReports) v.message += "; applying it anyway";
      break;
  }
  return v;
}

}  // namespace bnlab

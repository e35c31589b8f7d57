// Helpers shared by the optimizer tests: setting a gradient by hand, a quadratic problem to
// converge on, and the resume check (save state after k steps, load into a fresh optimizer,
// continue both).
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "optim/optim.h"

namespace bnlab::testing {

// Overwrites p's gradient with `values` (allocating it if absent).
inline void set_grad(const Tensor& p, const std::vector<float>& values) {
  REQUIRE(static_cast<int64_t>(values.size()) == p.numel());
  float* g = grad_buffer(p);
  for (size_t i = 0; i < values.size(); ++i) g[i] = values[i];
}

// A leaf parameter holding `values`.
inline Tensor param(const std::vector<float>& values, const Shape& shape = {}) {
  Shape s = shape.empty() ? Shape{static_cast<int64_t>(values.size())} : shape;
  return Tensor::from(values, s).set_requires_grad();
}

// sum over parameters of sum(w * (p - t)^2), with fixed per-element weights w in [0.5, 1.5] and
// targets t in [-1, 1], so that coordinates differ in curvature (what momentum and adaptive methods
// are about).
struct Quadratic {
  std::vector<Tensor> targets, weights;

  Quadratic(const std::vector<Tensor>& params, uint64_t seed) {
    Rng rng(seed);
    for (const Tensor& p : params) {
      targets.push_back(Tensor::uniform(p.shape(), rng, -1.0f, 1.0f));
      weights.push_back(Tensor::uniform(p.shape(), rng, 0.5f, 1.5f));
    }
  }

  // Zeroes the grads, computes the loss and backpropagates into `params`.
  float backward(Optimizer& opt, const std::vector<Tensor>& params) const {
    opt.zero_grad();
    Tensor loss;
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor d = params[i] - targets[i];
      Tensor term = sum(weights[i] * d * d);
      loss = loss.defined() ? loss + term : term;
    }
    loss.backward();
    return loss.item();
  }

  // Largest |p - t| over all parameters.
  float max_error(const std::vector<Tensor>& params) const {
    float worst = 0.0f;
    for (size_t i = 0; i < params.size(); ++i) {
      std::vector<float> p = params[i].to_vector(), t = targets[i].to_vector();
      for (size_t j = 0; j < p.size(); ++j) worst = std::max(worst, std::abs(p[j] - t[j]));
    }
    return worst;
  }
};

// Copies of `params` as fresh leaves (same values, no grad).
inline std::vector<Tensor> copy_params(const std::vector<Tensor>& params) {
  std::vector<Tensor> out;
  for (const Tensor& p : params)
    out.push_back(Tensor::from(p.to_vector(), p.shape()).set_requires_grad());
  return out;
}

using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(const std::vector<Tensor>&)>;

// Runs k steps, saves the state (copied, as a checkpoint would), loads it into a fresh optimizer
// over copies of the parameters, then runs both `more` steps: parameters and state must match bit
// for bit. A third optimizer over copies that does NOT load the state must end elsewhere (the state
// matters).
inline void check_resume(const MakeOptimizer& make, int k = 3, int more = 4) {
  Rng rng(7);
  std::vector<Tensor> params{Tensor::normal({3, 4}, rng).set_requires_grad(),
                             Tensor::normal({4}, rng).set_requires_grad()};
  Quadratic problem(params, 11);
  std::unique_ptr<Optimizer> first = make(params);
  for (int i = 0; i < k; ++i) {
    problem.backward(*first, params);
    first->step();
  }
  std::vector<std::pair<std::string, Tensor>> saved;
  for (const auto& [name, t] : first->state_tensors())
    saved.emplace_back(name, Tensor::from(t.to_vector(), t.shape()));

  std::vector<Tensor> resumed_params = copy_params(params), fresh_params = copy_params(params);
  std::unique_ptr<Optimizer> resumed = make(resumed_params);
  resumed->load_state_tensors(saved);
  resumed->set_step_count(first->step_count());
  std::unique_ptr<Optimizer> fresh = make(fresh_params);

  for (int i = 0; i < more; ++i) {
    problem.backward(*first, params);
    first->step();
    problem.backward(*resumed, resumed_params);
    resumed->step();
    problem.backward(*fresh, fresh_params);
    fresh->step();
  }
  CHECK(resumed->step_count() == first->step_count());
  bool fresh_differs = false;
  for (size_t i = 0; i < params.size(); ++i) {
    CHECK(resumed_params[i].to_vector() == params[i].to_vector());
    fresh_differs = fresh_differs || fresh_params[i].to_vector() != params[i].to_vector();
  }
  CHECK(fresh_differs);
  auto a = first->state_tensors(), b = resumed->state_tensors();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.to_vector() == b[i].second.to_vector());
  }
}

}  // namespace bnlab::testing

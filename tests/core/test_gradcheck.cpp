// The gradient checker itself must be able to fail: a wrong backward and an overwriting backward
// are caught.
#include <doctest/doctest.h>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {

// y = 3x with a backward that claims 2.
Tensor wrong_scale(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) out.data()[i] = 3.0f * x.data()[i];
  if (needs_grad({x})) {
    attach(out, "wrong_scale", {x},
           [](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             float* dx = grad_buffer(in[0]);
             for (int64_t i = 0; i < dout.numel(); ++i) dx[i] += 2.0f * dout.data()[i];
           });
  }
  return out;
}

// y = 3x with a correct value that overwrites the gradient instead of adding to it.
Tensor overwriting_scale(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) out.data()[i] = 3.0f * x.data()[i];
  if (needs_grad({x})) {
    attach(out, "overwriting_scale", {x},
           [](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             float* dx = grad_buffer(in[0]);
             for (int64_t i = 0; i < dout.numel(); ++i) dx[i] = 3.0f * dout.data()[i];
           });
  }
  return out;
}

}  // namespace

TEST_CASE("gradcheck: reports a wrong backward with op, input, index and both values") {
  auto r = testing::check_gradients(
      "wrong_scale", [](const std::vector<Tensor>& in) { return wrong_scale(in[0]); },
      {param({4}, 1)});
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("wrong_scale: input 0 [4] flat index 0: numeric") != std::string::npos);
}

TEST_CASE("gradcheck: catches a backward that overwrites instead of accumulating") {
  auto r = testing::check_gradients(
      "overwriting_scale", [](const std::vector<Tensor>& in) { return overwriting_scale(in[0]); },
      {param({4}, 1)});
  CHECK_FALSE(r.ok);
}

TEST_CASE("gradcheck: passes a correct composite") {
  auto r = testing::check_gradients(
      "composite", [](const std::vector<Tensor>& in) { return tanh(in[0] * in[0]) + in[0]; },
      {param({4}, 1)});
  CHECK(r.ok);
}

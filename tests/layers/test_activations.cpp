// The GELU, SiLU, ELU and Softplus layers: forward to their ops, print their options as torch.nn
// does, hold no state (so a torch twin's state_dict matches around them), and check their options.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>

#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;
}

TEST_CASE("layers.activation: GELU, SiLU, ELU, Softplus forward to their ops") {
  Tensor x = Tensor::from({-2, -0.5f, 0.5f, 2}, {1, 1, 2, 2});
  CHECK(GELU()(x).to_vector() == gelu(x).to_vector());
  CHECK(GELU("tanh")(x).to_vector() == gelu(x, "tanh").to_vector());
  CHECK(SiLU()(x).to_vector() == silu(x).to_vector());
  CHECK(ELU(0.5f)(x).to_vector() == elu(x, 0.5f).to_vector());
  CHECK(Softplus(2.0f, 1.0f)(x).to_vector() == softplus(x, 2.0f, 1.0f).to_vector());
  CHECK(GELU()(x).shape() == x.shape());
}

TEST_CASE("layers.activation: printed like torch.nn, no parameters or buffers") {
  // torch prints GELU(approximate='none'), SiLU(), ELU(alpha=1.0), Softplus(beta=1, threshold=20);
  // floats print in C++'s shortest form here, as LeakyReLU's negative_slope does.
  CHECK(GELU().to_string() == "GELU(approximate='none')");
  CHECK(GELU("tanh").to_string() == "GELU(approximate='tanh')");
  CHECK(SiLU().to_string() == "SiLU()");
  CHECK(ELU(0.5f).to_string() == "ELU(alpha=0.5)");
  CHECK(Softplus().to_string() == "Softplus(beta=1, threshold=20)");
  Sequential net;
  net.add(std::make_shared<GELU>());
  net.add(std::make_shared<SiLU>());
  net.add(std::make_shared<ELU>());
  net.add(std::make_shared<Softplus>());
  CHECK(net.parameters().empty());
  CHECK(net.state_dict().empty());
}

TEST_CASE("layers.activation: gradients through the layers") {
  GELU g("tanh");
  SiLU s;
  ELU e(1.5f);
  Softplus p(2.0f, 3.0f);
  CHECK_GRADIENTS("GELU", [&](const Inputs& in) { return g(in[0]); },
                  {testing::param({2, 3}, 1, -3, 3)});
  CHECK_GRADIENTS("SiLU", [&](const Inputs& in) { return s(in[0]); },
                  {testing::param({2, 3}, 2, -3, 3)});
  CHECK_GRADIENTS("ELU", [&](const Inputs& in) { return e(in[0]); },
                  {testing::param({2, 3}, 3, 0.1f, 2)});
  CHECK_GRADIENTS("ELU", [&](const Inputs& in) { return e(in[0]); },
                  {testing::param({2, 3}, 4, -2, -0.1f)});
  CHECK_GRADIENTS("Softplus", [&](const Inputs& in) { return p(in[0]); },
                  {testing::param({2, 3}, 5, -1, 1)});
}

TEST_CASE("layers.activation: bad options are refused at construction") {
  CHECK_THROWS_WITH_AS(GELU("erf"), doctest::Contains("GELU: approximate must be 'none' or 'tanh'"),
                       Error);
  CHECK_THROWS_WITH_AS(Softplus(0.0f),
                       doctest::Contains("Softplus: beta must be finite and nonzero"), Error);
}

// gelu (exact and tanh), silu, elu, softplus, softsign, hardtanh: values against PyTorch, gradient
// checks, the kinks pinned exactly, NaN/inf, bad options.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;

constexpr float kInf = std::numeric_limits<float>::infinity();

const std::vector<float> kX{-3, -1, -0.5f, 0, 0.5f, 1, 3};

// Every element of got within rel of want (doubles from PyTorch in float64).
void check_close(const Tensor& got, const std::vector<double>& want, double rel = 1e-6) {
  std::vector<float> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  for (size_t i = 0; i < g.size(); ++i) {
    CHECK_MESSAGE(std::fabs(g[i] - want[i]) <= rel * std::fabs(want[i]) + 1e-12, "element ", i,
                  ": got ", g[i], ", want ", want[i]);
  }
}

// d/dx of sum(f(x)) at the given points, by backward.
std::vector<float> grad_at(Tensor (*f)(const Tensor&), const std::vector<float>& at) {
  Tensor x = Tensor::from(at, {static_cast<int64_t>(at.size())});
  x.set_requires_grad();
  sum(f(x)).backward();
  return x.grad().to_vector();
}

}  // namespace

TEST_CASE("ops.activation: values match PyTorch") {
  // Reference values: torch 1.13, float64, on x = [-3, -1, -0.5, 0, 0.5, 1, 3], e.g.
  // torch.nn.functional.gelu(torch.tensor(x, dtype=torch.float64)).tolist().
  Tensor x = Tensor::from(kX, {7});
  check_close(gelu(x), {-0.00404969409489031, -0.15865525393145702, -0.15426876936299344, 0.0,
                        0.34573123063700656, 0.841344746068543, 2.99595030590511});
  check_close(gelu(x, "tanh"), {-0.0036373920817729943, -0.15880800939172324, -0.15428599017485606,
                                0.0, 0.34571400982514394, 0.8411919906082768, 2.996362607918227});
  check_close(silu(x), {-0.14227761953270035, -0.2689414213699951, -0.1887703343990727, 0.0,
                        0.3112296656009273, 0.7310585786300049, 2.8577223804672998});
  check_close(elu(x, 2.0f),
              {-1.900425863264272, -1.2642411176571153, -0.7869386805747332, 0.0, 0.5, 1.0, 3.0});
  // beta 2, threshold 5: x = 3 is past the threshold (6 > 5) and returned as is.
  check_close(softplus(x, 2.0f, 5.0f),
              {0.0012378425688652247, 0.06346400552148625, 0.15663084375911143, 0.34657359027997264,
               0.6566308437591114, 1.0634640055214863, 3.0});
  check_close(softsign(x), {-0.75, -0.5, -1.0 / 3, 0.0, 1.0 / 3, 0.5, 0.75});
  CHECK(hardtanh(x, -0.5f, 1.0f).to_vector() ==
        std::vector<float>{-0.5f, -0.5f, -0.5f, 0, 0.5f, 1, 1});
}

TEST_CASE("ops.activation: gelu keeps its relative accuracy in the lower tail") {
  // x Phi(x) in double; PyTorch's float 0.5 x (1 + erf(x / sqrt 2)) has no correct digit here.
  for (float v : {-5.0f, -8.0f, -12.0f}) {
    double want = v * 0.5 * std::erfc(-v / std::sqrt(2.0));
    check_close(gelu(Tensor::from({v}, {1})), {want}, 2e-6);
  }
  // The tail of softplus: log(1 + e^-30) = e^-30 to float precision, not rounded to 0.
  check_close(softplus(Tensor::from({-30}, {1})), {std::log1p(std::exp(-30.0))}, 1e-6);
}

TEST_CASE("ops.activation: large tensors (the parallel, vectorized path) match small ones") {
  Rng rng(3);
  Tensor big = Tensor::normal({1 << 17}, rng) * 4.0f;
  for (auto f :
       {+[](const Tensor& t) { return gelu(t); }, +[](const Tensor& t) { return gelu(t, "tanh"); },
        +[](const Tensor& t) { return silu(t); }, +[](const Tensor& t) { return elu(t); },
        +[](const Tensor& t) { return softplus(t); }}) {
    std::vector<float> all = f(big).to_vector();
    for (int64_t i : {0, 1, 4097, (1 << 17) - 1}) {
      CHECK(all[static_cast<size_t>(i)] == f(Tensor::from({big.data()[i]}, {1})).item());
    }
  }
}

TEST_CASE("ops.activation: gradient checks") {
  CHECK_GRADIENTS("gelu", [](const Inputs& in) { return gelu(in[0]); }, {param({3, 5}, 1, -4, 4)});
  CHECK_GRADIENTS("gelu", [](const Inputs& in) { return gelu(in[0], "tanh"); },
                  {param({3, 5}, 2, -4, 4)});
  CHECK_GRADIENTS("silu", [](const Inputs& in) { return silu(in[0]); }, {param({3, 5}, 3, -6, 6)});
  CHECK_GRADIENTS("softsign", [](const Inputs& in) { return softsign(in[0]); },
                  {param({3, 5}, 4, -3, 3)});
  // Away from the kinks: elu's at 0, softplus's switch at beta x = threshold, hardtanh's bounds.
  Tensor away = Tensor::from({-2.5f, -1.2f, -0.3f, 0.3f, 1.1f, 2.2f}, {6});
  away.set_requires_grad();
  CHECK_GRADIENTS("elu", [](const Inputs& in) { return elu(in[0], 1.5f); }, {away});
  CHECK_GRADIENTS("softplus", [](const Inputs& in) { return softplus(in[0], 2.0f, 3.0f); }, {away});
  CHECK_GRADIENTS("softplus", [](const Inputs& in) { return softplus(in[0]); }, {away});
  CHECK_GRADIENTS("hardtanh", [](const Inputs& in) { return hardtanh(in[0], -2.0f, 2.0f); },
                  {away});
}

TEST_CASE("ops.activation: gradients at the kinks, as PyTorch") {
  // Values from torch 1.13: elu'(0) = alpha; gelu'(0) = silu'(0) = 0.5.
  Tensor z = Tensor::from({0}, {1});
  z.set_requires_grad();
  sum(elu(z, 2.0f)).backward();
  CHECK(z.grad().item() == 2.0f);
  CHECK(grad_at([](const Tensor& t) { return gelu(t); }, {0})[0] == doctest::Approx(0.5f));
  CHECK(grad_at([](const Tensor& t) { return gelu(t, "tanh"); }, {0})[0] == doctest::Approx(0.5f));
  CHECK(grad_at([](const Tensor& t) { return silu(t); }, {0})[0] == 0.5f);
  // softplus past the threshold is the identity: gradient exactly 1 (torch); below, sigmoid.
  std::vector<float> g = grad_at([](const Tensor& t) { return softplus(t); }, {20.5f, 19.5f});
  CHECK(g[0] == 1.0f);
  CHECK(g[1] == doctest::Approx(1.0f / (1.0f + std::exp(-19.5f))));
  // hardtanh: zero AT the bounds (clamp passes it there), and a NaN passes its gradient.
  g = grad_at([](const Tensor& t) { return hardtanh(t); }, {-1, 1, 0, std::nanf("")});
  CHECK(g == std::vector<float>{0, 0, 1, 1});
}

TEST_CASE("ops.activation: NaN propagates and infinities reach the limits") {
  const float nan = std::nanf("");
  Tensor x = Tensor::from({nan}, {1});
  for (auto f :
       {+[](const Tensor& t) { return gelu(t); }, +[](const Tensor& t) { return gelu(t, "tanh"); },
        +[](const Tensor& t) { return silu(t); }, +[](const Tensor& t) { return elu(t); },
        +[](const Tensor& t) { return softplus(t); }, +[](const Tensor& t) { return softsign(t); },
        +[](const Tensor& t) { return hardtanh(t); }}) {
    CHECK(std::isnan(f(x).item()));
  }
  Tensor inf = Tensor::from({-kInf, kInf}, {2});
  CHECK(elu(inf, 2.0f).to_vector() == std::vector<float>{-2.0f, kInf});
  CHECK(softplus(inf).to_vector() == std::vector<float>{0.0f, kInf});
  CHECK(gelu(inf).to_vector()[1] == kInf);
  CHECK(silu(inf).to_vector()[1] == kInf);
  // -inf * Phi(-inf) = -inf * 0: NaN, as torch.nn.functional.gelu / silu give.
  CHECK(std::isnan(gelu(inf).to_vector()[0]));
  CHECK(std::isnan(silu(inf).to_vector()[0]));
}

TEST_CASE("ops.activation: bad options name the op") {
  Tensor x = Tensor::ones({2, 3});
  CHECK_THROWS_WITH_AS(gelu(x, "erf"),
                       doctest::Contains("gelu: approximate must be 'none' or 'tanh'; got 'erf'"),
                       Error);
  CHECK_THROWS_WITH_AS(softplus(x, 0.0f), doctest::Contains("softplus: beta must be finite"),
                       Error);
  CHECK_THROWS_WITH_AS(hardtanh(x, 1.0f, -1.0f),
                       doctest::Contains("hardtanh: min_val 1 exceeds max_val -1"), Error);
}

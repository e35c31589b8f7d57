// Reductions with dim/keepdim (sum, mean, max/min with indices, argmax/argmin, var, std) as free
// functions and Tensor methods: values against PyTorch, ties, NaN, gradients, tiles and errors.
//
// Reference values were produced with torch 2.x on the CPU (/usr/bin/python3), e.g. for x below:
//   x = torch.tensor([[[1., 5., 2.], [7., 5., -1.]], [[0., 3., 3.], [4., 8., 2.]]])
//   torch.var(x, 1); torch.var(x, -1, correction=0); torch.std(x, 0, keepdim=True); torch.var(x)
//   torch.max(x, 2); torch.min(x, 1, keepdim=True); x.argmax(); x.argmin()
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {

using Inputs = std::vector<Tensor>;
using Floats = std::vector<float>;
using Indices = std::vector<int64_t>;

Tensor sample() {  // [2, 2, 3]
  return Tensor::from({1, 5, 2, 7, 5, -1, 0, 3, 3, 4, 8, 2}, {2, 2, 3});
}

void check_close(const Tensor& t, const Floats& expected) {
  std::vector<float> got = t.to_vector();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i)
    CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-6));
}

}  // namespace

TEST_CASE("ops.reduce_dim: values and shapes match PyTorch") {
  Tensor x = sample();
  check_close(sum(x, -2), {8, 10, 1, 4, 11, 5});
  check_close(x.mean(0), {0.5f, 4, 2.5f, 5.5f, 6.5f, 0.5f});
  check_close(var(x, 1), {18, 0, 4.5f, 8, 12.5f, 0.5f});
  check_close(var(x, -1, /*correction=*/0), {2.8888888f, 11.5555553f, 2, 6.2222223f});
  check_close(x.var(-1, false), {2.8888888f, 11.5555553f, 2, 6.2222223f});  // unbiased = false
  Tensor s = x.std(0, true, /*keepdim=*/true);
  CHECK(s.shape() == Shape{1, 2, 3});
  check_close(s, {0.7071068f, 1.4142135f, 0.7071068f, 2.1213202f, 2.1213202f, 2.1213202f});
  CHECK(var(x).item() == doctest::Approx(7.2954545f));
  CHECK(x.std().item() == doctest::Approx(2.7010100f));
  CHECK(x.sum().item() == 39.0f);
  CHECK(x.max().item() == 8.0f);
  CHECK(x.min().item() == -1.0f);
  CHECK(x.argmax() == 10);
  CHECK(argmin(x) == 5);

  auto [values, indices] = max(x, 2);
  CHECK(values.shape() == Shape{2, 2});
  CHECK(values.to_vector() == Floats{5, 7, 3, 8});
  CHECK(indices == Indices{1, 0, 1, 1});  // [0, 3, 3]: the first 3
  ValuesIndices m = x.min(1, /*keepdim=*/true);
  CHECK(m.values.shape() == Shape{2, 1, 3});
  CHECK(m.values.to_vector() == Floats{1, 5, -1, 0, 3, 2});
  CHECK(m.indices == Indices{0, 0, 1, 0, 0, 1});  // 5 vs 5: the first
  CHECK(x.argmax(-1) == Indices{1, 0, 1, 1});
  CHECK(x.argmin(1) == Indices{0, 0, 1, 0, 0, 1});
  CHECK(sum(x, 1, true).shape() == Shape{2, 1, 3});
  CHECK(mean(x, 2).shape() == Shape{2, 2});
}

TEST_CASE("ops.reduce_dim: NaN wins max, min and argmax (the first NaN), as PyTorch") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor t = Tensor::from({1, nan, 3, nan, 2, 2, 1, 2}, {2, 4});
  ValuesIndices mx = max(t, 1);
  CHECK(std::isnan(mx.values.data()[0]));
  CHECK(mx.values.data()[1] == 2.0f);
  CHECK(mx.indices == Indices{1, 0});  // torch: [1, 0]
  ValuesIndices mn = min(t, 1);
  CHECK(std::isnan(mn.values.data()[0]));
  CHECK(mn.indices == Indices{1, 2});  // torch: [1, 2]
  CHECK(argmax(t, 1) == Indices{1, 0});
  CHECK(std::isnan(max(t).item()));
  CHECK(argmax(t) == 1);
}

TEST_CASE("ops.reduce_dim: gradient at ties: max(dim) to the first, max() split evenly") {
  // torch: b.max(1).values.sum().backward() -> [[1, 0, 0]]; a.max().backward() -> [.5, 0, .5, 0]
  Tensor b = Tensor::from({3, 1, 3}, {1, 3});
  b.set_requires_grad();
  max(b, 1).values.sum().backward();
  CHECK(b.grad().to_vector() == Floats{1, 0, 0});
  Tensor a = Tensor::from({3, 1, 3, 2}, {4});
  a.set_requires_grad();
  a.max().backward();
  CHECK(a.grad().to_vector() == Floats{0.5f, 0, 0.5f, 0});
  Tensor c = Tensor::from({3, 1, 1, 2}, {2, 2});
  c.set_requires_grad();
  c.min().backward();
  CHECK(c.grad().to_vector() == Floats{0, 0.5f, 0.5f, 0});
}

TEST_CASE("ops.reduce_dim: var divisor n - correction, NaN when n <= correction as PyTorch") {
  // torch.var(torch.tensor([[2.]]), 1) -> nan; with correction=0 -> 0
  CHECK(std::isnan(var(Tensor::from({2}, {1, 1}), 1).item()));
  CHECK(var(Tensor::from({2}, {1, 1}), 1, 0).item() == 0.0f);
  CHECK(var(Tensor::from({1, 2, 3, 4}, {4}), 0, 2).item() == doctest::Approx(2.5f));  // 5 / 2
  CHECK(std::isnan(mean(Tensor::zeros({2, 0}), 1).data()[0]));                        // torch: nan
  // torch.empty(0).mean() and F.mse_loss / l1_loss of empty inputs: nan, as mean(dim) above.
  CHECK(std::isnan(mean(Tensor::zeros({0})).item()));
  CHECK(std::isnan(mean(Tensor::zeros({3, 0, 2})).item()));
  CHECK(std::isnan(mse_loss(Tensor::zeros({0, 4}), Tensor::zeros({0, 4})).item()));
  CHECK(std::isnan(l1_loss(Tensor::zeros({0}), Tensor::zeros({0})).item()));
  CHECK(sum(Tensor::zeros({2, 0}), 1).to_vector() == Floats{0, 0});
}

TEST_CASE("ops.reduce_dim: std's gradient is 0 where the std is 0, as PyTorch's") {
  // torch: x = [[3, 3, 3], [1, 2, 4]]; x.std(1).backward(ones) -> x.grad = [[0, 0, 0],
  // [-0.4364, -0.1091, 0.5455]]; torch.tensor([5., 5, 5, 5]).std() -> grad [0, 0, 0, 0].
  Tensor x = Tensor::from({3, 3, 3, 1, 2, 4}, {2, 3});
  x.set_requires_grad();
  bnlab::std(x, 1).sum().backward();
  const Floats g = x.grad().to_vector();
  CHECK(g[0] == 0.0f);
  CHECK(g[1] == 0.0f);
  CHECK(g[2] == 0.0f);
  CHECK(g[3] == doctest::Approx(-0.4364358f));
  CHECK(g[4] == doctest::Approx(-0.1091089f));
  CHECK(g[5] == doctest::Approx(0.5455447f));
  Tensor c = Tensor::from({5, 5, 5, 5}, {4});
  c.set_requires_grad();
  c.std().backward();
  CHECK(c.grad().to_vector() == Floats{0, 0, 0, 0});
}

TEST_CASE("ops.reduce_dim: gradient checks over every dim, keepdim and correction") {
  for (int64_t d : {0, 1, 2, -1, -3}) {
    for (bool keep : {false, true}) {
      CHECK_GRADIENTS("var(dim)", [d, keep](const Inputs& in) { return var(in[0], d, 1, keep); },
                      {param({2, 3, 4}, 11)});
      CHECK_GRADIENTS("var(dim, correction 0)",
                      [d, keep](const Inputs& in) { return in[0].var(d, 0.0, keep); },
                      {param({2, 3, 4}, 12)});
      CHECK_GRADIENTS("std(dim)",
                      [d, keep](const Inputs& in) { return bnlab::std(in[0], d, 1, keep); },
                      {param({2, 3, 4}, 13)});
      CHECK_GRADIENTS("min(dim)", [d, keep](const Inputs& in) { return in[0].min(d, keep).values; },
                      {param({2, 3, 4}, 14)});
      CHECK_GRADIENTS("max(dim) method",
                      [d, keep](const Inputs& in) { return in[0].max(d, keep).values; },
                      {param({2, 3, 4}, 15)});
      CHECK_GRADIENTS("sum(dim) method", [d, keep](const Inputs& in) { return in[0].sum(d, keep); },
                      {param({2, 3, 4}, 16)});
      CHECK_GRADIENTS("mean(dim) method",
                      [d, keep](const Inputs& in) { return in[0].mean(d, keep); },
                      {param({2, 3, 4}, 17)});
    }
  }
  CHECK_GRADIENTS("var()", [](const Inputs& in) { return var(in[0]); }, {param({3, 5}, 18)});
  CHECK_GRADIENTS("std()", [](const Inputs& in) { return in[0].std(); }, {param({3, 5}, 19)});
  CHECK_GRADIENTS("max()", [](const Inputs& in) { return in[0].max(); }, {param({3, 5}, 20)});
  CHECK_GRADIENTS("min()", [](const Inputs& in) { return min(in[0]); }, {param({3, 5}, 21)});
  // Inner dims wider than one tile (64 columns), so tiles and their edges are exercised.
  CHECK_GRADIENTS("var(dim) wide", [](const Inputs& in) { return var(in[0], 0); },
                  {param({3, 70}, 22)});
}

TEST_CASE("ops.reduce_dim: tiled and parallel kernels equal a plain loop") {
  // [5, 33, 700] with 115500 elements: over the parallel threshold, inner = 700 spans 11 tiles with
  // a partial last one; every dim, compared to a direct double-precision loop.
  Rng rng(3);
  const Shape shape{5, 33, 700};
  Tensor x = Tensor::normal(shape, rng);
  const float* px = x.data();
  for (int64_t d = 0; d < 3; ++d) {
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < d; ++i) outer *= shape[static_cast<size_t>(i)];
    for (int64_t i = d + 1; i < 3; ++i) inner *= shape[static_cast<size_t>(i)];
    const int64_t n = shape[static_cast<size_t>(d)];
    std::vector<float> s = sum(x, d).to_vector(), v = var(x, d).to_vector();
    ValuesIndices mx = max(x, d);
    int64_t bad = 0;
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        double acc = 0.0, acc2 = 0.0;
        int64_t best = 0;
        for (int64_t k = 0; k < n; ++k) {
          const float e = px[(o * n + k) * inner + i];
          acc += e;
          if (e > px[(o * n + best) * inner + i]) best = k;
        }
        const double mu = acc / static_cast<double>(n);
        for (int64_t k = 0; k < n; ++k) {
          const double e = px[(o * n + k) * inner + i] - mu;
          acc2 += e * e;
        }
        const size_t j = static_cast<size_t>(o * inner + i);
        bad += std::abs(s[j] - static_cast<float>(acc)) > 1e-4f;
        bad += std::abs(v[j] - static_cast<float>(acc2 / static_cast<double>(n - 1))) > 1e-5f;
        bad += mx.indices[j] != best;
        bad += mx.values.data()[j] != px[(o * n + best) * inner + i];
      }
    }
    CHECK_MESSAGE(bad == 0, "dim ", d, ": ", bad, " mismatches");
  }
}

TEST_CASE("ops.reduce_dim: a 0-d tensor reduces over dim 0 or -1 to itself, as PyTorch") {
  // torch: s = tensor(2.5); s.sum(0) = 2.5, s.sum(-1, keepdim=True) = 2.5 (0-d), s.max(0) =
  // (2.5, 0), s.softmax(0) = 1, s.log_softmax(0) = 0, s.var(0) = nan, s.std(0, correction=0) = 0;
  // s.sum(1) -> "Dimension out of range (expected to be in range of [-1, 0], but got 1)".
  Tensor s = Tensor::scalar(2.5f).set_requires_grad();
  const Tensor total = sum(s, 0);
  CHECK(total.dim() == 0);
  CHECK(total.item() == 2.5f);
  CHECK(sum(s, -1, true).dim() == 0);
  CHECK(mean(s, 0).item() == 2.5f);
  const ValuesIndices m = max(s, 0);
  CHECK(m.values.item() == 2.5f);
  CHECK(m.indices == std::vector<int64_t>{0});
  CHECK(argmax(s, -1) == std::vector<int64_t>{0});
  CHECK(softmax(s, 0).item() == 1.0f);
  CHECK(log_softmax(s, 0).item() == 0.0f);
  CHECK(std::isnan(var(s, 0).item()));
  CHECK(bnlab::std(s, 0, 0.0).item() == 0.0f);
  total.backward();
  CHECK(s.grad().item() == 1.0f);
  CHECK_THROWS_WITH_AS(sum(s, 1),
                       doctest::Contains("sum: dim 1 out of range for shape [] (expected a dim "
                                         "in [-1, 0])"),
                       Error);
}

TEST_CASE("ops.reduce_dim: errors name the op, the dim and the shape") {
  Tensor x = Tensor::ones({2, 3});
  CHECK_THROWS_WITH_AS(var(x, 2), doctest::Contains("var: dim 2 out of range for shape [2, 3]"),
                       Error);
  CHECK_THROWS_WITH_AS(x.max(-3), doctest::Contains("max: dim -3 out of range for shape [2, 3]"),
                       Error);
  CHECK_THROWS_WITH_AS(min(Tensor::zeros({2, 0}), 1),
                       doctest::Contains("min: cannot reduce the empty dim 1 of shape [2, 0]"),
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({0}).max(), doctest::Contains("max: cannot reduce an empty"),
                       Error);
  CHECK_THROWS_WITH_AS(var(x, 1, -1.0), doctest::Contains("var: correction must be >= 0"), Error);
}

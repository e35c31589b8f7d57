// transpose, permute, unsqueeze, squeeze and view: values by hand on x[i, j, k] = 12 i + 4 j + k,
// negative dims, gradient checks (also through chains of views), errors, and which results share
// the input's data (same-order views) and which copy (reorderings).
#include <doctest/doctest.h>

#include "gradcheck.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;
using Floats = std::vector<float>;

// [2, 3, 4] with x[i, j, k] = 12 i + 4 j + k.
Tensor grid() { return Tensor::arange(24).reshape({2, 3, 4}); }
}  // namespace

TEST_CASE("ops.views: transpose by hand") {
  Tensor m = Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(transpose(m, 0, 1).shape() == Shape{3, 2});
  CHECK(transpose(m, 0, 1).to_vector() == Floats{1, 4, 2, 5, 3, 6});
  CHECK(m.transpose(-1, -2).to_vector() == Floats{1, 4, 2, 5, 3, 6});
  CHECK(m.transpose(1, 1).to_vector() == m.to_vector());
  Tensor x = grid();
  Tensor t = x.transpose(0, 2);  // t[k, j, i] = x[i, j, k]
  REQUIRE(t.shape() == Shape{4, 3, 2});
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t i = 0; i < 2; ++i) CHECK(t[k][j][i].item() == float(12 * i + 4 * j + k));
  CHECK(Tensor::scalar(5).transpose(0, -1).item() == 5.0f);
}

TEST_CASE("ops.views: permute by hand") {
  Tensor x = grid();
  Tensor p = x.permute({2, 0, 1});  // p[k, i, j] = x[i, j, k]
  REQUIRE(p.shape() == Shape{4, 2, 3});
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j) CHECK(p[k][i][j].item() == float(12 * i + 4 * j + k));
  CHECK(permute(x, {-3, -2, -1}).to_vector() == x.to_vector());
  CHECK(permute(x, {1, 0, 2}).to_vector() == transpose(x, 0, 1).to_vector());
  // NCHW -> NHWC, the layout change users reach for.
  Tensor img = Tensor::arange(12).reshape({1, 3, 2, 2});  // channel c holds 4c .. 4c + 3
  CHECK(img.permute({0, 2, 3, 1}).to_vector() == Floats{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(permute(Tensor::scalar(2), {}).item() == 2.0f);
  CHECK(permute(Tensor::zeros({2, 0, 3}), {2, 1, 0}).shape() == Shape{3, 0, 2});
}

TEST_CASE("ops.views: permute across its 16 x 16 tiles, forward and backward") {
  // Sizes that are not multiples of the tile, every element checked against the index formula.
  const Shape s{2, 17, 3, 33};
  Tensor x = Tensor::arange(numel_of(s)).reshape(s);
  for (const std::vector<int64_t>& perm :
       {std::vector<int64_t>{0, 2, 3, 1}, {3, 1, 2, 0}, {1, 3, 0, 2}}) {
    CAPTURE(Shape(perm));
    Tensor y = x.permute(perm);
    int64_t bad = 0;
    std::vector<int64_t> i(4);
    for (i[0] = 0; i[0] < s[0]; ++i[0])
      for (i[1] = 0; i[1] < s[1]; ++i[1])
        for (i[2] = 0; i[2] < s[2]; ++i[2])
          for (i[3] = 0; i[3] < s[3]; ++i[3]) {
            int64_t at = 0;  // y's flat index of x[i]
            for (size_t d = 0; d < 4; ++d) at = at * s[size_t(perm[d])] + i[size_t(perm[d])];
            bad += y.data()[at] != float(((i[0] * s[1] + i[1]) * s[2] + i[2]) * s[3] + i[3]);
          }
    CHECK(bad == 0);
    // Backward routes y's gradient back: a seed equal to y gives x itself.
    Tensor w = x.clone().set_requires_grad();
    w.permute(perm).backward(y);
    CHECK(w.grad().to_vector() == x.to_vector());
  }
}

TEST_CASE("ops.views: unsqueeze, squeeze and view by hand") {
  Tensor x = Tensor::arange(6).reshape({2, 3});
  CHECK(x.unsqueeze(0).shape() == Shape{1, 2, 3});
  CHECK(x.unsqueeze(2).shape() == Shape{2, 3, 1});
  CHECK(x.unsqueeze(-1).shape() == Shape{2, 3, 1});
  CHECK(x.unsqueeze(-3).shape() == Shape{1, 2, 3});
  CHECK(unsqueeze(Tensor::scalar(1), 0).shape() == Shape{1});
  Tensor y = Tensor::zeros({1, 2, 1, 3, 1});
  CHECK(y.squeeze().shape() == Shape{2, 3});
  CHECK(y.squeeze(2).shape() == Shape{1, 2, 3, 1});
  CHECK(y.squeeze(-1).shape() == Shape{1, 2, 1, 3});
  CHECK(y.squeeze(1).shape() == y.shape());  // size 2: unchanged, as in PyTorch
  CHECK(Tensor::ones({1, 1}).squeeze().shape() == Shape{});
  CHECK(Tensor::scalar(3).squeeze(0).shape() == Shape{});
  CHECK(x.view({3, -1}).shape() == Shape{3, 2});
  CHECK(view(x, {-1}).to_vector() == Floats{0, 1, 2, 3, 4, 5});
  CHECK(x.squeeze().to_vector() == x.to_vector());
}

TEST_CASE("ops.views: flatten merges the trailing dims into their product, also when empty") {
  // PyTorch's shapes: torch.zeros(0, 3, 4).flatten(1) is [0, 12]. An empty tensor was given
  // [0, 0], which a Dense layer after it then refused.
  CHECK(flatten(Tensor::zeros({0, 3, 4})).shape() == Shape{0, 12});
  CHECK(flatten(Tensor::zeros({2, 0, 4})).shape() == Shape{2, 0});
  CHECK(flatten(Tensor::zeros({0, 3, 4}), 0).shape() == Shape{0});
  CHECK(flatten(Tensor::zeros({0, 3, 4}), -1).shape() == Shape{0, 3, 4});
  CHECK(flatten(Tensor::zeros({2, 3, 4})).shape() == Shape{2, 12});
  CHECK(flatten(Tensor::scalar(5), 0).shape() == Shape{1});
}

TEST_CASE("ops.views: errors name the op, the dims and the shape") {
  Tensor x = grid();
  CHECK_THROWS_WITH_AS(x.transpose(0, 3),
                       "transpose: dim 3 out of range for shape [2, 3, 4] (expected in [-3, 2])",
                       Error);
  CHECK_THROWS_WITH_AS(x.permute({0, 1}), "permute: 2 dims given for shape [2, 3, 4] of rank 3",
                       Error);
  CHECK_THROWS_WITH_AS(x.permute({0, 2, -1}),
                       "permute: dim -1 repeated in [0, 2, -1] for shape [2, 3, 4]", Error);
  CHECK_THROWS_WITH_AS(x.permute({0, 1, 5}), doctest::Contains("permute: dim 5 out of range"),
                       Error);
  CHECK_THROWS_WITH_AS(x.unsqueeze(4),
                       "unsqueeze: dim 4 out of range for shape [2, 3, 4] (expected in [-4, 3])",
                       Error);
  CHECK_THROWS_WITH_AS(x.squeeze(-4), doctest::Contains("squeeze: dim -4 out of range"), Error);
  CHECK_THROWS_WITH_AS(x.view({5, -1}), "view: cannot reshape [2, 3, 4] into [5, -1]", Error);
  CHECK_THROWS_WITH_AS(x.view({-1, -1}), doctest::Contains("view: more than one -1"), Error);
}

TEST_CASE("ops.views: reshape refuses sizes whose product overflows int64, naming the op") {
  // The product of the given sizes overflowed (undefined behaviour) and wrapped, here to 0.
  constexpr int64_t k32 = int64_t{1} << 32, k62 = int64_t{1} << 62;
  CHECK_THROWS_WITH_AS(Tensor::zeros({1}).reshape({k32, k32, -1}),
                       "reshape: cannot reshape [1] (1 elements) into [4294967296, 4294967296, "
                       "-1]: its sizes multiply past int64",
                       Error);
  CHECK_THROWS_WITH_AS(view(Tensor::zeros({0}), {k62, 4, -1}),
                       "view: cannot reshape [0] (0 elements) into [4611686018427387904, 4, -1]: "
                       "its sizes multiply past int64",
                       Error);
  CHECK(Tensor::zeros({0}).reshape({0, k62}).shape() == Shape{0, k62});
}

TEST_CASE("ops.views: gradient checks, also through chains of views") {
  for (int64_t d0 = -3; d0 < 3; ++d0) {
    for (int64_t d1 = 0; d1 < 3; ++d1) {
      CAPTURE(d0);
      CAPTURE(d1);
      CHECK_GRADIENTS("transpose", [=](const Inputs& in) { return in[0].transpose(d0, d1); },
                      {testing::param({2, 3, 4}, 1)});
    }
  }
  for (const std::vector<int64_t>& dims :
       {std::vector<int64_t>{2, 0, 1, 3}, {3, 2, 1, 0}, {0, 2, 3, 1}, {1, 0, 3, 2}}) {
    CHECK_GRADIENTS("permute", [dims](const Inputs& in) { return in[0].permute(dims); },
                    {testing::param({2, 3, 1, 4}, 2)});
  }
  CHECK_GRADIENTS("unsqueeze", [](const Inputs& in) { return in[0].unsqueeze(1); },
                  {testing::param({2, 3}, 3)});
  CHECK_GRADIENTS("squeeze", [](const Inputs& in) { return in[0].squeeze(); },
                  {testing::param({2, 1, 3}, 4)});
  CHECK_GRADIENTS("squeeze(dim)", [](const Inputs& in) { return in[0].squeeze(-2); },
                  {testing::param({2, 1, 3}, 5)});
  CHECK_GRADIENTS("view",
                  [](const Inputs& in) {
                    return in[0].view({3, -1});
                  },
                  {testing::param({2, 3}, 6)});
  // Views of views of views, mixing shared windows and copies, with the input used twice.
  CHECK_GRADIENTS("chain",
                  [](const Inputs& in) {
                    Tensor v =
                        in[0][1].transpose(0, 1).unsqueeze(0).narrow(1, 1, 2).squeeze(0);  // [2, 3]
                    return v * in[0].select(2, 3).view({3, 2}).permute({1, 0});
                  },
                  {testing::param({2, 3, 4}, 7)});
}

TEST_CASE("ops.views: same-order views share the input's data, reorderings copy") {
  Tensor x = grid();
  for (const Tensor& v : {x.unsqueeze(1), x.squeeze(), x.view({6, 4}), x.view({-1})}) {
    CHECK(v.data() == x.data());
  }
  Tensor u = x.unsqueeze(0);
  u.data()[5] = -5.0f;
  CHECK(x.data()[5] == -5.0f);
  Tensor w = x.view({4, 6});
  x.fill_(2.0f);
  CHECK(w.to_vector() == Floats(24, 2.0f));
  SUBCASE("transpose and permute are independent copies") {
    Tensor t = x.transpose(0, 1);
    Tensor p = x.permute({2, 1, 0});
    CHECK(t.data() != x.data());
    CHECK(p.data() != x.data());
    t.fill_(9.0f);
    CHECK(x.to_vector() == Floats(24, 2.0f));
    x.data()[0] = 1.0f;
    CHECK(p.data()[0] == 2.0f);
  }
  SUBCASE("a view of a window keeps the window's offset") {
    Tensor v = x[1].view({4, 3}).unsqueeze(0).squeeze(0);
    CHECK(v.storage_offset() == 12);
    CHECK(v.data() == x.data() + 12);
  }
}

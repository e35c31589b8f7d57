// slice, narrow, select / t[i], cat and stack: values by hand on x[i, j, k] = 12 i + 4 j + k,
// PyTorch's negative-index and clamping rules, gradient checks along every dim, errors naming the
// op, dim and shapes, and which results share the input's data.
#include <doctest/doctest.h>

#include <limits>

#include "gradcheck.h"

using namespace bnlab;

namespace {
using Inputs = std::vector<Tensor>;
using Floats = std::vector<float>;

// [2, 3, 4] with x[i, j, k] = 12 i + 4 j + k.
Tensor grid() { return Tensor::arange(24).reshape({2, 3, 4}); }

// True when `view` reads `base`'s buffer (writes through one are seen by the other).
bool shares(const Tensor& view, const Tensor& base) {
  return view.data() >= base.data() && view.data() < base.data() + base.numel();
}
}  // namespace

TEST_CASE("ops.index: select and t[i] by hand, negative indices and dims") {
  Tensor x = grid();
  CHECK(x[1].shape() == Shape{3, 4});
  CHECK(x[1].to_vector() == Floats{12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23});
  CHECK(x[-2].to_vector() == x[0].to_vector());
  CHECK(x.select(1, 2).shape() == Shape{2, 4});
  CHECK(x.select(1, 2).to_vector() == Floats{8, 9, 10, 11, 20, 21, 22, 23});
  CHECK(x.select(-1, -1).to_vector() == Floats{3, 7, 11, 15, 19, 23});
  CHECK(x[1][2][3].shape() == Shape{});
  CHECK(x[1][2][3].item() == 23.0f);
  CHECK(select(x, 2, 0).to_vector() == Floats{0, 4, 8, 12, 16, 20});
}

TEST_CASE("ops.index: narrow and slice by hand, with PyTorch's clamping rules") {
  Tensor x = grid();
  CHECK(narrow(x, 1, 1, 2).shape() == Shape{2, 2, 4});
  CHECK(narrow(x, 2, 1, 2).to_vector() == Floats{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22});
  CHECK(x.narrow(-1, -2, 2).to_vector() == Floats{2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23});
  CHECK(x.narrow(0, 2, 0).shape() == Shape{0, 3, 4});  // empty at the end is allowed
  SUBCASE("slice is narrow with end exclusive") {
    CHECK(x.slice(1, 1, 3).to_vector() == narrow(x, 1, 1, 2).to_vector());
  }
  SUBCASE("negative bounds count from the end, out-of-range ones clamp") {
    CHECK(x.slice(2, -3, -1).to_vector() == Floats{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22});
    CHECK(x.slice(1, -100, 100).to_vector() == x.to_vector());
    CHECK(x.slice(1, 2, 1).shape() == Shape{2, 0, 4});  // end before start: empty, no error
    constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();
    CHECK(x.slice(0, 1, kEnd).to_vector() == x[1].to_vector());
  }
  SUBCASE("step") {
    CHECK(x.slice(2, 0, 4, 2).to_vector() == Floats{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22});
    CHECK(x.slice(1, 0, 3, 2).shape() == Shape{2, 2, 4});
    CHECK(x.slice(2, 1, 4, 2).to_vector() == Floats{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23});
    CHECK(x.slice(2, 3, 4, 5).to_vector() == Floats{3, 7, 11, 15, 19, 23});
  }
}

TEST_CASE("ops.index: out-of-range arguments throw naming the op, dim and shape") {
  Tensor x = grid();
  CHECK_THROWS_WITH_AS(x[2], "select: index 2 out of range for dim 0 of size 2 (shape [2, 3, 4])",
                       Error);
  CHECK_THROWS_WITH_AS(x.select(1, -4), doctest::Contains("select: index -4"), Error);
  CHECK_THROWS_WITH_AS(x.select(3, 0),
                       "select: dim 3 out of range for shape [2, 3, 4] (expected in [-3, 2])",
                       Error);
  CHECK_THROWS_WITH_AS(x.narrow(1, 2, 2),
                       "narrow: start (2) + length (2) exceeds size 3 of dim 1 (shape [2, 3, 4])",
                       Error);
  CHECK_THROWS_WITH_AS(x.narrow(1, -4, 1), doctest::Contains("narrow: start -4 out of range"),
                       Error);
  CHECK_THROWS_WITH_AS(x.narrow(1, 0, -1), doctest::Contains("narrow"), Error);
  CHECK_THROWS_WITH_AS(x.slice(-4, 0, 1), doctest::Contains("slice: dim -4 out of range"), Error);
  CHECK_THROWS_WITH_AS(x.slice(0, 0, 1, 0), doctest::Contains("slice: step must be positive"),
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::scalar(1)[0],
                       doctest::Contains("select: cannot be applied to a 0-dim"), Error);
}

TEST_CASE("ops.index: gradient checks of slice, narrow and select along every dim") {
  for (int64_t d = -3; d < 3; ++d) {
    CAPTURE(d);
    CHECK_GRADIENTS("select", [d](const Inputs& in) { return in[0].select(d, 1); },
                    {testing::param({2, 3, 4}, 1)});
    CHECK_GRADIENTS("narrow", [d](const Inputs& in) { return in[0].narrow(d, 1, 1); },
                    {testing::param({2, 3, 4}, 2)});
    CHECK_GRADIENTS("slice/2", [d](const Inputs& in) { return in[0].slice(d, 0, 4, 2); },
                    {testing::param({2, 3, 4}, 3)});
  }
  // Overlapping selections of one input add up in its gradient.
  CHECK_GRADIENTS(
      "select+narrow",
      [](const Inputs& in) { return in[0][1] * in[0].narrow(0, 0, 2).select(0, 1) + in[0][0]; },
      {testing::param({3, 4}, 4)});
}

TEST_CASE("ops.index: contiguous selections share the input's data, the others copy") {
  Tensor x = grid();
  SUBCASE("along dim 0: a window, writes go both ways") {
    Tensor row = x[1];
    CHECK(shares(row, x));
    CHECK(row.storage_offset() == 12);
    row.data()[0] = -1.0f;
    CHECK(x.data()[12] == -1.0f);
    x.data()[13] = -2.0f;
    CHECK(row.data()[1] == -2.0f);
    row.fill_(7.0f);
    CHECK(x.slice(0, 1, 2).to_vector() == Floats(12, 7.0f));
    CHECK(x[0].to_vector() == grid()[0].to_vector());
  }
  SUBCASE("views of views stay windows of the first buffer") {
    Tensor v = x[1].narrow(0, 1, 2)[1];  // x[1, 2, :]
    CHECK(shares(v, x));
    CHECK(v.storage_offset() == 20);
    CHECK(v.to_vector() == Floats{20, 21, 22, 23});
    v.data()[3] = 0.5f;
    CHECK(x.data()[23] == 0.5f);
  }
  SUBCASE("leading dims of size 1 keep a selection contiguous") {
    Tensor y = x[0].unsqueeze(0);  // [1, 3, 4]
    CHECK(shares(y.select(1, 2), x));
    CHECK(shares(y.narrow(1, 1, 2), x));
  }
  SUBCASE("a selection of everything shares") {
    CHECK(shares(x.narrow(2, 0, 4), x));
    CHECK(x.slice(1, 0, 3).data() == x.data());
  }
  SUBCASE("strided selections copy and stay independent") {
    Tensor col = x.select(2, 0);
    Tensor mid = x.narrow(1, 1, 1);
    Tensor even = x.slice(0, 0, 2, 2);  // one row, but dim 0 with step 2: still contiguous
    CHECK(shares(even, x));
    Tensor every_other = x[0].slice(0, 0, 3, 2);  // rows 0 and 2 of x[0]: not one block
    for (const Tensor& c : {col, mid, every_other}) CHECK_FALSE(shares(c, x));
    col.data()[0] = 100.0f;
    CHECK(x.data()[0] == 0.0f);
    x.data()[4] = 100.0f;
    CHECK(mid.data()[0] == 4.0f);
  }
  SUBCASE("copy_ between overlapping windows of one buffer") {
    Tensor v = Tensor::arange(5);
    v.narrow(0, 1, 3).copy_(v.narrow(0, 0, 3));
    CHECK(v.to_vector() == Floats{0, 0, 1, 2, 4});
  }
}

TEST_CASE("ops.index: windows keep their buffer alive and out of the pool") {
  Tensor row;
  float* p;
  {
    Tensor x = Tensor::full({4, 256}, 3.0f);
    p = x.data();
    row = x[3];
  }
  // x is gone; its buffer must not have gone back to the pool while row reads it.
  Tensor y = Tensor::full({4, 256}, -1.0f);
  CHECK(y.data() != p);
  CHECK(row.data() == p + 3 * 256);
  CHECK(row.to_vector() == Floats(256, 3.0f));
}

TEST_CASE("ops.index: autograd through views of views, on a leaf and on an op's output") {
  Tensor w = Tensor::arange(1, 7).reshape({2, 3}).set_requires_grad();
  SUBCASE("leaf") {
    sum(w[1].narrow(0, 1, 2).unsqueeze(0) * 3.0f).backward();
    CHECK(w.grad().to_vector() == Floats{0, 0, 0, 0, 3, 3});
  }
  SUBCASE("intermediate") {
    Tensor h = w * 2.0f;
    sum(h.select(1, 2) * h[0].narrow(0, 2, 1)).backward();
    // h[:, 2] * h[0, 2] = 4 (w02 w02 + w12 w02): d/dw02 = 4 (2 w02 + w12) = 4 * 12, d/dw12 = 4 w02.
    CHECK(w.grad().to_vector() == Floats{0, 0, 48, 0, 0, 12});
  }
}

TEST_CASE("ops.index: cat by hand along each dim, and its gradient") {
  Tensor a = Tensor::from({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from({5, 6}, {1, 2});
  Tensor c = Tensor::from({7, 8}, {2, 1});
  CHECK(cat({a, b}).shape() == Shape{3, 2});
  CHECK(cat({a, b}, 0).to_vector() == Floats{1, 2, 3, 4, 5, 6});
  CHECK(cat({a, c}, 1).to_vector() == Floats{1, 2, 7, 3, 4, 8});
  CHECK(cat({c, a, c}, -1).to_vector() == Floats{7, 1, 2, 7, 8, 3, 4, 8});
  CHECK(cat({a}, 1).to_vector() == a.to_vector());
  CHECK(cat({a, Tensor::zeros({0, 2})}).shape() == Shape{2, 2});
  Tensor out = cat({a, b});
  CHECK_FALSE(shares(out, a));  // cat always copies
  for (int64_t d = 0; d < 3; ++d) {
    CAPTURE(d);
    Shape s1{2, 3, 4}, s2{2, 3, 4};
    s2[static_cast<size_t>(d)] = 1;
    CHECK_GRADIENTS("cat",
                    [d](const Inputs& in) {
                      return cat({in[0], in[1], in[0]}, d);
                    },
                    {testing::param(s1, 1), testing::param(s2, 2)});
  }
  // An input without grad is skipped, the others still get theirs.
  CHECK_GRADIENTS("cat",
                  [b](const Inputs& in) {
                    return cat({b, in[0]});
                  },
                  {testing::param({2, 2}, 3)});
}

TEST_CASE("ops.index: stack by hand at every position, and its gradient") {
  Tensor a = Tensor::from({1, 2, 3}, {3});
  Tensor b = Tensor::from({4, 5, 6}, {3});
  CHECK(stack({a, b}).shape() == Shape{2, 3});
  CHECK(stack({a, b}).to_vector() == Floats{1, 2, 3, 4, 5, 6});
  CHECK(stack({a, b}, 1).shape() == Shape{3, 2});
  CHECK(stack({a, b}, -1).to_vector() == Floats{1, 4, 2, 5, 3, 6});
  CHECK(stack({Tensor::scalar(1), Tensor::scalar(2)}).to_vector() == Floats{1, 2});
  for (int64_t d = -3; d < 3; ++d) {
    CAPTURE(d);
    CHECK_GRADIENTS("stack",
                    [d](const Inputs& in) {
                      return stack({in[0], in[1]}, d);
                    },
                    {testing::param({2, 3}, 1), testing::param({2, 3}, 2)});
  }
}

TEST_CASE("ops.index: cat and stack errors name the op, the index and both shapes") {
  Tensor a = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(cat({a, Tensor::zeros({2, 4})}, 0),
                       "cat: tensor 1 has shape [2, 4], tensor 0 has shape [2, 3]; they must "
                       "match in every dimension but dim 0",
                       Error);
  CHECK_THROWS_WITH_AS(cat({a, a, Tensor::zeros({2, 3, 1})}, 1),
                       doctest::Contains("cat: tensor 2 has shape [2, 3, 1]"), Error);
  CHECK_THROWS_WITH_AS(cat({}, 0), doctest::Contains("cat: expected a non-empty list"), Error);
  CHECK_THROWS_WITH_AS(cat({a}, 2), doctest::Contains("cat: dim 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(stack({a, Tensor::zeros({3, 2})}),
                       "stack: tensor 1 has shape [3, 2], tensor 0 has shape [2, 3]; stack needs "
                       "equal shapes",
                       Error);
  CHECK_THROWS_WITH_AS(stack({a}, 3), doctest::Contains("stack: dim 3 out of range"), Error);
}

TEST_CASE("ops.index: a step or length near int64's limit neither overflows nor wraps") {
  // slice counted its rows as (end - start + step - 1) / step and narrow checked start + length
  // <= size: both overflow int64. slice returned no rows where Python's x[:, 0:3:huge] has one, and
  // narrow let the length through to a tensor error that did not name it.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  Tensor x = grid();
  CHECK(x.slice(1, 0, 3, kMax).shape() == Shape{2, 1, 4});
  CHECK(x.slice(1, 0, 3, kMax).to_vector() == x.narrow(1, 0, 1).to_vector());
  CHECK(x.slice(2, 1, 4, kMax).to_vector() == Floats{1, 5, 9, 13, 17, 21});
  CHECK(x.slice(2, std::numeric_limits<int64_t>::min(), kMax, kMax).shape() == Shape{2, 3, 1});
  CHECK(x.slice(2, 4, 4, kMax).shape() == Shape{2, 3, 0});
  Tensor leaf = grid();
  leaf.set_requires_grad();
  sum(leaf.slice(2, 1, 4, kMax)).backward();
  for (int64_t i = 0; i < 24; ++i) CHECK(leaf.grad().data()[i] == (i % 4 == 1 ? 1.0f : 0.0f));
  CHECK_THROWS_WITH_AS(x.narrow(1, 1, kMax),
                       "narrow: start (1) + length (9223372036854775807) exceeds size 3 of dim 1 "
                       "(shape [2, 3, 4])",
                       Error);
  CHECK_THROWS_WITH_AS(x.narrow(0, -1, kMax),
                       "narrow: start (1) + length (9223372036854775807) exceeds size 2 of dim 0 "
                       "(shape [2, 3, 4])",
                       Error);
}

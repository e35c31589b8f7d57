// The fused batch norm ops against their unfused chains, bit for bit: batch_norm_relu_train
// against relu(batch_norm_train(x).y), and batch_norm_relu_max_pool2x2_train against
// max_pool2d(relu(batch_norm_train(x).y), 2). Statistics, output and gradients of x, gamma and beta
// for [N, C] and [N, C, H, W] (below and over the OpenMP threshold, with and without affine), the
// kinks (outputs exactly 0 after normalization, -0), NaN and inf, a channel of zero variance, a
// reducer (SyncBN); for the pooled op also both 2x2 pool kernels (AVX-512F where the CPU has it,
// and the portable loops), odd H and W (floor mode drops a row and a column that still count in
// the statistics and still get a gradient), ties inside windows, windows of relu zeros, 1 and 2
// threads; finite-difference gradient checks away from the kinks; errors under each op's own name.
// batch_norm_sigmoid_train against sigmoid(batch_norm_train(x).y) likewise, at the end (a NaN's
// sign aside, which IEEE leaves unspecified).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/blas.h"
#include "core/ops/fast_math.h"
#include "core/ops/pool_general.h"
#include "gradcheck.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;
using Floats = std::vector<std::vector<float>>;

// Bitwise equality, so that NaN == NaN and -0 != +0 (vector<float>'s == would say the opposite).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::signbit(a[i]) != std::signbit(b[i])) return false;
    if (std::isnan(a[i]) != std::isnan(b[i])) return false;
    if (!std::isnan(a[i]) && a[i] != b[i]) return false;
  }
  return true;
}

void check_same_bits(const Floats& fused, const Floats& unfused) {
  REQUIRE(fused.size() == unfused.size());
  for (size_t k = 0; k < fused.size(); ++k) {
    CAPTURE(k);
    CHECK(same_bits(fused[k], unfused[k]));
  }
}

// Output, mean, var and the grads of x, gamma, beta after backward with seed `seed`, for batch
// norm + relu (+ the 2x2 max-pool with `pool`), fused or not. gamma/beta may be undefined (no
// affine); their grads are then left out.
Floats run_chain(bool pool, bool fused, const Tensor& x, const Tensor& g, const Tensor& b,
                 const Tensor& seed, const std::shared_ptr<BatchNormReducer>& reducer) {
  Tensor xi = x.clone().set_requires_grad();
  Tensor gi = g.defined() ? g.clone().set_requires_grad() : Tensor();
  Tensor bi = b.defined() ? b.clone().set_requires_grad() : Tensor();
  BatchNormResult r;
  Tensor out;
  if (fused) {
    r = pool ? batch_norm_relu_max_pool2x2_train(xi, gi, bi, 1e-5f, reducer)
             : batch_norm_relu_train(xi, gi, bi, 1e-5f, reducer);
    out = r.y;
  } else {
    r = batch_norm_train(xi, gi, bi, 1e-5f, reducer);
    out = pool ? max_pool2d(relu(r.y), 2) : relu(r.y);
  }
  REQUIRE(out.shape() == seed.shape());
  out.backward(seed);
  Floats result{out.to_vector(), r.mean.to_vector(), r.var.to_vector(), xi.grad().to_vector()};
  if (gi.defined()) result.push_back(gi.grad().to_vector());
  if (bi.defined()) result.push_back(bi.grad().to_vector());
  CHECK(r.count == x.numel() / x.size(1));
  return result;
}

// batch_norm_relu_train or the pair relu(batch_norm_train), backward with seed dz.
Floats run(bool fused, const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& dz,
           const std::shared_ptr<BatchNormReducer>& reducer = nullptr) {
  return run_chain(false, fused, x, g, b, dz, reducer);
}

// batch_norm_relu_max_pool2x2_train or the chain max_pool2d(relu(batch_norm_train), 2), backward
// with seed dp.
Floats run_pooled(bool fused, const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& dp,
                  const std::shared_ptr<BatchNormReducer>& reducer = nullptr) {
  return run_chain(true, fused, x, g, b, dp, reducer);
}

// A reducer that changes nothing but forces the two-phase schedule (all first passes, reducer,
// all second passes), as SyncBN runs it.
class NoOtherShard final : public BatchNormReducer {
 public:
  void merge_moments(double*, int64_t) override {}
  void sum(double*, int64_t) override {}
};

Shape pooled(const Shape& s) { return {s[0], s[1], s[2] / 2, s[3] / 2}; }

// Runs f once with each 2x2 pool kernel this CPU has, restoring the default afterwards.
template <class F>
void with_each_pool_kernel(F f) {
  const CpuIsa widest = detail::max_pool2x2_isa();
  for (CpuIsa isa : {CpuIsa::avx512, CpuIsa::avx2, CpuIsa::portable}) {
    if (isa > widest) continue;
    CAPTURE(cpu_isa_name(isa));
    detail::limit_max_pool2x2_isa(isa);
    f();
  }
  detail::limit_max_pool2x2_isa(CpuIsa::avx512);
}
}  // namespace

TEST_CASE("ops.bn_relu: bit-identical to relu(batch_norm_train) forward and backward") {
  // The last two shapes are over the OpenMP threshold (threads split the channels); [300, 130] has
  // three [N, C] channel blocks of up to 64. W4's shapes are in bench, not here (run time).
  Rng rng(61);
  for (const Shape& shape :
       {Shape{6, 70}, Shape{4, 3, 5, 5}, Shape{300, 130}, Shape{8, 16, 17, 19}, Shape{5, 4, 7}}) {
    CAPTURE(shape);
    const int64_t C = shape[1];
    Tensor x = Tensor::normal(shape, rng, 0.3f, 1.3f), dz = Tensor::normal(shape, rng);
    Tensor g = Tensor::uniform({C}, rng, -1.5f, 1.5f), b = Tensor::normal({C}, rng);
    SUBCASE("affine") { check_same_bits(run(true, x, g, b, dz), run(false, x, g, b, dz)); }
    SUBCASE("no affine") {
      check_same_bits(run(true, x, Tensor(), Tensor(), dz), run(false, x, Tensor(), Tensor(), dz));
    }
    SUBCASE("reducer") {
      auto reducer = std::make_shared<NoOtherShard>();
      check_same_bits(run(true, x, g, b, dz, reducer), run(false, x, g, b, dz, reducer));
      // And the reducer's schedule gives what no reducer gives (as batch_norm_train's does).
      check_same_bits(run(true, x, g, b, dz, reducer), run(true, x, g, b, dz));
    }
  }
}

TEST_CASE("ops.bn_relu: kinks, NaN, inf and a zero-variance channel as the unfused pair") {
  // [N, C] = [4, 3]. Channel 0: x = -1, 0, 0, 1 has mean exactly 0, so both zeros normalize to
  // exactly 0 (beta = 0): the kink, relu'(0) = 0. Channel 1: constant, zero variance, output beta
  // = 0.5 > 0 everywhere. Channel 2: a NaN in x makes the whole channel NaN (its mean is NaN).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::from({-1, 2, 0.5f, 0, 2, 3, 0, 2, nan, 1, 2, 7}, {4, 3});
  Tensor g = Tensor::from({1, 1, 1}, {3}), b = Tensor::from({0, 0.5f, 0}, {3});
  Tensor dz = Tensor::from({1, 2, 3, -4, 5, 6, 7, -8, 9, 10, 11, -12}, {4, 3});
  Floats fused = run(true, x, g, b, dz), unfused = run(false, x, g, b, dz);
  check_same_bits(fused, unfused);
  // The kink: outputs 1 and 2 of channel 0 are exactly 0 and their dz does not reach dbeta
  // (relu'(0) = 0); only the positive output's dz does.
  CHECK(fused[0][3] == 0.0f);
  CHECK(fused[0][6] == 0.0f);
  CHECK(fused[0][9] > 0.0f);
  CHECK(fused[5][0] == 10.0f);
  // Zero variance: output beta, gradient to beta is the whole sum of dz.
  CHECK(fused[0][1] == 0.5f);
  CHECK(fused[5][1] == 2 + 5 - 8 + 11);
  // NaN passes relu's forward (not mapped to 0), as relu(NaN) = NaN.
  CHECK(std::isnan(fused[0][2]));
  CHECK(std::isnan(fused[1][2]));

  SUBCASE("-0 stays -0 and gets no gradient; an inf in dz stops where relu is off") {
    // gamma = -1, beta = -0: the outputs are -xhat - 0; x = 0 in a channel of mean 0 gives
    // 0 * -rstd - 0 = -0, which relu keeps (-0 < 0 is false).
    Tensor x2 = Tensor::from({0, -2, 2, 0}, {4, 1});
    Tensor dz2 = Tensor::from({std::numeric_limits<float>::infinity(), 1, 1, 1}, {4, 1});
    Tensor g2 = Tensor::from({-1}, {1}), b2 = Tensor::from({-0.0f}, {1});
    Floats f2 = run(true, x2, g2, b2, dz2), u2 = run(false, x2, g2, b2, dz2);
    check_same_bits(f2, u2);
    CHECK(std::signbit(f2[0][0]));
    CHECK(f2[0][0] == 0.0f);
    // relu's own backward selects (relu_grad, PyTorch's threshold_backward): the inf at the -0
    // output stops there. PyTorch 1.13, relu(batch_norm(...)) on these values: dbeta = 1,
    // dgamma = -1.4142, dx = [0.1768, -0.1768, -0.1768, 0.1768].
    CHECK(f2[5][0] == 1.0f);
    CHECK(f2[4][0] == doctest::Approx(-1.4142f).epsilon(1e-4));
    const float want_dx[4] = {0.1768f, -0.1768f, -0.1768f, 0.1768f};
    for (int i = 0; i < 4; ++i) CHECK(f2[3][i] == doctest::Approx(want_dx[i]).epsilon(1e-3));
  }
}

TEST_CASE("ops.bn_relu: gradient checks for x, gamma and beta") {
  // Random inputs keep the outputs away from 0, the kink (tested exactly above).
  auto fn = [](const Inputs& in) { return batch_norm_relu_train(in[0], in[1], in[2], 1e-5f).y; };
  SUBCASE("[N, C]") {
    CHECK_GRADIENTS("batch_norm_relu [N, C]", fn,
                    {param({6, 4}, 71), param({4}, 72, 0.5f, 1.5f), param({4}, 73)});
  }
  SUBCASE("[N, C, H, W]") {
    CHECK_GRADIENTS("batch_norm_relu [N, C, H, W]", fn,
                    {param({3, 2, 3, 2}, 74), param({2}, 75, -1.5f, 1.5f), param({2}, 76)});
  }
  SUBCASE("no affine") {
    CHECK_GRADIENTS(
        "batch_norm_relu no affine",
        [](const Inputs& in) { return batch_norm_relu_train(in[0], Tensor(), Tensor(), 1e-5f).y; },
        {param({5, 3, 2}, 77)});
  }
}

TEST_CASE("ops.bn_relu: shape errors name batch_norm_relu") {
  Tensor x = Tensor::ones({8, 3, 5, 5});
  CHECK_THROWS_WITH_AS(
      batch_norm_relu_train(x, Tensor::ones({4}), Tensor(), 1e-5f),
      doctest::Contains(
          "batch_norm_relu: gamma has shape [4], expected [3] for input [8, 3, 5, 5]"),
      Error);
  CHECK_THROWS_WITH_AS(batch_norm_relu_train(Tensor::ones({5}), Tensor(), Tensor(), 1e-5f),
                       doctest::Contains("batch_norm_relu: input must be [N, C] or [N, C, *]"),
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm_relu_train(x, Tensor(), Tensor(), -1.0f),
                       doctest::Contains("batch_norm_relu: eps must be >= 0"), Error);
}

TEST_CASE("ops.bn_relu_pool: bit-identical to max_pool2d(relu(batch_norm_train)) both ways") {
  // [8, 16, 17, 19] and [16, 8, 28, 28] are over the OpenMP threshold (threads split the
  // channels); odd sizes leave a row or column out of every window.
  with_each_pool_kernel([] {
    Rng rng(81);
    for (const Shape& shape :
         {Shape{4, 3, 5, 5}, Shape{2, 2, 2, 2}, Shape{3, 5, 6, 7}, Shape{8, 16, 17, 19},
          Shape{16, 8, 28, 28}, Shape{2, 3, 2, 35}, Shape{3, 2, 7, 33}}) {
      CAPTURE(shape);
      const int64_t C = shape[1];
      Tensor x = Tensor::normal(shape, rng, 0.3f, 1.3f), dp = Tensor::normal(pooled(shape), rng);
      Tensor g = Tensor::uniform({C}, rng, -1.5f, 1.5f), b = Tensor::normal({C}, rng);
      check_same_bits(run_pooled(true, x, g, b, dp), run_pooled(false, x, g, b, dp));
      check_same_bits(run_pooled(true, x, Tensor(), Tensor(), dp),
                      run_pooled(false, x, Tensor(), Tensor(), dp));
      auto reducer = std::make_shared<NoOtherShard>();
      check_same_bits(run_pooled(true, x, g, b, dp, reducer),
                      run_pooled(false, x, g, b, dp, reducer));
      check_same_bits(run_pooled(true, x, g, b, dp, reducer), run_pooled(true, x, g, b, dp));
    }
  });
}

TEST_CASE("ops.bn_relu_pool: ties, relu zeros, -0, NaN and inf as the unfused chain") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  with_each_pool_kernel([&] {
    SUBCASE("few distinct values: ties in most windows, windows of relu zeros") {
      // x from {-1, 0, 1, 2}: equal x normalize to equal z, so windows tie (the first cell wins and
      // takes the gradient) and all-negative windows pool relu zeros (the first zero wins, and
      // relu'(0) = 0 stops its gradient). dp holds -0 and an inf, which relu's backward stops
      // where the winner's z <= 0.
      // Narrow rows (4 windows) and wide ones (17: the re-formed planes' dense rows, a full and a
      // partial chunk of 16).
      Rng rng(82);
      for (const Shape& shape : {Shape{4, 6, 7, 9}, Shape{3, 6, 5, 34}}) {
        CAPTURE(shape);
        Tensor x = Tensor::empty(shape);
        for (int64_t i = 0; i < x.numel(); ++i)
          x.data()[i] = static_cast<float>(static_cast<int>(rng.next_u32() % 4) - 1);
        Tensor dp = Tensor::normal(pooled(shape), rng);
        for (int64_t i = 0; i < dp.numel(); i += 5) dp.data()[i] = -0.0f;
        dp.data()[3] = inf;
        Tensor g = Tensor::uniform({6}, rng, -1.5f, 1.5f),
               b = Tensor::from({0, 0.5f, -0.5f, 0, 1, -1}, {6});
        check_same_bits(run_pooled(true, x, g, b, dp), run_pooled(false, x, g, b, dp));
      }
    }
    SUBCASE("a NaN makes its channel NaN, the others stay finite") {
      Rng rng(83);
      Tensor x = Tensor::normal({3, 4, 6, 6}, rng);
      x.data()[2 * 36 + 7] = nan;  // image 0, channel 2
      Tensor dp = Tensor::normal({3, 4, 3, 3}, rng);
      Tensor g = Tensor::uniform({4}, rng, 0.5f, 1.5f), b = Tensor::normal({4}, rng);
      const Floats fused = run_pooled(true, x, g, b, dp);
      check_same_bits(fused, run_pooled(false, x, g, b, dp));
      CHECK(std::isnan(fused[0][2 * 9]));
      CHECK(std::isfinite(fused[0][0]));
    }
    SUBCASE("-0 pooled: gamma -1, beta -0") {
      // x = 0 in a channel of mean 0 normalizes to 0 * -rstd - 0 = -0, kept by relu; the window
      // of -0 and negatives pools -0.
      Tensor x = Tensor::from({0, 1, 2, 3, 0, -1, -2, -3}, {1, 2, 2, 2});
      Tensor dp = Tensor::from({1, 1}, {1, 2, 1, 1});
      Tensor g = Tensor::from({-1, -1}, {2}), b = Tensor::from({-0.0f, -0.0f}, {2});
      const Floats fused = run_pooled(true, x, g, b, dp);
      check_same_bits(fused, run_pooled(false, x, g, b, dp));
    }
  });
}

TEST_CASE("ops.bn_relu_pool: the same bits with 1 and 2 threads, and without grad") {
  Rng rng(84);
  const Shape shape{16, 8, 28, 28};  // over the OpenMP threshold
  Tensor x = Tensor::normal(shape, rng), dp = Tensor::normal(pooled(shape), rng);
  Tensor g = Tensor::uniform({8}, rng, -1.5f, 1.5f), b = Tensor::normal({8}, rng);
  const int before = num_threads();
  set_num_threads(1);
  const Floats one = run_pooled(true, x, g, b, dp);
  set_num_threads(2);
  const Floats two = run_pooled(true, x, g, b, dp);
  set_num_threads(before);
  check_same_bits(one, two);
  NoGradGuard no_grad;  // no places kept
  const BatchNormResult r = batch_norm_relu_max_pool2x2_train(x, g, b, 1e-5f);
  CHECK(same_bits(r.y.to_vector(), one[0]));
  CHECK_FALSE(r.y.requires_grad());
}

TEST_CASE("ops.bn_relu_pool: gradient checks for x, gamma and beta") {
  // Random inputs keep the outputs away from relu's kink and from ties inside windows.
  auto fn = [](const Inputs& in) {
    return batch_norm_relu_max_pool2x2_train(in[0], in[1], in[2], 1e-5f).y;
  };
  CHECK_GRADIENTS("batch_norm_relu_max_pool2x2", fn,
                  {param({3, 2, 4, 5}, 85), param({2}, 86, -1.5f, 1.5f), param({2}, 87)});
  CHECK_GRADIENTS("batch_norm_relu_max_pool2x2 no affine",
                  [](const Inputs& in) {
                    return batch_norm_relu_max_pool2x2_train(in[0], Tensor(), Tensor(), 1e-5f).y;
                  },
                  {param({2, 3, 5, 4}, 88)});
}

TEST_CASE("ops.bn_relu_pool: errors name batch_norm_relu_max_pool2x2") {
  Tensor x = Tensor::ones({8, 3, 5, 5});
  CHECK_THROWS_WITH_AS(
      batch_norm_relu_max_pool2x2_train(x, Tensor::ones({4}), Tensor(), 1e-5f),
      doctest::Contains(
          "batch_norm_relu_max_pool2x2: gamma has shape [4], expected [3] for input [8, 3, 5, 5]"),
      Error);
  CHECK_THROWS_WITH_AS(
      batch_norm_relu_max_pool2x2_train(Tensor::ones({8, 3, 5}), Tensor(), Tensor(), 1e-5f),
      doctest::Contains("batch_norm_relu_max_pool2x2: input must be [N, C, H, W] with H, W >= 2; "
                        "got [8, 3, 5]"),
      Error);
  CHECK_THROWS_WITH_AS(
      batch_norm_relu_max_pool2x2_train(Tensor::ones({8, 3, 1, 5}), Tensor(), Tensor(), 1e-5f),
      doctest::Contains("input must be [N, C, H, W] with H, W >= 2; got [8, 3, 1, 5]"), Error);
  CHECK_THROWS_WITH_AS(batch_norm_relu_max_pool2x2_train(x, Tensor(), Tensor(), -1.0f),
                       doctest::Contains("batch_norm_relu_max_pool2x2: eps must be >= 0"), Error);
}

// ---- batch_norm_sigmoid_train against sigmoid(batch_norm_train(x).y) ----

namespace {
// Bitwise equality as same_bits, except that a NaN's sign is not compared: IEEE 754 leaves it
// unspecified, and the fused and unfused code (sigmoid_fast inlined in different loops) may pick
// different operands' NaN. -0 and +0 still differ.
void check_same_values(const Floats& fused, const Floats& unfused) {
  REQUIRE(fused.size() == unfused.size());
  for (size_t k = 0; k < fused.size(); ++k) {
    CAPTURE(k);
    REQUIRE(fused[k].size() == unfused[k].size());
    bool same = true;
    for (size_t i = 0; i < fused[k].size(); ++i) {
      const float a = fused[k][i], b = unfused[k][i];
      same =
          same && (std::isnan(a) ? std::isnan(b)
                                 : !std::isnan(b) && a == b && std::signbit(a) == std::signbit(b));
    }
    CHECK(same);
  }
}

Floats run_sigmoid(bool fused, const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& dz,
                   const std::shared_ptr<BatchNormReducer>& reducer = nullptr) {
  Tensor xi = x.clone().set_requires_grad();
  Tensor gi = g.defined() ? g.clone().set_requires_grad() : Tensor();
  Tensor bi = b.defined() ? b.clone().set_requires_grad() : Tensor();
  BatchNormResult r = fused ? batch_norm_sigmoid_train(xi, gi, bi, 1e-5f, reducer)
                            : batch_norm_train(xi, gi, bi, 1e-5f, reducer);
  Tensor out = fused ? r.y : sigmoid(r.y);
  out.backward(dz);
  Floats result{out.to_vector(), r.mean.to_vector(), r.var.to_vector(), xi.grad().to_vector()};
  if (gi.defined()) result.push_back(gi.grad().to_vector());
  if (bi.defined()) result.push_back(bi.grad().to_vector());
  CHECK(r.count == x.numel() / x.size(1));
  return result;
}
}  // namespace

TEST_CASE("ops.bn_sigmoid: bit-identical to sigmoid(batch_norm_train) forward and backward") {
  // [60, 100] is the paper-mlp's layer; [300, 130] and [8, 16, 17, 19] are over the OpenMP
  // threshold (threads split the channels).
  Rng rng(81);
  for (const Shape& shape : {Shape{6, 70}, Shape{60, 100}, Shape{4, 3, 5, 5}, Shape{300, 130},
                             Shape{8, 16, 17, 19}, Shape{5, 4, 7}}) {
    CAPTURE(shape);
    const int64_t C = shape[1];
    Tensor x = Tensor::normal(shape, rng, 0.3f, 1.3f), dz = Tensor::normal(shape, rng);
    Tensor g = Tensor::uniform({C}, rng, -3.0f, 3.0f), b = Tensor::normal({C}, rng);
    SUBCASE("affine") {
      check_same_bits(run_sigmoid(true, x, g, b, dz), run_sigmoid(false, x, g, b, dz));
    }
    SUBCASE("no affine") {
      check_same_bits(run_sigmoid(true, x, Tensor(), Tensor(), dz),
                      run_sigmoid(false, x, Tensor(), Tensor(), dz));
    }
    SUBCASE("reducer") {
      auto reducer = std::make_shared<NoOtherShard>();
      check_same_bits(run_sigmoid(true, x, g, b, dz, reducer),
                      run_sigmoid(false, x, g, b, dz, reducer));
      check_same_bits(run_sigmoid(true, x, g, b, dz, reducer), run_sigmoid(true, x, g, b, dz));
    }
  }
}

TEST_CASE("ops.bn_sigmoid: saturation, NaN and a zero-variance channel as the unfused pair") {
  // [N, C] = [4, 3]. Channel 0 with gamma 200: outputs saturate to exactly 0 and 1 in float, where
  // sigmoid' = y (1 - y) is exactly 0 and no gradient passes. Channel 1: constant, zero variance,
  // output sigmoid(beta). Channel 2: a NaN in x makes the whole channel NaN.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::from({-1, 2, 0.5f, -1, 2, 3, 1, 2, nan, 1, 2, 7}, {4, 3});
  Tensor g = Tensor::from({200, 1, 1}, {3}), b = Tensor::from({0, 0.5f, 0}, {3});
  Tensor dz = Tensor::from({1, 2, 3, -4, 5, 6, 7, -8, 9, 10, 11, -12}, {4, 3});
  Floats fused = run_sigmoid(true, x, g, b, dz), unfused = run_sigmoid(false, x, g, b, dz);
  check_same_values(fused, unfused);
  CHECK(fused[0][0] == 0.0f);  // sigmoid(-200) underflows to 0 in float
  CHECK(fused[0][6] == 1.0f);  // and sigmoid(200) rounds to 1
  CHECK(fused[5][0] == 0.0f);  // no gradient reaches beta through saturated outputs
  CHECK(fused[0][1] == detail::sigmoid_fast(0.5f));
  CHECK(std::isnan(fused[0][2]));
  CHECK(std::isnan(fused[3][2]));
}

TEST_CASE("ops.bn_sigmoid: gradient checks for x, gamma and beta") {
  auto fn = [](const Inputs& in) { return batch_norm_sigmoid_train(in[0], in[1], in[2], 1e-5f).y; };
  SUBCASE("[N, C]") {
    CHECK_GRADIENTS("batch_norm_sigmoid [N, C]", fn,
                    {param({6, 4}, 91), param({4}, 92, 0.5f, 1.5f), param({4}, 93)});
  }
  SUBCASE("[N, C, H, W]") {
    CHECK_GRADIENTS("batch_norm_sigmoid [N, C, H, W]", fn,
                    {param({3, 2, 3, 2}, 94), param({2}, 95, -1.5f, 1.5f), param({2}, 96)});
  }
}

TEST_CASE("ops.bn_sigmoid: shape errors name batch_norm_sigmoid") {
  CHECK_THROWS_WITH_AS(
      batch_norm_sigmoid_train(Tensor::ones({8, 3}), Tensor::ones({4}), Tensor(), 1e-5f),
      doctest::Contains("batch_norm_sigmoid: gamma has shape [4], expected [3] for input [8, 3]"),
      Error);
}

// batch_norm_train / batch_norm_eval / layer_norm / group_norm: hand-computed values, normalized
// statistics, precision with a large common offset, gradient checks for every input (x,
// gamma/weight, beta/bias), the [N, C] batch-norm kernels over more than one channel block (64)
// against a double reference, and shape errors.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "core/blas.h"
#include "gradcheck.h"
#include "memory_limit.h"
#include "test_util.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;

struct Stats {
  double mean, var;  // biased variance
};

// Mean and biased variance, in double, of the values of x [N, C, S] in channel c.
Stats channel_stats(const Tensor& x, int64_t c) {
  int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C);
  const float* p = x.data();
  double sum = 0.0, sq = 0.0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t s = 0; s < S; ++s) sum += p[(n * C + c) * S + s];
  double m = sum / static_cast<double>(N * S);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t s = 0; s < S; ++s)
      sq += (p[(n * C + c) * S + s] - m) * (p[(n * C + c) * S + s] - m);
  return {m, sq / static_cast<double>(N * S)};
}

// Mean and biased variance of values [begin, begin + count) of x.
Stats range_stats(const Tensor& x, int64_t begin, int64_t count) {
  const float* p = x.data() + begin;
  double sum = 0.0, sq = 0.0;
  for (int64_t i = 0; i < count; ++i) sum += p[i];
  double m = sum / static_cast<double>(count);
  for (int64_t i = 0; i < count; ++i) sq += (p[i] - m) * (p[i] - m);
  return {m, sq / static_cast<double>(count)};
}

void check_close(const Tensor& a, const Tensor& b, double eps = 1e-5) {
  REQUIRE(a.shape() == b.shape());
  std::vector<float> va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i) CHECK(va[i] == doctest::Approx(vb[i]).epsilon(eps));
}
}  // namespace

TEST_CASE("ops.norm: batch_norm_train forward values by hand") {
  // One channel holding {1, 3}: mean 2, biased var 1, so with eps = 0 xhat = {-1, 1}.
  Tensor x = Tensor::from({1, 3}, {2, 1});
  BatchNormResult r = batch_norm_train(x, Tensor(), Tensor(), 0.0f);
  CHECK(r.y.to_vector() == std::vector<float>{-1, 1});
  CHECK(r.mean.to_vector() == std::vector<float>{2});
  CHECK(r.var.to_vector() == std::vector<float>{1});
  BatchNormResult a = batch_norm_train(x, Tensor::from({2}, {1}), Tensor::from({0.5f}, {1}), 0.0f);
  CHECK(a.y.to_vector() == std::vector<float>{-1.5f, 2.5f});
  // Two channels of [N, C, S]: channel 0 = {0, 2, 4, 6} -> mean 3, var 5; channel 1 constant -> var
  // 0, y = beta (eps keeps rstd finite).
  Tensor x4 = Tensor::from({0, 2, 7, 7, 4, 6, 7, 7}, {2, 2, 2});
  BatchNormResult b = batch_norm_train(x4, Tensor(), Tensor::from({0, 5}, {2}), 1e-5f);
  CHECK(b.mean.to_vector() == std::vector<float>{3, 7});
  CHECK(b.var.to_vector() == std::vector<float>{5, 0});
  std::vector<float> y = b.y.to_vector();
  CHECK(y[0] == doctest::Approx(-3.0 / std::sqrt(5.0 + 1e-5)));
  CHECK(y[2] == 5.0f);
  CHECK(y[7] == 5.0f);
}

TEST_CASE("ops.norm: batch_norm_train output has per-channel mean 0 and biased variance 1") {
  for (const Shape& shape : {Shape{16, 3}, Shape{4, 3, 5, 5}, Shape{2, 4, 7}}) {
    CAPTURE(to_string(shape));
    Rng rng(5);
    Tensor x = Tensor::normal(shape, rng, 2.0f, 3.0f);
    BatchNormResult r = batch_norm_train(x, Tensor(), Tensor(), 1e-5f);
    CHECK(!r.mean.requires_grad());
    CHECK(!r.var.requires_grad());
    for (int64_t c = 0; c < shape[1]; ++c) {
      Stats in = channel_stats(x, c);
      Stats out = channel_stats(r.y, c);
      CHECK(r.mean.data()[c] == doctest::Approx(in.mean).epsilon(1e-6));
      CHECK(r.var.data()[c] == doctest::Approx(in.var).epsilon(1e-6));  // biased, not M/(M-1)
      CHECK(std::fabs(out.mean) < 1e-5);
      CHECK(out.var == doctest::Approx(in.var / (in.var + 1e-5)).epsilon(1e-5));
    }
  }
}

TEST_CASE("ops.norm: batch_norm_train statistics survive a large common offset") {
  // E[x^2] - E[x]^2 in float would lose every digit of the variance at mean 1e4 and std 0.1.
  Rng rng(8);
  Tensor x = Tensor::normal({64, 2, 4, 4}, rng, 1e4f, 0.1f);
  BatchNormResult r = batch_norm_train(x, Tensor(), Tensor(), 0.0f);
  for (int64_t c = 0; c < 2; ++c) {
    Stats in = channel_stats(x, c);
    CHECK(r.var.data()[c] == doctest::Approx(in.var).epsilon(1e-5));
    Stats out = channel_stats(r.y, c);
    CHECK(std::fabs(out.mean) < 1e-4);
    CHECK(out.var == doctest::Approx(1.0).epsilon(1e-4));
  }
}

TEST_CASE("ops.norm: batch_norm_train merges per-image moments without losing the variance") {
  // Images are reduced plane by plane and the planes' (count, mean, M2) merged: planes whose means
  // differ by far more than their spread (+-1e3 around 1e4, std 0.05 within a plane) must give the
  // two-pass variance of all values, which is dominated by the spread of the plane means, and a
  // channel whose planes all have the same large mean must keep its tiny variance.
  const int64_t N = 6, C = 2, H = 5, W = 7;
  Rng rng(21);
  Tensor x = Tensor::normal({N, C, H, W}, rng, 0.0f, 0.05f);
  float* p = x.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < H * W; ++i) {
      p[(n * C + 0) * H * W + i] += 1e4f + (n % 2 ? 1e3f : -1e3f) * static_cast<float>(n);
      p[(n * C + 1) * H * W + i] += 1e4f;
    }
  BatchNormResult r = batch_norm_train(x, Tensor(), Tensor(), 0.0f);
  for (int64_t c = 0; c < C; ++c) {
    CAPTURE(c);
    const Stats in = channel_stats(x, c);
    CHECK(r.mean.data()[c] == doctest::Approx(in.mean).epsilon(1e-7));
    CHECK(r.var.data()[c] == doctest::Approx(in.var).epsilon(1e-5));
  }
}

TEST_CASE("ops.norm: batch_norm_train gradient checks for x, gamma and beta") {
  auto bn = [](const Inputs& in) { return batch_norm_train(in[0], in[1], in[2], 1e-5f).y; };
  SUBCASE("[N, C]") {
    CHECK_GRADIENTS("batch_norm [N, C]", bn,
                    {param({6, 3}, 1), param({3}, 2, 0.5f, 1.5f), param({3}, 3)});
  }
  SUBCASE("[N, C, H, W]") {
    CHECK_GRADIENTS("batch_norm [N, C, H, W]", bn,
                    {param({2, 3, 3, 2}, 4), param({3}, 5, 0.5f, 1.5f), param({3}, 6)});
  }
  SUBCASE("no affine, and gamma without beta") {
    CHECK_GRADIENTS(
        "batch_norm no affine",
        [](const Inputs& in) { return batch_norm_train(in[0], Tensor(), Tensor(), 1e-5f).y; },
        {param({5, 2, 3}, 7)});
    CHECK_GRADIENTS(
        "batch_norm gamma only",
        [](const Inputs& in) { return batch_norm_train(in[0], in[1], Tensor(), 1e-5f).y; },
        {param({4, 2, 3}, 8), param({2}, 9, 0.5f, 1.5f)});
  }
}

TEST_CASE("ops.norm: batch_norm_train on [N, C] with several channel blocks") {
  // 70 channels: two blocks of the [N, C] kernel (64 + 6).
  SUBCASE("gradient check") {
    CHECK_GRADIENTS("batch_norm [N, 70]",
                    [](const std::vector<Tensor>& in) {
                      return batch_norm_train(in[0], in[1], in[2], 1e-5f).y;
                    },
                    {param({3, 70}, 21), param({70}, 22, 0.5f, 1.5f), param({70}, 23)});
  }
  SUBCASE("forward against a double reference") {
    Rng rng(24);
    const int64_t N = 9, C = 70;
    Tensor x = Tensor::normal({N, C}, rng, 3.0f, 2.0f);
    Tensor g = Tensor::uniform({C}, rng, 0.5f, 1.5f), b = Tensor::normal({C}, rng);
    BatchNormResult r = batch_norm_train(x, g, b, 1e-5f);
    for (int64_t c = 0; c < C; ++c) {
      double m = 0.0, v = 0.0;
      for (int64_t n = 0; n < N; ++n) m += x.data()[n * C + c];
      m /= N;
      for (int64_t n = 0; n < N; ++n) v += (x.data()[n * C + c] - m) * (x.data()[n * C + c] - m);
      v /= N;
      CHECK(r.mean.data()[c] == doctest::Approx(m).epsilon(1e-6));
      CHECK(r.var.data()[c] == doctest::Approx(v).epsilon(1e-5));
      for (int64_t n = 0; n < N; ++n) {
        double y = (x.data()[n * C + c] - m) / std::sqrt(v + 1e-5) * g.data()[c] + b.data()[c];
        CHECK(r.y.data()[n * C + c] == doctest::Approx(y).epsilon(1e-5));
      }
    }
  }
}

TEST_CASE("ops.norm: [N, C] batch norm gives each channel what it gives that channel alone") {
  // A channel's statistics, output and gradients must not depend on its neighbours: the [N, C]
  // passes go in groups of 16 channels and rows in vectors of 16 floats, and a block whose width
  // is not a multiple of 16 (17, 36, the 64 + 36 of paper-mlp's 100) ends in a group or vector
  // that overlaps the one before it. Channel c alone ([N, 1]) takes the per-channel loops. Bitwise:
  // each channel adds its values in the order of n either way.
  Rng rng(31);
  const int64_t N = 7;
  const auto bits = [](float v) { return std::bit_cast<uint32_t>(v); };
  for (int64_t C : {16, 17, 36, 100}) {
    for (int act = 0; act < 3; ++act) {
      CAPTURE(C);
      CAPTURE(act);
      const auto train = [act](const Tensor& x, const Tensor& g, const Tensor& b) {
        return act == 0   ? batch_norm_train(x, g, b, 1e-5f)
               : act == 1 ? batch_norm_relu_train(x, g, b, 1e-5f)
                          : batch_norm_sigmoid_train(x, g, b, 1e-5f);
      };
      Tensor x = Tensor::normal({N, C}, rng, 0.3f, 1.3f).set_requires_grad();
      Tensor g = Tensor::uniform({C}, rng, -3.0f, 3.0f).set_requires_grad();
      Tensor b = Tensor::normal({C}, rng).set_requires_grad();
      Tensor dy = Tensor::normal({N, C}, rng);
      BatchNormResult all = train(x, g, b);
      all.y.backward(dy);
      int mismatches = 0;
      for (int64_t c = 0; c < C; ++c) {
        std::vector<float> xc(N), dyc(N);
        for (int64_t n = 0; n < N; ++n) {
          xc[n] = x.data()[n * C + c];
          dyc[n] = dy.data()[n * C + c];
        }
        Tensor x1 = Tensor::from(xc, {N, 1}).set_requires_grad();
        Tensor g1 = Tensor::from({g.data()[c]}, {1}).set_requires_grad();
        Tensor b1 = Tensor::from({b.data()[c]}, {1}).set_requires_grad();
        BatchNormResult one = train(x1, g1, b1);
        one.y.backward(Tensor::from(dyc, {N, 1}));
        bool same = bits(one.mean.data()[0]) == bits(all.mean.data()[c]) &&
                    bits(one.var.data()[0]) == bits(all.var.data()[c]) &&
                    bits(g1.grad().data()[0]) == bits(g.grad().data()[c]) &&
                    bits(b1.grad().data()[0]) == bits(b.grad().data()[c]);
        for (int64_t n = 0; n < N; ++n) {
          same = same && bits(one.y.data()[n]) == bits(all.y.data()[n * C + c]) &&
                 bits(x1.grad().data()[n]) == bits(x.grad().data()[n * C + c]);
        }
        mismatches += same ? 0 : 1;
      }
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("ops.norm: batch_norm_train dx is orthogonal to 1 and to xhat in each channel") {
  // The normalized output cannot change its own mean or variance, so sum(dx) = sum(dx * xhat) = 0
  // per channel (docs/derivations.md, "batch_norm"); exactly so for eps = 0, which this test uses.
  Tensor x = param({4, 3, 2, 3}, 11);
  Rng rng(12);
  Tensor dy = Tensor::uniform({4, 3, 2, 3}, rng, -1.0f, 1.0f);
  BatchNormResult r = batch_norm_train(x, param({3}, 13, 0.5f, 1.5f), Tensor(), 0.0f);
  r.y.backward(dy);
  const float* dx = x.grad().data();
  const float* px = x.data();
  for (int64_t c = 0; c < 3; ++c) {
    Stats st = channel_stats(x, c);
    double rstd = 1.0 / std::sqrt(st.var);
    double sum_dx = 0.0, sum_dx_xhat = 0.0;
    for (int64_t n = 0; n < 4; ++n)
      for (int64_t s = 0; s < 6; ++s) {
        int64_t i = (n * 3 + c) * 6 + s;
        sum_dx += dx[i];
        sum_dx_xhat += dx[i] * (px[i] - st.mean) * rstd;
      }
    CHECK(std::fabs(sum_dx) < 1e-5);
    CHECK(std::fabs(sum_dx_xhat) < 1e-5);
  }
}

namespace {
// SyncBN over `shards` shards that all hold this shard's values: the counts, M2s and sums add up.
class IdenticalShards final : public BatchNormReducer {
 public:
  explicit IdenticalShards(double shards) : shards_(shards) {}
  void merge_moments(double* moments, int64_t channels) override {
    for (int64_t c = 0; c < channels; ++c) {
      moments[3 * c] *= shards_;
      moments[3 * c + 2] *= shards_;
    }
  }
  void sum(double* values, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) values[i] *= shards_;
  }

 private:
  double shards_;
};
}  // namespace

TEST_CASE("ops.norm: training batch norm refuses one value per channel, as PyTorch") {
  // Each value normalized to 0, so the op silently returned beta; the BatchNorm layers refused it
  // already.
  const Tensor x = Tensor::from({1, 2, 3}, {1, 3});
  const Tensor gamma = Tensor::ones({3}), beta = Tensor::zeros({3});
  CHECK_THROWS_WITH_AS(
      batch_norm_train(x, gamma, beta, 1e-5f),
      "batch_norm: expected more than 1 value per channel when training; got input [1, 3]", Error);
  CHECK_THROWS_WITH_AS(batch_norm_relu_train(Tensor::ones({1, 3, 1, 1}), gamma, beta, 1e-5f),
                       "batch_norm_relu: expected more than 1 value per channel when training; "
                       "got input [1, 3, 1, 1]",
                       Error);
  CHECK_THROWS_WITH_AS(
      batch_renorm_train(x, gamma, beta, 1e-5f, {Tensor::zeros({3}), Tensor::ones({3}), 1, 0}),
      doctest::Contains("batch_renorm: expected more than 1 value per channel when training"),
      Error);
  // Two values per channel are enough, in one image or over two.
  CHECK(batch_norm_train(Tensor::ones({1, 3, 2}), gamma, beta, 1e-5f).count == 2);
  CHECK(batch_norm_train(Tensor::ones({2, 3}), gamma, beta, 1e-5f).count == 2);
  // Under SyncBN a shard may hold one value per channel: what counts is the total over all shards.
  CHECK_THROWS_WITH_AS(
      batch_norm_train(x, gamma, beta, 1e-5f, std::make_shared<IdenticalShards>(1.0)),
      "batch_norm: expected more than 1 value per channel over all shards when training; got 1 "
      "(this shard's input [1, 3])",
      Error);
  const BatchNormResult two =
      batch_norm_train(x, gamma, beta, 1e-5f, std::make_shared<IdenticalShards>(2.0));
  CHECK(two.count == 2);
  CHECK(two.y.to_vector() == std::vector<float>{0, 0, 0});
}

TEST_CASE("ops.norm: batch_norm_eval uses the given statistics and sends no grad to them") {
  Tensor x = Tensor::from({1, 2, 3, 4}, {2, 2});
  Tensor rm = Tensor::from({1, 2}, {2});
  Tensor rv = Tensor::from({4, 0.25f}, {2});
  Tensor g = Tensor::from({1, 2}, {2});
  Tensor b = Tensor::from({0, 1}, {2});
  // channel 0: (x - 1) / 2; channel 1: (x - 2) / 0.5 * 2 + 1
  CHECK(batch_norm_eval(x, rm, rv, g, b, 0.0f).to_vector() == std::vector<float>{0, 1, 1, 9});
  CHECK(batch_norm_eval(x, rm, rv, Tensor(), Tensor(), 0.0f).to_vector() ==
        std::vector<float>{0, 0, 1, 4});

  rm.set_requires_grad();
  rv.set_requires_grad();
  Tensor xg = param({3, 2, 2, 2}, 1);
  sum(batch_norm_eval(xg, rm, rv, Tensor(), Tensor(), 1e-5f)).backward();
  CHECK(xg.has_grad());
  CHECK(!rm.has_grad());
  CHECK(!rv.has_grad());

  Tensor mean = Tensor::from({0.1f, -0.2f, 0.3f}, {3});
  Tensor var = Tensor::from({0.5f, 1.5f, 2.0f}, {3});
  CHECK_GRADIENTS("batch_norm_eval",
                  [mean, var](const Inputs& in) {
                    return batch_norm_eval(in[0], mean, var, in[1], in[2], 1e-5f);
                  },
                  {param({4, 3, 2, 3}, 2), param({3}, 3, 0.5f, 1.5f), param({3}, 4)});
}

TEST_CASE("ops.norm: layer_norm normalizes the trailing dims") {
  Tensor x = Tensor::from({1, 2, 3, 4}, {1, 4});  // mean 2.5, biased var 1.25
  std::vector<float> y = layer_norm(x, {4}, Tensor(), Tensor(), 0.0f).to_vector();
  for (int i = 0; i < 4; ++i)
    CHECK(y[static_cast<size_t>(i)] == doctest::Approx((i + 1 - 2.5) / std::sqrt(1.25)));
  Tensor w = Tensor::from({1, 1, 2, 2}, {4});
  Tensor b = Tensor::from({0, 0, 0, 10}, {4});
  std::vector<float> ya = layer_norm(x, {4}, w, b, 0.0f).to_vector();
  CHECK(ya[3] == doctest::Approx(2 * 1.5 / std::sqrt(1.25) + 10));

  Rng rng(3);
  Tensor x3 = Tensor::normal({3, 4, 5}, rng, -1.0f, 2.0f);
  Tensor y3 = layer_norm(x3, {4, 5}, Tensor(), Tensor(), 1e-5f);
  for (int64_t r = 0; r < 3; ++r) {
    Stats in = range_stats(x3, r * 20, 20);
    Stats out = range_stats(y3, r * 20, 20);
    CHECK(std::fabs(out.mean) < 1e-5);
    CHECK(out.var == doctest::Approx(in.var / (in.var + 1e-5)).epsilon(1e-5));
  }
}

TEST_CASE("ops.norm: layer_norm gradient checks for x, weight and bias") {
  CHECK_GRADIENTS("layer_norm [2 dims]",
                  [](const Inputs& in) {
                    return layer_norm(in[0], {4, 5}, in[1], in[2], 1e-5f);
                  },
                  {param({3, 4, 5}, 1), param({4, 5}, 2, 0.5f, 1.5f), param({4, 5}, 3)});
  CHECK_GRADIENTS("layer_norm [1 dim]",
                  [](const Inputs& in) { return layer_norm(in[0], {6}, in[1], in[2], 1e-5f); },
                  {param({2, 3, 6}, 4), param({6}, 5, 0.5f, 1.5f), param({6}, 6)});
  CHECK_GRADIENTS(
      "layer_norm no affine",
      [](const Inputs& in) { return layer_norm(in[0], {5}, Tensor(), Tensor(), 1e-5f); },
      {param({4, 5}, 7)});
}

TEST_CASE("ops.norm: group_norm normalizes each group of each sample") {
  Rng rng(4);
  Tensor x = Tensor::normal({2, 6, 3, 2}, rng, 1.0f, 2.0f);
  SUBCASE("3 groups: per (n, g) mean 0 and variance 1") {
    Tensor y = group_norm(x, 3, Tensor(), Tensor(), 1e-5f);
    for (int64_t row = 0; row < 2 * 3; ++row) {
      Stats in = range_stats(x, row * 12, 12);
      Stats out = range_stats(y, row * 12, 12);
      CHECK(std::fabs(out.mean) < 1e-5);
      CHECK(out.var == doctest::Approx(in.var / (in.var + 1e-5)).epsilon(1e-5));
    }
  }
  SUBCASE("groups = 1 equals layer_norm over [C, H, W]") {
    check_close(group_norm(x, 1, Tensor(), Tensor(), 1e-5f),
                layer_norm(x, {6, 3, 2}, Tensor(), Tensor(), 1e-5f));
  }
  SUBCASE("groups = C (instance norm) equals layer_norm over [H, W] of each channel") {
    check_close(group_norm(x, 6, Tensor(), Tensor(), 1e-5f),
                layer_norm(x, {3, 2}, Tensor(), Tensor(), 1e-5f));
  }
  SUBCASE("the affine is per channel") {
    Tensor w = Tensor::from({1, 2, 3, 4, 5, 6}, {6});
    Tensor b = Tensor::from({6, 5, 4, 3, 2, 1}, {6});
    std::vector<float> plain = group_norm(x, 2, Tensor(), Tensor(), 1e-5f).to_vector();
    std::vector<float> affine = group_norm(x, 2, w, b, 1e-5f).to_vector();
    for (size_t i = 0; i < plain.size(); ++i) {
      size_t c = (i / 6) % 6;
      CHECK(affine[i] ==
            doctest::Approx(plain[i] * static_cast<float>(c + 1) + static_cast<float>(6 - c)));
    }
  }
}

TEST_CASE("ops.norm: group_norm gradient checks for x, weight and bias") {
  auto gn = [](int64_t groups) {
    return [groups](const Inputs& in) { return group_norm(in[0], groups, in[1], in[2], 1e-5f); };
  };
  SUBCASE("3 groups of 2 channels") {
    CHECK_GRADIENTS("group_norm G=3", gn(3),
                    {param({2, 6, 3}, 1), param({6}, 2, 0.5f, 1.5f), param({6}, 3)});
  }
  SUBCASE("groups = C (instance norm)") {
    CHECK_GRADIENTS("group_norm G=C", gn(4),
                    {param({2, 4, 2, 3}, 4), param({4}, 5, 0.5f, 1.5f), param({4}, 6)});
  }
  SUBCASE("groups = 1") {
    CHECK_GRADIENTS("group_norm G=1", gn(1),
                    {param({2, 3, 2, 2}, 7), param({3}, 8, 0.5f, 1.5f), param({3}, 9)});
  }
  SUBCASE("no affine, [N, C]") {
    CHECK_GRADIENTS(
        "group_norm no affine",
        [](const Inputs& in) { return group_norm(in[0], 2, Tensor(), Tensor(), 1e-5f); },
        {param({3, 6}, 10)});
  }
}

TEST_CASE("ops.norm: the threaded paths agree with one thread") {
  // x [5, 8, 32, 32] is above the ops' parallel threshold, so norm_rows_backward reduces
  // weight/bias through partials of row chunks; compare against a single-threaded run.
  using Fn = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;
  const std::vector<std::pair<const char*, Fn>> ops = {
      {"batch_norm", [](const Tensor& x, const Tensor& g,
                        const Tensor& b) { return batch_norm_train(x, g, b, 1e-5f).y; }},
      {"layer_norm",
       [](const Tensor& x, const Tensor& g, const Tensor& b) {
         return layer_norm(x, {32, 32}, reshape(g, {32, 32}), reshape(b, {32, 32}), 1e-5f);
       }},
      {"group_norm", [](const Tensor& x, const Tensor& g,
                        const Tensor& b) { return group_norm(x, 4, g, b, 1e-5f); }},
  };
  for (const auto& [name, fn] : ops) {
    CAPTURE(name);
    const int64_t P = std::string(name) == "layer_norm" ? 32 * 32 : 8;
    auto grads = [&, fn = fn](int threads) {
      int previous = num_threads();
      set_num_threads(threads);
      Tensor x = param({5, 8, 32, 32}, 1);
      Tensor g = param({P}, 2, 0.5f, 1.5f);
      Tensor b = param({P}, 3);
      Rng rng(4);
      Tensor r = Tensor::uniform({5, 8, 32, 32}, rng, -1.0f, 1.0f);
      Tensor y = fn(x, g, b);
      std::vector<float> out = y.to_vector();
      sum(mul(y, r)).backward();
      set_num_threads(previous);
      return std::vector<std::vector<float>>{out, x.grad().to_vector(), g.grad().to_vector(),
                                             b.grad().to_vector()};
    };
    auto one = grads(1);
    auto many = grads(3);
    for (size_t t = 0; t < one.size(); ++t) {
      CAPTURE(t);
      CHECK(bnlab::testing::count_mismatches(one[t], many[t], 1e-5) == 0);
    }
  }
}

TEST_CASE("ops.norm: layer norm's parameter gradients have the same bits at 1 and 2 threads") {
  // db sums dy over rows in double, in a split of the rows that does not follow the team. dy's
  // first column is 2^60, 0, -2^60, 1 down the rows: in row order the sum is 1, but a grouping
  // (2^60 + 0) + (-2^60 + 1) loses the 1 (it is below -2^60's last bit), which is what a thread
  // per half of the rows gave at two threads. [4, 16384] is above the parallel threshold.
  auto bias_grad = [](int threads) {
    int previous = num_threads();
    set_num_threads(threads);
    Tensor x = param({4, 16384}, 31);
    Tensor w = param({16384}, 32, 0.5f, 1.5f);
    Tensor b = param({16384}, 33);
    std::vector<float> dy(4 * 16384, 0.0f);
    dy[0 * 16384] = std::ldexp(1.0f, 60);
    dy[2 * 16384] = -std::ldexp(1.0f, 60);
    dy[3 * 16384] = 1.0f;
    sum(mul(layer_norm(x, {16384}, w, b, 1e-5f), Tensor::from(dy, {4, 16384}))).backward();
    set_num_threads(previous);
    return std::pair{b.grad().to_vector(), w.grad().to_vector()};
  };
  const auto one = bias_grad(1), two = bias_grad(2);
  CHECK(one.first[0] == 1.0f);
  CHECK(std::memcmp(one.first.data(), two.first.data(), one.first.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(one.second.data(), two.second.data(), one.second.size() * sizeof(float)) == 0);
}

TEST_CASE("ops.norm: shape errors name the op and both shapes") {
  Tensor x = Tensor::ones({8, 3, 5, 5});
  CHECK_THROWS_WITH_AS(
      batch_norm_train(x, Tensor::ones({4}), Tensor(), 1e-5f),
      doctest::Contains("batch_norm: gamma has shape [4], expected [3] for input [8, 3, 5, 5]"),
      Error);
  CHECK_THROWS_WITH_AS(batch_norm_train(x, Tensor(), Tensor::ones({3, 1, 1}), 1e-5f),
                       doctest::Contains("batch_norm: beta has shape [3, 1, 1], expected [3]"),
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm_train(Tensor::ones({5}), Tensor(), Tensor(), 1e-5f),
                       doctest::Contains("batch_norm: input must be [N, C] or [N, C, *]; got [5]"),
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm_train(Tensor::ones({0, 3}), Tensor(), Tensor(), 1e-5f),
                       doctest::Contains("batch_norm: input [0, 3] is empty"), Error);
  CHECK_THROWS_WITH_AS(batch_norm_train(x, Tensor(), Tensor(), -1.0f),
                       doctest::Contains("batch_norm: eps must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(
      batch_norm_eval(x, Tensor::zeros({3}), Tensor::ones({2}), Tensor(), Tensor(), 1e-5f),
      doctest::Contains("batch_norm_eval: running_var has shape [2], expected [3]"), Error);
  CHECK_THROWS_WITH_AS(
      batch_norm_eval(x, Tensor::zeros({3}), Tensor(), Tensor(), Tensor(), 1e-5f),
      doctest::Contains("batch_norm_eval: running_mean and running_var are required"), Error);
  CHECK_THROWS_WITH_AS(
      layer_norm(Tensor::ones({2, 3}), {4}, Tensor(), Tensor(), 1e-5f),
      doctest::Contains("layer_norm: normalized_shape [4] does not match the trailing dims "
                        "of input [2, 3]"),
      Error);
  CHECK_THROWS_WITH_AS(
      layer_norm(Tensor::ones({2, 4}), {4}, Tensor::ones({3}), Tensor(), 1e-5f),
      doctest::Contains("layer_norm: weight has shape [3], expected [4] for input [2, 4]"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(Tensor::ones({2, 4}), {}, Tensor(), Tensor(), 1e-5f),
                       doctest::Contains("layer_norm: normalized_shape must name at least one dim"),
                       Error);
  CHECK_THROWS_WITH_AS(
      group_norm(Tensor::ones({2, 6, 4}), 4, Tensor(), Tensor(), 1e-5f),
      doctest::Contains("group_norm: 6 channels not divisible into 4 groups (input [2, 6, 4])"),
      Error);
  CHECK_THROWS_WITH_AS(group_norm(Tensor::ones({2, 6, 4}), 0, Tensor(), Tensor(), 1e-5f),
                       doctest::Contains("group_norm: groups must be >= 1; got 0"), Error);
  CHECK_THROWS_WITH_AS(
      group_norm(Tensor::ones({2, 6, 4}), 2, Tensor::ones({2}), Tensor(), 1e-5f),
      doctest::Contains("group_norm: weight has shape [2], expected [6] for input [2, 6, 4]"),
      Error);
}

TEST_CASE("ops.norm: channel_affine values by hand, on [N, C] and [N, C, H, W]") {
  Tensor scale = Tensor::from({2.0f, -0.5f}, {2});
  Tensor shift = Tensor::from({1.0f, 3.0f}, {2});
  SUBCASE("[N, C]") {
    Tensor x = Tensor::from({1, 2, 3, 4}, {2, 2});
    CHECK(channel_affine(x, scale, shift).to_vector() == std::vector<float>{3, 2, 7, 1});
  }
  SUBCASE("[N, C, H, W]: channel c of every sample, every position") {
    Tensor x = Tensor::from({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2, 1});
    CHECK(channel_affine(x, scale, shift).to_vector() ==
          std::vector<float>{3, 5, 1.5f, 1, 11, 13, -0.5f, -1});
  }
  SUBCASE("NaN passes through its own element only") {
    Tensor x = Tensor::from({NAN, 2, 3, 4}, {2, 2});
    std::vector<float> y = channel_affine(x, scale, shift).to_vector();
    CHECK(std::isnan(y[0]));
    CHECK(y[1] == 2.0f);
    CHECK(y[2] == 7.0f);
  }
}

TEST_CASE("ops.norm: channel_affine gradient checks (scale and shift held fixed)") {
  auto affine = [](const Tensor& scale, const Tensor& shift) {
    return [scale, shift](const Inputs& in) { return channel_affine(in[0], scale, shift); };
  };
  Rng rng(3);
  SUBCASE("[N, C]") {
    CHECK_GRADIENTS("channel_affine [N, C]",
                    affine(Tensor::uniform({3}, rng, 0.5f, 2.0f), Tensor::uniform({3}, rng)),
                    {param({4, 3}, 1)});
  }
  SUBCASE("[N, C, H, W]") {
    CHECK_GRADIENTS("channel_affine [N, C, H, W]",
                    affine(Tensor::uniform({3}, rng, -2.0f, 2.0f), Tensor::uniform({3}, rng)),
                    {param({2, 3, 2, 3}, 2)});
  }
  SUBCASE("[N, 70]: two channel blocks") {
    CHECK_GRADIENTS("channel_affine [N, 70]",
                    affine(Tensor::uniform({70}, rng, 0.5f, 2.0f), Tensor::uniform({70}, rng)),
                    {param({3, 70}, 3)});
  }
}

TEST_CASE("ops.norm: channel_affine keeps its scale for backward and agrees across threads") {
  Tensor scale = Tensor::from({2.0f, 3.0f}, {2});
  Tensor x = param({5, 2, 64, 64}, 4);  // above the parallel threshold
  Tensor y = channel_affine(x, scale, Tensor::zeros({2}));
  scale.fill_(100.0f);  // a layer refills its noise for the next step before this backward runs
  sum(y).backward();
  std::vector<float> g = x.grad().to_vector();
  const int64_t S = 64 * 64;
  CHECK(g[0] == 2.0f);
  CHECK(g[S] == 3.0f);
  CHECK(g[4 * 2 * S + 2 * S - 1] == 3.0f);
  int previous = num_threads();
  set_num_threads(1);
  Tensor one = channel_affine(x, Tensor::from({2.0f, 3.0f}, {2}), Tensor::from({1.0f, -1.0f}, {2}));
  set_num_threads(3);
  Tensor many =
      channel_affine(x, Tensor::from({2.0f, 3.0f}, {2}), Tensor::from({1.0f, -1.0f}, {2}));
  set_num_threads(previous);
  CHECK(one.to_vector() == many.to_vector());
}

TEST_CASE("ops.norm: channel_affine errors name the op and the shapes") {
  Tensor x = Tensor::ones({2, 3, 4});
  CHECK_THROWS_WITH_AS(
      channel_affine(x, Tensor::ones({2}), Tensor::zeros({3})),
      doctest::Contains("channel_affine: scale has shape [2], expected [3] for input [2, 3, 4]"),
      Error);
  CHECK_THROWS_WITH_AS(
      channel_affine(x, Tensor::ones({3}), Tensor::zeros({3, 1})),
      doctest::Contains("channel_affine: shift has shape [3, 1], expected [3] for input [2, 3, 4]"),
      Error);
  CHECK_THROWS_WITH_AS(channel_affine(x, Tensor(), Tensor::zeros({3})),
                       doctest::Contains("channel_affine: scale and shift are required"), Error);
  CHECK_THROWS_WITH_AS(
      channel_affine(Tensor::ones({3}), Tensor::ones({3}), Tensor::zeros({3})),
      doctest::Contains("channel_affine: input must be [N, C] or [N, C, *]; got [3]"), Error);
  Tensor trained = Tensor::ones({3});
  trained.set_requires_grad();
  CHECK_THROWS_WITH_AS(channel_affine(x, trained, Tensor::zeros({3})),
                       doctest::Contains("channel_affine: scale and shift are constants"), Error);
}

// Run by the test below in a fresh process (in_exec_child), where a team of two threads can start.
TEST_CASE("ops.norm child: pooled batch norm's scratch too large at two threads" *
          doctest::skip()) {
  if (!testing::in_exec_child()) return;
  int code = 4;
  {
    set_num_threads(2);
    // The team's threads (their stacks, their malloc arenas) start here, before the limit.
    batch_norm_relu_max_pool2x2_train(Tensor::ones({4, 4, 64, 64}), Tensor::ones({4}),
                                      Tensor::zeros({4}), 1e-5f);
    // Each thread's scratch plane is 64 MiB; the output (32 MiB) and places (8 MiB) fit.
    const Tensor x = Tensor::ones({1, 2, 4096, 4096});
    const Tensor gamma = Tensor::ones({2}), beta = Tensor::zeros({2});
    if (testing::limit_address_space(size_t{100} << 20)) {
      try {
        batch_norm_relu_max_pool2x2_train(x, gamma, beta, 1e-5f);
        code = 2;
      } catch (const Error& e) {
        code = testing::expect_error_start(
            e,
            "batch_norm_relu_max_pool2x2: a thread's scratch of 16777216 values (for planes of "
            "the input) cannot be allocated");
      }
    }
  }
  std::fflush(nullptr);
  ::_exit(code);
}

TEST_CASE(
    "ops.norm: pooled batch norm's scratch too large for memory is an error, not the end of the "
    "process") {
  if (!BNLAB_TEST_MEMORY_LIMIT) return;
  // Found by the audit of 2026-12-06 after the conv2d column-buffer fix: each thread grows its
  // scratch plane inside the OpenMP region of the channel blocks, where an exception cannot
  // leave; a plane too large for memory ended the process in std::terminate. At one thread there
  // is no region, so the child is a fresh process at two.
  CHECK(testing::exec_child_exit_code(
            "ops.norm child: pooled batch norm's scratch too large at two threads") == 0);
}

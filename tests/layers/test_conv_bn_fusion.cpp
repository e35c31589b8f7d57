// Conv2d + BatchNorm2d in training: the conv computes each output plane's moments (batch norm's
// first pass) while the image is in cache (core/ops/plane_moments.h). On every conv path the
// moments are exactly plane_moments of the output; batch norm given them computes what it computes
// alone; and Conv2d's fusion with BatchNorm2d (+ ReLU (+ MaxPool2d(2))), BatchRenorm2d and SyncBN
// included, gives the outputs, gradients and running statistics of the modules run one by one, bit
// for bit. When it is not taken: eval with running statistics, a BatchNorm subclass, BatchNorm1d.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "conv_path_cases.h"
#include "core/autograd.h"
#include "core/blas.h"
#include "core/cpu_isa.h"
#include "core/ops/plane_moments.h"
#include "layers/layers.h"

using namespace bnlab;
using bnlab::testing::conv_cases;
using bnlab::testing::ConvCase;
using bnlab::testing::require_path;
using bnlab::testing::same_bits;

namespace {

bool same_doubles(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// plane_moments of every plane of y [N, K, Ho, Wo].
std::vector<double> moments_of(const Tensor& y) {
  std::vector<double> pm(static_cast<size_t>(2 * y.size(0) * y.size(1)));
  detail::plane_moments(pm.data(), y.data(), y.size(0) * y.size(1), y.size(2) * y.size(3));
  return pm;
}

// SyncBN against a fixed other shard of `channels` channels: its moments (10 values of mean 0.5 and
// M2 3 per channel) and backward sums (0.25 each) are merged in, so batch norm runs its two-phase
// schedule (all first passes, the reducer, all second passes).
class FixedOtherShard final : public BatchNormReducer {
 public:
  explicit FixedOtherShard(int64_t channels) : channels_(channels) {}
  void merge_moments(double* moments, int64_t channels) override {
    REQUIRE(channels == channels_);
    const std::vector<double> other = [&] {
      std::vector<double> m;
      for (int64_t c = 0; c < channels; ++c) m.insert(m.end(), {10.0, 0.5, 3.0});
      return m;
    }();
    merge_moments_into(moments, other.data(), channels);
  }
  void sum(double* values, int64_t n) override {
    REQUIRE(n == 2 * channels_);
    for (int64_t i = 0; i < n; ++i) values[i] += 0.25;
  }

 private:
  int64_t channels_;
};

// A BatchNorm2d whose forward is its own business: Conv2d must not hand it plane moments.
class MyBatchNorm2d : public BatchNorm2d {
 public:
  using BatchNorm2d::BatchNorm2d;
  std::string type_name() const override { return "MyBatchNorm2d"; }
};

// A module that records how many modules Sequential offers it, and never fuses.
class CountingProbe : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  FusedForward forward_fused(std::span<Module* const> next, const Tensor&) override {
    offered = next.size();
    return {};
  }
  std::string type_name() const override { return "CountingProbe"; }
  size_t offered = 0;
};

}  // namespace

TEST_CASE(
    "ops.plane_moments: mean and M2 of each plane, at every length around its 32-wide steps") {
  // Far from zero (mean 1000, spread 1): the two passes keep M2 exact where sum of squares minus
  // the squared sum would lose it. The reference adds in long double, in order.
  Rng rng(3);
  for (const int64_t S : {1, 7, 31, 32, 33, 63, 64, 65, 100, 196, 1024}) {
    CAPTURE(S);
    const int64_t planes = 3;
    std::vector<float> x(static_cast<size_t>(planes * S));
    for (float& v : x) v = 1000.0f + rng.normal();
    std::vector<double> pm(static_cast<size_t>(2 * planes), -1.0);
    detail::plane_moments(pm.data(), x.data(), planes, S);
    for (int64_t i = 0; i < planes; ++i) {
      const float* p = x.data() + i * S;
      long double sum = 0.0L, m2 = 0.0L;
      for (int64_t k = 0; k < S; ++k) sum += p[k];
      const long double mean = sum / S;
      for (int64_t k = 0; k < S; ++k) m2 += (p[k] - mean) * (p[k] - mean);
      CHECK(pm[2 * i] == doctest::Approx(static_cast<double>(mean)).epsilon(1e-14));
      if (S == 1) {
        CHECK(pm[2 * i + 1] == 0.0);
      } else {
        CHECK(pm[2 * i + 1] == doctest::Approx(static_cast<double>(m2)).epsilon(1e-10));
      }
    }
    // A NaN anywhere in a plane, body or tail, makes that plane's moments NaN and no other's.
    x[static_cast<size_t>(S + S - 1)] = std::nanf("");
    detail::plane_moments(pm.data(), x.data(), planes, S);
    CHECK(std::isnan(pm[2]));
    CHECK(std::isnan(pm[3]));
    CHECK(std::isfinite(pm[0]));
    CHECK(std::isfinite(pm[5]));
  }
}

namespace {

// The vector paths' order (core/ops/plane_moments.cpp) in scalar code: 32 partial sums, lane j
// taking the body's values k = j mod 32; then per lane j < 8 (j + (8 + j)) + ((16 + j) + (24 + j));
// the upper four of those onto the lower four, the upper two onto the lower two, the last two
// added; the tail in order. M2 the same over fused squares of x - mean.
double tree_sum(const double* lane) {
  double eight[8], four[4];
  for (int j = 0; j < 8; ++j) eight[j] = (lane[j] + lane[8 + j]) + (lane[16 + j] + lane[24 + j]);
  for (int j = 0; j < 4; ++j) four[j] = eight[4 + j] + eight[j];
  return (four[2] + four[0]) + (four[3] + four[1]);
}

std::pair<double, double> plane_moments_in_lane_order(const float* x, int64_t S) {
  const int64_t body = S / 32 * 32;
  double lane[32] = {};
  for (int64_t k = 0; k < body; ++k) lane[k % 32] += static_cast<double>(x[k]);
  double sum = tree_sum(lane);
  for (int64_t k = body; k < S; ++k) sum += static_cast<double>(x[k]);
  const double mean = sum / static_cast<double>(S);
  for (double& v : lane) v = 0.0;
  for (int64_t k = 0; k < body; ++k) {
    const double dev = static_cast<double>(x[k]) - mean;
    lane[k % 32] = std::fma(dev, dev, lane[k % 32]);
  }
  double m2 = tree_sum(lane);
  for (int64_t k = body; k < S; ++k) {
    const double dev = static_cast<double>(x[k]) - mean;
    m2 = std::fma(dev, dev, m2);
  }
  return {mean, m2};
}

}  // namespace

TEST_CASE("ops.plane_moments: the AVX2 and AVX-512 paths add in one order, bit for bit") {
  // Both paths are checked against one scalar emulation, so a model's batch statistics are the
  // same bits on either CPU. Values spread over many binades, so that another order of the adds
  // would change the last bits.
  if (cpu_isa() == CpuIsa::portable) {
    MESSAGE("no AVX2 or AVX-512F path on this CPU (or under BNLAB_MAX_ISA): skipped");
    return;
  }
  Rng rng(11);
  for (const int64_t S : {1, 31, 32, 33, 64, 95, 196, 784, 1024, 1031}) {
    CAPTURE(S);
    const int64_t planes = 2;
    std::vector<float> x(static_cast<size_t>(planes * S));
    for (float& v : x) v = std::ldexp(rng.normal(), static_cast<int>(rng.uniform() * 40.0f) - 20);
    std::vector<double> pm(static_cast<size_t>(2 * planes));
    detail::plane_moments(pm.data(), x.data(), planes, S);
    for (int64_t i = 0; i < planes; ++i) {
      const auto [mean, m2] = plane_moments_in_lane_order(x.data() + i * S, S);
      CHECK(std::bit_cast<uint64_t>(pm[2 * i]) == std::bit_cast<uint64_t>(mean));
      CHECK(std::bit_cast<uint64_t>(pm[2 * i + 1]) == std::bit_cast<uint64_t>(m2));
    }
  }
}

TEST_CASE("ops.conv2d_with_plane_moments: its output's plane moments on every conv path") {
  for (const ConvCase& c : conv_cases()) {
    CAPTURE(c.name);
    require_path(c);
    detail::ScopedConvPathMode scoped(c.mode);
    Rng rng(5);
    const Tensor x = Tensor::normal(c.x, rng), w = Tensor::normal(c.w, rng);
    const Tensor b = Tensor::normal({c.w[0]}, rng);
    NoGradGuard no_grad;
    for (const bool relu : {false, true}) {
      CAPTURE(relu);
      std::vector<double> pm(static_cast<size_t>(2 * c.x[0] * c.w[0]), -1.0);
      const Tensor y =
          detail::conv2d_with_plane_moments(x, w, b, c.stride, c.padding, 1, relu, pm.data());
      const Tensor plain =
          relu ? conv2d_relu(x, w, b, c.stride, c.padding) : conv2d(x, w, b, c.stride, c.padding);
      CHECK(same_bits(y, plain));
      CHECK(same_doubles(pm, moments_of(y)));
      // The last plane's mean and M2 against a plain sum (plane_moments is batch norm's code).
      const int64_t S = y.size(2) * y.size(3);
      const float* last = y.data() + y.numel() - S;
      double sum = 0.0, m2 = 0.0;
      for (int64_t i = 0; i < S; ++i) sum += last[i];
      for (int64_t i = 0; i < S; ++i) m2 += (last[i] - sum / S) * (last[i] - sum / S);
      CHECK(pm[pm.size() - 2] == doctest::Approx(sum / S).epsilon(1e-12));
      CHECK(pm.back() == doctest::Approx(m2).epsilon(1e-9));
    }
  }
  std::vector<double> pm(2);
  CHECK_THROWS_WITH(
      detail::conv2d_with_plane_moments(Tensor::ones({1, 1, 3, 3}), Tensor::ones({1, 1, 3, 3}),
                                        Tensor(), 1, 1, 1, false, nullptr),
      doctest::Contains("conv2d: the plane moments' buffer is null"));
}

TEST_CASE("ops.batch_norm_train_given_planes: what batch norm computes alone, bit for bit") {
  // Small, and over the threading threshold with more channels than one block (the given-planes
  // forward splits images between threads, batch norm alone splits channels): alone on one
  // thread, given on two.
  using detail::BatchNormThen;
  Rng rng(8);
  const int before = num_threads();
  for (const Shape& shape : {Shape{3, 5, 6, 7}, Shape{8, 70, 8, 8}}) {
    CAPTURE(shape);
    for (const BatchNormThen then : {BatchNormThen::nothing, BatchNormThen::relu,
                                     BatchNormThen::relu_max_pool2x2, BatchNormThen::sigmoid}) {
      CAPTURE(static_cast<int>(then));
      auto run = [&](bool given, const std::vector<double>* planes) {
        set_num_threads(given ? 2 : 1);
        Rng r(3);
        // A common offset of 5: the per-plane two passes keep it from cancelling.
        Tensor x = add(Tensor::normal(shape, r), Tensor::full(shape, 5.0f))
                       .detach()
                       .set_requires_grad(true);
        const int64_t C = shape[1];
        Tensor gamma = Tensor::normal({C}, r).set_requires_grad(true);
        Tensor beta = Tensor::normal({C}, r).set_requires_grad(true);
        const std::vector<double> own = moments_of(x);
        BatchNormResult res;
        if (given) {
          res = detail::batch_norm_train_given_planes(x, gamma, beta, 1e-5f, nullptr, nullptr, then,
                                                      planes ? planes->data() : own.data());
        } else if (then == BatchNormThen::nothing) {
          res = batch_norm_train(x, gamma, beta, 1e-5f);
        } else if (then == BatchNormThen::relu) {
          res = batch_norm_relu_train(x, gamma, beta, 1e-5f);
        } else if (then == BatchNormThen::sigmoid) {
          res = batch_norm_sigmoid_train(x, gamma, beta, 1e-5f);
        } else {
          res = batch_norm_relu_max_pool2x2_train(x, gamma, beta, 1e-5f);
        }
        sum(mul(res.y, Tensor::normal(res.y.shape(), r))).backward();
        return std::vector<Tensor>{res.y, res.mean, res.var, x.grad(), gamma.grad(), beta.grad()};
      };
      const std::vector<Tensor> alone = run(false, nullptr), given = run(true, nullptr);
      for (size_t i = 0; i < alone.size(); ++i) {
        CAPTURE(i);
        CHECK(same_bits(alone[i], given[i]));
      }
      // The given moments are what it uses: another tensor's give other statistics.
      const std::vector<double> other = moments_of(Tensor::normal(shape, rng));
      CHECK_FALSE(same_bits(run(true, &other)[1], alone[1]));
    }
  }
  set_num_threads(before);
  const std::vector<double> pm(2 * 6);
  CHECK_THROWS_WITH(
      detail::batch_norm_train_given_planes(Tensor::ones({2, 3}), Tensor(), Tensor(), 1e-5f,
                                            nullptr, nullptr, BatchNormThen::nothing, pm.data()),
      doctest::Contains("batch_norm: given plane moments need an [N, C, H, W]"));
}

TEST_CASE("layers.conv_bn_fusion: Conv2d + BatchNorm2d (+ ReLU (+ MaxPool2d)) as one by one") {
  enum class Norm { batch, renorm, synced };
  for (const ConvCase& c : conv_cases()) {
    require_path(c);
    for (const Norm norm : {Norm::batch, Norm::renorm, Norm::synced}) {
      for (const size_t tail : {size_t{1}, size_t{2}, size_t{3}}) {
        for (const bool with_bias : {true, false}) {
          CAPTURE(c.name);
          CAPTURE(static_cast<int>(norm));
          CAPTURE(tail);
          CAPTURE(with_bias);
          detail::ScopedConvPathMode scoped(c.mode);
          // Two training steps (the second with running statistics and renorm's r, d moved),
          // fused or one by one: outputs, every gradient, the running statistics.
          auto run = [&](bool fused) {
            Rng rng(21);
            Conv2d conv(Conv2dOptions{.in_channels = c.x[1],
                                      .out_channels = c.w[0],
                                      .kernel = c.w[2],
                                      .stride = c.stride,
                                      .padding = c.padding,
                                      .bias = with_bias},
                        rng);
            const BatchNormOptions bo{.num_features = c.w[0]};
            std::shared_ptr<BatchNorm> bn;
            if (norm != Norm::renorm) {
              bn = std::make_shared<BatchNorm2d>(bo);
              if (norm == Norm::synced) bn->set_reducer(std::make_shared<FixedOtherShard>(c.w[0]));
            } else {
              bn = std::make_shared<BatchRenorm2d>(
                  bo, BatchRenormOptions{.r_max = 1.5f, .d_max = 0.5f, .warmup = 0, .ramp = 1});
            }
            ReLU relu_layer;
            MaxPool2d pool(2);
            Module* next[] = {bn.get(), &relu_layer, &pool};
            std::vector<Tensor> got;
            for (int step = 0; step < 2; ++step) {
              Tensor x = Tensor::normal(c.x, rng).set_requires_grad(true);
              Tensor h;
              if (fused) {
                const FusedForward f = conv.forward_fused(std::span<Module* const>(next, tail), x);
                REQUIRE(f.output.defined());
                // BatchRenorm2d fuses with nothing after it; the conv still takes it.
                CHECK(f.modules == (norm == Norm::renorm ? 1 : tail));
                h = f.output;
                for (size_t k = f.modules; k < tail; ++k) h = (*next[k])(h);
              } else {
                h = conv(x);
                for (size_t k = 0; k < tail; ++k) h = (*next[k])(h);
              }
              for (auto& p : conv.parameters()) p.zero_grad();
              for (auto& p : bn->parameters()) p.zero_grad();
              sum(mul(h, Tensor::normal(h.shape(), rng))).backward();
              got.insert(got.end(),
                         {h, x.grad(), conv.weight().grad(), bn->weight().grad(), bn->bias().grad(),
                          bn->running_mean().clone(), bn->running_var().clone()});
              if (with_bias) got.push_back(conv.bias().grad());
            }
            return got;
          };
          const std::vector<Tensor> fused = run(true), alone = run(false);
          REQUIRE(fused.size() == alone.size());
          for (size_t i = 0; i < fused.size(); ++i) {
            CAPTURE(i);
            CHECK(same_bits(fused[i], alone[i]));
          }
        }
      }
    }
  }
}

TEST_CASE("layers.conv_bn_fusion: not taken in eval, for subclasses or BatchNorm1d, and errors") {
  Rng rng(3);
  Conv2d conv(Conv2dOptions{.in_channels = 2, .out_channels = 3, .kernel = 3, .padding = 1}, rng);
  const Tensor x = Tensor::normal({4, 2, 5, 5}, rng);
  BatchNorm2d bn(BatchNormOptions{.num_features = 3});
  MyBatchNorm2d mine(BatchNormOptions{.num_features = 3});
  BatchNorm1d bn1d(BatchNormOptions{.num_features = 3});
  BatchNorm2d no_running(BatchNormOptions{.num_features = 3, .track_running_stats = false});
  CHECK(bn.takes_conv_planes());
  CHECK_FALSE(mine.takes_conv_planes());
  CHECK_FALSE(bn1d.takes_conv_planes());
  Module* to_bn[] = {&bn};
  Module* to_mine[] = {&mine};
  Module* to_1d[] = {&bn1d};
  Module* to_no_running[] = {&no_running};
  CHECK_FALSE(conv.forward_fused(to_mine, x).output.defined());
  CHECK_FALSE(conv.forward_fused(to_1d, x).output.defined());
  // Eval: running statistics, no batch moments to compute; without running statistics, batch
  // statistics in eval too, so the conv computes them.
  bn.eval();
  no_running.eval();
  CHECK_FALSE(bn.takes_conv_planes());
  CHECK_FALSE(conv.forward_fused(to_bn, x).output.defined());
  const FusedForward f = conv.forward_fused(to_no_running, x);
  REQUIRE(f.output.defined());
  CHECK(f.modules == 1);
  CHECK(same_bits(f.output, no_running(conv(x))));
  // A BatchNorm2d for other channels says so, as it does on its own.
  BatchNorm2d wrong(BatchNormOptions{.num_features = 4});
  Module* to_wrong[] = {&wrong};
  CHECK_THROWS_WITH(conv.forward_fused(to_wrong, x),
                    doctest::Contains("BatchNorm2d: expected input [N, C, H, W] with C = 4"));
  // Sequential offers the conv the BatchNorm2d, the ReLU and the pool.
  auto probe = std::make_shared<CountingProbe>();
  Sequential seq;
  seq.add(probe);
  seq.add(std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 2}));
  seq.add(std::make_shared<ReLU>());
  seq.add(std::make_shared<MaxPool2d>(2));
  (void)seq(x);
  CHECK(probe->offered == 3);
}

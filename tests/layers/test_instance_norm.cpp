// InstanceNorm1d/2d: outputs by hand, agreement with group_norm(G = C), running statistics as
// PyTorch updates them (the batch average of per-instance statistics), eval in both modes, the
// state_dict of every option combination, gradient checks through the layer, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;

namespace {

using Inputs = std::vector<Tensor>;

// x [2, 2, 3]. Instances (n, c):
//   (0, 0): 1, 2, 3     mean 2, biased var 2/3, unbiased var 1
//   (0, 1): 0, 0, 6     mean 2, biased var 8,   unbiased var 12
//   (1, 0): 10, 10, 10  mean 10, var 0
//   (1, 1): -3, 0, 3    mean 0, biased var 6,   unbiased var 9
Tensor tiny_input() { return Tensor::from({1, 2, 3, 0, 0, 6, 10, 10, 10, -3, 0, 3}, {2, 2, 3}); }

std::vector<std::string> names_of(const Module& m) {
  std::vector<std::string> names;
  for (const NamedTensor& t : m.state_dict()) names.push_back(t.name);
  return names;
}

}  // namespace

TEST_CASE("layers.instance_norm: each (n, c) normalized over its positions, by hand") {
  InstanceNorm1d in({.num_features = 2});
  Tensor y = in(tiny_input());
  REQUIRE(y.shape() == Shape{2, 2, 3});
  const float eps = 1e-5f;
  const std::vector<double> expected = {-1 / std::sqrt(2.0 / 3 + eps),
                                        0,
                                        1 / std::sqrt(2.0 / 3 + eps),  // (0, 0)
                                        -2 / std::sqrt(8 + eps),
                                        -2 / std::sqrt(8 + eps),  // (0, 1)
                                        4 / std::sqrt(8 + eps),   //
                                        0,
                                        0,
                                        0,  // (1, 0): constant -> 0, eps keeps it finite
                                        -3 / std::sqrt(6 + eps),
                                        0,
                                        3 / std::sqrt(6 + eps)};  // (1, 1)
  for (size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    CHECK(y.data()[i] == doctest::Approx(expected[i]).epsilon(1e-5));
  }
  // Batch independent: sample 1 alone gives the same rows.
  Tensor y1 = in(Tensor::from({10, 10, 10, -3, 0, 3}, {1, 2, 3}));
  for (int i = 0; i < 6; ++i) CHECK(y1.data()[i] == y.data()[6 + i]);
}

TEST_CASE("layers.instance_norm: 2d with affine is group_norm with one group per channel") {
  Rng rng(7);
  Tensor x = Tensor::normal({3, 4, 5, 6}, rng, 1.5f, 2.0f);
  InstanceNorm2d in({.num_features = 4, .affine = true});
  in.weight().copy_(Tensor::from({0.5f, -1.0f, 2.0f, 1.25f}, {4}));
  in.bias().copy_(Tensor::from({0.0f, 0.3f, -0.7f, 1.0f}, {4}));
  GroupNorm gn({.num_groups = 4, .num_channels = 4});
  gn.weight().copy_(in.weight());
  gn.bias().copy_(in.bias());
  Tensor y = in(x);
  CHECK(y.to_vector() == group_norm(x, 4, in.weight(), in.bias(), 1e-5f).to_vector());
  CHECK(y.to_vector() == gn(x).to_vector());
  // And against statistics computed here, in double, for every instance.
  const float* xd = x.data();
  const float* w = in.weight().data();
  const float* b = in.bias().data();
  for (int64_t nc = 0; nc < 12; ++nc) {
    const int64_t c = nc % 4;
    double mean = 0, var = 0;
    for (int s = 0; s < 30; ++s) mean += xd[nc * 30 + s];
    mean /= 30;
    for (int s = 0; s < 30; ++s) var += std::pow(xd[nc * 30 + s] - mean, 2);
    var /= 30;  // biased
    for (int s = 0; s < 30; ++s) {
      double expected = (xd[nc * 30 + s] - mean) / std::sqrt(var + 1e-5) * w[c] + b[c];
      CHECK(y.data()[nc * 30 + s] == doctest::Approx(expected).epsilon(1e-5));
    }
  }
}

TEST_CASE("layers.instance_norm: running stats average the per-instance statistics over N") {
  InstanceNorm1d in({.num_features = 2, .track_running_stats = true});
  Tensor y = in(tiny_input());
  // Batch means: c0 (2 + 10) / 2 = 6, c1 (2 + 0) / 2 = 1. Batch of unbiased instance variances:
  // c0 (1 + 0) / 2 = 0.5, c1 (12 + 9) / 2 = 10.5. (BatchNorm would pool the six values of a
  // channel instead: c0 would get mean 6 and unbiased variance 16.4.) Momentum 0.1 from 0 and 1:
  CHECK(in.running_mean().to_vector() == std::vector<float>{0.6f, 0.1f});
  CHECK(in.running_var().data()[0] == doctest::Approx(0.9 + 0.1 * 0.5));
  CHECK(in.running_var().data()[1] == doctest::Approx(0.9 + 0.1 * 10.5));
  // Training output still uses the instance statistics.
  InstanceNorm1d plain({.num_features = 2});
  CHECK(y.to_vector() == plain(tiny_input()).to_vector());
  // A second step, and num_batches_tracked stays 0 as in PyTorch's InstanceNorm.
  in(tiny_input());
  CHECK(in.running_mean().data()[0] == doctest::Approx(0.9 * 0.6 + 0.1 * 6));
  CHECK(in.running_var().data()[1] == doctest::Approx(0.9 * 1.95 + 0.1 * 10.5));
  for (const NamedTensor& t : in.state_dict())
    if (t.name == "num_batches_tracked") CHECK(t.tensor.item() == 0.0f);

  // Another momentum: running = 0.5 * running + 0.5 * batch statistic.
  InstanceNorm1d half({.num_features = 2, .momentum = 0.5f, .track_running_stats = true});
  half(tiny_input());
  CHECK(half.running_mean().to_vector() == std::vector<float>{3.0f, 0.5f});
  CHECK(half.running_var().to_vector() == std::vector<float>{0.75f, 5.75f});
}

TEST_CASE("layers.instance_norm: eval uses running stats only when it tracks them") {
  SUBCASE("track_running_stats: the running statistics, independent of the batch") {
    InstanceNorm1d in({.num_features = 2, .affine = true, .track_running_stats = true});
    in.running_mean().copy_(Tensor::from({1, -1}, {2}));
    in.running_var().copy_(Tensor::from({4, 0.25f}, {2}));
    in.weight().copy_(Tensor::from({2, 1}, {2}));
    in.bias().copy_(Tensor::from({0, 3}, {2}));
    in.eval();
    Tensor y = in(Tensor::from({3, 5, 0, 1}, {1, 2, 2}));
    CHECK(y.data()[0] == doctest::Approx(2.0 * 2.0 / std::sqrt(4.0 + 1e-5)));
    CHECK(y.data()[1] == doctest::Approx(2.0 * 4.0 / std::sqrt(4.0 + 1e-5)));
    CHECK(y.data()[2] == doctest::Approx(1.0 / std::sqrt(0.25 + 1e-5) + 3.0));
    CHECK(y.data()[3] == doctest::Approx(2.0 / std::sqrt(0.25 + 1e-5) + 3.0));
    Tensor batch = Tensor::from({3, 5, 0, 1, 100, -50, -7, 8}, {2, 2, 2});
    Tensor yb = in(batch);
    for (int i = 0; i < 4; ++i) CHECK(yb.data()[i] == y.data()[i]);
    // Eval leaves the buffers alone, and a single position is fine with running statistics.
    CHECK(in.running_mean().to_vector() == std::vector<float>{1, -1});
    CHECK(in(Tensor::from({3, 0}, {1, 2, 1})).shape() == Shape{1, 2, 1});
  }
  SUBCASE("default (no tracking): instance statistics in eval too, as in training") {
    InstanceNorm2d in({.num_features = 3});
    Rng rng(3);
    Tensor x = Tensor::normal({2, 3, 4, 4}, rng, -1.0f, 3.0f);
    Tensor y_train = in(x);
    in.eval();
    CHECK(in(x).to_vector() == y_train.to_vector());
    CHECK(!in.running_mean().defined());
  }
}

TEST_CASE("layers.instance_norm: state_dict names and parameters as PyTorch's, per option") {
  struct Case {
    bool affine, track;
    std::vector<std::string> names;
  };
  const std::vector<Case> cases = {
      {false, false, {}},
      {true, false, {"weight", "bias"}},
      {false, true, {"running_mean", "running_var", "num_batches_tracked"}},
      {true, true, {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.affine);
    CAPTURE(c.track);
    InstanceNorm2d in({.num_features = 5, .affine = c.affine, .track_running_stats = c.track});
    CHECK(names_of(in) == c.names);
    CHECK(in.parameters().size() == (c.affine ? 2u : 0u));
    for (const NamedTensor& t : in.state_dict()) {
      CAPTURE(t.name);
      CHECK(t.tensor.shape() == (t.name == "num_batches_tracked" ? Shape{} : Shape{5}));
      CHECK((t.dtype == DType::I64) == (t.name == "num_batches_tracked"));
    }
    // A checkpoint round-trips into a fresh layer with the same options.
    InstanceNorm2d twin({.num_features = 5, .affine = c.affine, .track_running_stats = c.track});
    CHECK_NOTHROW(twin.load_state_dict(in.state_dict()));
  }
  // InstanceNorm1d names its tensors the same way.
  InstanceNorm1d in1({.num_features = 2, .affine = true, .track_running_stats = true});
  CHECK(names_of(in1) == cases[3].names);
  CHECK(in1.type_name() == "InstanceNorm1d");
  // A layer without running statistics refuses a checkpoint that has them (strict load).
  InstanceNorm2d no_stats({.num_features = 5});
  InstanceNorm2d with_stats({.num_features = 5, .track_running_stats = true});
  CHECK_THROWS_AS(no_stats.load_state_dict(with_stats.state_dict()), Error);
}

TEST_CASE("layers.instance_norm: gradient checks through the layer in every mode") {
  SUBCASE("1d, no affine, training") {
    InstanceNorm1d in({.num_features = 3});
    CHECK_GRADIENTS("InstanceNorm1d", [&](const Inputs& i) { return in(i[0]); },
                    {testing::param({2, 3, 5}, 1)});
  }
  SUBCASE("2d, affine, training") {
    InstanceNorm2d in({.num_features = 2, .affine = true});
    in.weight().copy_(Tensor::from({0.7f, -1.3f}, {2}));
    in.bias().copy_(Tensor::from({0.2f, -0.4f}, {2}));
    CHECK_GRADIENTS("InstanceNorm2d", [&](const Inputs& i) { return in(i[0]); },
                    {testing::param({3, 2, 3, 2}, 2), in.weight(), in.bias()});
  }
  SUBCASE("2d, track_running_stats, training (the running update is outside the graph)") {
    InstanceNorm2d in({.num_features = 2, .affine = true, .track_running_stats = true});
    in.weight().copy_(Tensor::from({1.5f, 0.5f}, {2}));
    CHECK_GRADIENTS("InstanceNorm2d(track)", [&](const Inputs& i) { return in(i[0]); },
                    {testing::param({2, 2, 3, 3}, 3), in.weight(), in.bias()});
    InstanceNorm1d no_affine({.num_features = 2, .track_running_stats = true});
    CHECK_GRADIENTS("InstanceNorm1d(track)", [&](const Inputs& i) { return no_affine(i[0]); },
                    {testing::param({3, 2, 4}, 4)});
  }
  SUBCASE("2d, track_running_stats, eval (running statistics)") {
    InstanceNorm2d in({.num_features = 2, .affine = true, .track_running_stats = true});
    in.running_mean().copy_(Tensor::from({0.3f, -0.2f}, {2}));
    in.running_var().copy_(Tensor::from({0.5f, 2.0f}, {2}));
    in.weight().copy_(Tensor::from({1.5f, -0.5f}, {2}));
    in.eval();
    CHECK_GRADIENTS("InstanceNorm2d(eval)", [&](const Inputs& i) { return in(i[0]); },
                    {testing::param({2, 2, 2, 3}, 5), in.weight(), in.bias()});
  }
}

TEST_CASE("layers.instance_norm: bad options and input are reported with the shapes") {
  InstanceNorm2d in({.num_features = 3});
  CHECK_THROWS_WITH_AS(
      in(Tensor::ones({2, 4, 5, 5})),
      doctest::Contains("InstanceNorm2d: expected input [N, C, H, W] with C = 3; got [2, 4, 5, 5]"),
      Error);
  // PyTorch's unbatched [C, H, W] is not taken: it would be one sample of 3 channels.
  CHECK_THROWS_WITH_AS(in(Tensor::ones({3, 5, 5})),
                       doctest::Contains("expected input [N, C, H, W] with C = 3; got [3, 5, 5]"),
                       Error);
  InstanceNorm1d in1({.num_features = 3});
  CHECK_THROWS_WITH_AS(
      in1(Tensor::ones({8, 3})),
      doctest::Contains("InstanceNorm1d: expected input [N, C, L] with C = 3; got [8, 3]"), Error);
  // One position per instance: refused whenever instance statistics are used, eval included.
  CHECK_THROWS_WITH_AS(in(Tensor::ones({2, 3, 1, 1})),
                       doctest::Contains("InstanceNorm2d: expected more than 1 position per "
                                         "channel (instance statistics over L or H*W); got input "
                                         "[2, 3, 1, 1]"),
                       Error);
  in.eval();
  CHECK_THROWS_WITH_AS(in(Tensor::ones({2, 3, 1, 1})),
                       doctest::Contains("more than 1 position per channel"), Error);
  // An empty batch is an error, not a division by zero in the running-statistics update.
  InstanceNorm1d tracking({.num_features = 3, .track_running_stats = true});
  CHECK_THROWS_WITH_AS(tracking(Tensor::zeros({0, 3, 4})), doctest::Contains("[0, 3, 4] is empty"),
                       Error);
  CHECK(tracking.running_mean().to_vector() == std::vector<float>{0, 0, 0});
  CHECK_THROWS_WITH_AS(InstanceNorm2d({.num_features = 0}),
                       doctest::Contains("InstanceNorm2d: num_features must be positive; got 0"),
                       Error);
  CHECK_THROWS_WITH_AS(InstanceNorm1d({.num_features = 2, .momentum = 1.5f}),
                       doctest::Contains("InstanceNorm1d: momentum must be in [0, 1]; got 1.5"),
                       Error);
}

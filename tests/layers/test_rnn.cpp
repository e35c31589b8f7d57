// RNN (layers/rnn.h): torch.nn.RNN's outputs and state_dict names, the recurrence with each
// normalization against a hand-unrolled computation in double, per-time-step BatchNorm statistics
// (and the last step's reused beyond the trained length), gradient checks through time, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "layers/layers.h"

using namespace bnlab;

namespace {

using Inputs = std::vector<Tensor>;

// The weights of the PyTorch reference below: D = 3 inputs, H = 4 hidden units.
void set_reference_weights(RNN& rnn) {
  rnn.weight_ih().copy_(Tensor::from(
      {-0.6f, -0.3f, 0.0f, 0.3f, 0.6f, -0.6f, -0.3f, 0.0f, 0.3f, 0.6f, -0.6f, -0.3f}, {4, 3}));
  rnn.weight_hh().copy_(Tensor::from({-0.45f, -0.3f, -0.15f, 0.0f, 0.15f, 0.3f, 0.45f, -0.45f,
                                      -0.3f, -0.15f, 0.0f, 0.15f, 0.3f, 0.45f, -0.45f, -0.3f},
                                     {4, 4}));
  rnn.bias_ih().copy_(Tensor::from({0.1f, -0.2f, 0.3f, -0.4f}, {4}));
  rnn.bias_hh().copy_(Tensor::from({0.05f, 0.0f, -0.15f, 0.25f}, {4}));
}

// x [2, T, 3]: x.flat[i] = 0.13 i - 1 (torch.arange(18) * 0.13 - 1 for T = 3).
Tensor reference_input(int64_t T = 3) {
  std::vector<float> v;
  for (int64_t i = 0; i < 2 * T * 3; ++i) v.push_back(static_cast<float>(i) * 0.13f - 1.0f);
  return Tensor::from(v, {2, T, 3});
}

std::vector<std::string> names_of(const Module& m) {
  std::vector<std::string> names;
  for (const NamedTensor& t : m.state_dict()) names.push_back(t.name);
  return names;
}

// The recurrence written out in double: a_t = x_t W_ih^T + b_ih + h W_hh^T + b_hh, then
// norm(t, a) (a is [N, H], row-major), then h = tanh(a). Returns output [N, T, H] flattened.
std::vector<double> unrolled(const RNN& rnn, const Tensor& x,
                             const std::function<void(int64_t, std::vector<double>&)>& norm) {
  const int64_t N = x.size(0), T = x.size(1), D = x.size(2), H = rnn.options().hidden_size;
  const float* wi = rnn.weight_ih().data();
  const float* wh = rnn.weight_hh().data();
  const float* bi = rnn.bias_ih().data();
  const float* bh = rnn.bias_hh().data();
  std::vector<double> h(static_cast<size_t>(N * H), 0.0), out(static_cast<size_t>(N * T * H));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> a(static_cast<size_t>(N * H));
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < H; ++k) {
        double s = double{bi[k]} + bh[k];
        for (int64_t j = 0; j < D; ++j) s += double{wi[k * D + j]} * x.data()[(n * T + t) * D + j];
        for (int64_t j = 0; j < H; ++j) s += double{wh[k * H + j]} * h[n * H + j];
        a[n * H + k] = s;
      }
    }
    norm(t, a);
    for (int64_t i = 0; i < N * H; ++i) h[i] = std::tanh(a[i]);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < H; ++k) out[(n * T + t) * H + k] = h[n * H + k];
  }
  return out;
}

void check_close(const Tensor& y, const std::vector<double>& expected, double eps = 1e-5) {
  REQUIRE(static_cast<size_t>(y.numel()) == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    CHECK(y.data()[i] == doctest::Approx(expected[i]).epsilon(eps));
  }
}

RNN make_rnn(RNNNorm norm, int64_t steps = 3, uint64_t seed = 5) {
  Rng rng(seed);
  return RNN({.input_size = 3, .hidden_size = 4, .norm = norm, .steps = steps}, rng);
}

}  // namespace

TEST_CASE("layers.rnn: matches torch.nn.RNN on fixed weights, with its state_dict names") {
  RNN rnn = make_rnn(RNNNorm::kNone);
  CHECK(names_of(rnn) ==
        std::vector<std::string>{"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"});
  set_reference_weights(rnn);
  Tensor y = rnn(reference_input());
  REQUIRE(y.shape() == Shape{2, 3, 4});
  // Produced with /usr/bin/python3 (torch 2.x):
  //   rnn = torch.nn.RNN(3, 4, batch_first=True)
  //   rnn.load_state_dict({"weight_ih_l0": <set_reference_weights' values>, ...})
  //   out, hn = rnn(torch.arange(18, dtype=torch.float32).mul(0.13).sub(1.0).reshape(2, 3, 3))
  //   print(out.flatten())      # and hn[0] == out[:, -1]
  const std::vector<double> torch_out = {
      0.7661753,  -0.5212103, 0.2241297, -0.0059999, 0.4119560,  -0.3789890, 0.0752862, -0.2229425,
      0.2222517,  -0.2558852, 0.1271286, -0.2486321, -0.0419753, -0.2231797, 0.2241297, -0.3425688,
      -0.3281706, 0.0716411,  0.2190750, -0.5263704, -0.5721254, 0.3047223,  0.2324232, -0.5355431};
  for (size_t i = 0; i < torch_out.size(); ++i) {
    CAPTURE(i);
    CHECK(y.data()[i] == doctest::Approx(torch_out[i]).epsilon(1e-5));
  }
  check_close(y, unrolled(rnn, reference_input(), [](int64_t, std::vector<double>&) {}));
}

TEST_CASE("layers.rnn: PyTorch's init, U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias") {
  Rng rng(3);
  RNN rnn({.input_size = 5, .hidden_size = 16}, rng);
  for (const auto& [name, t] : rnn.named_parameters()) {
    CAPTURE(name);
    float lo = 1, hi = -1;
    for (float v : t.to_vector()) lo = std::min(lo, v), hi = std::max(hi, v);
    CHECK(lo >= -0.25f);
    CHECK(hi <= 0.25f);
    CHECK(hi - lo > 0.2f);  // spread over the range, not constant
  }
  Rng rng2(3);
  RNN no_bias({.input_size = 5, .hidden_size = 16, .bias = false}, rng2);
  CHECK(names_of(no_bias) == std::vector<std::string>{"weight_ih_l0", "weight_hh_l0"});
}

TEST_CASE("layers.rnn: layer norm over the hidden units, one LayerNorm shared by every step") {
  RNN rnn = make_rnn(RNNNorm::kLayer);
  CHECK(names_of(rnn) == std::vector<std::string>{"weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                                  "bias_hh_l0", "norm.weight", "norm.bias"});
  set_reference_weights(rnn);
  const std::vector<double> g = {1.5, -0.5, 0.8, 1.1}, b = {0.1, 0.0, -0.3, 0.2};
  for (const auto& [name, t] : rnn.named_parameters()) {
    if (name == "norm.weight") t.copy_(Tensor::from({1.5f, -0.5f, 0.8f, 1.1f}, {4}));
    if (name == "norm.bias") t.copy_(Tensor::from({0.1f, 0.0f, -0.3f, 0.2f}, {4}));
  }
  auto layer_norm_rows = [&](int64_t, std::vector<double>& a) {
    for (size_t n = 0; n < a.size() / 4; ++n) {
      double mean = 0, var = 0;
      for (size_t k = 0; k < 4; ++k) mean += a[n * 4 + k] / 4;
      for (size_t k = 0; k < 4; ++k) var += (a[n * 4 + k] - mean) * (a[n * 4 + k] - mean) / 4;
      for (size_t k = 0; k < 4; ++k)
        a[n * 4 + k] = (a[n * 4 + k] - mean) / std::sqrt(var + 1e-5) * g[k] + b[k];
    }
  };
  check_close(rnn(reference_input()), unrolled(rnn, reference_input(), layer_norm_rows));
  // Per sample: the same in eval mode, for a batch of one, and for a longer sequence.
  rnn.eval();
  check_close(rnn(reference_input(5)), unrolled(rnn, reference_input(5), layer_norm_rows));
  Tensor first = select(rnn(reference_input()), 0, 0);
  Tensor alone = select(rnn(narrow(reference_input(), 0, 0, 1)), 0, 0);
  CHECK(first.to_vector() == alone.to_vector());
}

TEST_CASE("layers.rnn: batch norm keeps statistics per time step, later steps reuse the last") {
  RNN rnn = make_rnn(RNNNorm::kBatch, /*steps=*/3);
  std::vector<std::string> expected = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"};
  for (int t = 0; t < 3; ++t)
    for (const char* p : {"weight", "bias"})
      expected.push_back("norm." + std::to_string(t) + "." + p);
  for (int t = 0; t < 3; ++t)
    for (const char* p : {"running_mean", "running_var", "num_batches_tracked"})
      expected.push_back("norm." + std::to_string(t) + "." + p);
  CHECK(names_of(rnn) == expected);
  set_reference_weights(rnn);
  // A different gamma per step, so that using the wrong step's module shows.
  auto params = rnn.named_parameters();
  auto find = [&](const std::string& name) {
    for (const auto& [n, t] : params)
      if (n == name) return t;
    FAIL("no parameter ", name);
    return Tensor();
  };
  for (int t = 0; t < 3; ++t) {
    find("norm." + std::to_string(t) + ".weight").fill_(1.0f + 0.5f * static_cast<float>(t));
    find("norm." + std::to_string(t) + ".bias").fill_(-0.1f * static_cast<float>(t));
  }
  auto gamma = [](int64_t t) { return 1.0 + 0.5 * static_cast<double>(std::min<int64_t>(t, 2)); };
  auto beta = [](int64_t t) { return -0.1 * static_cast<double>(std::min<int64_t>(t, 2)); };

  // Training: each step's batch statistics over N (biased variance), per hidden unit.
  std::vector<std::vector<double>> means(3, std::vector<double>(4)), vars = means;
  auto batch_stats = [&](int64_t t, std::vector<double>& a) {
    const size_t N = a.size() / 4;
    for (size_t k = 0; k < 4; ++k) {
      double mean = 0, var = 0;
      for (size_t n = 0; n < N; ++n) mean += a[n * 4 + k] / static_cast<double>(N);
      for (size_t n = 0; n < N; ++n)
        var += (a[n * 4 + k] - mean) * (a[n * 4 + k] - mean) / static_cast<double>(N);
      for (size_t n = 0; n < N; ++n)
        a[n * 4 + k] = (a[n * 4 + k] - mean) / std::sqrt(var + 1e-5) * gamma(t) + beta(t);
      means[static_cast<size_t>(t)][k] = mean;
      vars[static_cast<size_t>(t)][k] = var;
    }
  };
  // Random samples: on the evenly spaced reference input unit 2's pre-activation is the same for
  // every sample (a batch variance of 0), where float rounding alone decides the normalized value.
  Rng data_rng(4);
  const Tensor x = Tensor::uniform({5, 3, 3}, data_rng, -1.0f, 1.0f);
  check_close(rnn(x), unrolled(rnn, x, batch_stats));
  // Each step's running averages moved towards its own batch's statistics (momentum 0.1; the
  // unbiased variance, N = 5).
  for (const auto& [name, buf] : rnn.named_buffers()) {
    for (int t = 0; t < 3; ++t) {
      CAPTURE(name);
      const std::string prefix = "norm." + std::to_string(t) + ".";
      for (size_t k = 0; k < 4; ++k) {
        if (name == prefix + "running_mean")
          CHECK(buf.data()[k] == doctest::Approx(0.1 * means[t][k]).epsilon(1e-5));
        if (name == prefix + "running_var")
          CHECK(buf.data()[k] == doctest::Approx(0.9 + 0.1 * 5.0 / 4.0 * vars[t][k]).epsilon(1e-5));
      }
    }
  }

  // Eval on a sequence longer than the 3 trained steps: steps 3 and 4 use norm.2's running
  // statistics and affine.
  std::vector<std::vector<double>> rm(3), rv(3);
  for (int t = 0; t < 3; ++t) {
    for (const auto& [name, buf] : rnn.named_buffers()) {
      if (name == "norm." + std::to_string(t) + ".running_mean")
        rm[t] = std::vector<double>(buf.data(), buf.data() + 4);
      if (name == "norm." + std::to_string(t) + ".running_var")
        rv[t] = std::vector<double>(buf.data(), buf.data() + 4);
    }
  }
  auto running_stats = [&](int64_t t, std::vector<double>& a) {
    const size_t s = static_cast<size_t>(std::min<int64_t>(t, 2));
    for (size_t i = 0; i < a.size(); ++i)
      a[i] = (a[i] - rm[s][i % 4]) / std::sqrt(rv[s][i % 4] + 1e-5) * gamma(t) + beta(t);
  };
  rnn.eval();
  check_close(rnn(reference_input(5)), unrolled(rnn, reference_input(5), running_stats));
}

TEST_CASE("layers.rnn: gradient checks through time for every normalization") {
  for (RNNNorm norm : {RNNNorm::kNone, RNNNorm::kLayer, RNNNorm::kBatch}) {
    CAPTURE(to_string(norm));
    Rng rng(11);
    RNN rnn({.input_size = 3, .hidden_size = 4, .norm = norm, .steps = 3}, rng);
    // Normalization parameters away from their 1 / 0 init, so their gradients are exercised.
    for (const auto& [name, t] : rnn.named_parameters())
      if (name.rfind("norm.", 0) == 0) t.copy_(testing::param(t.shape(), 7, 0.5f, 1.5f));
    Inputs in = {testing::param({4, 3, 3}, 1)};
    for (const Tensor& p : rnn.parameters()) in.push_back(p);
    CHECK_GRADIENTS(
        "RNN", [&](const Inputs& i) { return rnn(i[0]); }, in);
    if (norm == RNNNorm::kBatch) {  // running statistics, and steps past the trained length
      rnn.eval();
      Inputs longer = {testing::param({2, 5, 3}, 2)};
      for (const Tensor& p : rnn.parameters()) longer.push_back(p);
      CHECK_GRADIENTS(
          "RNN(eval)", [&](const Inputs& i) { return rnn(i[0]); }, longer);
    }
  }
}

TEST_CASE("layers.rnn: bad input and options are refused with the shapes") {
  RNN rnn = make_rnn(RNNNorm::kNone);
  CHECK_THROWS_WITH(rnn(Tensor::zeros({2, 3})), doctest::Contains("RNN: expected input [N, T, 3]"));
  CHECK_THROWS_WITH(rnn(Tensor::zeros({2, 3, 5})), doctest::Contains("[2, 3, 5]"));
  CHECK_THROWS_WITH(rnn(Tensor::zeros({2, 0, 3})), doctest::Contains("empty"));
  Rng rng(1);
  CHECK_THROWS_WITH(RNN({.input_size = 3, .hidden_size = 4, .norm = RNNNorm::kBatch}, rng),
                    doctest::Contains("steps > 0"));
  CHECK_THROWS_WITH(RNN({.input_size = 0, .hidden_size = 4}, rng),
                    doctest::Contains("must be positive"));
  // Found by the API attack: a bad eps with norm layer was accepted until the first forward.
  CHECK_THROWS_WITH_AS(
      RNN({.input_size = 3, .hidden_size = 4, .norm = RNNNorm::kLayer, .eps = -1.0f}, rng),
      doctest::Contains("RNN: eps must be >= 0 for norm layer; got -1"), Error);
  CHECK_THROWS_WITH_AS(
      RNN({.input_size = 3, .hidden_size = 4, .norm = RNNNorm::kLayer, .eps = NAN}, rng),
      doctest::Contains("RNN: eps must be >= 0 for norm layer; got nan"), Error);
  CHECK_THROWS_WITH_AS(
      RNN({.input_size = 3, .hidden_size = 4, .norm = RNNNorm::kBatch, .steps = 2, .eps = 0.0f},
          rng),
      doctest::Contains("RNN: eps must be positive for norm batch; got 0"), Error);
  CHECK_NOTHROW(RNN({.input_size = 3, .hidden_size = 4, .eps = -1.0f}, rng));  // no norm: unused
}

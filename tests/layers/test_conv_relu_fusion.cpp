// Conv + bias + ReLU in one pass: conv2d_relu equals relu(conv2d) bit for bit on every conv path
// (NaN passing, -0 kept), forward and, with gradients, backward (one op), where a non-finite
// dout stops at the units relu turned off; Conv2d fuses with
// exactly ReLU; Sequential offers the fusion past the Identity a folded BatchNorm leaves (not past
// a hooked one); a folded conv net's inference is bit-identical fused and unfused; in training
// Conv2d + ReLU + MaxPool2d pools before the relu with the same losses and gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

#include "conv_path_cases.h"
#include "core/autograd.h"
#include "core/ops/conv_direct.h"
#include "core/ops/conv_path.h"
#include "gradcheck.h"
#include "layers/layers.h"
#include "optim/optim.h"

using namespace bnlab;
using bnlab::testing::conv_cases;
using bnlab::testing::ConvCase;
using bnlab::testing::require_path;
using bnlab::testing::same_bits;

namespace {

// A module that records which module Sequential offers it as a fusion partner, and never fuses.
class Probe : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  FusedForward forward_fused(std::span<Module* const> next, const Tensor&) override {
    offered = next[0]->type_name();
    return {};
  }
  std::string type_name() const override { return "Probe"; }
  std::string offered;
};

}  // namespace

TEST_CASE("ops.conv2d_relu: equals relu(conv2d) bit for bit on every conv path") {
  for (const ConvCase& c : conv_cases()) {
    CAPTURE(c.name);
    require_path(c);
    detail::ScopedConvPathMode scoped(c.mode);
    Rng rng(4);
    Tensor x = Tensor::normal(c.x, rng), w = Tensor::normal(c.w, rng);
    Tensor b = Tensor::normal({c.w[0]}, rng);
    x.data()[7] = std::numeric_limits<float>::quiet_NaN();  // reaches some outputs
    NoGradGuard no_grad;
    const Tensor fused = conv2d_relu(x, w, b, c.stride, c.padding);
    const Tensor two_ops = relu(conv2d(x, w, b, c.stride, c.padding));
    CHECK(same_bits(fused, two_ops));
    int64_t nans = 0, zeros = 0, positive = 0;
    for (int64_t i = 0; i < fused.numel(); ++i) {
      const float v = fused.data()[i];
      nans += std::isnan(v) ? 1 : 0;
      zeros += v == 0.0f ? 1 : 0;
      positive += v > 0.0f ? 1 : 0;
    }
    CHECK(nans > 0);  // NaN passes through the ReLU, as torch.relu
    CHECK(zeros > 0);
    CHECK(positive > 0);
    // Without a bias.
    CHECK(same_bits(conv2d_relu(x, w, Tensor(), c.stride, c.padding),
                    relu(conv2d(x, w, Tensor(), c.stride, c.padding))));
  }
}

TEST_CASE("ops.conv2d_relu: with gradients one op, the two ops' values and gradients bit for bit") {
  using bnlab::testing::param;
  using Inputs = std::vector<Tensor>;
  Tensor x = param({2, 3, 6, 7}, 31), w = param({4, 3, 3, 3}, 32), b = param({4}, 33);
  const Tensor y = conv2d_relu(x, w, b, 1, 1);
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(std::string(y.grad_fn()->op) == "conv2d_relu");
  // Every conv path, with and without a bias: output, dx, dw and db of a loss that weights each
  // output differently.
  for (const ConvCase& c : conv_cases()) {
    CAPTURE(c.name);
    require_path(c);
    for (const bool with_bias : {true, false}) {
      CAPTURE(with_bias);
      detail::ScopedConvPathMode scoped(c.mode);
      auto run = [&](bool fused) {
        Rng rng(9);
        Tensor xi = Tensor::normal(c.x, rng).set_requires_grad(true);
        Tensor wi = Tensor::normal(c.w, rng).set_requires_grad(true);
        Tensor bi = with_bias ? Tensor::normal({c.w[0]}, rng).set_requires_grad(true) : Tensor();
        const Tensor out = fused ? conv2d_relu(xi, wi, bi, c.stride, c.padding)
                                 : relu(conv2d(xi, wi, bi, c.stride, c.padding));
        Tensor weights = Tensor::normal(out.shape(), rng);
        sum(mul(out, weights)).backward();
        std::vector<Tensor> got{out, xi.grad(), wi.grad()};
        if (with_bias) got.push_back(bi.grad());
        return got;
      };
      const std::vector<Tensor> fused = run(true), two_ops = run(false);
      for (size_t i = 0; i < fused.size(); ++i) {
        CAPTURE(i);
        CHECK(same_bits(fused[i], two_ops[i]));
      }
    }
  }
  CHECK_GRADIENTS("conv2d_relu",
                  [](const Inputs& in) { return conv2d_relu(in[0], in[1], in[2], 1, 1); },
                  {param({2, 3, 6, 7}, 34), param({4, 3, 3, 3}, 35), param({4}, 36)});
}

TEST_CASE("ops.conv2d_relu: a NaN or inf in dout stops at the units relu turned off") {
  // relu's backward selects, as PyTorch's threshold_backward: dout at an output <= 0 does not
  // reach the conv, even when it is NaN or inf. So the gradients equal those of a dout with 0
  // there, bit for bit, fused and as two ops, on every path.
  for (const ConvCase& c : conv_cases()) {
    CAPTURE(c.name);
    require_path(c);
    detail::ScopedConvPathMode scoped(c.mode);
    auto run = [&](bool fused, float off_value) {
      Rng rng(11);
      Tensor xi = Tensor::normal(c.x, rng).set_requires_grad(true);
      Tensor wi = Tensor::normal(c.w, rng).set_requires_grad(true);
      Tensor bi = Tensor::normal({c.w[0]}, rng).set_requires_grad(true);
      const Tensor out = fused ? conv2d_relu(xi, wi, bi, c.stride, c.padding)
                               : relu(conv2d(xi, wi, bi, c.stride, c.padding));
      Tensor dout = Tensor::normal(out.shape(), rng);
      int64_t off = 0, k = 0;
      for (int64_t i = 0; i < out.numel(); ++i) {
        if (out.data()[i] > 0.0f) continue;
        const float bad[3] = {std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY};
        dout.data()[i] = std::isnan(off_value) ? bad[k++ % 3] : off_value;
        ++off;
      }
      REQUIRE(off > 0);
      out.backward(dout);
      return std::vector<Tensor>{xi.grad(), wi.grad(), bi.grad()};
    };
    const std::vector<Tensor> want = run(false, 0.0f);
    for (const bool fused : {true, false}) {
      CAPTURE(fused);
      const std::vector<Tensor> got = run(fused, std::numeric_limits<float>::quiet_NaN());
      for (size_t i = 0; i < got.size(); ++i) {
        CAPTURE(i);
        CHECK(same_bits(got[i], want[i]));
      }
    }
  }
}

TEST_CASE("layers.conv_relu_fusion: Conv2d fuses with exactly ReLU") {
  Rng rng(2);
  Conv2d conv(Conv2dOptions{.in_channels = 2, .out_channels = 3, .kernel = 3, .padding = 1}, rng);
  ReLU relu_layer;
  LeakyReLU leaky;
  const Tensor x = Tensor::normal({2, 2, 5, 5}, rng);
  NoGradGuard no_grad;
  Module* relu_next[] = {&relu_layer, &leaky};
  Module* leaky_next[] = {&leaky};
  const FusedForward fused = conv.forward_fused(relu_next, x);
  REQUIRE(fused.output.defined());
  CHECK(fused.modules == 1);
  CHECK(same_bits(fused.output, relu_layer(conv(x))));
  CHECK_FALSE(conv.forward_fused(leaky_next, x).output.defined());
  CHECK_THROWS_WITH(conv.forward_fused(relu_next, Tensor::normal({2, 3, 5, 5}, rng)),
                    doctest::Contains("Conv2d: expected input [N, 2, H, W]"));
}

TEST_CASE("layers.conv_relu_fusion: a Conv2d subclass's own forward runs inside Sequential") {
  // A weight-scaled conv, as a user's weight-standardized or masked conv would be: Sequential used
  // to run the fused op of the base class, skipping this forward.
  class HalfConv2d : public Conv2d {
   public:
    using Conv2d::Conv2d;
    Tensor forward(const Tensor& x) override { return mul_scalar(Conv2d::forward(x), 0.5f); }
  };
  Rng rng(7);
  const Conv2dOptions options{.in_channels = 2, .out_channels = 3, .kernel = 3, .padding = 1};
  auto conv = std::make_shared<HalfConv2d>(options, rng);
  const Tensor x = Tensor::normal({2, 2, 6, 6}, rng);
  SUBCASE("then ReLU, without gradients") {
    Sequential net;
    net.add(conv);
    net.add(std::make_shared<ReLU>());
    NoGradGuard no_grad;
    CHECK(same_bits(net(x), relu((*conv)(x))));
  }
  SUBCASE("then ReLU and MaxPool2d, with gradients") {
    Sequential net;
    net.add(conv);
    net.add(std::make_shared<ReLU>());
    net.add(std::make_shared<MaxPool2d>(2));
    CHECK(same_bits(net(x), max_pool2d(relu((*conv)(x)), 2)));
  }
  SUBCASE("then BatchNorm2d and ReLU, in training") {
    Sequential net;
    net.add(conv);
    auto bn = std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 3});
    net.add(bn);
    net.add(std::make_shared<ReLU>());
    BatchNorm2d twin(BatchNormOptions{.num_features = 3});
    CHECK(same_bits(net(x), relu(twin((*conv)(x)))));
    CHECK(same_bits(bn->running_mean(), twin.running_mean()));
  }
}

TEST_CASE("layers.conv_relu_fusion: Sequential offers the fusion past unhooked Identity children") {
  auto probe = std::make_shared<Probe>();
  auto identity = std::make_shared<Identity>();
  Sequential seq;
  seq.add(probe);
  seq.add(identity);
  seq.add(std::make_shared<Identity>());
  seq.add(std::make_shared<ReLU>());
  Rng rng(1);
  const Tensor x = Tensor::normal({2, 3}, rng);
  (void)seq(x);
  CHECK(probe->offered == "ReLU");
  // A hooked Identity is a module whose output someone sees: it is not skipped, and a hooked
  // module never fuses, so nothing is offered.
  identity->register_forward_hook([](const Module&, const Tensor&, const Tensor&) {});
  probe->offered.clear();
  (void)seq(x);
  CHECK(probe->offered.empty());
}

TEST_CASE("layers.conv_relu_fusion: a folded conv net's inference is bit-identical fused") {
  // conv-BN-ReLU-pool twice (lenet-like: a thin 5x5 first layer, a 5x5 second), eval, folded.
  Rng rng(6);
  auto seq = std::make_shared<Sequential>();
  seq->add(std::make_shared<Conv2d>(
      Conv2dOptions{.in_channels = 1, .out_channels = 8, .kernel = 5, .padding = 2}, rng));
  seq->add(std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 8}));
  seq->add(std::make_shared<ReLU>());
  seq->add(std::make_shared<MaxPool2d>(2));
  seq->add(std::make_shared<Conv2d>(
      Conv2dOptions{.in_channels = 8, .out_channels = 16, .kernel = 5, .padding = 2}, rng));
  seq->add(std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 16}));
  seq->add(std::make_shared<ReLU>());
  for (int step = 0; step < 2; ++step) (void)(*seq)(Tensor::normal({4, 1, 12, 12}, rng));
  seq->eval();
  REQUIRE(fold_batch_norm(*seq) == 2);
  const Tensor x = Tensor::normal({3, 1, 12, 12}, rng);
  NoGradGuard no_grad;
  const Tensor fused = (*seq)(x);
  Tensor h = x;
  for (const auto& [name, child] : seq->children()) h = (*child)(h);  // never fused
  CHECK(same_bits(fused, h));
}

TEST_CASE("layers.conv_relu_fusion: in training Conv2d + ReLU + MaxPool2d pool before the relu") {
  // Twin nets, the second's ReLUs hooked so nothing fuses; 3 SGD steps on the same batches: the
  // losses, every gradient and every parameter agree bit for bit (random normal data: no conv
  // output is exactly -0.0, the one place the fused order may flip a zero's sign). Both pool
  // shapes: 2x2 (lenet) and 3x3 stride 2 padding 1 (padded cells, overlapping windows).
  for (const int64_t kernel : {2, 3}) {
    CAPTURE(kernel);
    auto make = [&] {
      Rng rng(5);
      auto seq = std::make_shared<Sequential>();
      seq->add(std::make_shared<Conv2d>(
          Conv2dOptions{.in_channels = 2, .out_channels = 4, .kernel = 3, .padding = 1}, rng));
      seq->add(std::make_shared<ReLU>());
      seq->add(std::make_shared<MaxPool2d>(kernel, 2, kernel == 3 ? 1 : 0));
      seq->add(std::make_shared<Flatten>());
      seq->add(
          std::make_shared<Dense>(DenseOptions{.in_features = 4 * 4 * 4, .out_features = 3}, rng));
      return seq;
    };
    auto fused = make(), unfused = make();
    (*unfused)[1].register_forward_hook([](const Module&, const Tensor&, const Tensor&) {});
    Sgd opt_fused(fused->parameters(), SgdOptions{.lr = 0.1f, .momentum = 0.9f});
    Sgd opt_unfused(unfused->parameters(), SgdOptions{.lr = 0.1f, .momentum = 0.9f});
    Rng rng(6);
    std::vector<int64_t> labels{0, 1, 2, 0, 1};
    for (int step = 0; step < 3; ++step) {
      const Tensor x = Tensor::normal({5, 2, 8, 8}, rng);
      Tensor loss_f = cross_entropy((*fused)(x), labels);
      Tensor loss_u = cross_entropy((*unfused)(x), labels);
      CHECK(same_bits(loss_f, loss_u));
      opt_fused.zero_grad();
      opt_unfused.zero_grad();
      loss_f.backward();
      loss_u.backward();
      const auto pf = fused->parameters(), pu = unfused->parameters();
      for (size_t i = 0; i < pf.size(); ++i) CHECK(same_bits(pf[i].grad(), pu[i].grad()));
      opt_fused.step();
      opt_unfused.step();
    }
  }
}

TEST_CASE("layers.conv_relu_fusion: with gradients the fused op is relu over the pool") {
  // Without gradients conv2d_relu's single pass runs instead (1 module fused).
  Rng rng(7);
  Conv2d conv(Conv2dOptions{.in_channels = 2, .out_channels = 3, .kernel = 3, .padding = 1}, rng);
  ReLU relu_layer;
  MaxPool2d pool(2);
  Module* next[] = {&relu_layer, &pool};
  const Tensor x = Tensor::normal({2, 2, 6, 6}, rng);
  const FusedForward training = conv.forward_fused(next, x);
  REQUIRE(training.output.defined());
  CHECK(training.modules == 2);
  CHECK(std::string(training.output.grad_fn()->op) == "relu");
  CHECK(same_bits(training.output, pool(relu_layer(conv(x)))));
  NoGradGuard no_grad;
  const FusedForward inference = conv.forward_fused(next, x);
  CHECK(inference.modules == 1);
  CHECK(same_bits(inference.output, relu_layer(conv(x))));
}

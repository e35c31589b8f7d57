// Sequential's training fusion of BatchNorm1d/2d + ReLU (Module::forward_fused,
// batch_norm_relu_train) and of BatchNorm2d + ReLU + MaxPool2d(2)
// (batch_norm_relu_max_pool2x2_train): when it is taken (the output's node is "batch_norm_relu" or
// "batch_norm_relu_max_pool2x2") and when not (hooks, BatchRenorm, noise, no running statistics,
// LeakyReLU, eval mode, other pools), with bit-identical outputs, gradients and running statistics
// either way; a hook on the BatchNorm sees its own output; small CNNs trained 3 steps with and
// without the fusions end with bit-identical state. BatchNorm1d/2d + Sigmoid likewise
// (batch_norm_sigmoid_train, the paper-mlp's pair).
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "layers/layers.h"
#include "optim/optim.h"

using namespace bnlab;

namespace {

// Bitwise equality of two tensors' values (NaN == NaN, -0 != +0).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  return std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

void check_same_state(const Module& a, const Module& b) {
  std::vector<NamedTensor> sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    CAPTURE(sa[i].name);
    CHECK(sa[i].name == sb[i].name);
    CHECK(same_bits(sa[i].tensor, sb[i].tensor));
  }
}

const char* node_name(const Tensor& t) { return t.grad_fn() ? t.grad_fn()->op : "(leaf)"; }

// The children of `seq` one after the other through operator(): never fused.
Tensor unfused_forward(Sequential& seq, const Tensor& x) {
  Tensor h = x;
  for (const auto& [name, child] : seq.children()) h = (*child)(h);
  return h;
}

// A BatchNorm (weight and bias made non-trivial) then an activation (and `more` modules after it),
// built twice identically.
template <class Norm>
std::shared_ptr<Sequential> make_pair_model(std::shared_ptr<Module> activation, int64_t C,
                                            BatchNormOptions o = {},
                                            std::vector<std::shared_ptr<Module>> more = {}) {
  o.num_features = C;
  auto norm = std::make_shared<Norm>(o);
  Rng rng(5);
  auto seq = std::make_shared<Sequential>();
  seq->add(norm);
  seq->add(std::move(activation));
  for (auto& m : more) seq->add(std::move(m));
  for (const Tensor& p : seq->parameters()) p.copy_(Tensor::uniform(p.shape(), rng, -1.0f, 1.5f));
  return seq;
}

// Three training steps of `a` through Sequential::forward and of `b` through unfused_forward on the
// same inputs; checks outputs, input grads and the whole state (parameters after an SGD-like
// update, running statistics, num_batches_tracked) bit for bit, and returns the last output of `a`.
Tensor three_steps(Sequential& a, Sequential& b, const Shape& shape) {
  Rng rng(9);
  Tensor out_a;
  for (int step = 0; step < 3; ++step) {
    Tensor x = Tensor::normal(shape, rng, 0.2f, 1.1f);
    Tensor xa = x.clone().set_requires_grad(), xb = x.clone().set_requires_grad();
    out_a = a(xa);
    Tensor out_b = unfused_forward(b, xb);
    CHECK(same_bits(out_a, out_b));
    Tensor dz = Tensor::normal(out_a.shape(), rng);
    out_a.backward(dz);
    out_b.backward(dz);
    CHECK(same_bits(xa.grad(), xb.grad()));
    for (Sequential* m : {&a, &b}) {
      NoGradGuard no_grad;
      for (const Tensor& p : m->parameters()) {
        float* v = p.data();
        const float* g = p.grad().data();
        for (int64_t i = 0; i < p.numel(); ++i) v[i] -= 0.1f * g[i];
      }
      m->zero_grad();
    }
    check_same_state(a, b);
  }
  return out_a;
}

// Three steps of cross-entropy training of `fused` and `unfused` (same architecture and init, the
// second with fusion switched off by hooks) on the same random batches of `shape`, labels i % 3;
// the losses must agree bit for bit at every step.
template <class Optimizer>
void train_twins(Sequential& fused, Sequential& unfused, Optimizer& opt_fused,
                 Optimizer& opt_unfused, const Shape& shape, uint64_t seed) {
  Rng rng(seed);
  std::vector<int64_t> labels(static_cast<size_t>(shape[0]));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int64_t>(i % 3);
  for (int step = 0; step < 3; ++step) {
    Tensor x = Tensor::normal(shape, rng);
    Tensor loss_fused = cross_entropy(fused(x), labels);
    Tensor loss_unfused = cross_entropy(unfused(x), labels);
    CHECK(same_bits(loss_fused, loss_unfused));
    opt_fused.zero_grad();
    opt_unfused.zero_grad();
    loss_fused.backward();
    loss_unfused.backward();
    opt_fused.step();
    opt_unfused.step();
  }
}

}  // namespace

TEST_CASE("layers.bn_relu_fusion: Sequential fuses a training BatchNorm + ReLU, bit-identically") {
  SUBCASE("BatchNorm2d [N, C, H, W]") {
    auto a = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3);
    auto b = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3);
    CHECK(std::string(node_name(three_steps(*a, *b, {4, 3, 5, 6}))) == "batch_norm_relu");
  }
  SUBCASE("BatchNorm1d [N, C]") {
    auto a = make_pair_model<BatchNorm1d>(std::make_shared<ReLU>(), 70);
    auto b = make_pair_model<BatchNorm1d>(std::make_shared<ReLU>(), 70);
    CHECK(std::string(node_name(three_steps(*a, *b, {9, 70}))) == "batch_norm_relu");
  }
  SUBCASE("cumulative momentum") {
    BatchNormOptions o{.momentum = std::nullopt};
    auto a = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 2, o);
    auto b = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 2, o);
    CHECK(std::string(node_name(three_steps(*a, *b, {3, 2, 4, 4}))) == "batch_norm_relu");
  }
  SUBCASE("without grad mode it fuses too and updates the statistics") {
    auto a = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 2);
    auto b = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 2);
    Rng rng(3);
    Tensor x = Tensor::normal({3, 2, 4, 4}, rng);
    NoGradGuard no_grad;
    CHECK(same_bits((*a)(x), unfused_forward(*b, x)));
    check_same_state(*a, *b);
    CHECK(static_cast<BatchNorm&>((*a)[0]).num_batches_tracked() == 1);
  }
}

TEST_CASE("layers.bn_relu_fusion: pairs that must not fuse run unfused with the same results") {
  // Each case checks that the last node is not the fused op and that the model still gives what
  // its children give one by one (three_steps).
  auto check_not_fused = [](Sequential& a, Sequential& b, const Shape& shape) {
    CHECK(std::string(node_name(three_steps(a, b, shape))) != "batch_norm_relu");
  };
  auto noop = [](const Module&, const Tensor&, const Tensor&) {};
  SUBCASE("a forward hook on the BatchNorm") {
    auto a = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3);
    auto b = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3);
    (*a)[0].register_forward_hook(noop);
    check_not_fused(*a, *b, {4, 3, 2, 2});
  }
  SUBCASE("a forward hook on the ReLU") {
    auto a = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3);
    auto b = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3);
    (*a)[1].register_forward_hook(noop);
    check_not_fused(*a, *b, {4, 3, 2, 2});
  }
  SUBCASE("BatchRenorm2d (a BatchNorm subclass)") {
    // warmup 0, ramp 0: r and d act from the first step, so the output is not batch norm's.
    auto make = [] {
      auto seq = std::make_shared<Sequential>();
      seq->add(std::make_shared<BatchRenorm2d>(BatchNormOptions{.num_features = 3},
                                               BatchRenormOptions{.warmup = 0, .ramp = 0}));
      seq->add(std::make_shared<ReLU>());
      return seq;
    };
    auto a = make(), b = make();
    check_not_fused(*a, *b, {4, 3, 2, 2});
  }
  SUBCASE("LeakyReLU") {
    auto a = make_pair_model<BatchNorm2d>(std::make_shared<LeakyReLU>(0.1f), 3);
    auto b = make_pair_model<BatchNorm2d>(std::make_shared<LeakyReLU>(0.1f), 3);
    check_not_fused(*a, *b, {4, 3, 2, 2});
  }
  SUBCASE("noisy batch norm") {
    BatchNormOptions o{.noise = BatchNormNoise{.seed = 3}};
    auto a = make_pair_model<BatchNorm1d>(std::make_shared<ReLU>(), 3, o);
    auto b = make_pair_model<BatchNorm1d>(std::make_shared<ReLU>(), 3, o);
    check_not_fused(*a, *b, {6, 3});
  }
  SUBCASE("no running statistics") {
    BatchNormOptions o{.track_running_stats = false};
    auto a = make_pair_model<BatchNorm1d>(std::make_shared<ReLU>(), 3, o);
    auto b = make_pair_model<BatchNorm1d>(std::make_shared<ReLU>(), 3, o);
    check_not_fused(*a, *b, {6, 3});
  }
  SUBCASE("eval mode") {
    auto a = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3);
    auto b = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3);
    a->eval();
    b->eval();
    check_not_fused(*a, *b, {4, 3, 2, 2});
  }
}

TEST_CASE("layers.bn_relu_fusion: a hook on the BatchNorm sees BatchNorm's output, not relu's") {
  auto seq = make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 2);
  Tensor seen;
  (*seq)[0].register_forward_hook(
      [&seen](const Module&, const Tensor&, const Tensor& y) { seen = y.clone(); });
  Rng rng(4);
  Tensor x = Tensor::normal({3, 2, 3, 3}, rng);
  Tensor z = (*seq)(x);
  REQUIRE(seen.defined());
  bool has_negative = false;
  for (float v : seen.to_vector()) has_negative = has_negative || v < 0.0f;
  CHECK(has_negative);  // BN's output, before relu
  CHECK(same_bits(z, relu(seen)));
  // Once the hook is gone, the next step fuses.
  (*seq)[0].clear_forward_hooks();
  CHECK(std::string(node_name((*seq)(x))) == "batch_norm_relu");
}

TEST_CASE("layers.bn_relu_fusion: a small CNN trains 3 steps bit-identically fused and unfused") {
  // The unfused twin gets a do-nothing forward hook on each ReLU, which switches the fusion off
  // while Sequential::forward (nested Sequentials included) runs as usual.
  auto make = [] {
    Rng rng(21);
    auto block = std::make_shared<Sequential>();
    block->add(std::make_shared<Conv2d>(
        Conv2dOptions{.in_channels = 3, .out_channels = 4, .kernel = 3, .padding = 1}, rng));
    block->add(std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 4}));
    block->add(std::make_shared<ReLU>());
    auto net = std::make_shared<Sequential>();
    net->add(block);
    net->add(std::make_shared<MaxPool2d>(2));
    net->add(std::make_shared<Flatten>());
    net->add(
        std::make_shared<Dense>(DenseOptions{.in_features = 4 * 3 * 3, .out_features = 8}, rng));
    net->add(std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 8}));
    net->add(std::make_shared<ReLU>());
    net->add(std::make_shared<Dense>(DenseOptions{.in_features = 8, .out_features = 3}, rng));
    return net;
  };
  auto fused = make(), unfused = make();
  int unfused_calls = 0;
  auto count = [&unfused_calls](const Module&, const Tensor&, const Tensor&) { ++unfused_calls; };
  static_cast<Sequential&>((*unfused)[0])[2].register_forward_hook(count);
  (*unfused)[5].register_forward_hook(count);
  // In the fused model, the modules after each pair see the fused op's output; their hooks run.
  std::vector<std::string> fused_inputs;
  auto input_node = [&fused_inputs](const Module&, const Tensor& x, const Tensor&) {
    fused_inputs.emplace_back(node_name(x));
  };
  (*fused)[1].register_forward_hook(input_node);
  (*fused)[6].register_forward_hook(input_node);
  Sgd opt_fused(fused->parameters(), {.lr = 0.1f, .momentum = 0.9f});
  Sgd opt_unfused(unfused->parameters(), {.lr = 0.1f, .momentum = 0.9f});
  train_twins(*fused, *unfused, opt_fused, opt_unfused, {6, 3, 6, 6}, 22);
  CHECK(unfused_calls == 6);
  CHECK(fused_inputs == std::vector<std::string>(6, "batch_norm_relu"));
  check_same_state(*fused, *unfused);
}

TEST_CASE("layers.bn_relu_fusion: BatchNorm2d + ReLU + MaxPool2d(2) fuse into one op") {
  auto pool = [](int64_t k, int64_t stride = 0, int64_t padding = 0) {
    return std::vector<std::shared_ptr<Module>>{std::make_shared<MaxPool2d>(k, stride, padding)};
  };
  auto model = [&](std::vector<std::shared_ptr<Module>> more) {
    return make_pair_model<BatchNorm2d>(std::make_shared<ReLU>(), 3, {}, std::move(more));
  };
  SUBCASE("MaxPool2d(2) and MaxPool2d(2, 2): fused, odd sizes included") {
    for (const Shape& shape : {Shape{4, 3, 6, 8}, Shape{3, 3, 5, 7}, Shape{2, 3, 2, 2}}) {
      CAPTURE(shape);
      auto a = model(pool(2)), b = model(pool(2));
      CHECK(std::string(node_name(three_steps(*a, *b, shape))) == "batch_norm_relu_max_pool2x2");
      auto c = model(pool(2, 2)), d = model(pool(2, 2));
      CHECK(std::string(node_name(three_steps(*c, *d, shape))) == "batch_norm_relu_max_pool2x2");
    }
  }
  SUBCASE("an unhooked Identity between the ReLU and the pool is skipped") {
    auto more = [&] {
      return std::vector<std::shared_ptr<Module>>{std::make_shared<Identity>(),
                                                  std::make_shared<MaxPool2d>(2)};
    };
    auto a = model(more()), b = model(more());
    CHECK(std::string(node_name(three_steps(*a, *b, {4, 3, 6, 6}))) ==
          "batch_norm_relu_max_pool2x2");
  }
  SUBCASE("other pools: BatchNorm + ReLU fuse, the pool runs on its own") {
    for (auto [k, stride, padding] : {std::array<int64_t, 3>{2, 1, 0}, {3, 2, 0}, {2, 2, 1}}) {
      CAPTURE(k);
      CAPTURE(stride);
      CAPTURE(padding);
      auto a = model(pool(k, stride, padding)), b = model(pool(k, stride, padding));
      CHECK(std::string(node_name(three_steps(*a, *b, {4, 3, 7, 6}))) == "max_pool2d");
      // The graph before backward releases it: the pool's input is the fused pair's output.
      Rng rng(6);
      const Tensor out = (*a)(Tensor::normal({4, 3, 7, 6}, rng).set_requires_grad());
      REQUIRE(out.grad_fn());
      REQUIRE(out.grad_fn()->inputs.size() == 1);
      CHECK(std::string(node_name(out.grad_fn()->inputs[0])) == "batch_norm_relu");
    }
  }
  SUBCASE("a hook on the pool: BatchNorm + ReLU fuse, the hook sees the pool's own output") {
    auto a = model(pool(2)), b = model(pool(2));
    int calls = 0;
    (*a)[2].register_forward_hook([&calls](const Module&, const Tensor& x, const Tensor& y) {
      ++calls;
      CHECK(std::string(node_name(x)) == "batch_norm_relu");
      CHECK(std::string(node_name(y)) == "max_pool2d");
    });
    three_steps(*a, *b, {4, 3, 6, 6});
    CHECK(calls == 3);
  }
  SUBCASE("eval mode: nothing fuses") {
    auto a = model(pool(2)), b = model(pool(2));
    a->eval();
    b->eval();
    CHECK(std::string(node_name(three_steps(*a, *b, {4, 3, 6, 6}))) == "max_pool2d");
  }
  SUBCASE("a 1-row input: the pool's own error, as unfused") {
    auto a = model(pool(2)), b = model(pool(2));
    Tensor x = Tensor::ones({4, 3, 1, 6});
    CHECK_THROWS_WITH_AS((*a)(x), doctest::Contains("max_pool2d: kernel 2 is larger"), Error);
    CHECK_THROWS_WITH_AS(unfused_forward(*b, x),
                         doctest::Contains("max_pool2d: kernel 2 is larger"), Error);
  }
}

TEST_CASE(
    "layers.bn_relu_fusion: a LeNet-like CNN trains 3 steps bit-identically with the pool fused") {
  // conv, BN, ReLU, pool twice in one Sequential, as the zoo's lenet. The unfused twin gets a
  // do-nothing forward hook on each ReLU.
  auto make = [] {
    Rng rng(23);
    auto net = std::make_shared<Sequential>();
    for (auto [c_in, c_out] : {std::array<int64_t, 2>{1, 4}, {4, 6}}) {
      net->add(std::make_shared<Conv2d>(
          Conv2dOptions{.in_channels = c_in, .out_channels = c_out, .kernel = 5, .padding = 2},
          rng));
      net->add(std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = c_out}));
      net->add(std::make_shared<ReLU>());
      net->add(std::make_shared<MaxPool2d>(2));
    }
    net->add(std::make_shared<Flatten>());
    net->add(
        std::make_shared<Dense>(DenseOptions{.in_features = 6 * 3 * 3, .out_features = 3}, rng));
    return net;
  };
  auto fused = make(), unfused = make();
  auto noop = [](const Module&, const Tensor&, const Tensor&) {};
  (*unfused)[2].register_forward_hook(noop);
  (*unfused)[6].register_forward_hook(noop);
  std::vector<std::string> fused_inputs;
  for (size_t i : {4, 8}) {
    (*fused)[i].register_forward_hook(
        [&fused_inputs](const Module&, const Tensor& x, const Tensor&) {
          fused_inputs.emplace_back(node_name(x));
        });
  }
  Adam opt_fused(fused->parameters(), {});
  Adam opt_unfused(unfused->parameters(), {});
  train_twins(*fused, *unfused, opt_fused, opt_unfused, {8, 1, 14, 14}, 24);
  CHECK(fused_inputs == std::vector<std::string>(6, "batch_norm_relu_max_pool2x2"));
  check_same_state(*fused, *unfused);
}

TEST_CASE(
    "layers.bn_relu_fusion: Sequential fuses a training BatchNorm + Sigmoid, bit-identically") {
  SUBCASE("BatchNorm1d [N, C]") {
    auto a = make_pair_model<BatchNorm1d>(std::make_shared<Sigmoid>(), 70);
    auto b = make_pair_model<BatchNorm1d>(std::make_shared<Sigmoid>(), 70);
    CHECK(std::string(node_name(three_steps(*a, *b, {9, 70}))) == "batch_norm_sigmoid");
  }
  SUBCASE("BatchNorm2d [N, C, H, W]") {
    auto a = make_pair_model<BatchNorm2d>(std::make_shared<Sigmoid>(), 3);
    auto b = make_pair_model<BatchNorm2d>(std::make_shared<Sigmoid>(), 3);
    CHECK(std::string(node_name(three_steps(*a, *b, {4, 3, 5, 6}))) == "batch_norm_sigmoid");
  }
  SUBCASE("not with a hook on the Sigmoid, nor in eval") {
    auto a = make_pair_model<BatchNorm1d>(std::make_shared<Sigmoid>(), 5);
    auto b = make_pair_model<BatchNorm1d>(std::make_shared<Sigmoid>(), 5);
    (*a)[1].register_forward_hook([](const Module&, const Tensor&, const Tensor&) {});
    CHECK(std::string(node_name(three_steps(*a, *b, {6, 5}))) == "sigmoid");
    auto c = make_pair_model<BatchNorm1d>(std::make_shared<Sigmoid>(), 5);
    c->eval();
    Rng rng(2);
    CHECK(std::string(node_name((*c)(Tensor::normal({6, 5}, rng).set_requires_grad()))) ==
          "sigmoid");
  }
}

TEST_CASE("layers.bn_relu_fusion: a paper-mlp trains 3 steps bit-identically fused and unfused") {
  // Dense -> BatchNorm1d -> Sigmoid twice, then the classifier, as the zoo's paper-mlp with BN; the
  // unfused twin has a do-nothing hook on each Sigmoid.
  auto make = [] {
    Rng rng(31);
    auto net = std::make_shared<Sequential>();
    int64_t in = 12;
    for (int layer = 0; layer < 2; ++layer) {
      net->add(std::make_shared<Dense>(DenseOptions{.in_features = in, .out_features = 10}, rng));
      net->add(std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 10}));
      net->add(std::make_shared<Sigmoid>());
      in = 10;
    }
    net->add(std::make_shared<Dense>(DenseOptions{.in_features = 10, .out_features = 3}, rng));
    return net;
  };
  auto fused = make(), unfused = make();
  int unfused_calls = 0;
  auto count = [&unfused_calls](const Module&, const Tensor&, const Tensor&) { ++unfused_calls; };
  (*unfused)[2].register_forward_hook(count);
  (*unfused)[5].register_forward_hook(count);
  std::vector<std::string> fused_inputs;
  auto input_node = [&fused_inputs](const Module&, const Tensor& x, const Tensor&) {
    fused_inputs.emplace_back(node_name(x));
  };
  (*fused)[3].register_forward_hook(input_node);
  (*fused)[6].register_forward_hook(input_node);
  Sgd opt_fused(fused->parameters(), {.lr = 0.1f, .momentum = 0.9f});
  Sgd opt_unfused(unfused->parameters(), {.lr = 0.1f, .momentum = 0.9f});
  train_twins(*fused, *unfused, opt_fused, opt_unfused, {8, 12}, 32);
  CHECK(unfused_calls == 6);
  CHECK(fused_inputs == std::vector<std::string>(6, "batch_norm_sigmoid"));
  check_same_state(*fused, *unfused);
}

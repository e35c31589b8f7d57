// Sequential's training fusion of BatchNorm1d/2d + ReLU (Module::forward_fused,
// batch_norm_relu_train): when it is taken (the output's node is "batch_norm_relu") and when not
// (hooks, BatchRenorm, noise, no running statistics, LeakyReLU, eval mode), with bit-identical
// outputs, gradients and running statistics either way; a hook on the BatchNorm sees its own
// output; a small CNN trained 3 steps with and without the fusion ends with bit-identical state.
#include <doctest/doctest.h>

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

// A BatchNorm (weight and bias made non-trivial) then an activation, built twice identically.
template <class Norm>
std::shared_ptr<Sequential> make_pair_model(std::shared_ptr<Module> activation, int64_t C,
                                            BatchNormOptions o = {}) {
  o.num_features = C;
  auto norm = std::make_shared<Norm>(o);
  Rng rng(5);
  auto seq = std::make_shared<Sequential>();
  seq->add(norm);
  seq->add(std::move(activation));
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
    Tensor x = Tensor::normal(shape, rng, 0.2f, 1.1f), dz = Tensor::normal(shape, rng);
    Tensor xa = x.clone().set_requires_grad(), xb = x.clone().set_requires_grad();
    out_a = a(xa);
    Tensor out_b = unfused_forward(b, xb);
    CHECK(same_bits(out_a, out_b));
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
  Rng rng(22);
  for (int step = 0; step < 3; ++step) {
    Tensor x = Tensor::normal({6, 3, 6, 6}, rng);
    std::vector<int64_t> labels{0, 1, 2, 0, 1, 2};
    Tensor loss_fused = cross_entropy((*fused)(x), labels);
    Tensor loss_unfused = cross_entropy((*unfused)(x), labels);
    CHECK(same_bits(loss_fused, loss_unfused));
    opt_fused.zero_grad();
    opt_unfused.zero_grad();
    loss_fused.backward();
    loss_unfused.backward();
    opt_fused.step();
    opt_unfused.step();
  }
  CHECK(unfused_calls == 6);
  CHECK(fused_inputs == std::vector<std::string>(6, "batch_norm_relu"));
  check_same_state(*fused, *unfused);
}

// Explicit BatchNorm folding for inference (layers/bn_fold.h): fold_batch_norm replaces each
// eval-mode Dense + BatchNorm1d / Conv2d + BatchNorm2d pair (BatchRenorm1d/2d too) in a model's
// Sequentials by the folded layer and an Identity, equal to the unfolded model within float
// rounding; it refuses a pair in training mode without changing anything, leaves pairs with hooks
// or without running statistics alone, and folding a second instance leaves the original's state
// untouched. Sequential::forward itself never folds.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/layers.h"
#include "optim/sgd.h"

using namespace bnlab;

namespace {

// Gives a BatchNorm non-trivial running statistics and affine parameters.
void perturb(BatchNorm& bn, Rng& rng) {
  const int64_t C = bn.options().num_features;
  for (int64_t c = 0; c < C; ++c) {
    bn.running_mean().data()[c] = rng.normal(0.0f, 0.5f);
    bn.running_var().data()[c] = rng.uniform(0.2f, 3.0f);
    if (!bn.options().affine) continue;
    bn.weight().data()[c] = rng.uniform(0.5f, 1.5f);
    bn.bias().data()[c] = rng.normal(0.0f, 0.3f);
  }
}

// Largest |a - b| / (1 + |b|).
float max_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  float m = 0.0f;
  for (int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::fabs(a.data()[i] - b.data()[i]) / (1.0f + std::fabs(b.data()[i])));
  return m;
}

std::vector<float> flat_state(const Module& m) {
  std::vector<float> v;
  for (const auto& t : m.state_dict()) {
    auto d = t.tensor.to_vector();
    v.insert(v.end(), d.begin(), d.end());
  }
  return v;
}

std::vector<std::string> keys(const Module& m) {
  std::vector<std::string> k;
  for (const auto& t : m.state_dict()) k.push_back(t.name);
  return k;
}

std::vector<std::string> types(const Sequential& s) {
  std::vector<std::string> t;
  for (const auto& [name, child] : s.children()) t.push_back(child->type_name());
  return t;
}

// A small CNN with three foldable pairs, one of them in a nested Sequential:
// 0 Conv2d, 1 BatchNorm2d, 2 ReLU, 3 Sequential(0 Conv2d, 1 BatchNorm2d), 4 Flatten, 5 Dense,
// 6 BatchNorm1d, 7 ReLU.
std::shared_ptr<Sequential> make_cnn(Rng& rng) {
  auto inner = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
      std::make_shared<Conv2d>(Conv2dOptions{.in_channels = 3,
                                             .out_channels = 4,
                                             .kernel = 3,
                                             .stride = 2,
                                             .padding = 1,
                                             .bias = false},
                               rng),
      std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 4})});
  auto net = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
      std::make_shared<Conv2d>(
          Conv2dOptions{.in_channels = 2, .out_channels = 3, .kernel = 3, .padding = 1}, rng),
      std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 3}), std::make_shared<ReLU>(),
      inner, std::make_shared<Flatten>(),
      std::make_shared<Dense>(DenseOptions{.in_features = 4 * 3 * 3, .out_features = 5}, rng),
      std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 5}),
      std::make_shared<ReLU>()});
  perturb(dynamic_cast<BatchNorm&>((*net)[1]), rng);
  perturb(dynamic_cast<BatchNorm&>((*inner)[1]), rng);
  perturb(dynamic_cast<BatchNorm&>((*net)[6]), rng);
  return net;
}

}  // namespace

TEST_CASE("layers.bn_fold: Dense + BatchNorm1d folds into one Dense equal to the pair") {
  for (bool bias : {true, false}) {
    CAPTURE(bias);
    Rng rng(3);
    auto dense = std::make_shared<Dense>(
        DenseOptions{.in_features = 7, .out_features = 5, .bias = bias}, rng);
    auto bn = std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 5, .eps = 1e-3f});
    perturb(*bn, rng);
    Sequential net({dense, bn, std::make_shared<ReLU>()});
    net.eval();
    Tensor x = Tensor::normal({4, 7}, rng);
    NoGradGuard no_grad;
    Tensor unfolded = net(x);
    CHECK(fold_batch_norm(net) == 1);
    CHECK(types(net) == std::vector<std::string>{"Dense", "Identity", "ReLU"});
    CHECK(keys(net) == std::vector<std::string>{"0.weight", "0.bias"});  // a bias even without one
    CHECK_FALSE(net[0].is_training());
    CHECK(max_diff(net(x), unfolded) < 1e-5f);
    CHECK(fold_batch_norm(net) == 0);  // nothing left to fold
  }
}

TEST_CASE("layers.bn_fold: BatchRenorm pairs trained with r and d clipped fold like BatchNorm") {
  // Conv2d + BatchRenorm2d and Dense + BatchRenorm1d, trained a few SGD steps with limits tight
  // enough (r_max 1.2, d_max 0.1 from the first step) that r and d are clipped: the running
  // statistics and affine parameters are those of a real batch-renorm run, and eval, which uses
  // them as BatchNorm does, must equal the folded model.
  const BatchRenormOptions limits{.r_max = 1.2f, .d_max = 0.1f, .warmup = 0, .ramp = 0};
  auto make = [&](bool renorm) {
    Rng rng(21);
    auto bn2d = renorm ? std::static_pointer_cast<BatchNorm>(std::make_shared<BatchRenorm2d>(
                             BatchNormOptions{.num_features = 3}, limits))
                       : std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 3});
    auto bn1d = renorm ? std::static_pointer_cast<BatchNorm>(std::make_shared<BatchRenorm1d>(
                             BatchNormOptions{.num_features = 4}, limits))
                       : std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 4});
    return std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
        std::make_shared<Conv2d>(
            Conv2dOptions{.in_channels = 2, .out_channels = 3, .kernel = 3, .padding = 1}, rng),
        bn2d, std::make_shared<ReLU>(), std::make_shared<Flatten>(),
        std::make_shared<Dense>(DenseOptions{.in_features = 3 * 4 * 4, .out_features = 4}, rng),
        bn1d, std::make_shared<ReLU>(),
        std::make_shared<Dense>(DenseOptions{.in_features = 4, .out_features = 3}, rng)});
  };
  auto renorm_net = make(true), plain_net = make(false);
  // The first batch the BatchRenorm2d sees, to check that r and d were clipped there.
  Tensor first_input;
  (*renorm_net)[1].register_forward_hook([&](const Module&, const Tensor& in, const Tensor&) {
    if (!first_input.defined()) first_input = in.detach();
  });
  for (auto* net : {renorm_net.get(), plain_net.get()}) {
    Rng data(22);
    Sgd sgd(net->parameters(), {.lr = 0.1f});
    for (int step = 0; step < 6; ++step) {
      // Inputs off centre and wide, so batch statistics stay far from the running ones.
      Tensor x = Tensor::normal({8, 2, 4, 4}, data, 1.5f, 2.0f);
      std::vector<int64_t> labels;
      for (int64_t n = 0; n < 8; ++n) labels.push_back((n + step) % 3);
      sgd.zero_grad();
      cross_entropy((*net)(x), labels).backward();
      sgd.step();
    }
  }
  REQUIRE(first_input.defined());
  // Against the initial running statistics (mean 0, var 1), as the layer measured them.
  BatchNormResult first =
      batch_renorm_train(first_input, {}, {}, 1e-5f,
                         {Tensor::zeros({3}), Tensor::ones({3}), limits.r_max, limits.d_max});
  auto at = [](float v, float bound) { return std::fabs(v - bound) < 1e-6f; };
  int clipped = 0;
  for (int64_t c = 0; c < 3; ++c) {
    const float r = first.r.data()[c], d = first.d.data()[c];
    clipped += at(r, limits.r_max) || at(r, 1.0f / limits.r_max);
    clipped += at(std::fabs(d), limits.d_max);
  }
  CHECK(clipped > 0);
  auto& brn2d = dynamic_cast<BatchNorm&>((*renorm_net)[1]);
  CHECK(brn2d.num_batches_tracked() == 6);
  CHECK(brn2d.running_var().data()[0] != 1.0f);
  // Not BatchNorm in disguise: the same steps with BatchNorm train other weights.
  CHECK(flat_state(*renorm_net) != flat_state(*plain_net));

  (*renorm_net)[1].clear_forward_hooks();  // a hooked pair would stay unfolded
  renorm_net->eval();
  Rng rng(23);
  Tensor x = Tensor::normal({5, 2, 4, 4}, rng, 1.5f, 2.0f);
  NoGradGuard no_grad;
  Tensor unfolded = (*renorm_net)(x);
  CHECK(fold_batch_norm(*renorm_net) == 2);
  CHECK(types(*renorm_net) == std::vector<std::string>{"Conv2d", "Identity", "ReLU", "Flatten",
                                                       "Dense", "Identity", "ReLU", "Dense"});
  CHECK(max_diff((*renorm_net)(x), unfolded) < 1e-5f);
}

TEST_CASE("layers.bn_fold: every pair of a CNN folds, nested ones too, and names stay put") {
  Rng rng(4);
  auto net = make_cnn(rng);
  net->eval();
  Tensor x = Tensor::normal({2, 2, 6, 6}, rng, 0.3f, 1.2f);
  NoGradGuard no_grad;
  Tensor unfolded = (*net)(x);
  CHECK(fold_batch_norm(*net) == 3);
  CHECK(types(*net) == std::vector<std::string>{"Conv2d", "Identity", "ReLU", "Sequential",
                                                "Flatten", "Dense", "Identity", "ReLU"});
  CHECK(types(dynamic_cast<Sequential&>((*net)[3])) ==
        std::vector<std::string>{"Conv2d", "Identity"});
  CHECK(keys(*net) == std::vector<std::string>{"0.weight", "0.bias", "3.0.weight", "3.0.bias",
                                               "5.weight", "5.bias"});
  CHECK(max_diff((*net)(x), unfolded) < 1e-5f);
}

TEST_CASE("layers.bn_fold: a block used twice in the model is folded once") {
  Rng rng(10);
  auto block = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
      std::make_shared<Dense>(DenseOptions{.in_features = 3, .out_features = 3}, rng),
      std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 3})});
  perturb(dynamic_cast<BatchNorm&>((*block)[1]), rng);
  Sequential net({block, std::make_shared<ReLU>(), block});
  net.eval();
  Tensor x = Tensor::normal({4, 3}, rng);
  NoGradGuard no_grad;
  Tensor unfolded = net(x);
  CHECK(fold_batch_norm(net) == 1);
  CHECK(types(*block) == std::vector<std::string>{"Dense", "Identity"});
  CHECK(max_diff(net(x), unfolded) < 1e-5f);
}

TEST_CASE("layers.bn_fold: folding a second instance leaves the original model untouched") {
  // The documented way to keep a trainable model: fold another instance that has its state.
  Rng rng(5);
  auto model = make_cnn(rng);
  Rng other_rng(99);
  auto inference = make_cnn(other_rng);
  inference->load_state_dict(model->state_dict());
  const std::vector<float> before = flat_state(*model);
  const std::vector<std::string> model_keys = keys(*model);
  inference->eval();
  CHECK(fold_batch_norm(*inference) == 3);
  CHECK(flat_state(*model) == before);
  CHECK(keys(*model) == model_keys);
  CHECK(model->is_training());
  CHECK((*model)[1].type_name() == "BatchNorm2d");
  Tensor x = Tensor::normal({3, 2, 6, 6}, rng);
  model->eval();
  NoGradGuard no_grad;
  CHECK(max_diff((*inference)(x), (*model)(x)) < 1e-5f);
  // The original still trains: batch statistics, running statistics updated.
  model->train();
  (*model)(x);
  CHECK(dynamic_cast<BatchNorm&>((*model)[6]).num_batches_tracked() == 1);
}

TEST_CASE("layers.bn_fold: a pair in training mode is refused and nothing changes") {
  Rng rng(6);
  auto net = make_cnn(rng);
  const std::vector<float> before = flat_state(*net);
  SUBCASE("the whole model in training mode") {
    CHECK_THROWS_WITH_AS(fold_batch_norm(*net),
                         doctest::Contains("fold_batch_norm: 0 (Conv2d) + 1 (BatchNorm2d) is in "
                                           "training mode; folding bakes in the running "
                                           "statistics that training updates: call eval() first"),
                         Error);
  }
  SUBCASE("one nested pair in training mode: the pairs before it are not folded either") {
    net->eval();
    (*net)[3].train();
    CHECK_THROWS_WITH_AS(fold_batch_norm(*net),
                         doctest::Contains("3.0 (Conv2d) + 3.1 (BatchNorm2d) is in training mode"),
                         Error);
  }
  CHECK(types(*net) == std::vector<std::string>{"Conv2d", "BatchNorm2d", "ReLU", "Sequential",
                                                "Flatten", "Dense", "BatchNorm1d", "ReLU"});
  CHECK(flat_state(*net) == before);
}

TEST_CASE("layers.bn_fold: pairs that cannot be folded are left alone") {
  Rng rng(7);
  auto dense = [&](int64_t in, int64_t out) {
    return std::make_shared<Dense>(DenseOptions{.in_features = in, .out_features = out}, rng);
  };
  auto bn1d = [&](int64_t c, bool track = true) {
    auto bn = std::make_shared<BatchNorm1d>(
        BatchNormOptions{.num_features = c, .track_running_stats = track});
    if (track) perturb(*bn, rng);
    return bn;
  };
  // 0 + 1: a BatchNorm without running statistics (eval normalizes with the batch's own); 3: a
  // BatchNorm after the activation. Below: a Dense whose outputs do not match its BatchNorm (left
  // for the BatchNorm to report), and a Conv2d followed by a BatchNorm1d.
  Sequential net({dense(3, 4), bn1d(4, false), std::make_shared<ReLU>(), bn1d(4), dense(4, 2)});
  net.eval();
  Tensor x = Tensor::normal({5, 3}, rng);
  const std::vector<float> before = flat_state(net);
  NoGradGuard no_grad;
  Tensor y = net(x);
  CHECK(fold_batch_norm(net) == 0);
  CHECK(types(net) ==
        std::vector<std::string>{"Dense", "BatchNorm1d", "ReLU", "BatchNorm1d", "Dense"});
  CHECK(flat_state(net) == before);
  CHECK(net(x).to_vector() == y.to_vector());

  Sequential mismatched({dense(3, 4), bn1d(5)});
  mismatched.eval();
  CHECK(fold_batch_norm(mismatched) == 0);
  CHECK_THROWS_WITH_AS(mismatched(x), doctest::Contains("BatchNorm1d: expected input"), Error);

  Sequential conv_bn1d(
      {std::make_shared<Conv2d>(Conv2dOptions{.in_channels = 1, .out_channels = 2}, rng), bn1d(2)});
  conv_bn1d.eval();
  CHECK(fold_batch_norm(conv_bn1d) == 0);
  CHECK(conv_bn1d[1].type_name() == "BatchNorm1d");
}

TEST_CASE("layers.bn_fold: a pair with a forward hook stays unfolded and the hook sees it run") {
  Rng rng(8);
  auto net = make_cnn(rng);
  net->eval();
  auto& bn = dynamic_cast<BatchNorm&>((*net)[6]);
  int calls = 0;
  Tensor seen_in, seen_out;
  bn.register_forward_hook([&](const Module&, const Tensor& in, const Tensor& out) {
    ++calls;
    seen_in = in;
    seen_out = out;
  });
  Tensor x = Tensor::normal({2, 2, 6, 6}, rng);
  NoGradGuard no_grad;
  Tensor unfolded = (*net)(x);
  CHECK(fold_batch_norm(*net) == 2);  // the two conv pairs; Dense + hooked BatchNorm stays
  CHECK((*net)[5].type_name() == "Dense");
  CHECK((*net)[6].type_name() == "BatchNorm1d");
  calls = 0;
  CHECK(max_diff((*net)(x), unfolded) < 1e-5f);
  CHECK(calls == 1);
  REQUIRE(seen_in.shape() == Shape{2, 5});
  // The hook saw the BatchNorm itself run on the Dense's output.
  CHECK(seen_out.to_vector() == bn.forward(seen_in).to_vector());

  // A hook on the layer side of a pair keeps it too.
  Rng rng2(8);
  auto other = make_cnn(rng2);
  other->eval();
  (*other)[0].register_forward_hook([](const Module&, const Tensor&, const Tensor&) {});
  CHECK(fold_batch_norm(*other) == 2);
  CHECK((*other)[1].type_name() == "BatchNorm2d");
}

TEST_CASE("layers.bn_fold: Sequential::forward runs every module, folded or not") {
  // No hidden folding: in eval under NoGradGuard the chain is exactly its modules, one by one.
  Rng rng(9);
  auto dense = std::make_shared<Dense>(DenseOptions{.in_features = 3, .out_features = 4}, rng);
  auto bn = std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 4});
  perturb(*bn, rng);
  Sequential net({dense, bn});
  Tensor x = Tensor::normal({6, 3}, rng);
  SUBCASE("eval under NoGradGuard: bit-identical to calling the modules") {
    net.eval();
    NoGradGuard no_grad;
    CHECK(net(x).to_vector() == (*bn)((*dense)(x)).to_vector());
  }
  SUBCASE("eval with grad mode on: BatchNorm's own op, and gamma gets a gradient") {
    net.eval();
    Tensor y = net(x);
    REQUIRE(y.grad_fn());
    CHECK(std::string(y.grad_fn()->op) == "batch_norm_eval");
    sum(y).backward();
    CHECK(bn->weight().has_grad());
  }
  SUBCASE("training mode under NoGradGuard: batch statistics, running stats updated") {
    NoGradGuard no_grad;
    Tensor y = net(x);
    CHECK(bn->num_batches_tracked() == 1);
    double mean = 0.0;
    for (int64_t n = 0; n < 6; ++n) mean += y.data()[n * 4];
    // Normalized with the batch's own mean: channel 0 averages to its beta.
    CHECK(mean / 6.0 == doctest::Approx(bn->bias().data()[0]).epsilon(1e-4));
  }
}

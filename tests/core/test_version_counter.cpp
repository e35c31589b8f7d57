// Version counters: backward() refuses a graph whose saved tensors were written in place after the
// forward (PyTorch's "modified by an inplace operation"), and only those: a write to a value the
// op's backward does not read is fine, as in PyTorch.
#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/layers.h"
#include "optim/optim.h"

using namespace bnlab;

namespace {

Tensor leaf(const Shape& shape, uint64_t seed) {
  Rng rng(seed);
  Tensor t = Tensor::uniform(shape, rng, -1.0f, 1.0f);
  t.set_requires_grad();
  return t;
}

// backward() refuses `loss`'s graph with a message containing `text`.
void check_refused(const Tensor& loss, const char* text) {
  CHECK_THROWS_WITH_AS(loss.backward(), doctest::Contains(text), Error);
}

// The graph PyTorch's example has: loss = sum(a @ w), a [4, 3] and w [3, 2] both wanting a
// gradient, so matmul's backward reads both.
struct MatmulGraph {
  Tensor a = leaf({4, 3}, 1);
  Tensor w = leaf({3, 2}, 2);
  Tensor loss = sum(matmul(a, w));
};

// Runs one step of `opt` on w between a forward through w and its backward: the backward must
// refuse the stale graph, naming linear and w's shape.
void check_step_between_forward_and_backward(const std::function<Optimizer*(Tensor)>& make) {
  Tensor x = leaf({5, 3}, 3);
  Tensor w = leaf({2, 3}, 4);
  std::unique_ptr<Optimizer> opt(make(w));
  sum(linear(x, w, Tensor())).backward();  // a gradient for the step
  Tensor loss = sum(linear(x, w, Tensor()));
  opt->step();
  check_refused(loss,
                "backward of 'linear': input 1 [2, 3] was modified in "
                "place after the forward used it (version 1, expected 0)");
}

}  // namespace

TEST_CASE("version counter: fill_ on a saved input between forward and backward throws") {
  MatmulGraph g;
  g.w.fill_(0.5f);
  check_refused(g.loss,
                "backward of 'matmul': input 1 [3, 2] was modified in "
                "place after the forward used it (version 1, expected 0)");
}

TEST_CASE("version counter: copy_ on a saved input between forward and backward throws") {
  MatmulGraph g;
  g.a.copy_(Tensor::ones({4, 3}));
  check_refused(g.loss, "backward of 'matmul': input 0 [4, 3] was modified");
}

TEST_CASE("version counter: every optimizer's step counts as a write of its parameters") {
  SUBCASE("sgd") {
    check_step_between_forward_and_backward(
        [](Tensor w) { return new Sgd({w}, SgdOptions{.lr = 0.1f, .momentum = 0.9f}); });
  }
  SUBCASE("adam") {
    check_step_between_forward_and_backward([](Tensor w) { return new Adam({w}); });
  }
  SUBCASE("adamw") {
    check_step_between_forward_and_backward([](Tensor w) { return new AdamW({w}); });
  }
  SUBCASE("rmsprop") {
    check_step_between_forward_and_backward([](Tensor w) { return new Rmsprop({w}); });
  }
}

TEST_CASE("version counter: load_state_dict and init functions count as writes") {
  Rng rng(5);
  Dense layer(DenseOptions{.in_features = 3, .out_features = 2}, rng);
  Tensor x = leaf({4, 3}, 6);
  SUBCASE("load_state_dict") {
    Dense other(DenseOptions{.in_features = 3, .out_features = 2}, rng);
    Tensor loss = sum(layer.forward(x));
    layer.load_state_dict(other.state_dict());
    check_refused(loss, "backward of 'linear': input 1 [2, 3] was modified");
  }
  SUBCASE("kaiming_uniform_") {
    Tensor loss = sum(layer.forward(x));
    init::kaiming_uniform_(layer.weight(), rng);
    check_refused(loss, "backward of 'linear': input 1");
  }
}

TEST_CASE("version counter: ops that read their parameters in backward refuse a changed one") {
  SUBCASE("conv2d") {
    Tensor x = leaf({2, 2, 5, 5}, 7);
    Tensor w = leaf({3, 2, 3, 3}, 8);
    Tensor loss = sum(conv2d(x, w, Tensor()));
    w.fill_(0.0f);
    check_refused(loss, "backward of 'conv2d': input 1 [3, 2, 3, 3]");
  }
  SUBCASE("batch_norm") {
    Tensor x = leaf({4, 3}, 9);
    Tensor gamma = leaf({3}, 10);
    Tensor beta = leaf({3}, 11);
    Tensor loss = sum(square(batch_norm_train(x, gamma, beta, 1e-5f).y));
    gamma.fill_(2.0f);
    check_refused(loss, "backward of 'batch_norm': input 1 [3] was modified");
  }
  SUBCASE("layer_norm") {
    Tensor x = leaf({4, 3}, 12);
    Tensor weight = leaf({3}, 13);
    Tensor loss = sum(square(layer_norm(x, {3}, weight, Tensor(), 1e-5f)));
    x.fill_(1.0f);
    check_refused(loss, "backward of 'layer_norm': input 0 [4, 3] was modified");
  }
}

TEST_CASE("version counter: a write to a value no backward reads is fine, as in PyTorch") {
  Tensor a = leaf({2, 3}, 14);
  Tensor b = leaf({2, 3}, 15);
  SUBCASE("add, sub, neg, mean, reshape, slice, cat") {
    // Each of these backwards reads only dout and shapes.
    Tensor y = a + b - neg(a);                                                   // 2a + b
    Tensor z = cat({reshape(y, {3, 2}), slice(b, 0, 0, 1).reshape({3, 1})}, 1);  // [3, 3]
    Tensor loss = sum(z) + mean(a);
    a.fill_(0.0f);
    b.fill_(0.0f);
    loss.backward();
    // d/da = 2 + 1/6; d/db = 1, and 1 more for b's first row, which z holds twice.
    for (float v : a.grad().to_vector()) CHECK(v == doctest::Approx(2.0f + 1.0f / 6.0f));
    CHECK(b.grad().to_vector() == std::vector<float>{2, 2, 2, 1, 1, 1});
  }
  SUBCASE("cat of more than three inputs") {
    Tensor loss = sum(cat({a, b, a, b, a}, 0));
    a.fill_(3.0f);
    loss.backward();
    for (float v : a.grad().to_vector()) CHECK(v == 3.0f);
    for (float v : b.grad().to_vector()) CHECK(v == 2.0f);
  }
  SUBCASE("mul and matmul read only the operand the other's gradient needs") {
    // w's gradient needs x (saved); x needs no gradient, so w itself is not read.
    Tensor x = Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor w = leaf({3, 2}, 16);
    Tensor v = leaf({2, 3}, 17);
    Tensor loss = sum(matmul(x, w)) + sum(mul(x, v));
    w.fill_(7.0f);
    v.fill_(7.0f);
    loss.backward();
    // d/dw sum(x w) = x^T 1: column sums of x, in every column of w.
    CHECK(w.grad().to_vector() == std::vector<float>{5, 5, 7, 7, 9, 9});
    CHECK(v.grad().to_vector() == x.to_vector());
  }
  SUBCASE("relu reads its output, not its input") {
    Tensor x = Tensor::from({-1, 2, -3, 4, 5, -6}, {2, 3});
    x.set_requires_grad();
    Tensor loss = sum(relu(x));
    x.fill_(-9.0f);
    loss.backward();
    CHECK(x.grad().to_vector() == std::vector<float>{0, 1, 0, 1, 1, 0});
  }
}

TEST_CASE("version counter: an op that reads its output refuses an in-place write to it") {
  Tensor x = leaf({3, 4}, 18);
  SUBCASE("exp") {
    Tensor y = exp(x);
    Tensor loss = sum(y);
    y.fill_(1.0f);
    check_refused(loss,
                  "backward of 'exp': its output [3, 4] was modified in "
                  "place after the forward saved it (version 1, "
                  "expected 0)");
  }
  SUBCASE("softmax") {
    Tensor y = softmax(x, 1);
    Tensor loss = sum(y * 3.0f);  // neither reads y
    y.copy_(Tensor::zeros({3, 4}));
    check_refused(loss, "backward of 'softmax': its output");
  }
  SUBCASE("an op that does not read its output does not mind") {
    Tensor y = x * 2.0f;
    Tensor loss = sum(y);
    y.fill_(1.0f);
    loss.backward();
    for (float v : x.grad().to_vector()) CHECK(v == 2.0f);
  }
}

TEST_CASE("version counter: an intermediate written before a consumer used it is refused there") {
  // PyTorch records such a write as an op (y.fill_(0) cuts y from x); bnlab records none, and used
  // to hand the written values' gradient to x: x.grad 2 where PyTorch gives 0.
  Tensor x = Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3});
  x.set_requires_grad();
  SUBCASE("a row of it filled, then summed") {
    Tensor y = x * 2.0f;
    y[0].fill_(0.0f);
    check_refused(sum(y),
                  "backward of 'sum': input 0 [2, 3] was written in place after 'mul_scalar' "
                  "produced it and before 'sum' used it (version 1, produced at 0)");
  }
  SUBCASE("filled, then read by a product") {
    Tensor y = x * 2.0f;
    y.fill_(1.0f);
    check_refused(sum(y * y), "backward of 'mul': input 0 [2, 3] was written in place");
  }
  SUBCASE("copy_ from another graph") {
    Tensor b = leaf({2, 3}, 23);
    Tensor y = x * 2.0f;
    y.copy_(b * 3.0f);
    check_refused(sum(y), "cannot reach 'mul_scalar'");
  }
  SUBCASE("a view taken before the write, used after it") {
    Tensor y = x * 2.0f;
    Tensor v = y.reshape({6});
    y.fill_(0.0f);
    check_refused(sum(v), "input 0 [6] was written in place after 'reshape' produced it");
  }
  SUBCASE("consumers before the write, and a leaf written before its use, are fine") {
    Tensor y = x * 2.0f;
    Tensor before = sum(y);
    y.fill_(0.0f);
    Tensor w = leaf({2, 3}, 24);
    w.fill_(1.0f);
    (before + sum(w * 3.0f)).backward();
    CHECK(x.grad().to_vector() == std::vector<float>(6, 2.0f));
    CHECK(w.grad().to_vector() == std::vector<float>(6, 3.0f));
  }
}

TEST_CASE("version counter: a write through a view is a write of its base, and the other way") {
  SUBCASE("a row of a saved input") {
    MatmulGraph g;
    g.w[1].fill_(0.0f);
    check_refused(g.loss, "backward of 'matmul': input 1 [3, 2] was modified");
  }
  SUBCASE("a reshape of a saved output") {
    Tensor x = leaf({2, 3}, 19);
    Tensor y = tanh(x);
    Tensor loss = sum(y);
    y.detach().reshape({6}).narrow(0, 2, 2).fill_(0.0f);
    check_refused(loss, "backward of 'tanh': its output");
  }
  SUBCASE("the base of a saved view") {
    Tensor base = leaf({4, 3}, 20);
    Tensor w = leaf({3, 2}, 21);
    Tensor row = base.narrow(0, 1, 2);  // a view, input 0 of matmul below
    Tensor loss = sum(matmul(row, w));
    base.detach().fill_(1.0f);
    check_refused(loss, "backward of 'matmul': input 0 [2, 3] was modified");
  }
}

TEST_CASE("version counter: training loops never trip the check") {
  Rng rng(22);
  auto net = std::make_shared<Sequential>();
  net->emplace<Dense>(DenseOptions{.in_features = 4, .out_features = 8}, rng);
  net->emplace<BatchNorm1d>(BatchNormOptions{.num_features = 8});
  net->emplace<ReLU>();
  net->emplace<Dense>(DenseOptions{.in_features = 8, .out_features = 3}, rng);
  Adam opt(net->parameters(), AdamOptions{.lr = 0.01f});
  const Tensor x = Tensor::uniform({6, 4}, rng, -1.0f, 1.0f);
  const std::vector<int64_t> labels{0, 1, 2, 0, 1, 2};
  SUBCASE("forward, backward, step, next forward") {
    for (int step = 0; step < 5; ++step) {
      opt.zero_grad();
      Tensor loss = cross_entropy(net->forward(x), labels);
      CHECK_NOTHROW(loss.backward());
      opt.step();
    }
  }
  SUBCASE("gradient accumulation over micro-batches, then one step") {
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      for (int64_t micro = 0; micro < 3; ++micro) {
        Tensor part = x.narrow(0, 2 * micro, 2);
        Tensor loss = cross_entropy(net->forward(part), {labels[2 * micro], labels[2 * micro + 1]});
        CHECK_NOTHROW(loss.backward());
      }
      opt.step();
    }
  }
}

TEST_CASE("version counter: version() counts fill_, copy_ and bump_version, not data() writes") {
  Tensor t = Tensor::zeros({2, 3});
  CHECK(t.version() == 0);
  t.fill_(1.0f);
  t.copy_(Tensor::ones({6}));
  CHECK(t.version() == 2);
  // Views and detach() share the buffer's counter; clone() has its own.
  Tensor row = t[1];
  row.fill_(2.0f);
  CHECK(t.version() == 3);
  CHECK(row.version() == 3);
  CHECK(t.detach().reshape({6}).version() == 3);
  CHECK(t.clone().version() == 0);
  // A raw write is invisible until declared, as PyTorch's .data.
  t.data()[0] = 5.0f;
  CHECK(t.version() == 3);
  CHECK(t.bump_version().version() == 4);
}

TEST_CASE("version counter: an op of more than three inputs cannot read them") {
  Tensor x = leaf({2}, 23);
  Tensor out = Tensor::zeros({2});
  CHECK_THROWS_WITH_AS(attach(out, "wide", {x, x, x, x},
                              [](const Tensor&, const Tensor&, const std::vector<Tensor>&) {}),
                       doctest::Contains("attach: 'wide' has 4 inputs and reads input 0"), Error);
  attach(out, "wide", {x, x, x, x}, Reads::nothing(),
         [](const Tensor&, const Tensor&, const std::vector<Tensor>&) {});
  CHECK(std::string(out.grad_fn()->op) == "wide");
}

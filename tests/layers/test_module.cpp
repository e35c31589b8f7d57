// Module API: registration, PyTorch key names, tied layers, train/eval recursion, zero_grad, hooks,
// printing, summary, state_dict round trip and load validation.
#include <doctest/doctest.h>

#include <map>
#include <sstream>

#include "core/ops.h"
#include "core/serialize.h"
#include "layers/layers.h"
#include "optim/sgd.h"
#include "test_util.h"

using namespace bnlab;

namespace {
std::shared_ptr<Sequential> small_net(Rng& rng) {
  auto net = std::make_shared<Sequential>();
  net->emplace<Dense>(DenseOptions{.in_features = 4, .out_features = 3}, rng);
  net->emplace<BatchNorm1d>(BatchNormOptions{.num_features = 3});
  net->emplace<ReLU>();
  net->emplace<Dense>(DenseOptions{.in_features = 3, .out_features = 2, .bias = false}, rng);
  return net;
}

std::vector<std::string> keys(const std::vector<NamedTensor>& state) {
  std::vector<std::string> out;
  for (const auto& e : state) out.push_back(e.name);
  return out;
}
}  // namespace

TEST_CASE("module: parameters and buffers carry PyTorch's state_dict names") {
  Rng rng(1);
  auto net = small_net(rng);
  std::vector<std::string> expected{
      "0.weight", "0.bias",         "1.weight",      "1.bias",
      "3.weight", "1.running_mean", "1.running_var", "1.num_batches_tracked"};
  CHECK(keys(net->state_dict()) == expected);
  CHECK(net->parameters().size() == 5);
  CHECK(net->num_parameters() == 4 * 3 + 3 + 3 + 3 + 3 * 2);
  for (const auto& e : net->state_dict())
    CHECK((e.dtype == DType::I64) == (e.name == "1.num_batches_tracked"));
}

TEST_CASE("module: nested modules prefix their children's names") {
  Rng rng(2);
  struct Block : Module {
    std::shared_ptr<Sequential> features;
    std::shared_ptr<Dense> head;
    explicit Block(Rng& rng) {
      features = register_module("features", small_net(rng));
      head = register_module(
          "head", std::make_shared<Dense>(DenseOptions{.in_features = 2, .out_features = 1}, rng));
    }
    Tensor forward(const Tensor& x) override { return (*head)((*features)(x)); }
    std::string type_name() const override { return "Block"; }
  } block(rng);
  auto names = keys(block.state_dict());
  CHECK(names.front() == "features.0.weight");
  CHECK(std::find(names.begin(), names.end(), "features.1.running_mean") != names.end());
  CHECK(std::find(names.begin(), names.end(), "head.bias") != names.end());
  CHECK(block(Tensor::ones({5, 4})).shape() == Shape{5, 1});
}

// A name given twice, or one holding a '.', made a state_dict() with duplicate keys that could be
// neither saved nor loaded back, and nothing said so until then.
TEST_CASE("module: parameter, buffer and child names are unique, non-empty and dot-free") {
  struct Probe : Module {
    void param(const std::string& n) { register_parameter(n, Tensor::zeros({1})); }
    void buffer(const std::string& n) { register_buffer(n, Tensor::zeros({1})); }
    void child(const std::string& n) { register_module(n, std::make_shared<ReLU>()); }
    Tensor forward(const Tensor& x) override { return x; }
    std::string type_name() const override { return "Probe"; }
  };
  Probe m;
  m.param("w");
  m.buffer("stat");
  m.child("act");
  CHECK_THROWS_WITH_AS(m.param("w"), "Probe: parameter 'w' registered twice", Error);
  CHECK_THROWS_WITH_AS(m.buffer("stat"), "Probe: buffer 'stat' registered twice", Error);
  CHECK_THROWS_WITH_AS(m.child("act"), "Probe: child 'act' registered twice", Error);
  CHECK_THROWS_WITH_AS(m.buffer("w"),
                       "Probe: buffer 'w' has the name of a parameter already registered", Error);
  CHECK_THROWS_WITH_AS(m.param("act"),
                       "Probe: parameter 'act' has the name of a child already registered", Error);
  CHECK_THROWS_WITH_AS(m.child("stat"),
                       "Probe: child 'stat' has the name of a buffer already registered", Error);
  CHECK_THROWS_WITH_AS(m.param("act.x"),
                       "Probe: parameter name 'act.x' must be non-empty and hold no '.'", Error);
  CHECK_THROWS_WITH_AS(m.buffer(""), "Probe: buffer name '' must be non-empty and hold no '.'",
                       Error);
  // A computed tensor is no parameter: it would pass its gradient on and keep none.
  struct Computed : Module {
    Computed() {
      Tensor w = Tensor::ones({2, 3});
      w.set_requires_grad();
      register_parameter("p", mul_scalar(w, 2.0f));
    }
    Tensor forward(const Tensor& x) override { return x; }
    std::string type_name() const override { return "Computed"; }
  };
  CHECK_THROWS_WITH_AS(Computed(),
                       "Computed: parameter 'p' [2, 3] is not a leaf: it was computed by "
                       "'mul_scalar'; register value.detach() (or a tensor made without a graph), "
                       "as torch.nn.Parameter requires",
                       Error);
  // Nothing refused was registered: the state dict holds the two tensors, once each.
  CHECK(keys(m.state_dict()) == std::vector<std::string>{"w", "stat"});
}

TEST_CASE("module: train/eval recurse through children") {
  Rng rng(3);
  auto net = small_net(rng);
  CHECK((*net)[1].is_training());
  net->eval();
  CHECK_FALSE(net->is_training());
  CHECK_FALSE((*net)[1].is_training());
  net->train();
  CHECK((*net)[3].is_training());
}

TEST_CASE("module: zero_grad drops every parameter's gradient") {
  Rng rng(4);
  auto net = small_net(rng);
  sum((*net)(Tensor::uniform({6, 4}, rng))).backward();
  for (const Tensor& p : net->parameters()) CHECK(p.has_grad());
  net->zero_grad();
  for (const Tensor& p : net->parameters()) CHECK_FALSE(p.has_grad());
}

TEST_CASE("module: forward hooks see input and output") {
  Rng rng(5);
  auto net = small_net(rng);
  Shape seen;
  (*net)[2].register_forward_hook([&](const Module& m, const Tensor&, const Tensor& y) {
    CHECK(m.type_name() == "ReLU");
    seen = y.shape();
  });
  (*net)(Tensor::ones({7, 4}));
  CHECK(seen == Shape{7, 3});
}

TEST_CASE("module: a hook's handle removes that hook alone, as torch's RemovableHandle") {
  Rng rng(5);
  auto net = small_net(rng);
  std::string calls;
  Module& relu = (*net)[2];
  ForwardHookHandle a = relu.register_forward_hook([&](auto&&...) { calls += "a"; });
  ForwardHookHandle b = relu.register_forward_hook([&](auto&&...) { calls += "b"; });
  relu.register_forward_hook([&](auto&&...) { calls += "c"; });
  (*net)(Tensor::ones({2, 4}));
  CHECK(calls == "abc");  // in registration order
  b.remove();
  b.remove();  // a second time: nothing
  ForwardHookHandle().remove();
  calls.clear();
  (*net)(Tensor::ones({2, 4}));
  CHECK(calls == "ac");
  a.remove();
  calls.clear();
  (*net)(Tensor::ones({2, 4}));
  CHECK(calls == "c");
  CHECK(relu.has_forward_hooks());
  relu.clear_forward_hooks();
  CHECK_FALSE(relu.has_forward_hooks());
}

TEST_CASE("module: Sequential::set replaces a module in place, as torch's seq[i] = m") {
  Rng rng(6);
  auto net = small_net(rng);
  net->eval();
  net->set(2, std::make_shared<Identity>());
  CHECK(net->children()[2].first == "2");
  CHECK((*net)[2].type_name() == "Identity");
  CHECK_FALSE((*net)[2].is_training());  // takes its parent's mode, as add_child does
  CHECK((*net)(Tensor::ones({7, 4})).shape() == Shape{7, 2});
  CHECK_THROWS_WITH_AS(net->set(4, std::make_shared<ReLU>()),
                       doctest::Contains("Sequential: set(4) is out of range for 4 modules"),
                       Error);
  CHECK_THROWS_WITH_AS(net->set(0, nullptr), doctest::Contains("module: child '0' is null"), Error);
}

TEST_CASE("module: Sequential's operator[] names the index and the size when out of range") {
  // Found by the API attack: it threw std::out_of_range, unlike set() and every other check.
  Rng rng(6);
  auto net = small_net(rng);
  CHECK((*net)[3].type_name() == "Dense");
  CHECK_THROWS_WITH_AS(
      (*net)[4], doctest::Contains("Sequential: index 4 is out of range for 4 modules"), Error);
  CHECK_THROWS_WITH_AS(Sequential()[0],
                       doctest::Contains("Sequential: index 0 is out of range for 0 modules"),
                       Error);
}

TEST_CASE("module: a module cannot contain itself, directly or through a child") {
  // Found by the API attack: s->add(s) was accepted and parameters() then recursed until the stack
  // overflowed. REQUIRE, so that a cycle that did get in ends the test before a traversal.
  Rng rng(9);
  auto outer = small_net(rng);
  auto inner = std::make_shared<Sequential>();
  inner->emplace<ReLU>();
  outer->add(inner);
  auto deepest = std::make_shared<Sequential>();
  inner->add(deepest);
  REQUIRE_THROWS_WITH_AS(outer->add(outer),
                         doctest::Contains("module: child '5' (Sequential) is this module or "
                                           "contains it; a module cannot contain itself"),
                         Error);
  REQUIRE_THROWS_WITH_AS(inner->add(outer), doctest::Contains("module: child '2' (Sequential)"),
                         Error);
  REQUIRE_THROWS_WITH_AS(deepest->add(outer), doctest::Contains("cannot contain itself"), Error);
  REQUIRE_THROWS_WITH_AS(inner->set(0, outer), doctest::Contains("cannot contain itself"), Error);
  // Nothing was added or replaced, and the traversals still end.
  CHECK(outer->size() == 5);
  CHECK(inner->size() == 2);
  CHECK((*inner)[0].type_name() == "ReLU");
  CHECK(outer->parameters().size() == 5);
  // A module may still appear twice where that makes no cycle (tied layers).
  inner->add(deepest);
  CHECK(inner->size() == 3);
}

TEST_CASE("module: printing and summary show layers, shapes and parameter counts") {
  Rng rng(6);
  auto net = small_net(rng);
  std::string printed = net->to_string();
  CHECK(printed.find("(0): Dense(4 -> 3, bias)") != std::string::npos);
  CHECK(printed.find("(1): BatchNorm1d(3)") != std::string::npos);
  std::string table = summary(*net, {2, 4});
  CHECK(table.find("[2, 3]") != std::string::npos);
  CHECK(table.find("[2, 2]") != std::string::npos);
  CHECK(table.find("total parameters: 27") != std::string::npos);
  CHECK(net->is_training());  // summary restores the mode
}

TEST_CASE("module: summary shows each use of a tied layer with its own shape, parameters once") {
  // One ReLU used twice (after 4 -> 3 and after 3 -> 2, so its outputs differ) and one square
  // Dense used twice, the second uses inside a nested Sequential. The old table hooked the ReLU
  // once per row and kept one shape per module, so both ReLU rows showed [5, 2], and it counted
  // the square Dense's 12 parameters on both rows, 47 against a total of 35.
  Rng rng(11);
  auto relu = std::make_shared<ReLU>();
  auto square = std::make_shared<Dense>(DenseOptions{.in_features = 3, .out_features = 3}, rng);
  auto inner = std::make_shared<Sequential>();
  inner->add(square);
  inner->emplace<Dense>(DenseOptions{.in_features = 3, .out_features = 2}, rng);
  inner->add(relu);
  auto net = std::make_shared<Sequential>();
  net->emplace<Dense>(DenseOptions{.in_features = 4, .out_features = 3}, rng);
  net->add(relu).add(square).add(inner);
  std::string table = summary(*net, {5, 4});
  INFO(table);

  std::istringstream in(table);
  std::string header;
  std::getline(in, header);
  const size_t shape_col = header.find("output shape");
  REQUIRE(shape_col != std::string::npos);
  std::map<std::string, std::string> row;  // name -> the row's line
  std::vector<std::string> order;
  int64_t counted = 0;
  for (std::string line; std::getline(in, line) && line.rfind("input ", 0) != 0;) {
    std::string name = line.substr(0, line.find(' '));
    order.push_back(name);
    row[name] = line;
    CHECK(line.find('[', shape_col) == shape_col);  // the shape column stays aligned
    std::string params = line.substr(line.find_last_of(' ') + 1);
    if (params != "(shared)") counted += std::stoll(params);
  }
  CHECK(order == std::vector<std::string>{"0", "1", "2", "3.0", "3.1", "3.2"});
  CHECK(row["1"].find("[5, 3]") == shape_col);
  CHECK(row["3.2"].find("[5, 2]") == shape_col);
  CHECK(row["3.2"].find("[same as 1]") != std::string::npos);
  CHECK(row["3.2"].find("(shared)") != std::string::npos);
  CHECK(row["3.0"].find("[same as 2]") != std::string::npos);
  CHECK(row["3.0"].find("(shared)") != std::string::npos);
  CHECK(row["1"].find("same as") == std::string::npos);  // the first use is the module itself
  CHECK(row["2"].find("(shared)") == std::string::npos);
  CHECK(net->num_parameters() == 15 + 12 + 8);
  CHECK(counted == net->num_parameters());
  CHECK(table.find("total parameters: 35") != std::string::npos);
  CHECK(net->is_training());
  CHECK_FALSE(relu->has_forward_hooks());
  CHECK_FALSE(square->has_forward_hooks());
  // A forward that throws (5 input features where 4 are expected) still takes every hook off.
  CHECK_THROWS_AS(summary(*net, {5, 5}), Error);
  CHECK(net->is_training());
  CHECK_FALSE(relu->has_forward_hooks());
  CHECK_FALSE(square->has_forward_hooks());
}

TEST_CASE("module: load_state_dict copies values and validates before touching the model") {
  Rng rng(7);
  auto a = small_net(rng);
  auto b = small_net(rng);
  (*a)(Tensor::uniform({8, 4}, rng));  // moves a's running stats
  b->load_state_dict(a->state_dict());
  auto sa = a->state_dict(), sb = b->state_dict();
  for (size_t i = 0; i < sa.size(); ++i)
    CHECK(sa[i].tensor.to_vector() == sb[i].tensor.to_vector());
  // Storage is copied, not shared.
  CHECK_FALSE(sa[0].tensor.data() == sb[0].tensor.data());

  auto c = small_net(rng);
  std::vector<float> before = c->state_dict()[0].tensor.to_vector();
  std::vector<NamedTensor> bad = a->state_dict();
  bad[4].tensor = Tensor::zeros({2, 5});  // 3.weight with the wrong shape
  CHECK_THROWS_WITH_AS(c->load_state_dict(bad), doctest::Contains("3.weight"), Error);
  CHECK(c->state_dict()[0].tensor.to_vector() == before);  // unchanged by the failed load
  std::vector<NamedTensor> missing = a->state_dict();
  missing.erase(missing.begin());
  CHECK_THROWS_WITH_AS(c->load_state_dict(missing), doctest::Contains("0.weight"), Error);
}

TEST_CASE("module: load_state_dict with strict=false loads what is there, like PyTorch") {
  Rng rng(8);
  auto a = small_net(rng);
  auto b = small_net(rng);
  std::vector<float> b_head = b->state_dict()[4].tensor.to_vector();  // 3.weight
  std::vector<NamedTensor> partial{a->state_dict()[0], {"unrelated.key", Tensor::zeros({2})}};
  CHECK_THROWS_AS(b->load_state_dict(partial), Error);
  b->load_state_dict(partial, false);
  CHECK(b->state_dict()[0].tensor.to_vector() == a->state_dict()[0].tensor.to_vector());
  CHECK(b->state_dict()[4].tensor.to_vector() == b_head);  // missing: left as it was
}

TEST_CASE(
    "module: a tied layer lists its tensors once, as PyTorch, and state_dict keeps every name") {
  // Found by the API attack of 2026-12-06: the same Dense added twice listed its weight twice, so
  // Sgd(model.parameters()) threw "parameter 2 is the same tensor as parameter 0".
  Rng rng(10);
  auto make = [](Rng& r) {
    auto net = std::make_shared<Sequential>();
    auto dense = std::make_shared<Dense>(DenseOptions{.in_features = 3, .out_features = 3}, r);
    auto bn = std::make_shared<BatchNorm1d>(BatchNormOptions{.num_features = 3});
    net->add(dense).add(bn).add(dense).add(bn);
    return net;
  };
  auto net = make(rng);
  std::vector<std::string> param_names, buffer_names;
  for (const auto& [name, t] : net->named_parameters()) param_names.push_back(name);
  for (const auto& [name, t] : net->named_buffers()) buffer_names.push_back(name);
  CHECK(param_names == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"});
  CHECK(buffer_names ==
        std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"});
  CHECK(net->parameters().size() == 4);
  CHECK(net->num_parameters() == 3 * 3 + 3 + 3 + 3);
  CHECK(net->size() == 4);  // the registrations themselves stay
  // state_dict keeps both names of each tied tensor, as torch's does.
  CHECK(keys(net->state_dict()) ==
        std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias",
                                 "3.weight", "3.bias", "1.running_mean", "1.running_var",
                                 "1.num_batches_tracked", "3.running_mean", "3.running_var",
                                 "3.num_batches_tracked"});

  // One SGD step moves the shared weight once, by the gradient summed over both uses.
  const float lr = 0.1f;
  Sgd sgd(net->parameters(), SgdOptions{.lr = lr});
  Tensor w = net->named_parameters()[0].second;
  std::vector<float> before = w.to_vector();
  sum((*net)(Tensor::uniform({5, 3}, rng)) * Tensor::uniform({5, 3}, rng)).backward();
  std::vector<float> grad = w.grad().to_vector();
  sgd.step();
  std::vector<float> after = w.to_vector();
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < after.size(); ++i)
    CHECK(after[i] == doctest::Approx(before[i] - lr * grad[i]).epsilon(1e-6));

  // Saving writes one copy per name; loading puts them into the tied tensors of a fresh model.
  testing::TempDir dir("tied");
  save_safetensors(dir.file("tied.safetensors"), net->state_dict());
  SafetensorsFile file = load_safetensors(dir.file("tied.safetensors"));
  CHECK(file.tensors.size() == 14);
  auto copy = make(rng);
  copy->load_state_dict(file.tensors);
  auto sa = net->state_dict(), sb = copy->state_dict();
  for (size_t i = 0; i < sa.size(); ++i)
    CHECK(sa[i].tensor.to_vector() == sb[i].tensor.to_vector());
  CHECK(copy->state_dict()[0].tensor.is_same(copy->state_dict()[4].tensor));  // still tied
}

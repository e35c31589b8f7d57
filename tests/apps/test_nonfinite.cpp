// apps non-finite guard (--on-nan): the per-step check fires on a NaN/Inf loss or gradient only;
// the diagnosis names the first layer whose output went non-finite and the parameter whose
// gradient went non-finite first in backward order, and leaves the model as it found it; skip
// undoes the step's BatchNorm statistics. Through the CLI: stop ends the run as diverged (exit 3)
// with that message, skip and continue finish it, counting the non-finite steps in summary.json.
#include <doctest/doctest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "apps_test_util.h"
#include "core/ops.h"
#include "train/nonfinite_guard.h"

using namespace apps_test;
using namespace bnlab;
using json = nlohmann::json;

namespace {

Model tiny_mlp(const std::string& norm) {
  ModelSpec spec;
  spec.name = "mlp";
  spec.norm = norm;
  spec.channels = 1;
  spec.height = spec.width = 4;
  spec.num_classes = 3;
  Rng rng(7);
  return build_model(spec, rng);
}

// The module paths of the model's Dense layers ("1", "4", ...), in order.
std::vector<std::string> dense_layers(const Model& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m.net->named_parameters())
    if (t.dim() == 2) out.push_back(name.substr(0, name.rfind('.')));
  return out;
}

Tensor batch_of(int64_t n) {
  Rng rng(3);
  return Tensor::normal({n, 1, 4, 4}, rng);
}

float loss_and_backward(Model& m, const Tensor& x) {
  Tensor loss = cross_entropy((*m.net)(x), std::vector<int64_t>(static_cast<size_t>(x.size(0)), 1));
  loss.backward();
  return loss.item();
}

std::string state_bytes(const Model& m) { return encode_safetensors(m.net->state_dict()); }

bool all_finite(const std::string& safetensors_path) {
  for (const NamedTensor& t : load_safetensors(safetensors_path).tensors)
    for (float v : t.tensor.to_vector())
      if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

TEST_CASE("apps.nonfinite: the check fires only on a non-finite loss or gradient") {
  Model m = tiny_mlp("batch");
  NonFiniteGuard guard(m, OnNonFinite::kStop);
  guard.before_step();
  float loss = loss_and_backward(m, batch_of(8));
  CHECK_FALSE(guard.found(loss));
  CHECK(guard.found(NAN));
  CHECK(guard.found(INFINITY));
  // One infinite gradient element anywhere is enough.
  m.net->named_parameters().front().second.grad().data()[3] = -INFINITY;
  CHECK(guard.found(loss));
  CHECK(parse_on_nan("skip") == OnNonFinite::kSkip);
  CHECK_THROWS_WITH_AS(parse_on_nan("ignore"), doctest::Contains("'ignore'"), Error);
}

TEST_CASE("apps.nonfinite: the diagnosis names the first non-finite layer output") {
  Model m = tiny_mlp("batch");
  const std::vector<std::string> dense = dense_layers(m);
  REQUIRE(dense.size() >= 3);
  // A NaN weight in the second Dense: its output is the first non-finite one.
  const std::string poisoned = dense[1];
  for (auto& [name, t] : m.net->named_parameters())
    if (name == poisoned + ".weight") t.data()[0] = NAN;
  NonFiniteGuard guard(m, OnNonFinite::kStop);
  const Tensor x = batch_of(8);
  guard.before_step();
  float loss = loss_and_backward(m, x);
  REQUIRE(guard.found(loss));
  const std::string before = state_bytes(m);
  const Rng::State rng_before = m.dropout_rng->state();
  std::string report = guard.diagnose(12, loss, x);
  CAPTURE(report);
  // The loss may well be finite (ReLU maps NaN to 0); the gradients are not.
  CHECK(contains(report, "step 12: loss "));
  CHECK(contains(report, "first non-finite output: layer " + poisoned + " (Dense)"));
  CHECK(contains(report, "parameters already non-finite: " + poisoned + ".weight"));
  CHECK(contains(report, "first non-finite gradient (backward order): "));
  CHECK_FALSE(contains(report, "first non-finite gradient (backward order): none"));
  // The replay left the BatchNorm buffers and the dropout generator as they were.
  CHECK(state_bytes(m) == before);
  CHECK(m.dropout_rng->state().state == rng_before.state);

  NonFiniteGuard::Verdict v = guard.handle(12, loss, x);
  CHECK(v.stop);
  CHECK(contains(v.message, "stopping (diverged)"));
  CHECK(guard.events() == 1);
  CHECK(guard.first_step() == 12);
}

TEST_CASE("apps.nonfinite: a finite forward with an infinite gradient names that parameter") {
  Model m = tiny_mlp("none");
  const std::vector<std::string> dense = dense_layers(m);
  NonFiniteGuard guard(m, OnNonFinite::kContinue);
  const Tensor x = batch_of(4);
  guard.before_step();
  float loss = loss_and_backward(m, x);
  for (auto& [name, t] : m.net->named_parameters())
    if (name == dense.front() + ".weight") t.grad().data()[0] = INFINITY;
  REQUIRE(guard.found(loss));
  NonFiniteGuard::Verdict v = guard.handle(3, loss, x);
  CAPTURE(v.message);
  CHECK_FALSE(v.stop);
  CHECK(v.apply_update);
  CHECK(contains(v.message, "first non-finite output: none (every layer output is finite)"));
  CHECK(contains(v.message, dense.front() + ".weight of layer " + dense.front() +
                                " (Dense), 1 of 6 parameter gradients non-finite"));
}

TEST_CASE("apps.nonfinite: skip drops the step's BatchNorm statistics and reports only 3 times") {
  Model m = tiny_mlp("batch");
  NonFiniteGuard guard(m, OnNonFinite::kSkip);
  Tensor x = batch_of(8);
  x.data()[5] = NAN;  // one bad pixel: the batch statistics, and so the running ones, turn NaN
  const std::string before = state_bytes(m);
  for (int step = 1; step <= 5; ++step) {
    CAPTURE(step);
    guard.before_step();
    float loss = loss_and_backward(m, x);
    REQUIRE(guard.found(loss));
    CHECK(state_bytes(m) != before);  // the forward pass updated the running statistics...
    NonFiniteGuard::Verdict v = guard.handle(step, loss, x);
    CHECK(state_bytes(m) == before);  // ...and skip restored them
    CHECK_FALSE(v.stop);
    CHECK_FALSE(v.apply_update);
    if (step <= 3) CHECK(contains(v.message, "skipping its update"));
    if (step == 4) CHECK(contains(v.message, "only counted"));
    if (step == 5) CHECK(v.message.empty());
    m.net->zero_grad();
  }
  CHECK(guard.events() == 5);
  CHECK(guard.first_step() == 1);
}

TEST_CASE("apps.nonfinite: --on-nan stop, skip and continue through the CLI") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  auto run = [&](const std::string& mode) {
    return run_cli(
        "train --model mlp --norm none --lr 1000 --steps 20 --eval-every 10 "
        "--batch-size 16 --threads 1 --data-dir " +
        shell_quote(dir.file("data")) + " --out " + shell_quote(dir.file(mode)) + " --on-nan " +
        mode);
  };
  CliResult stop = run("stop");
  CAPTURE(stop.output);
  CHECK(stop.exit_code == 3);
  json s = json::parse(read_text(dir.file("stop") + "/summary.json"));
  const std::string step = std::to_string(s["diverged_step"].get<int64_t>());
  CHECK(
      contains(stop.output, "train: step " + step + ": loss nan; first non-finite output: layer "));
  CHECK(contains(stop.output, "(Dense)"));
  CHECK(contains(stop.output, "stopping (diverged)"));
  CHECK(contains(stop.output, "DIVERGED at step " + step));
  CHECK(s["nonfinite_steps"] == 1);
  CHECK(s["first_nonfinite_step"] == s["diverged_step"]);

  CliResult skip = run("skip");
  CAPTURE(skip.output);
  CHECK(skip.exit_code == 0);
  CHECK(contains(skip.output, "skipping its update"));
  json k = json::parse(read_text(dir.file("skip") + "/summary.json"));
  CHECK(k["diverged"] == false);
  CHECK(k["steps"] == 20);
  CHECK(k["nonfinite_steps"].get<int64_t>() >= 1);
  CHECK(k["first_nonfinite_step"] == s["diverged_step"]);  // same seed, same first bad step
  CHECK(all_finite(dir.file("skip") + "/model.safetensors"));

  CliResult cont = run("continue");
  CAPTURE(cont.output);
  CHECK(cont.exit_code == 0);
  CHECK(contains(cont.output, "applying it anyway"));
  CHECK(json::parse(read_text(dir.file("continue") + "/summary.json"))["steps"] == 20);
  CHECK_FALSE(all_finite(dir.file("continue") + "/model.safetensors"));
}

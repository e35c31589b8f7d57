// The zoo's --norm noisy-batch: BatchNorm layers with noise, each its own stream, fed by the run's
// seed, with the spec's ranges, and the same initial weights as the batch arm.
#include <doctest/doctest.h>

#include <set>

#include "train/models.h"

using namespace bnlab;

namespace {
std::vector<BatchNorm*> batch_norms(const Model& m) {
  std::vector<BatchNorm*> out;
  for (const auto& [name, child] : m.net->children())
    if (auto* bn = dynamic_cast<BatchNorm*>(child.get())) out.push_back(bn);
  return out;
}
}  // namespace

TEST_CASE("train.models: noisy-batch builds noisy BatchNorm layers with their own streams") {
  ModelSpec spec;
  spec.name = "paper-mlp";
  spec.norm = "noisy-batch";
  spec.bn_noise_mean = 0.3f;
  spec.bn_noise_var = 1.5f;
  Rng rng(1);
  Model noisy = build_model(spec, rng);
  std::vector<BatchNorm*> layers = batch_norms(noisy);
  REQUIRE(layers.size() == 3);
  std::set<uint64_t> seeds;
  for (BatchNorm* bn : layers) {
    REQUIRE(bn->options().noise.has_value());
    CHECK(bn->options().noise->mean_range == 0.3f);
    CHECK(bn->options().noise->var_max == 1.5f);
    seeds.insert(bn->options().noise->seed);
  }
  CHECK(seeds.size() == 3);

  SUBCASE("the same seed gives the same streams, another seed others") {
    Rng same(1), other(2);
    Model again = build_model(spec, same);
    Model moved = build_model(spec, other);
    for (size_t i = 0; i < layers.size(); ++i) {
      CHECK(batch_norms(again)[i]->options().noise->seed == layers[i]->options().noise->seed);
      CHECK(batch_norms(moved)[i]->options().noise->seed != layers[i]->options().noise->seed);
    }
  }
  SUBCASE("the batch arm has the same initial weights and state_dict names") {
    spec.norm = "batch";
    Rng same(1);
    Model plain = build_model(spec, same);
    std::vector<NamedTensor> a = noisy.net->state_dict(), b = plain.net->state_dict();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      CAPTURE(a[i].name);
      CHECK(a[i].name == b[i].name);
      CHECK(a[i].tensor.to_vector() == b[i].tensor.to_vector());
    }
    for (BatchNorm* bn : batch_norms(plain)) CHECK(!bn->options().noise.has_value());
  }
}

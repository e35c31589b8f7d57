#include "train/data_parallel.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "core/io.h"
#include "layers/batch_norm.h"

namespace bnlab {

namespace {

void for_each_batch_norm(Module& m, const std::function<void(BatchNorm&)>& f) {
  if (auto* bn = dynamic_cast<BatchNorm*>(&m)) f(*bn);
  for (auto& [name, child] : m.children()) for_each_batch_norm(*child, f);
}

// BNLAB_TEST_RANK_EXIT="R:S": rank R exits abruptly (no MPI_Finalize, exit code 3) when it reaches
// gradient averaging at step S, as a crashed rank would. For the test that the job ends instead of
// hanging.
int64_t test_exit_step(int rank) {
  const char* v = std::getenv("BNLAB_TEST_RANK_EXIT");
  if (!v) return -1;
  int r = -1;
  long long s = -1;
  if (std::sscanf(v, "%d:%lld", &r, &s) != 2 || r != rank) return -1;
  return s;
}

}  // namespace

DataParallel::DataParallel(Model& model, uint64_t seed, bool sync_bn)
    : comm_(world()), model_(model), seed_(seed) {
  if (!active()) return;
  exit_at_step_ = test_exit_step(comm_.rank());
  // Rank 0's initial weights and BN buffers everywhere (each rank built its own from the same
  // seed, so this also guards against any rank-dependent initialization).
  for (auto& [name, t] : model.net->named_parameters()) {
    comm_.broadcast(t.data(), t.numel(), 0);
    t.bump_version();
  }
  for (auto& [name, t] : model.net->named_buffers()) {
    comm_.broadcast(t.data(), t.numel(), 0);
    t.bump_version();
  }
  if (sync_bn) {
    auto reducer = make_batch_norm_reducer(comm_);
    for_each_batch_norm(*model.net, [&](BatchNorm& bn) { bn.set_reducer(reducer); });
  }
  params_ = model.net->parameters();
  std::reverse(params_.begin(), params_.end());
  int64_t largest = 0;
  for (const Tensor& p : params_) largest = std::max(largest, p.numel());
  bucket_.resize(static_cast<size_t>(std::max(largest, kBucketBytes / int64_t{sizeof(float)})));
}

void DataParallel::average_gradients() {
  if (!active()) return;
  ++steps_;
  if (steps_ == exit_at_step_) {
    write_whole_line(STDERR_FILENO, "rank " + std::to_string(comm_.rank()) + ": exiting at step " +
                                        std::to_string(steps_) + " (BNLAB_TEST_RANK_EXIT)\n");
    std::_Exit(3);
  }
  auto t0 = std::chrono::steady_clock::now();
  const float scale = 1.0f / static_cast<float>(comm_.size());
  const int64_t capacity = static_cast<int64_t>(bucket_.size());
  // Buckets of consecutive parameters (reverse order); a parameter larger than the nominal bucket
  // gets one of its own (bucket_ is sized for the largest). Every rank runs the same graph, so the
  // set of parameters with a gradient is the same on all of them.
  size_t i = 0;
  while (i < params_.size()) {
    size_t j = i;
    int64_t used = 0;
    while (j < params_.size()) {
      if (!params_[j].has_grad()) {
        ++j;
        continue;
      }
      int64_t n = params_[j].numel();
      if (used > 0 && used + n > capacity) break;
      std::memcpy(bucket_.data() + used, params_[j].grad().data(), sizeof(float) * n);
      used += n;
      ++j;
    }
    if (used > 0) {
      comm_.allreduce_sum(bucket_.data(), used);
      int64_t off = 0;
      for (size_t k = i; k < j; ++k) {
        if (!params_[k].has_grad()) continue;
        Tensor g = params_[k].grad();
        float* gd = g.data();
        const float* src = bucket_.data() + off;
        for (int64_t e = 0; e < g.numel(); ++e) gd[e] = src[e] * scale;
        off += g.numel();
      }
    }
    i = j;
  }
  allreduce_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double DataParallel::mean_over_ranks(double value) {
  if (!active()) return value;
  auto t0 = std::chrono::steady_clock::now();
  comm_.allreduce_sum(&value, 1);
  allreduce_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return value / comm_.size();
}

void DataParallel::sum_over_ranks(double* values, int64_t n) {
  if (active()) comm_.allreduce_sum(values, n);
}

void DataParallel::reseed_dropout(int64_t step) {
  if (!active() || comm_.rank() == 0 || !model_.dropout_rng) return;
  // A stream of its own per (rank, step): distinct across ranks, reproducible on resume.
  model_.dropout_rng->seed_with(seed_ ^ (0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(step + 1)),
                                0xd1b54a32d192ed03ULL + static_cast<uint64_t>(comm_.rank()));
}

}  // namespace bnlab

// The data-parallel side of `bnlab train` under `mpirun -np P` (PyTorch DDP semantics):
// - --batch-size is per rank; rank r takes slice r of every global batch of P * batch-size
//   samples, in the global order a single process with batch P * batch-size and the same seed
//   would use (DataLoaderOptions::shards);
// - rank 0's initial weights and buffers are broadcast, gradients are averaged with a bucketed
//   sum-allreduce after backward, so the ranks stay identical;
// - BatchNorm normalizes with each rank's local batch unless --sync-bn installs the SyncBN
//   reducer (core/distributed.h), making P ranks of batch b behave like one process of batch P*b;
// - dropout masks differ per rank but are deterministic: rank 0 keeps the single-process stream
//   (saved in checkpoints), rank r > 0 is reseeded from (seed, rank, step) before every step, so
//   a resume from any checkpoint (evaluation or SIGINT) is exact on every rank without saving
//   their states.
// With one process every method returns at once without any MPI call.
#pragma once

#include <cstdint>
#include <vector>

#include "core/distributed.h"
#include "train/models.h"

namespace bnlab {

class DataParallel {
 public:
  /// Joins world(); with several ranks broadcasts rank 0's parameters and buffers into `model` and
  /// installs the SyncBN reducer when `sync_bn`. `seed` (the run's) seeds the dropout streams of
  /// ranks > 0.
  DataParallel(Model& model, uint64_t seed, bool sync_bn);

  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  bool is_root() const { return comm_.rank() == 0; }
  bool active() const { return comm_.size() > 1; }

  /// Replaces every parameter's gradient by its mean over the ranks, in buckets of about
  /// kBucketBytes in reverse registration order (the order backward produces them). Times itself.
  void average_gradients();
  /// The mean of `value` over the ranks (every rank gets the same value, so a loss that is not
  /// finite on one rank stops all of them at the same step).
  double mean_over_ranks(double value);
  /// Sums `n` counters over the ranks, in place.
  void sum_over_ranks(double* values, int64_t n);
  /// Called before every step: reseeds the dropout stream of ranks > 0 from (seed, rank, step)
  /// (rank 0 keeps the single-process stream, which checkpoints save).
  void reseed_dropout(int64_t step);
  /// Seconds spent in collectives during training (gradients, loss), since construction.
  double allreduce_seconds() const { return allreduce_seconds_; }

  /// Gradient bucket size: big enough to amortize a collective's latency, small enough that a
  /// bucket's packing overlaps nothing large (the PyTorch DDP default is 25 MB for GPUs; CPU
  /// shared-memory transports saturate near 1 MB).
  static constexpr int64_t kBucketBytes = int64_t{1} << 20;

 private:
  Communicator& comm_;
  Model& model_;
  uint64_t seed_;
  std::vector<Tensor> params_;  // reverse registration order
  std::vector<float> bucket_;   // packing buffer, allocated once
  double allreduce_seconds_ = 0;
  int64_t steps_ = 0;
  int64_t exit_at_step_ = -1;  // test hook: BNLAB_TEST_RANK_EXIT="rank:step"
};

}  // namespace bnlab

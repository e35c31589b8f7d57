// The process group of a data-parallel run: which rank this process is, how many there are, and
// the few collectives data-parallel training needs (sum-allreduce, broadcast, barrier, and the
// moment merge behind SyncBN). Two implementations behind one interface: a single-process one
// that is always built (every collective is a no-op, so one process pays nothing), and an MPI one
// compiled only with the CMake option BNLAB_MPI (core/distributed.cpp). mpi.h never leaks into
// this header, so nothing else in the library depends on MPI being installed.
//
// Usage:
//   Communicator& comm = world();  // MPI_COMM_WORLD under mpirun, else the single process
//   if (comm.size() > 1) comm.allreduce_sum(grads, n);
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/ops.h"

namespace bnlab {

/// A fixed group of processes that run the same program in lockstep (SPMD). Every collective must
/// be called by all ranks, in the same order, with the same sizes; a rank that skips one hangs the
/// others (MPI's contract).
class Communicator {
 public:
  virtual ~Communicator() = default;
  /// This process's index in [0, size()).
  virtual int rank() const = 0;
  /// The number of processes.
  virtual int size() const = 0;
  /// Replaces `data[0, n)` on every rank by its element-wise sum over all ranks.
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  /// Replaces `data[0, n)` on every rank by its element-wise sum over all ranks.
  virtual void allreduce_sum(double* data, int64_t n) = 0;
  /// Copies `data[0, n)` of rank `root` to every rank.
  virtual void broadcast(float* data, int64_t n, int root) = 0;
  /// Copies `data[0, n)` of rank `root` to every rank.
  virtual void broadcast(double* data, int64_t n, int root) = 0;
  /// Returns once every rank has called it.
  virtual void barrier() = 0;
  /// Merges `channels` triples (count, mean, M2) over all ranks in rank order with
  /// merge_moments_into (core/ops.h), so every rank gets the moments of all ranks' values.
  virtual void merge_moments(double* moments, int64_t channels) = 0;
  /// Ends every rank of the job at once with exit code `code` (MPI_Abort); the single process
  /// simply exits. For errors on one rank, which would otherwise leave the others waiting in a
  /// collective forever.
  [[noreturn]] virtual void abort(int code) = 0;
  /// "MPI (Open MPI ...)" or "single process", for logs.
  virtual std::string describe() const = 0;
};

/// The single-process group: rank 0 of 1, every collective a no-op.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(float*, int64_t) override {}
  void allreduce_sum(double*, int64_t) override {}
  void broadcast(float*, int64_t, int) override {}
  void broadcast(double*, int64_t, int) override {}
  void barrier() override {}
  void merge_moments(double*, int64_t) override {}
  [[noreturn]] void abort(int code) override;
  std::string describe() const override { return "single process"; }
};

/// True when this build has the MPI implementation (CMake option BNLAB_MPI).
bool mpi_built();

/// True when a launcher (mpirun, srun) started this process as one rank of several: Open MPI's
/// OMPI_COMM_WORLD_SIZE, PMIx's PMIX_RANK with PMI_SIZE/OMPI size, or Slurm/MPICH's PMI_SIZE > 1.
/// Reads only the environment; initializes nothing.
bool launched_as_multiple_ranks();

/// The process group of this run, created on first use: MPI_COMM_WORLD (MPI initialized here,
/// finalized at exit) when built with MPI and launched as several ranks, otherwise the single
/// process, so a plain `bnlab train` never touches MPI. Throws when several ranks were launched
/// but this build has no MPI (each would silently train alone).
Communicator& world();

/// After this rank reported an error: if world() is a group of several ranks, ends all of them
/// with `code` (MPI_Abort), since the others may be blocked in a collective this rank will never
/// join; otherwise returns and the caller exits normally.
void abort_job_if_distributed(int code);

/// The SyncBN reducer over `comm` for BatchNorm::set_reducer: merges statistics and sums
/// gradients across its ranks. `comm` must outlive every graph built with the reducer.
std::shared_ptr<BatchNormReducer> make_batch_norm_reducer(Communicator& comm);

}  // namespace bnlab

// DataLoader: batches of float images [N, C, H, W] and labels from a uint8 ImageDataset, with a
// seeded per-epoch shuffle, drop_last, per-channel normalization, CIFAR-style augmentation, and a
// background worker that prepares the next batch while the model trains on the current one.
//
// Reproducibility: the order of epoch e is a Fisher-Yates shuffle driven by Rng(seed).split(e)
// only, and the augmentation of the sample at position p of epoch e is drawn from an Rng derived
// from (seed, e, p) only. Neither depends on the batch size, the number of OpenMP threads, or
// prefetching, so every configuration yields bit-identical batches (tests/data/test_data_loader.cpp
// pins this).
//
// Worker and buffer contract (prefetch = true): one std::thread fills batch k+1 while the caller
// holds batch k (double buffering). next(out) swaps the ready batch into `out` and hands `out`'s
// previous contents back to the worker for reuse: its image storage is written again only if
// nothing else still references it (the Tensor handle and its storage are both unshared), otherwise
// a fresh tensor is drawn from the storage pool. So after warm-up no batch allocates, and a tensor
// the model still holds (e.g. inside an autograd graph, or a copied handle) is never overwritten.
// Raw pointers from images.data() are valid only until the next call to next(). An exception thrown
// while preparing a batch is rethrown by next(); the epoch then ends. The destructor stops and
// joins the worker, even mid-epoch. One consumer thread only; the dataset must outlive the loader
// and not change while it runs.
//
// Usage:
//   DataLoader loader(train, {.batch_size = 60, .seed = 1,
//                             .normalize = standard_normalization("mnist")});
//   for (int64_t e = 0; e < epochs; ++e) {
//     loader.start_epoch(e);
//     Batch b;
//     while (loader.next(b)) { ... model(b.images), cross_entropy(logits, b.labels) ... }
//   }
// Reference: PyTorch torch.utils.data.DataLoader (shuffle, drop_last, prefetching workers),
// https://pytorch.org/docs/stable/data.html.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"
#include "data/transforms.h"

namespace bnlab {

/// How a DataLoader batches, orders, normalizes and augments.
struct DataLoaderOptions {
  int64_t batch_size = 64;          ///< images per batch (per shard)
  bool shuffle = true;              ///< false: dataset order every epoch
  bool drop_last = false;           ///< drop a last batch smaller than batch_size
  uint64_t seed = 0;                ///< drives the shuffle and the augmentation
  NormalizeOptions normalize = {};  ///< empty: values v / 255 in [0, 1]
  AugmentOptions augment = {};      ///< random crop with padding, horizontal flip (off by default)
  bool prefetch = true;             ///< prepare the next batch on a background thread
  /// Data-parallel sharding: the epoch order is cut into global batches of batch_size * shards
  /// positions and this loader yields slice `shard` of each (batch_size positions from shard *
  /// batch_size on), so the shards of one global batch are disjoint and together equal the batch a
  /// single loader with batch_size * shards would give (same order, same augmentation draws). With
  /// drop_last every shard gets the same number of full batches; without it a shard's count ends at
  /// its last non-empty slice (no empty batches).
  int64_t shards = 1;
  int64_t shard = 0;  ///< this loader's slice, in [0, shards)
  /// OpenMP threads converting one batch. 0 = automatic: 1 with prefetch (the worker runs beside
  /// training, which already uses the cores) and for batches under 2^20 floats (an MNIST batch
  /// converts in ~0.1 ms on one core, less than a fork/join costs on a busy machine), else
  /// omp_get_max_threads(). At most 1024, as the CLI's --threads.
  int64_t threads = 0;
};

/// One batch: normalized float images and their labels.
struct Batch {
  Tensor images;                ///< [N, C, H, W] float
  std::vector<int64_t> labels;  ///< N class indices
  int64_t epoch = -1;           ///< the epoch it belongs to
  int64_t index = -1;           ///< batch number within the epoch, from 0
  /// N, the number of images.
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

/// Turns an ImageDataset into shuffled, normalized float batches, preparing the next batch on a
/// background thread. The order of an epoch depends only on (seed, epoch).
class DataLoader {
 public:
  /// Keeps a reference to `data`, which must outlive the loader. Throws if the dataset is
  /// inconsistent (check_dataset), batch_size < 1, batch_size * shards overflows int64, threads is
  /// outside [0, 1024], or the normalization does not fit the channel count.
  DataLoader(const ImageDataset& data, const DataLoaderOptions& options);
  DataLoader(ImageDataset&&,
             const DataLoaderOptions&) = delete;  ///< would dangle: pass a named dataset
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// Begins epoch `epoch` (any order; restarting mid-epoch discards what was prepared). next()
  /// without a prior start_epoch starts epoch 0.
  void start_epoch(int64_t epoch);
  /// The epoch's next batch into `out`; false once the epoch is exhausted (until start_epoch).
  bool next(Batch& out);

  /// Batches next() yields per epoch.
  int64_t batches_per_epoch() const { return num_batches_; }
  /// The current epoch.
  int64_t epoch() const { return epoch_; }
  /// The dataset it reads.
  const ImageDataset& dataset() const { return data_; }
  /// The options it was built with.
  const DataLoaderOptions& options() const { return options_; }

  /// The dataset indices in the order epoch `epoch` visits them (identity without shuffle).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  /// Builds batch `index` of an epoch visiting the data in `order`, synchronously, on this thread.
  /// Throws unless `order` has one entry per image and the batch's entries are in [0, N); `out` is
  /// then left unchanged.
  void fill_batch(int64_t epoch, int64_t index, const std::vector<int64_t>& order,
                  Batch& out) const;

 private:
  void worker_loop();

  const ImageDataset& data_;
  DataLoaderOptions options_;
  PixelAffine affine_;
  int64_t num_batches_ = 0;
  int64_t threads_ = 1;

  // Consumer-side state.
  bool started_ = false;
  int64_t epoch_ = 0;
  int64_t consumed_ = 0;
  std::shared_ptr<const std::vector<int64_t>> order_;

  /// Shared with the worker, guarded by mutex_.
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread worker_;
  bool stop_ = false;
  /// bumped by start_epoch so a batch of an abandoned epoch is discarded
  uint64_t generation_ = 0;
  int64_t job_epoch_ = 0;  ///< the epoch the worker is preparing, and its order
  std::shared_ptr<const std::vector<int64_t>> job_order_;
  int64_t produced_ = 0;  ///< batches of job_epoch_ handed to the slot (or being made)
  bool slot_full_ = false;
  Batch slot_;   ///< the prepared batch waiting for next()
  Batch spare_;  ///< the consumer's previous batch, recycled by the worker
  std::exception_ptr slot_error_;
};

}  // namespace bnlab

// DataLoader: seeded shuffle, fused conversion into reused batch tensors, and the prefetch worker.
// Reference: https://pytorch.org/docs/stable/data.html (DataLoader semantics: shuffle, drop_last).
#include "data/data_loader.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <limits>
#include <utility>

#include "core/error.h"

namespace bnlab {

namespace {

// Distinct PCG streams, so the shuffle and the augmentation draws of one seed are unrelated.
constexpr uint64_t kShuffleStream = 0x5f1e5f1e5f1eULL;
constexpr uint64_t kAugmentStream = 0xa06a06a06a06ULL;

// The CLI's --threads limit (train/knobs.cpp). It reaches OpenMP's num_threads clause as is, and
// libgomp crashes (stack overflow) starting a team of 100000.
constexpr int64_t kMaxThreads = 1024;

// True if `t` can be written in place as a batch of `shape`: nobody else holds the handle or its
// storage.
bool reusable(const Tensor& t, const Shape& shape) {
  if (!t.defined() || t.shape() != shape) return false;
  const auto& impl = t.impl();
  return impl.use_count() == 1 && impl->storage.use_count() == 1 && !impl->requires_grad &&
         impl->grad_fn == nullptr;
}

}  // namespace

DataLoader::DataLoader(const ImageDataset& data, const DataLoaderOptions& options)
    : data_(data), options_(options) {
  check_dataset(data_, "data_loader");
  BNLAB_CHECK(options_.batch_size >= 1, "data_loader: batch_size is ", options_.batch_size,
              "; must be at least 1");
  BNLAB_CHECK(options_.augment.crop_padding >= 0 && options_.augment.crop_padding <= data_.height &&
                  options_.augment.crop_padding <= data_.width,
              "data_loader: crop_padding ", options_.augment.crop_padding,
              " must be in [0, image size] for images [", data_.channels, ", ", data_.height, ", ",
              data_.width, "]");
  BNLAB_CHECK(options_.threads >= 0 && options_.threads <= kMaxThreads, "data_loader: threads is ",
              options_.threads, "; must be a whole number from 0 to ", kMaxThreads,
              " (0 = automatic)");
  affine_ = make_pixel_affine(options_.normalize, data_.channels);
  BNLAB_CHECK(options_.shards >= 1 && options_.shard >= 0 && options_.shard < options_.shards,
              "data_loader: shard ", options_.shard, " of ", options_.shards,
              " is out of range (need 0 <= shard < shards)");
  const int64_t N = data_.size();
  const int64_t B = options_.batch_size;
  // G must not wrap: 0 would divide by zero below, and a negative G would empty the epoch silently.
  BNLAB_CHECK(B <= std::numeric_limits<int64_t>::max() / options_.shards,
              "data_loader: batch_size ", B, " times shards ", options_.shards,
              " overflows int64 (a global batch is batch_size * shards images)");
  const int64_t G = B * options_.shards;     // positions per global batch
  const int64_t start = options_.shard * B;  // this shard's first position in a global batch
  // Rounds up without N - start + G - 1, which overflows for a batch_size near INT64_MAX.
  num_batches_ = options_.drop_last ? N / G : (N > start ? (N - start - 1) / G + 1 : 0);
  // No batch holds more than N images, whose bytes fit int64 (check_dataset): this cannot wrap.
  const bool big_batch = std::min(B, N) * data_.image_bytes() >= (int64_t{1} << 20);
  threads_ = options_.threads > 0                ? options_.threads
             : (options_.prefetch || !big_batch) ? 1
                                                 : int64_t{omp_get_max_threads()};
  produced_ = num_batches_;  // the worker idles until start_epoch
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(data_.size()));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  if (!options_.shuffle || order.size() < 2) return order;
  // Fisher-Yates driven by (seed, epoch) only.
  Rng rng = Rng(options_.seed, kShuffleStream).split(static_cast<uint64_t>(epoch));
  for (size_t i = order.size() - 1; i > 0; --i) {
    size_t j = rng.below(static_cast<uint32_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

void DataLoader::fill_batch(int64_t epoch, int64_t index, const std::vector<int64_t>& order,
                            Batch& out) const {
  const int64_t N = data_.size();
  const int64_t C = data_.channels, H = data_.height, W = data_.width;
  const int64_t CHW = C * H * W;
  // The dataset is held by reference; catch a caller that resized it under the loader.
  BNLAB_CHECK(static_cast<int64_t>(order.size()) == N &&
                  static_cast<int64_t>(data_.pixels.size()) == N * CHW,
              "data_loader: dataset '", data_.title(), "' changed after the loader was built (",
              data_.size(), " labels, ", data_.pixels.size(), " pixel bytes; the epoch order has ",
              order.size(), " entries)");
  BNLAB_CHECK(index >= 0 && index < num_batches_, "data_loader: batch ", index,
              " out of range; the epoch has ", num_batches_, " batches");
  const int64_t first = (index * options_.shards + options_.shard) * options_.batch_size;
  const int64_t n = std::min(options_.batch_size, N - first);
  // fill_batch is public, so `order` need not come from epoch_order(); its entries index the pixel
  // buffer directly. Checked before `out` is touched, so a bad order leaves it as it was.
  for (int64_t i = first; i < first + n; ++i) {
    const int64_t k = order[static_cast<size_t>(i)];
    BNLAB_CHECK(k >= 0 && k < N, "data_loader: fill_batch: order[", i, "] is ", k,
                ", out of range for dataset '", data_.title(), "' of ", N, " images");
  }

  const Shape shape{n, C, H, W};
  if (!reusable(out.images, shape)) out.images = Tensor::empty(shape);
  out.labels.resize(static_cast<size_t>(n));
  out.epoch = epoch;
  out.index = index;
  for (int64_t i = 0; i < n; ++i) {
    out.labels[static_cast<size_t>(i)] =
        data_.labels[static_cast<size_t>(order[static_cast<size_t>(first + i)])];
  }

  // One pass per sample: gather its bytes, augment, normalize, write floats. Each sample's draw
  // comes from an Rng keyed by (seed, epoch, position in the epoch), so the thread count cannot
  // change it.
  const bool augment = options_.augment.enabled();
  const Rng epoch_rng = Rng(options_.seed, kAugmentStream).split(static_cast<uint64_t>(epoch));
  const uint8_t* pixels = data_.pixels.data();
  float* dst = out.images.data();
  const int nt = static_cast<int>(threads_);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t position = first + i;
    const int64_t k = order[static_cast<size_t>(position)];
    SampleAugment aug;
    if (augment) {
      Rng rng = epoch_rng.split(static_cast<uint64_t>(position));
      aug = draw_augment(options_.augment, rng);
    }
    convert_image(pixels + k * CHW, C, H, W, affine_, aug, dst + i * CHW);
  }
}

void DataLoader::start_epoch(int64_t epoch) {
  order_ = std::make_shared<const std::vector<int64_t>>(epoch_order(epoch));
  epoch_ = epoch;
  consumed_ = 0;
  started_ = true;
  if (!options_.prefetch) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++generation_;
    job_epoch_ = epoch;
    job_order_ = order_;
    produced_ = 0;
    if (slot_full_) {  // a batch of the abandoned epoch: recycle its storage
      spare_ = std::move(slot_);
      slot_full_ = false;
    }
    slot_error_ = nullptr;
  }
  if (!worker_.joinable()) {
    // The worker is started with every signal blocked (it inherits the mask), so that a signal
    // sent to the process is handled by a thread that polls for it: a SIGINT taken here, by a
    // worker that is runnable but not running on a busy machine, would set the training loop's
    // flag (train/interrupt.h) only after the loop had looked, one step late.
    sigset_t all, caller;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &caller);
    try {
      worker_ = std::thread([this] { worker_loop(); });
    } catch (...) {
      pthread_sigmask(SIG_SETMASK, &caller, nullptr);
      throw;
    }
    pthread_sigmask(SIG_SETMASK, &caller, nullptr);
  }
  cv_.notify_all();
}

bool DataLoader::next(Batch& out) {
  if (!started_) start_epoch(0);
  if (consumed_ >= num_batches_) return false;
  if (!options_.prefetch) {
    fill_batch(epoch_, consumed_, *order_, out);
    ++consumed_;
    return true;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return slot_full_; });
  slot_full_ = false;
  if (slot_error_) {
    // The batch could not be made: end the epoch (the worker stops producing) and report why.
    std::exception_ptr error = std::exchange(slot_error_, nullptr);
    consumed_ = num_batches_;
    produced_ = num_batches_;
    spare_ = std::move(slot_);
    lock.unlock();
    std::rethrow_exception(error);
  }
  // The ready batch goes to the caller; the caller's previous batch goes back to the worker.
  std::swap(out, slot_);
  spare_ = std::move(slot_);
  slot_ = Batch();
  ++consumed_;
  lock.unlock();
  cv_.notify_all();
  return true;
}

void DataLoader::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || (produced_ < num_batches_ && !slot_full_); });
    if (stop_) return;
    const uint64_t generation = generation_;
    const int64_t epoch = job_epoch_;
    const int64_t index = produced_++;
    std::shared_ptr<const std::vector<int64_t>> order = job_order_;
    Batch work = std::move(spare_);
    spare_ = Batch();
    lock.unlock();

    std::exception_ptr error;
    try {
      fill_batch(epoch, index, *order, work);
    } catch (...) {
      error = std::current_exception();
    }

    lock.lock();
    if (generation != generation_) {  // start_epoch ran meanwhile: this batch belongs to no one
      spare_ = std::move(work);
      continue;
    }
    slot_ = std::move(work);
    slot_error_ = error;
    slot_full_ = true;
    cv_.notify_all();
  }
}

}  // namespace bnlab

// bench_loader: images per second the DataLoader delivers (shuffle, gather, uint8 -> float with
// normalization, and for CIFAR random crop + flip), as a table. The consumer only touches each
// batch, so the numbers are the loader's ceiling; with prefetch they measure the single background
// worker. A second table runs a busy-loop "training step" of batch / 50k img/s after each batch and
// reports how long next() blocks per batch, i.e. the loader's overhead seen by a training loop.
//
//   bench_loader [--data-dir DIR] [--seconds S]
// Uses real MNIST / CIFAR-10 (train split) when found under DIR (default as bnlab's: $BNLAB_DATA,
// ./data or $XDG_DATA_HOME/bnlab; data/datasets.h), else synthetic data of the same shape.
// Target: >= 10x the training speed of the fastest zoo model (~50k img/s for a small MLP), i.e.
// >= 500k img/s for MNIST batches of 60-128.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/error.h"
#include "data/data_loader.h"
#include "data/datasets.h"

using namespace bnlab;

namespace {

ImageDataset synthetic(const std::string& name, int64_t N, int64_t C, int64_t H, int64_t W) {
  ImageDataset d;
  d.name = name + "(synthetic)";
  d.channels = C;
  d.height = H;
  d.width = W;
  d.pixels.resize(static_cast<size_t>(N * C * H * W));
  Rng rng(1);
  for (auto& p : d.pixels) p = static_cast<uint8_t>(rng.next_u32());
  for (int64_t i = 0; i < N; ++i) d.labels.push_back(i % 10);
  for (int k = 0; k < 10; ++k) d.class_names.push_back(std::to_string(k));
  return d;
}

ImageDataset load_or_synthetic(const std::string& name, const std::string& split,
                               const std::string& data_dir, int64_t N, int64_t C, int64_t H,
                               int64_t W) {
  try {
    ImageDataset d = load_dataset(name, split, data_dir);
    d.name += "(real)";
    return d;
  } catch (const Error&) {
    return synthetic(name, N, C, H, W);
  }
}

struct Result {
  double images_per_s;
  double ms_per_batch;
  int64_t threads;
};

Result measure(const ImageDataset& data, DataLoaderOptions options, double seconds) {
  DataLoader loader(data, options);
  Batch b;
  float sink = 0.0f;
  loader.start_epoch(0);  // warm-up epoch: buffers, page faults, thread start
  while (loader.next(b)) sink += b.images.data()[0];
  int64_t images = 0, batches = 0;
  auto start = std::chrono::steady_clock::now();
  double elapsed = 0.0;
  for (int64_t epoch = 1; elapsed < seconds; ++epoch) {
    loader.start_epoch(epoch);
    while (loader.next(b)) {
      sink += b.images.data()[b.images.numel() - 1];
      images += b.size();
      ++batches;
    }
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (sink == 12345.0f) std::printf(" ");  // keep the reads
  const int64_t threads = options.threads > 0
                              ? options.threads
                              : (options.prefetch ? 1 : int64_t{omp_get_max_threads()});
  return {static_cast<double>(images) / elapsed, 1e3 * elapsed / static_cast<double>(batches),
          threads};
}

struct Stall {
  double next_s;  // mean seconds next() blocked per batch
};

// Runs batches for `seconds` with a busy-wait of step_s after each, timing only next().
Stall measure_stall(const ImageDataset& data, const DataLoaderOptions& options, double step_s,
                    double seconds) {
  using clock = std::chrono::steady_clock;
  DataLoader loader(data, options);
  Batch b;
  double in_next = 0.0, total = 0.0;
  int64_t batches = 0;
  loader.start_epoch(0);
  const auto start = clock::now();
  for (int64_t epoch = 0; total < seconds; ++epoch) {
    if (epoch > 0) loader.start_epoch(epoch);
    while (total < seconds) {
      const auto t0 = clock::now();
      if (!loader.next(b)) break;
      const auto t1 = clock::now();
      in_next += std::chrono::duration<double>(t1 - t0).count();
      ++batches;
      while (std::chrono::duration<double>(clock::now() - t1).count() < step_s) {
      }
      total = std::chrono::duration<double>(clock::now() - start).count();
    }
  }
  return {in_next / static_cast<double>(std::max<int64_t>(batches, 1))};
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir;
  double seconds = 1.0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
      data_dir = argv[++i];
    } else if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = std::stod(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_loader [--data-dir DIR] [--seconds S]\n");
      return 2;
    }
  }
  data_dir = resolve_data_dir(data_dir);
  try {
    ImageDataset mnist = load_or_synthetic("mnist", "train", data_dir, 60000, 1, 28, 28);
    ImageDataset cifar = load_or_synthetic("cifar10", "train", data_dir, 50000, 3, 32, 32);
    const NormalizeOptions mnist_norm = standard_normalization("mnist");
    const NormalizeOptions cifar_norm = standard_normalization("cifar10");

    std::printf(
        "bench_loader: %d OpenMP threads; shuffle on; each row runs >= %.1f s after a warm-up "
        "epoch\n",
        omp_get_max_threads(), seconds);
    std::printf("%-16s %6s %-12s %-8s %7s %12s %9s\n", "dataset", "batch", "augment", "prefetch",
                "threads", "images/s", "ms/batch");
    auto row = [&](const ImageDataset& d, int64_t batch, bool augment, bool prefetch,
                   int64_t threads) {
      DataLoaderOptions o;
      o.batch_size = batch;
      o.seed = 1;
      o.prefetch = prefetch;
      o.threads = threads;
      o.normalize = d.channels == 1 ? mnist_norm : cifar_norm;
      if (augment) o.augment = {.crop_padding = 4, .horizontal_flip = true};
      Result r = measure(d, o, seconds);
      std::printf("%-16s %6lld %-12s %-8s %7lld %12.0f %9.3f\n", d.name.c_str(),
                  static_cast<long long>(batch), augment ? "crop4+flip" : "none",
                  prefetch ? "yes" : "no", static_cast<long long>(r.threads), r.images_per_s,
                  r.ms_per_batch);
    };
    for (int64_t batch : {60, 128}) {
      row(mnist, batch, false, false, 1);
      row(mnist, batch, false, false, 0);
      row(mnist, batch, false, true, 0);
    }
    row(cifar, 128, false, false, 0);
    row(cifar, 128, true, false, 1);
    row(cifar, 128, true, false, 0);
    row(cifar, 128, true, true, 0);
    std::printf(
        "reference: the fastest zoo model (small MLP) trains at ~50k img/s; target >= 500k img/s "
        "for MNIST\n\n");

    // What a training loop sees: a step that takes as long as training at 50k img/s, and the time
    // next() blocks per batch. With prefetch the batch is ready when the step ends.
    std::printf("with a simulated training step of batch / 50k img/s (busy loop):\n");
    std::printf("%-16s %6s %-12s %-8s %14s %10s\n", "dataset", "batch", "augment", "prefetch",
                "next() ms/batch", "overhead");
    auto stall_row = [&](const ImageDataset& d, int64_t batch, bool augment, bool prefetch) {
      DataLoaderOptions o;
      o.batch_size = batch;
      o.seed = 1;
      o.prefetch = prefetch;
      o.normalize = d.channels == 1 ? mnist_norm : cifar_norm;
      if (augment) o.augment = {.crop_padding = 4, .horizontal_flip = true};
      const double step_s = static_cast<double>(batch) / 50000.0;
      Stall s = measure_stall(d, o, step_s, seconds);
      std::printf("%-16s %6lld %-12s %-8s %14.3f %9.1f%%\n", d.name.c_str(),
                  static_cast<long long>(batch), augment ? "crop4+flip" : "none",
                  prefetch ? "yes" : "no", 1e3 * s.next_s, 100.0 * s.next_s / (s.next_s + step_s));
    };
    for (bool prefetch : {false, true}) stall_row(mnist, 60, false, prefetch);
    for (bool prefetch : {false, true}) stall_row(cifar, 128, true, prefetch);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

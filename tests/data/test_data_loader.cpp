// data/data_loader and data/dataset: batches cover each epoch once with the right shapes and
// values; drop_last; the seeded shuffle is reproducible, differs across epochs and seeds, and --
// with augmentation -- gives bit-identical batches for 1 or 2 OpenMP threads, with or without
// prefetch, and for any batch size; worker errors reach the consumer; the destructor joins
// mid-epoch; the prefetch worker blocks signals; batch buffers are reused only when released;
// thread counts over 1024 and order entries outside the dataset are refused; split_train_val;
// check_dataset refuses sizes past int64.
#include <doctest/doctest.h>
#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>

#include "core/error.h"
#include "data/data_loader.h"
#include "data_test_util.h"

using namespace bnlab;
using namespace data_test;

namespace {

// All batches of one epoch, images flattened per sample (as floats) and labels.
struct EpochDump {
  std::vector<std::vector<float>> samples;
  std::vector<int64_t> labels;
  std::vector<int64_t> batch_sizes;
};

EpochDump run_epoch(DataLoader& loader, int64_t epoch) {
  EpochDump dump;
  loader.start_epoch(epoch);
  Batch b;
  while (loader.next(b)) {
    const ImageDataset& d = loader.dataset();
    const int64_t chw = d.image_bytes();
    REQUIRE(b.images.shape() == Shape{b.size(), d.channels, d.height, d.width});
    CHECK(b.epoch == epoch);
    CHECK(b.index == static_cast<int64_t>(dump.batch_sizes.size()));
    for (int64_t i = 0; i < b.size(); ++i) {
      dump.samples.emplace_back(b.images.data() + i * chw, b.images.data() + (i + 1) * chw);
      dump.labels.push_back(b.labels[static_cast<size_t>(i)]);
    }
    dump.batch_sizes.push_back(b.size());
  }
  return dump;
}

bool same_bits(const EpochDump& a, const EpochDump& b) {
  if (a.samples.size() != b.samples.size() || a.labels != b.labels) return false;
  for (size_t i = 0; i < a.samples.size(); ++i) {
    if (std::memcmp(a.samples[i].data(), b.samples[i].data(),
                    a.samples[i].size() * sizeof(float)) != 0)
      return false;
  }
  return true;
}

}  // namespace

TEST_CASE("data.loader: an epoch visits every image once, in batches of the right shape") {
  ImageDataset d = synthetic(23, 1, 4, 3);
  for (bool prefetch : {false, true}) {
    CAPTURE(prefetch);
    DataLoader loader(d, {.batch_size = 5, .shuffle = false, .prefetch = prefetch});
    CHECK(loader.batches_per_epoch() == 5);
    EpochDump e = run_epoch(loader, 0);
    CHECK(e.batch_sizes == std::vector<int64_t>{5, 5, 5, 5, 3});
    // Without shuffle: dataset order, values v / 255.
    for (int64_t i = 0; i < d.size(); ++i) {
      CHECK(e.labels[static_cast<size_t>(i)] == d.labels[static_cast<size_t>(i)]);
      for (int64_t p = 0; p < d.image_bytes(); ++p)
        CHECK(e.samples[static_cast<size_t>(i)][static_cast<size_t>(p)] ==
              doctest::Approx(d.image(i)[p] / 255.0f));
    }
    Batch b;
    CHECK_FALSE(loader.next(b));  // exhausted until the next start_epoch
  }
  DataLoader drop(d, {.batch_size = 5, .shuffle = true, .drop_last = true, .seed = 4});
  CHECK(drop.batches_per_epoch() == 4);
  EpochDump e = run_epoch(drop, 0);
  CHECK(e.batch_sizes == std::vector<int64_t>{5, 5, 5, 5});
  // With shuffle: a permutation, and the labels match the images' own.
  std::vector<int64_t> order = drop.epoch_order(0);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(23);
  std::iota(iota.begin(), iota.end(), 0);
  CHECK(sorted == iota);
  for (size_t i = 0; i < e.labels.size(); ++i)
    CHECK(e.labels[i] == d.labels[static_cast<size_t>(order[i])]);
  // next() without start_epoch starts epoch 0.
  DataLoader lazy(d, {.batch_size = 50});
  Batch b;
  REQUIRE(lazy.next(b));
  CHECK(b.size() == 23);
  CHECK(b.epoch == 0);
  CHECK_FALSE(lazy.next(b));
}

TEST_CASE("data.loader: normalization is applied per channel") {
  ImageDataset d = synthetic(4, 3, 2, 2);
  DataLoader loader(
      d,
      {.batch_size = 4, .shuffle = false, .normalize = {{0.1f, 0.2f, 0.3f}, {0.5f, 0.25f, 2.0f}}});
  Batch b;
  REQUIRE(loader.next(b));
  const float mean[3] = {0.1f, 0.2f, 0.3f}, std[3] = {0.5f, 0.25f, 2.0f};
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t p = 0; p < 4; ++p) {
        float v = d.image(i)[c * 4 + p] / 255.0f;
        CHECK(b.images.data()[(i * 3 + c) * 4 + p] == doctest::Approx((v - mean[c]) / std[c]));
      }
}

TEST_CASE("data.loader: shuffle depends on (seed, epoch) only") {
  ImageDataset d = synthetic(100, 1, 2, 2);
  DataLoader a(d, {.batch_size = 10, .seed = 7});
  DataLoader b(d, {.batch_size = 32, .seed = 7, .prefetch = false});
  DataLoader c(d, {.batch_size = 10, .seed = 8});
  CHECK(a.epoch_order(0) == b.epoch_order(0));
  CHECK(a.epoch_order(3) == b.epoch_order(3));
  CHECK(a.epoch_order(0) != a.epoch_order(1));
  CHECK(a.epoch_order(0) != c.epoch_order(0));
  // Epochs can be visited in any order: epoch 2 is the same whether or not 0 and 1 came first.
  EpochDump first = run_epoch(a, 2);
  run_epoch(b, 0);
  run_epoch(b, 1);
  CHECK(same_bits(first, run_epoch(b, 2)));
}

TEST_CASE("data.loader: batches are bit-identical across threads, prefetch and batch size") {
  ImageDataset d = synthetic(150, 3, 8, 8);
  DataLoaderOptions base{.batch_size = 16,
                         .seed = 11,
                         .normalize = {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}},
                         .augment = {.crop_padding = 2, .horizontal_flip = true}};
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  DataLoaderOptions o1 = base;
  o1.prefetch = false;
  DataLoader one_thread(d, o1);
  EpochDump ref0 = run_epoch(one_thread, 0);
  EpochDump ref1 = run_epoch(one_thread, 1);
  omp_set_num_threads(2);
  DataLoaderOptions o1b = o1;
  o1b.threads = 2;  // two OpenMP threads split each batch
  DataLoader two_threads(d, o1b);
  CHECK(same_bits(ref0, run_epoch(two_threads, 0)));
  CHECK(same_bits(ref1, run_epoch(two_threads, 1)));
  DataLoader automatic(d, o1);
  CHECK(same_bits(ref1, run_epoch(automatic, 1)));
  omp_set_num_threads(saved);

  DataLoaderOptions o2 = base;
  o2.prefetch = true;
  o2.threads = 2;
  DataLoader prefetching(d, o2);
  CHECK(same_bits(ref0, run_epoch(prefetching, 0)));
  CHECK(same_bits(ref1, run_epoch(prefetching, 1)));

  DataLoaderOptions o3 = base;
  o3.batch_size = 7;
  DataLoader other_batch(d, o3);
  EpochDump b7 = run_epoch(other_batch, 1);
  CHECK(same_bits(ref1, b7));
  CHECK(b7.batch_sizes.size() == 22);

  // Augmentation really happens: epochs differ, and differ from the plain conversion.
  CHECK_FALSE(same_bits(ref0, ref1));
  DataLoaderOptions plain = base;
  plain.augment = {};
  DataLoader no_aug(d, plain);
  EpochDump p0 = run_epoch(no_aug, 0);
  CHECK(p0.labels == ref0.labels);
  CHECK_FALSE(same_bits(ref0, p0));
}

TEST_CASE("data.loader: augmentation in a batch equals convert_image with the sample's draw") {
  ImageDataset d = synthetic(9, 3, 6, 6);
  DataLoader loader(d, {.batch_size = 9,
                        .seed = 2,
                        .augment = {.crop_padding = 3, .horizontal_flip = true},
                        .prefetch = false});
  loader.start_epoch(0);
  Batch b;
  REQUIRE(loader.next(b));
  std::vector<int64_t> order = loader.epoch_order(0);
  PixelAffine plain = make_pixel_affine({}, 3);
  int padded_samples = 0;
  for (int64_t i = 0; i < 9; ++i) {
    const float* got = b.images.data() + i * 108;
    // Find the crop/flip that reproduces this sample: exactly one candidate must match bit for bit.
    int matches = 0;
    for (int64_t dy = -3; dy <= 3; ++dy)
      for (int64_t dx = -3; dx <= 3; ++dx)
        for (bool flip : {false, true}) {
          std::vector<float> want(108);
          convert_image(d.image(order[static_cast<size_t>(i)]), 3, 6, 6, plain,
                        {.dy = dy, .dx = dx, .flip = flip}, want.data());
          if (std::memcmp(want.data(), got, sizeof(float) * 108) == 0) {
            ++matches;
            padded_samples += (dy != 0 || dx != 0);
          }
        }
    CHECK(matches >= 1);
  }
  CHECK(padded_samples > 0);
}

TEST_CASE("data.loader: batch storage is reused only once the consumer has released it") {
  ImageDataset d = synthetic(40, 1, 4, 4);
  for (bool prefetch : {false, true}) {
    for (bool window : {false, true}) {
      CAPTURE(prefetch);
      CAPTURE(window);
      DataLoader loader(d, {.batch_size = 4, .shuffle = false, .prefetch = prefetch});
      loader.start_epoch(0);
      Batch b;
      REQUIRE(loader.next(b));
      const float* held_buffer = b.images.data();
      // The model keeps batch 0 (e.g. in its autograd graph), or only a view of one image of it.
      Tensor held = window ? b.images[1] : b.images;
      std::vector<float> held_values = held.to_vector();
      std::set<const float*> buffers;
      while (loader.next(b)) buffers.insert(b.images.data());
      CHECK(held.to_vector() == held_values);  // never overwritten
      CHECK(buffers.count(held_buffer) == 0);
      CHECK(buffers.size() <= 3);  // double buffering: a couple of buffers cycle through 9 batches
    }
  }
}

TEST_CASE(
    "data.loader: a worker error reaches next() - restart and destruction mid-epoch are clean") {
  ImageDataset d = synthetic(30, 1, 3, 3);
  {
    DataLoader loader(d, {.batch_size = 4, .seed = 1});
    d.pixels.resize(10);  // the dataset changes under the loader
    loader.start_epoch(0);
    Batch b;
    CHECK_THROWS_WITH_AS(loader.next(b), doctest::Contains("changed after the loader was built"),
                         Error);
    CHECK_FALSE(loader.next(b));  // the failed epoch is over
  }
  d = synthetic(30, 1, 3, 3);
  {
    DataLoader loader(d, {.batch_size = 4, .seed = 1});
    loader.start_epoch(0);
    Batch b;
    REQUIRE(loader.next(b));
    REQUIRE(loader.next(b));
    loader.start_epoch(5);  // abandon epoch 0 mid-way
    REQUIRE(loader.next(b));
    CHECK(b.epoch == 5);
    CHECK(b.index == 0);
    std::vector<int64_t> order = loader.epoch_order(5);
    CHECK(b.labels[0] == d.labels[static_cast<size_t>(order[0])]);
    // Leaving scope here, with the worker holding a prepared batch, must join without hanging.
  }
  { DataLoader never_started(d, {.batch_size = 4}); }
}

TEST_CASE("data.loader: bad options are rejected with the values") {
  ImageDataset d = synthetic(10, 1, 4, 4);
  CHECK_THROWS_WITH_AS(DataLoader(d, {.batch_size = 0}), doctest::Contains("batch_size is 0"),
                       Error);
  CHECK_THROWS_WITH_AS(DataLoader(d, {.normalize = {{0.5f, 0.5f}, {0.2f, 0.2f}}}),
                       doctest::Contains("2 mean/std values for images with 1 channels"), Error);
  CHECK_THROWS_WITH_AS(DataLoader(d, {.augment = {.crop_padding = 9}}),
                       doctest::Contains("crop_padding 9"), Error);
  ImageDataset bad = synthetic(10, 1, 4, 4);
  bad.labels[3] = 12;
  CHECK_THROWS_WITH_AS(DataLoader(bad, {}), doctest::Contains("label 12 at index 3"), Error);
  bad = synthetic(10, 1, 4, 4);
  bad.pixels.pop_back();
  CHECK_THROWS_WITH_AS(DataLoader(bad, {}), doctest::Contains("159 pixel bytes, expected 160"),
                       Error);
}

TEST_CASE("data.loader: a thread count over 1024 is refused before any thread starts") {
  // libgomp crashes starting a team of 100000, and a count over 2^31 wrapped through int.
  ImageDataset d = synthetic(10, 1, 4, 4);
  CHECK_THROWS_WITH_AS(
      DataLoader(d, {.prefetch = false, .threads = 100000}),
      "data_loader: threads is 100000; must be a whole number from 0 to 1024 (0 = automatic)",
      Error);
  CHECK_THROWS_WITH_AS(DataLoader(d, {.threads = (int64_t{1} << 32) + 3}),
                       doctest::Contains("threads is 4294967299; must be"), Error);
  CHECK_THROWS_WITH_AS(DataLoader(d, {.threads = -1}), doctest::Contains("threads is -1; must be"),
                       Error);
  CHECK_NOTHROW(DataLoader(d, {.threads = 1024}));
}

TEST_CASE("data.loader: fill_batch refuses an order entry outside the dataset") {
  ImageDataset d = synthetic(10, 1, 4, 4);
  DataLoader loader(d, {.batch_size = 4, .shuffle = false, .prefetch = false});
  std::vector<int64_t> order = loader.epoch_order(0);
  Batch b;
  loader.fill_batch(0, 0, order, b);
  const std::vector<int64_t> labels = b.labels;
  const std::vector<float> pixels = b.images.to_vector();
  order[6] = 10;  // one past the last image, in batch 1 (positions 4 to 7)
  CHECK_THROWS_WITH_AS(
      loader.fill_batch(0, 1, order, b),
      "data_loader: fill_batch: order[6] is 10, out of range for dataset 'synthetic/train' of 10 "
      "images",
      Error);
  order[6] = 6;
  order[2] = -1;
  CHECK_THROWS_WITH_AS(loader.fill_batch(0, 0, order, b),
                       doctest::Contains("order[2] is -1, out of range"), Error);
  // The refused calls left the earlier batch as it was.
  CHECK(b.index == 0);
  CHECK(b.labels == labels);
  CHECK(b.images.to_vector() == pixels);
}

TEST_CASE("data.dataset: printable_name escapes control bytes and bytes outside UTF-8") {
  CHECK(printable_name("cat") == "cat");
  CHECK(printable_name("a b-c_d.e") == "a b-c_d.e");
  CHECK(printable_name("na\xc3\xafve \xe2\x82\xac \xf0\x9f\x90\x88") ==
        "na\xc3\xafve \xe2\x82\xac \xf0\x9f\x90\x88");              // 2-, 3- and 4-byte characters
  CHECK(printable_name("\x1b[31mred\x7f") == "\\x1B[31mred\\x7F");  // C0 and DEL
  CHECK(printable_name(std::string("a\0b", 3)) == "a\\x00b");
  CHECK(printable_name("tab\there\nnl") == "tab\\x09here\\x0Anl");
  CHECK(printable_name("\xc2\x9b[1m") == "\\xC2\\x9B[1m");              // C1 CSI
  CHECK(printable_name("caf\xe9") == "caf\\xE9");                       // Latin-1
  CHECK(printable_name("\xc0\xaf") == "\\xC0\\xAF");                    // overlong '/'
  CHECK(printable_name("\xed\xa0\x80") == "\\xED\\xA0\\x80");           // a UTF-16 surrogate
  CHECK(printable_name("\xf4\x90\x80\x80") == "\\xF4\\x90\\x80\\x80");  // above U+10FFFF
  CHECK(printable_name("\xe2\x82") == "\\xE2\\x82");                    // cut short
  CHECK(printable_name("\xe2\x82z") == "\\xE2\\x82z");
  CHECK(printable_name("\x80\xbf") == "\\x80\\xBF");  // stray continuation bytes
  CHECK(printable_name("") == "");
}

TEST_CASE("data.dataset: split_train_val is a seeded, disjoint, complete split") {
  ImageDataset d = synthetic(50, 1, 2, 2, 5);
  TrainValSplit s = split_train_val(d, 12, 3);
  CHECK(s.train.size() == 38);
  CHECK(s.val.size() == 12);
  CHECK(s.train.split == "train-train");
  CHECK(s.val.split == "train-val");
  // Identify images by a hash of their bytes (unique in the synthetic set) and check the partition.
  auto key = [](const ImageDataset& ds, int64_t i) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a
    for (int64_t p = 0; p < ds.image_bytes(); ++p) h = (h ^ ds.image(i)[p]) * 1099511628211ULL;
    return h;
  };
  std::set<uint64_t> all, seen;
  for (int64_t i = 0; i < d.size(); ++i) all.insert(key(d, i));
  REQUIRE(all.size() == 50);
  for (int64_t i = 0; i < s.train.size(); ++i) seen.insert(key(s.train, i));
  for (int64_t i = 0; i < s.val.size(); ++i) seen.insert(key(s.val, i));
  CHECK(seen == all);
  TrainValSplit again = split_train_val(d, 12, 3);
  CHECK(again.val.pixels == s.val.pixels);
  CHECK(again.val.labels == s.val.labels);
  CHECK(split_train_val(d, 12, 4).val.pixels != s.val.pixels);
  CHECK_THROWS_WITH_AS(split_train_val(d, 50, 0),
                       doctest::Contains("val_count 50 must be in [1, 49]"), Error);
  ImageDataset picked = subset(d, {4, 4, 0}, "pick");
  CHECK(picked.labels == std::vector<int64_t>{4, 4, 0});
  CHECK_THROWS_WITH_AS(subset(d, {50}, "x"), doctest::Contains("index 50 out of range"), Error);
}

TEST_CASE("data.dataset: check_dataset refuses image sizes past int64 instead of wrapping them") {
  // No pixels are allocated: each wrapped product used to equal the empty buffer's size.
  auto absurd = [](int64_t n, int64_t c, int64_t h, int64_t w) {
    ImageDataset d;
    d.name = "absurd";
    d.channels = c;
    d.height = h;
    d.width = w;
    d.labels.assign(static_cast<size_t>(n), 0);
    d.class_names = {"a"};
    return d;
  };
  const int64_t two32 = int64_t{1} << 32;
  CHECK_THROWS_WITH_AS(check_dataset(absurd(1, two32, two32, 1), "test"),
                       "test: dataset 'absurd' has image shape [4294967296, 4294967296, 1], more "
                       "bytes per image than int64 can count",
                       Error);
  CHECK_THROWS_WITH_AS(check_dataset(absurd(0, two32, two32, 1), "test"),
                       doctest::Contains("more bytes per image than int64 can count"), Error);
  CHECK_THROWS_WITH_AS(check_dataset(absurd(4, two32 / 2, two32 / 2, 4), "test"),
                       doctest::Contains("[2147483648, 2147483648, 4], more bytes per image"),
                       Error);
  CHECK_THROWS_WITH_AS(check_dataset(absurd(4, int64_t{1} << 62, 1, 1), "test"),
                       "test: dataset 'absurd' has 4 images of [4611686018427387904, 1, 1], more "
                       "pixel bytes than int64 can count",
                       Error);
  // One image of the largest representable size passes the size checks and fails honestly.
  CHECK_THROWS_WITH_AS(
      check_dataset(absurd(1, std::numeric_limits<int64_t>::max(), 1, 1), "test"),
      doctest::Contains("has 0 pixel bytes, expected 9223372036854775807 for 1 images"), Error);
}

namespace {

// The threads of this process, by id, from /proc.
std::set<std::string> thread_ids() {
  std::set<std::string> ids;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task"))
    ids.insert(task.path().filename().string());
  return ids;
}

// A thread's blocked-signal mask (SigBlk in /proc/self/task/ID/status).
uint64_t blocked_signals(const std::string& id) {
  std::ifstream status("/proc/self/task/" + id + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("SigBlk:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  FAIL("no SigBlk line for thread " << id);
  return 0;
}

}  // namespace

// A signal sent to the process goes to a thread that does not block it. Taken by the prefetch
// worker, runnable but not running on a busy machine, SIGINT's handler would set the training
// loop's flag late, after the loop had looked (apps.interrupt failed 1 run in 100 under load).
TEST_CASE("data.loader: the prefetch worker blocks every signal, and the caller's mask is kept") {
  ImageDataset d = synthetic(40, 1, 4, 4);
  const std::set<std::string> before = thread_ids();
  sigset_t caller_before, caller_after;
  pthread_sigmask(SIG_SETMASK, nullptr, &caller_before);
  DataLoader loader(d, {.batch_size = 8, .prefetch = true});
  loader.start_epoch(0);
  Batch b;
  REQUIRE(loader.next(b));  // the worker has run
  pthread_sigmask(SIG_SETMASK, nullptr, &caller_after);
  // The worker, and any OpenMP team it started (which inherits its mask).
  std::vector<std::string> started;
  for (const std::string& id : thread_ids())
    if (!before.count(id)) started.push_back(id);
  REQUIRE(!started.empty());
  for (const std::string& id : started) {
    const uint64_t mask = blocked_signals(id);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) {
      CAPTURE(id);
      CAPTURE(sig);
      CHECK((mask >> (sig - 1) & 1u) == 1u);
    }
  }
  for (int sig : {SIGINT, SIGTERM}) {
    CAPTURE(sig);
    CHECK(sigismember(&caller_after, sig) == sigismember(&caller_before, sig));
  }
}

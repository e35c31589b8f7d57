// DataLoaderOptions::shards (data-parallel training): the slices of one global batch are disjoint
// and, concatenated in shard order, equal the batch of a single loader with batch_size * shards
// (same samples, same augmentation bits); drop_last gives every shard the same count; without it no
// shard gets an empty batch; a bad shard index, or a batch_size * shards past int64, is rejected; a
// batch_size up to INT64_MAX gives one batch of the whole dataset.
#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "data/data_loader.h"
#include "data_test_util.h"

using namespace bnlab;
using namespace data_test;

namespace {

struct Collected {
  std::vector<std::vector<float>> batches;  // flattened images per batch
  std::vector<std::vector<int64_t>> labels;
};

Collected collect(DataLoader& loader, int64_t epoch) {
  Collected c;
  loader.start_epoch(epoch);
  Batch b;
  while (loader.next(b)) {
    REQUIRE(b.size() > 0);
    c.batches.emplace_back(b.images.data(), b.images.data() + b.images.numel());
    c.labels.push_back(b.labels);
  }
  return c;
}

}  // namespace

TEST_CASE("data.loader: shards of a global batch concatenate to the single loader's batch") {
  ImageDataset d = synthetic(100, 3, 8, 8);
  DataLoaderOptions base{.batch_size = 6,
                         .drop_last = true,
                         .seed = 5,
                         .augment = {.crop_padding = 2, .horizontal_flip = true}};
  for (int64_t shards : {2, 3}) {
    CAPTURE(shards);
    DataLoaderOptions whole = base;
    whole.batch_size = base.batch_size * shards;
    DataLoader single(d, whole);
    Collected ref = collect(single, 1);
    std::vector<Collected> parts;
    for (int64_t s = 0; s < shards; ++s) {
      DataLoaderOptions o = base;
      o.shards = shards;
      o.shard = s;
      o.prefetch = s % 2 == 0;  // either path
      DataLoader loader(d, o);
      CHECK(loader.batches_per_epoch() == single.batches_per_epoch());
      parts.push_back(collect(loader, 1));
    }
    REQUIRE(ref.batches.size() == static_cast<size_t>(100 / (6 * shards)));
    for (size_t k = 0; k < ref.batches.size(); ++k) {
      std::vector<float> joined;
      std::vector<int64_t> labels;
      for (const Collected& p : parts) {
        REQUIRE(p.batches.size() == ref.batches.size());
        joined.insert(joined.end(), p.batches[k].begin(), p.batches[k].end());
        labels.insert(labels.end(), p.labels[k].begin(), p.labels[k].end());
      }
      CHECK(labels == ref.labels[k]);
      REQUIRE(joined.size() == ref.batches[k].size());
      CHECK(std::memcmp(joined.data(), ref.batches[k].data(), joined.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("data.loader: without drop_last a shard's batches end at its last non-empty slice") {
  ImageDataset d = synthetic(23, 1, 4, 4);
  // Global batches of 2 x 5 = 10 positions: [0, 10), [10, 20), [20, 23). Shard 0 takes 0-4,
  // 10-14, 20-22 (3 batches, the last of 3); shard 1 takes 5-9, 15-19 and nothing of the last.
  int64_t sizes[2][3] = {{5, 5, 3}, {5, 5, 0}};
  for (int64_t s = 0; s < 2; ++s) {
    DataLoader loader(d, {.batch_size = 5, .shuffle = false, .shards = 2, .shard = s});
    CHECK(loader.batches_per_epoch() == (s == 0 ? 3 : 2));
    Collected c = collect(loader, 0);
    REQUIRE(c.labels.size() == static_cast<size_t>(loader.batches_per_epoch()));
    for (size_t k = 0; k < c.labels.size(); ++k)
      CHECK(static_cast<int64_t>(c.labels[k].size()) == sizes[s][k]);
  }
}

TEST_CASE("data.loader: a shard index outside 0 to shards - 1 is rejected") {
  ImageDataset d = synthetic(10, 1, 4, 4);
  CHECK_THROWS_WITH_AS(DataLoader(d, {.shards = 2, .shard = 2}),
                       doctest::Contains("shard 2 of 2 is out of range"), Error);
  CHECK_THROWS_WITH_AS(DataLoader(d, {.shards = 0}),
                       doctest::Contains("shard 0 of 0 is out of range"), Error);
}

TEST_CASE(
    "data.loader: batch_size * shards past int64 is refused - a batch_size past N is one batch") {
  ImageDataset d = synthetic(10, 1, 4, 4);
  // 3 * 2^61 * 2 wrapped to -2^62, which gave a silently empty epoch.
  CHECK_THROWS_WITH_AS(DataLoader(d, {.batch_size = int64_t{3} << 61, .shards = 2}),
                       "data_loader: batch_size 6917529027641081856 times shards 2 overflows int64 "
                       "(a global batch is batch_size * shards images)",
                       Error);
  for (int64_t B : {int64_t{64}, int64_t{1} << 62, std::numeric_limits<int64_t>::max()}) {
    CAPTURE(B);
    DataLoader loader(d, {.batch_size = B, .shuffle = false, .prefetch = false});
    CHECK(loader.batches_per_epoch() == 1);
    Collected c = collect(loader, 0);
    REQUIRE(c.labels.size() == 1);
    CHECK(c.labels[0] == d.labels);
    CHECK(DataLoader(d, {.batch_size = B, .drop_last = true}).batches_per_epoch() == 0);
  }
  // The largest global batch that fits: shard 0 takes all 10 images, shard 1 starts past them.
  const int64_t half = std::numeric_limits<int64_t>::max() / 2;
  CHECK(DataLoader(d, {.batch_size = half, .shards = 2, .shard = 0}).batches_per_epoch() == 1);
  CHECK(DataLoader(d, {.batch_size = half, .shards = 2, .shard = 1}).batches_per_epoch() == 0);
  // 2^32 * 2^32 wraps to 0, a division by zero (SIGFPE) if unchecked: last, so a crash hides
  // nothing above.
  CHECK_THROWS_WITH_AS(DataLoader(d, {.batch_size = int64_t{1} << 32, .shards = int64_t{1} << 32}),
                       doctest::Contains("batch_size 4294967296 times shards 4294967296 overflows"),
                       Error);
}

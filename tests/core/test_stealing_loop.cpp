// core/stealing_loop.h: every item runs exactly once, on its static share's thread while both
// threads keep pace, and on the other thread once its own share is done and the owner is held up.
// The held-up owner is made deterministic (it waits in its first item until the other thread has
// left run()), so no check here depends on timing.
#include <doctest/doctest.h>
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "core/blas.h"
#include "core/stealing_loop.h"

namespace bnlab {
namespace {

// Per item: how often it ran and on which thread (atomics: both threads write the counts).
struct Runs {
  std::vector<std::atomic<int>> count;
  std::vector<int> thread;
  explicit Runs(int64_t n) : count(static_cast<size_t>(n)), thread(static_cast<size_t>(n), -1) {}
  void record(int64_t i) {
    count[static_cast<size_t>(i)].fetch_add(1);
    thread[static_cast<size_t>(i)] = omp_get_thread_num();
  }
  bool each_once() const {
    for (const auto& c : count)
      if (c.load() != 1) return false;
    return true;
  }
  int64_t on_thread(int t) const {
    int64_t k = 0;
    for (int th : thread) k += th == t ? 1 : 0;
    return k;
  }
};

// Restores the thread count a test case changed.
struct KeepThreads {
  int before = num_threads();
  ~KeepThreads() { set_num_threads(before); }
};

TEST_CASE("StealingLoop: each item exactly once, for any count of items") {
  KeepThreads keep;
  set_num_threads(2);
  for (int64_t n : {0, 1, 2, 3, 7, 64, 1000}) {
    CAPTURE(n);
    Runs runs(n);
    detail::StealingLoop loop(n);
#pragma omp parallel num_threads(2)
    loop.run([&](int64_t i) { runs.record(i); });
    CHECK(runs.each_once());
  }
}

TEST_CASE("StealingLoop: a held-up thread's remaining items run on the other thread") {
  KeepThreads keep;
  set_num_threads(2);
  const int64_t n = 40;  // shares [0, 20) on thread 0, [20, 40) on thread 1
  Runs runs(n);
  std::atomic<bool> owner_started{false}, other_done{false};
  std::atomic<int> team{0};
  detail::StealingLoop loop(n);
#pragma omp parallel num_threads(2)
  {
    // (A runtime that gave fewer threads must not leave thread 0 waiting for a thread 1.)
    team.store(omp_get_num_threads());
    const bool pair = omp_get_num_threads() == 2;
    loop.run([&](int64_t i) {
      runs.record(i);
      if (!pair) return;
      if (omp_get_thread_num() == 1 && !owner_started.exchange(true)) {
        // Thread 1's first item (item 20) holds it up until thread 0 has left run().
        while (!other_done.load()) {
        }
      } else if (omp_get_thread_num() == 0 && i == 0) {
        // So that thread 1 has taken its first item before thread 0 could take it.
        while (!owner_started.load()) {
        }
      }
    });
    if (omp_get_thread_num() == 0) other_done.store(true);
  }
  REQUIRE(team.load() == 2);
  CHECK(runs.each_once());
  CHECK(runs.thread[20] == 1);
  CHECK(runs.on_thread(1) == 1);
  CHECK(runs.on_thread(0) == n - 1);
  // Thread 0 walked its own share front to back, then took thread 1's from the back.
  for (int64_t i = 21; i < n; ++i) CHECK(runs.thread[static_cast<size_t>(i)] == 0);
}

TEST_CASE("StealingLoop: a team other than the planned one runs the static split") {
  KeepThreads keep;
  set_num_threads(2);
  const int64_t n = 100;
  SUBCASE("a region whose if clause is false: one thread runs every item") {
    Runs runs(n);
    detail::StealingLoop loop(n);
    const bool parallel = false;
#pragma omp parallel if (parallel)
    loop.run([&](int64_t i) { runs.record(i); });
    CHECK(runs.each_once());
    CHECK(runs.on_thread(0) == n);
  }
  SUBCASE("one thread set: one thread runs every item in order") {
    set_num_threads(1);
    Runs runs(n);
    std::vector<int64_t> order;
    detail::StealingLoop loop(n);
#pragma omp parallel
    loop.run([&](int64_t i) {
      runs.record(i);
      order.push_back(i);
    });
    CHECK(runs.each_once());
    for (int64_t i = 0; i < n; ++i) CHECK(order[static_cast<size_t>(i)] == i);
  }
}

TEST_CASE("StealingLoop: refuses a count outside 0 .. 2^31 - 1") {
  CHECK_THROWS_WITH_AS(detail::StealingLoop(-1), doctest::Contains("StealingLoop"), std::exception);
  CHECK_THROWS_WITH_AS(detail::StealingLoop(int64_t{1} << 31), doctest::Contains("2^31"),
                       std::exception);
}

}  // namespace
}  // namespace bnlab

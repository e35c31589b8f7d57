// A loop of independent items inside an OpenMP parallel region that balances itself when one
// thread runs slower than the other (internal; not installed).
//
// Why: on this project's 2-vCPU VM one vCPU often runs at 0.57-0.82 of the other's speed for
// seconds at a time (docs/performance.md, "The host's vCPUs"), and a static split then waits for
// the slower one at every barrier. A dynamic schedule balanced that but lost more than it won:
// items alternated between the threads, so a thread no longer read what it had written, and every
// item moved the shared counter's line between the cores. Here each thread first walks its own
// static share, the one `schedule(static)` gives it, from the front; a thread that finishes takes
// the items still left in the other threads' shares from their back end, one at a time. On an even
// host that is the static split plus one uncontended compare-and-swap per item on a line of the
// thread's own; on an uneven one the faster thread ends by taking the tail of the slower's share.
//
// Rules for the body: the items must be independent (each writes its own outputs, and no result
// depends on which thread ran an item or in what order), as in any loop whose results are
// bit-identical for every thread count. Each item is run exactly once. run() ends without a
// barrier: put `#pragma omp barrier` after it where the next step reads the items' results.
//
//   detail::StealingLoop frequencies(count);   // before the region
//   #pragma omp parallel
//   {
//     frequencies.run([&](int64_t i) { ... });
//   }
#pragma once

#include <omp.h>

#include <atomic>
#include <cstdint>

#include "core/error.h"

namespace bnlab::detail {

class StealingLoop {
 public:
  /// Teams above this many threads run the plain static split (no share state kept for them).
  static constexpr int kMaxTeam = 16;

  /// For a region entered after this, with the team a `#pragma omp parallel` here would get.
  explicit StealingLoop(int64_t n) : n_(n), team_(omp_in_parallel() ? 1 : omp_get_max_threads()) {
    BNLAB_CHECK(n >= 0 && n < (int64_t{1} << 31), "StealingLoop: ", n,
                " items; expected 0 .. 2^31 - 1");
    if (team_ > kMaxTeam) return;
    for (int t = 0; t < team_; ++t) {
      shares_[t].range.store(pack(share_begin(t, team_), share_begin(t + 1, team_)),
                             std::memory_order_relaxed);
    }
  }
  StealingLoop(const StealingLoop&) = delete;
  StealingLoop& operator=(const StealingLoop&) = delete;

  /// Called by every thread of the region once: body(i) for items i of [0, n), each item on
  /// exactly one thread. A team other than the one planned for (a region with an `if` that was
  /// false, a `num_threads` clause) runs the static split.
  template <class Body>
  void run(const Body& body) {
    const int team = omp_get_num_threads(), t = omp_get_thread_num();
    if (team != team_ || team > kMaxTeam) {
      for (int64_t i = share_begin(t, team); i < share_begin(t + 1, team); ++i) body(i);
      return;
    }
    for (int64_t i; (i = take(t, /*from_back=*/false)) >= 0;) body(i);
    for (int v = 1; v < team; ++v) {
      const int other = (t + v) % team;
      for (int64_t i; (i = take(other, /*from_back=*/true)) >= 0;) body(i);
    }
  }

 private:
  // A share's items not yet taken, [front, back), in one word so that one compare-and-swap takes
  // an item from either end.
  struct alignas(64) Share {
    std::atomic<uint64_t> range{0};
  };
  static uint64_t pack(int64_t front, int64_t back) {
    return static_cast<uint64_t>(front) << 32 | static_cast<uint64_t>(back);
  }
  int64_t share_begin(int64_t t, int64_t team) const { return n_ * t / team; }

  // Takes share t's first item (the owner) or its last (another thread); -1 when none is left.
  // Relaxed order suffices: every take of share t is one compare-and-swap on one word, so the
  // takes are totally ordered and hand out each item once; what the bodies write is published by
  // the barrier that follows the loop, not by this word.
  int64_t take(int t, bool from_back) {
    std::atomic<uint64_t>& range = shares_[t].range;
    uint64_t v = range.load(std::memory_order_relaxed);
    for (;;) {
      const int64_t front = static_cast<int64_t>(v >> 32),
                    back = static_cast<int64_t>(v & 0xffffffffu);
      if (front >= back) return -1;
      const uint64_t rest = from_back ? pack(front, back - 1) : pack(front + 1, back);
      if (range.compare_exchange_weak(v, rest, std::memory_order_relaxed))
        return from_back ? back - 1 : front;
    }
  }

  int64_t n_;
  int team_;
  Share shares_[kMaxTeam];
};

}  // namespace bnlab::detail

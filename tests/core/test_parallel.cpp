// core/parallel.h: parallel_for and parallel_for_simd cover every index once, use the thread team
// when asked and there is one, and enter no parallel region otherwise (at one thread, inside
// another region, or when not asked): a region of one thread costs a futex round for nothing.
#include <doctest/doctest.h>
#include <omp.h>

#include <cstdint>
#include <set>
#include <vector>

#include "core/blas.h"
#include "core/parallel.h"

namespace bnlab {
namespace {

// Per index: how often the body ran it, on which thread, and at which nesting level.
struct Visits {
  std::vector<int> count, thread, level;
  explicit Visits(int64_t n) : count(n, 0), thread(n, -1), level(n, -1) {}
  void operator()(int64_t i) {
    count[i] += 1;
    thread[i] = omp_get_thread_num();
    level[i] = omp_get_level();
  }
};

template <class Loop>
Visits run(Loop loop, int64_t n, bool parallel) {
  Visits v(n);
  Visits* out = &v;
  loop(n, parallel, [out](int64_t i) { (*out)(i); });
  return v;
}

const auto plain = [](int64_t n, bool parallel, const auto& body) {
  detail::parallel_for(n, parallel, body);
};
const auto simd = [](int64_t n, bool parallel, const auto& body) {
  detail::parallel_for_simd(n, parallel, body);
};

template <class Loop>
void check_loop(Loop loop) {
  const int before = num_threads();
  const int64_t n = 1000;
  SUBCASE("two threads, asked: both threads, each index once") {
    set_num_threads(2);
    const Visits v = run(loop, n, true);
    CHECK(v.count == std::vector<int>(n, 1));
    CHECK(std::set<int>(v.thread.begin(), v.thread.end()) == std::set<int>{0, 1});
    CHECK(v.level == std::vector<int>(n, 1));
  }
  SUBCASE("two threads, not asked: inline") {
    set_num_threads(2);
    const Visits v = run(loop, n, false);
    CHECK(v.count == std::vector<int>(n, 1));
    CHECK(v.level == std::vector<int>(n, 0));
  }
  SUBCASE("one thread, asked: inline, no region of one") {
    set_num_threads(1);
    const Visits v = run(loop, n, true);
    CHECK(v.count == std::vector<int>(n, 1));
    CHECK(v.level == std::vector<int>(n, 0));
  }
  SUBCASE("inside a region of two threads, asked: inline on each thread") {
    set_num_threads(2);
    std::vector<Visits> per_thread(2, Visits(n));
#pragma omp parallel num_threads(2)
    per_thread[static_cast<size_t>(omp_get_thread_num())] = run(loop, n, true);
    for (const Visits& v : per_thread) {
      CHECK(v.count == std::vector<int>(n, 1));
      CHECK(v.level == std::vector<int>(n, 1));  // the enclosing region's level, none nested
    }
  }
  set_num_threads(before);
}

TEST_CASE("parallel_for: the team when asked and there is one, inline otherwise") {
  check_loop(plain);
}

TEST_CASE("parallel_for_simd: the team when asked and there is one, inline otherwise") {
  check_loop(simd);
}

}  // namespace
}  // namespace bnlab

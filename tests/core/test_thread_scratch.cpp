// core/ops/thread_scratch.h: a team's buffers are separate pool buffers, line-aligned and writable
// by their threads; a buffer that cannot be had is the caller's Error, raised before any region
// starts; a thread's grow-once scratch turns an allocation failure into the caller's Error.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/ops/thread_scratch.h"
#include "core/tensor.h"

namespace bnlab {
namespace {

TEST_CASE("thread_scratch: each thread's buffer is its own, on its own cache lines") {
  const detail::TeamScratch scratch(3, 5,
                                    [](const Error&) { FAIL("no allocation error expected"); });
  CHECK(scratch.team() == 3);
  for (int64_t t = 0; t < 3; ++t) {
    const auto address = reinterpret_cast<uintptr_t>(scratch.of_thread(t));
    CHECK(address % 64 == 0);
    // 5 floats take part of one 64-byte line: no other thread's buffer starts on it.
    for (int64_t u = 0; u < t; ++u)
      CHECK(reinterpret_cast<uintptr_t>(scratch.of_thread(u)) / 64 != address / 64);
  }
  // Every buffer is writable in full without touching the others.
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t i = 0; i < 5; ++i) scratch.of_thread(t)[i] = static_cast<float>(10 * t + i);
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t i = 0; i < 5; ++i)
      CHECK(scratch.of_thread(t)[i] == static_cast<float>(10 * t + i));
  // of_this_thread outside a region is thread 0's.
  CHECK(scratch.of_this_thread() == scratch.of_thread(0));
}

TEST_CASE("thread_scratch: a team's buffers are one pool buffer per thread, not one for the team") {
  // The pool rounds a buffer of 2 MiB or more up to whole 2 MiB huge pages, resident in full once
  // touched: one team-sized buffer of 2.25 MiB (cifar-cnn's 64-channel Winograd backward at two
  // threads) held 4 MiB where the threads' own 1.125 MiB buffers held what they use.
  detail::storage_pool_release();
  constexpr int64_t kFloats = 300000;  // 1.2 MB a thread, 2.4 MB for the two
  {
    const detail::TeamScratch scratch(2, kFloats,
                                      [](const Error&) { FAIL("no allocation error expected"); });
    for (int64_t t = 0; t < 2; ++t) std::fill_n(scratch.of_thread(t), kFloats, 1.0f);
  }
  CHECK(detail::storage_pool_cached_bytes() == 2 * kFloats * sizeof(float));
  // Back in the pool as two buffers of kFloats, which two tensors of that size take.
  const Tensor a = Tensor::empty({kFloats}), b = Tensor::empty({kFloats});
  CHECK(detail::storage_pool_cached_bytes() == 0);
}

TEST_CASE("thread_scratch: no floats means no buffer and no allocation") {
  const detail::TeamScratch none(2, 0, [](const Error&) { FAIL("nothing to allocate"); });
  CHECK(none.team() == 2);
  CHECK(none.of_thread(0) == nullptr);
  CHECK(none.of_thread(1) == nullptr);
}

TEST_CASE("thread_scratch: a team's buffer that cannot be had is the caller's error") {
  // 2 x 2^62 floats, each more than any machine has: the first is refused.
  const auto make = [] {
    detail::TeamScratch huge(2, int64_t{1} << 62, [](const Error& e) {
      BNLAB_FAIL("op: its scratch cannot be allocated: ", e.what());
    });
  };
  CHECK_THROWS_WITH_AS(make(), doctest::Contains("op: its scratch cannot be allocated: tensor:"),
                       Error);
  // A count at the top of int64 too.
  const auto top = [] {
    detail::TeamScratch huge(1, std::numeric_limits<int64_t>::max(), [](const Error& e) {
      BNLAB_FAIL("op: its scratch cannot be allocated: ", e.what());
    });
  };
  CHECK_THROWS_WITH_AS(top(), doctest::Contains("op: its scratch cannot be allocated"), Error);
}

TEST_CASE("thread_scratch: a thread's scratch that cannot grow is the caller's error") {
  std::vector<float> v(4, 1.0f);
  const auto fail = [] { BNLAB_FAIL("op: a thread's scratch cannot be allocated"); };
  // More than max_size() (std::length_error) and more than the machine has (std::bad_alloc).
  CHECK_THROWS_WITH_AS(detail::grow_thread_scratch(v, v.max_size() + 1, fail),
                       "op: a thread's scratch cannot be allocated", Error);
#if !defined(__SANITIZE_ADDRESS__)  // AddressSanitizer ends the process on such a request
  CHECK_THROWS_WITH_AS(detail::grow_thread_scratch(v, v.max_size() / 2, fail),
                       "op: a thread's scratch cannot be allocated", Error);
#endif
  CHECK(v.size() == 4);  // left as it was
  detail::grow_thread_scratch(v, 8, fail);
  CHECK(v.size() == 8);
  CHECK(v[3] == 1.0f);
  CHECK(v[7] == 0.0f);
}

}  // namespace
}  // namespace bnlab

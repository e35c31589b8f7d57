// Scratch memory for the threads of an op's OpenMP region (internal; not installed).
//
// An exception cannot leave a region's body (core/region_error.h), and scratch whose size the
// user's shapes decide can fail to allocate. Two ways, one per kind of scratch:
// - TeamScratch: the region's whole team's buffers, allocated before the region starts, one pool
//   buffer per thread (repeated steps reuse them). Its failure is an Error that the caller's `fail`
//   composes, naming the op and its arguments. For scratch the calling thread can size: conv's
//   im2col columns, Winograd's workspaces, the frequency-domain weight gradient's spectra.
// - grow_thread_scratch: a thread's own grow-once scratch (thread_local), for scratch that only the
//   thread deep inside the op can size (batch norm's planes, the 2x2 max-pool's rows). Its failure
//   is `fail`'s Error, which the region carries out through RegionError.
#pragma once

#include <omp.h>

#include <cstdint>
#include <new>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace bnlab::detail {

class TeamScratch {
 public:
  /// One buffer of `floats` for each of `team` threads (none when floats is 0), each its own pool
  /// buffer: 64-byte aligned, so that two threads writing theirs never share a line. Not one
  /// buffer sliced per thread: the pool rounds a buffer of 2 MiB or more up to whole 2 MiB huge
  /// pages, resident in full once touched, so a team's buffer that crossed that size where each
  /// thread's did not held up to 2 MiB that nothing used (cifar-cnn at two threads: 1.1-1.4 MB more
  /// peak RSS from Winograd's workspaces, 2.9 MB from im2col's columns; docs/performance.md).
  /// `fail(e)` is called with the allocator's Error when a buffer cannot be had, and must throw
  /// the op's own Error.
  template <class Fail>
  TeamScratch(int64_t team, int64_t floats, Fail&& fail) : team_(static_cast<int>(team)) {
    if (floats == 0) return;
    buffers_.reserve(static_cast<size_t>(team));
    try {
      for (int64_t t = 0; t < team; ++t) buffers_.push_back(Tensor::empty({floats}));
    } catch (const Error& e) {
      fail(e);
    }
  }

  /// The team the region must run with (its num_threads): one buffer each.
  int team() const { return team_; }
  /// Thread t's buffer; null when there is none.
  float* of_thread(int64_t t) const {
    return buffers_.empty() ? nullptr : const_cast<float*>(buffers_[static_cast<size_t>(t)].data());
  }
  float* of_this_thread() const { return of_thread(omp_get_thread_num()); }

 private:
  int team_;
  std::vector<Tensor> buffers_;
};

/// v.resize(n) for a thread's grow-once scratch; `fail()` throws the op's Error when it cannot be
/// had. The caller's region carries that out (RegionError).
template <class T, class Fail>
void grow_thread_scratch(std::vector<T>& v, size_t n, Fail&& fail) {
  try {
    v.resize(n);
  } catch (const std::bad_alloc&) {
    fail();
  } catch (const std::length_error&) {
    fail();
  }
}

}  // namespace bnlab::detail

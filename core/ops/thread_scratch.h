// Scratch memory for the threads of an op's OpenMP region (internal; not installed).
//
// An exception cannot leave a region's body (core/region_error.h), and scratch whose size the
// user's shapes decide can fail to allocate. Two ways, one per kind of scratch:
// - TeamScratch: the region's whole team's buffers, allocated before the region starts as one
//   pool buffer (repeated steps reuse it), one slice per thread. Its failure is an Error that the
//   caller's `fail` composes, naming the op and its arguments. For scratch the calling thread can
//   size: conv's im2col columns, Winograd's workspaces, the frequency-domain weight gradient's
//   spectra.
// - grow_thread_scratch: a thread's own grow-once scratch (thread_local), for scratch that only the
//   thread deep inside the op can size (batch norm's planes, the 2x2 max-pool's rows). Its failure
//   is `fail`'s Error, which the region carries out through RegionError.
#pragma once

#include <omp.h>

#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace bnlab::detail {

class TeamScratch {
 public:
  /// One buffer of `floats` for each of `team` threads (none when floats is 0). Each thread's slice
  /// starts on its own 64-byte line, so that two threads writing their slices never share one.
  /// `fail(e)` is called with the allocator's Error when the buffer cannot be had, and must throw
  /// the op's own Error.
  template <class Fail>
  TeamScratch(int64_t team, int64_t floats, Fail&& fail)
      : team_(static_cast<int>(team)), stride_(line_multiple(floats)) {
    if (floats == 0) return;
    try {
      data_ = Tensor::empty({team, stride_});
    } catch (const Error& e) {
      fail(e);
    }
  }

  /// The team the region must run with (its num_threads): one slice each.
  int team() const { return team_; }
  /// Thread t's slice; null when there is no buffer.
  float* of_thread(int64_t t) const {
    return data_.defined() ? const_cast<float*>(data_.data()) + t * stride_ : nullptr;
  }
  float* of_this_thread() const { return of_thread(omp_get_thread_num()); }

 private:
  static constexpr int64_t kLineFloats = 16;
  // Rounded up to whole lines unless that overflows; Tensor::empty then refuses the count.
  static int64_t line_multiple(int64_t floats) {
    return floats > std::numeric_limits<int64_t>::max() - kLineFloats
               ? floats
               : (floats + kLineFloats - 1) / kLineFloats * kLineFloats;
  }

  int team_;
  int64_t stride_;
  Tensor data_;
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

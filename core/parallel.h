// Loops and regions that use OpenMP's thread team only when the work pays for it (internal; not
// installed).
//
// `#pragma omp parallel ... if (false)` is not free: libgomp still forms a team of one and ends it
// with a futex system call, 1.5-1.9 us per region on this project's VM, where a [60, 100]
// elementwise op takes 0.2 us. A paper-mlp training step entered 14 such regions, 20 with batch
// norm (its optimizer updates 6 more parameters). These helpers test the condition first and enter
// the parallel region only when it holds; otherwise the same loop runs on the calling thread.
// Bodies are lambdas taking the index: they must not throw (as any OpenMP body) and use `return`
// where a loop body would `continue`. Hot bodies should capture by value what they read
// (pointers, sizes, scalars): a by-reference capture of a scalar is memory that the loop's float
// stores might alias, so GCC reloads it on every element and does not vectorize.
//
// The condition also holds only where a team would have more than one thread: at one thread
// (set_num_threads(1)) or inside another region (nested regions are teams of one) the region was
// the same futex round for nothing (a paper-mlp step at one thread paid it on its SGD update).
// And the loop inside a region ends without a barrier of its own (`nowait`): the region's end is
// one, and each barrier is a futex system call of about 1 us on this VM.
//
// Also: an `if` on `parallel for simd` without the `parallel :` modifier applies to the simd
// construct too (OpenMP 5.0), so GCC runs the loop unvectorized whenever it is false;
// parallel_for_simd vectorizes both ways.
#pragma once

#include <omp.h>

#include <cstdint>

namespace bnlab::detail {

// The two halves of each helper below. Each loop runs on a copy of the body whose address never
// escapes (one per thread in the team), so that its captures can live in registers: on the shared
// closure, whose address the outlined parallel function receives, GCC reloaded the captured
// scalars of an SGD update on every element (a float store might alias them) and did not
// vectorize it.
template <class Body>
void team_for(int64_t n, const Body& body) {
#pragma omp parallel
  {
    const Body local = body;  // each thread's own, in registers
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; ++i) local(i);
  }
}

template <class Body>
void team_for_simd(int64_t n, const Body& body) {
#pragma omp parallel
  {
    const Body local = body;
#pragma omp for simd schedule(static) nowait
    for (int64_t i = 0; i < n; ++i) local(i);
  }
}

template <class Body>
inline void inline_for(int64_t n, Body body) {
  for (int64_t i = 0; i < n; ++i) body(i);
}

template <class Body>
inline void inline_for_simd(int64_t n, Body body) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) body(i);
}

/// Whether a parallel region entered here would run on more than one thread.
inline bool team_has_threads() { return !omp_in_parallel() && omp_get_max_threads() > 1; }

/// body(i) for i in [0, n): on the thread team (static schedule) when `parallel` and there is a
/// team of more than one thread, else inline.
template <class Body>
inline void parallel_for(int64_t n, bool parallel, const Body& body) {
  if (parallel && team_has_threads()) {
    team_for(n, body);
  } else {
    inline_for(n, body);
  }
}

/// parallel_for for a body GCC can vectorize: `omp simd` on the team's chunks and inline alike.
template <class Body>
inline void parallel_for_simd(int64_t n, bool parallel, const Body& body) {
  if (parallel && team_has_threads()) {
    team_for_simd(n, body);
  } else {
    inline_for_simd(n, body);
  }
}

}  // namespace bnlab::detail

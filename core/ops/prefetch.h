// Software prefetch of a run of memory, one hint per 64-byte cache line (internal; not installed).
//
// The kernels that use it (batch norm's passes, Winograd's input transform, the frequency-domain
// products) walk data in runs that start on pages the hardware prefetcher has not seen (it stops
// at 4 KiB pages), or whose layout it does not follow; each asks for the next run's lines while it
// computes on the current one. docs/performance.md has the measurements behind each use.
//
// Every helper is always_inline, and that is load-bearing: a function made of nothing but
// __builtin_prefetch has no side effect GCC recognizes, and GCC 12 at -O3 deleted every call to
// such a helper when it was not inlined (conv_fourier's first version: no prefetch left in the
// binary, and it measured the same as the build without it). Inlined into the caller's loop, the
// hints stay. tests/core/test_toolchain.cpp disassembles the CLI and checks that they did.
//
// A prefetch is only a hint: it never faults, and the results do not depend on it.
#pragma once

#include <algorithm>
#include <cstdint>

namespace bnlab::detail {

/// Where a prefetched line should go: every level (L1 and down), or L2 and down: for data a
/// whole GEMM or more ahead that would only evict the current working set from L1, and for
/// streams from memory, where hints into L1 can hold the L1 miss buffers the loop's own loads
/// need (batch norm's runs, core/ops/norm.cpp).
enum class PrefetchTo : int { l1 = 3, l2 = 2 };

/// Asks for the cache lines of count elements at p (reads), at most max_bytes of them from the
/// start. Elements of any trivially copyable type; one hint per 64 bytes.
template <PrefetchTo level = PrefetchTo::l1, typename T>
[[gnu::always_inline]] inline void prefetch_run(const T* p, int64_t count,
                                                int64_t max_bytes = INT64_MAX) {
  const auto* bytes = reinterpret_cast<const char*>(p);
  const int64_t total = std::min(count * static_cast<int64_t>(sizeof(T)), max_bytes);
  for (int64_t o = 0; o < total; o += 64) __builtin_prefetch(bytes + o, 0, static_cast<int>(level));
}

}  // namespace bnlab::detail

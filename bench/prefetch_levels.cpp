// prefetch_levels: batch norm's backward sums pass on its own, with each run's next run
// prefetched into L1, into L2, or not at all: the machine fact behind the level core/ops/norm.cpp
// asks for (prefetch_next_run).
//
// The pass walks x and dy [N, C, S] as the op does: blocks of `--block` channels (norm.cpp's
// kPageRuns: two channels at S = 784), image by image, one run of S floats per (n, c), and sums
// dy and dy * (x - mean) * rstd in double (grad_sums_run's arithmetic). "cold" first reads 128 MiB
// of other memory, so the runs come from DRAM, as in a training step where the rest of the network
// ran between batch norm's forward and its backward; "warm" repeats the pass with both tensors in
// the last-level cache. A plain float sum of the same runs (no arithmetic) is the memory's bound.
//
// Why: on the Zen 4 host of docs/performance.md (2026-12-06), at W3's [64, 32, 784], the cold pass
// took 1470 us with L1 hints, 1140 with none and 840 with L2 hints (the loads alone 720).
//
//   ./build/bench/prefetch_levels [--n 64] [--c 32] [--s 784] [--block 2] [--rounds 15]
// One thread; pin it (taskset -c 1) for steadier figures.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/ops/prefetch.h"

namespace {

using Clock = std::chrono::steady_clock;

enum class Hint { none, l1, l2 };

// grad_sums_run<none>'s loop (core/ops/norm.cpp): both sums of one run, in double.
[[gnu::noinline]] std::pair<double, double> sums_run(const float* g, const float* x, double mean,
                                                     double rstd, int64_t S) {
  double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t s = 0; s < S; ++s) {
    a += static_cast<double>(g[s]);
    b += g[s] * ((x[s] - mean) * rstd);
  }
  return {a, b};
}

// The same runs read and added as floats: what the loads alone cost.
[[gnu::noinline]] std::pair<double, double> read_run(const float* g, const float* x, double, double,
                                                     int64_t S) {
  float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
  for (int64_t s = 0; s < S; ++s) {
    a += g[s];
    b += x[s];
  }
  return {a, b};
}

// The op's own helper (core/ops/prefetch.h), at each level; none asks for nothing.
template <Hint kHint>
[[gnu::always_inline]] inline void prefetch(const float* p, int64_t count) {
  if constexpr (kHint == Hint::l1)
    bnlab::detail::prefetch_run<bnlab::detail::PrefetchTo::l1>(p, count);
  if constexpr (kHint == Hint::l2)
    bnlab::detail::prefetch_run<bnlab::detail::PrefetchTo::l2>(p, count);
}

struct Dims {
  int64_t N, C, S, block;
};

// One pass in norm.cpp's order; each run asks for the next run's lines (next_run_base's order).
template <Hint kHint, class Run>
double pass(const Dims& d, const float* g, const float* x, Run run) {
  double total = 0.0;
  const int64_t size = d.N * d.C * d.S;
  for (int64_t c0 = 0; c0 < d.C; c0 += d.block) {
    const int64_t c1 = std::min(d.C, c0 + d.block);
    for (int64_t n = 0; n < d.N; ++n) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t base = (n * d.C + c) * d.S;
        const int64_t next = c + 1 < c1 ? base + d.S : base + (d.C - (c1 - c0) + 1) * d.S;
        if (next < size) {
          prefetch<kHint>(g + next, d.S);
          prefetch<kHint>(x + next, d.S);
        }
        const auto [a, b] = run(g + base, x + base, 0.25, 1.5, d.S);
        total += a + b;
      }
    }
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  Dims d{64, 32, 784, 2};
  int64_t rounds = 15;
  for (int i = 1; i < argc; i += 2) {
    int64_t* value = std::strcmp(argv[i], "--n") == 0        ? &d.N
                     : std::strcmp(argv[i], "--c") == 0      ? &d.C
                     : std::strcmp(argv[i], "--s") == 0      ? &d.S
                     : std::strcmp(argv[i], "--block") == 0  ? &d.block
                     : std::strcmp(argv[i], "--rounds") == 0 ? &rounds
                                                             : nullptr;
    if (value == nullptr || i + 1 >= argc) {
      std::fprintf(stderr,
                   "prefetch_levels: unknown option or missing value '%s'; usage: prefetch_levels "
                   "[--n 64] [--c 32] [--s 784] [--block 2] [--rounds 15]\n",
                   argv[i]);
      return 2;
    }
    *value = std::atoll(argv[i + 1]);
  }
  if (d.N < 1 || d.C < 1 || d.S < 1 || d.block < 1 || rounds < 1) {
    std::fprintf(stderr, "prefetch_levels: every size and --rounds must be >= 1\n");
    return 2;
  }
  if (d.N > (int64_t{1} << 28) / d.C / d.S) {
    std::fprintf(stderr, "prefetch_levels: n * c * s must be at most 2^28 floats (1 GiB)\n");
    return 2;
  }
  const size_t count = static_cast<size_t>(d.N * d.C * d.S);
  std::vector<float> g(count), x(count), other(size_t{32} << 20);  // other: 128 MiB
  for (size_t i = 0; i < count; ++i) {
    g[i] = static_cast<float>(i % 7) * 0.1f;
    x[i] = static_cast<float>(i % 11) * 0.2f;
  }
  struct Variant {
    std::string name;
    double (*run)(const Dims&, const float*, const float*);
  };
  const Variant variants[] = {
      {"sums, L1 hints", [](const Dims& d, const float* g,
                            const float* x) { return pass<Hint::l1>(d, g, x, sums_run); }},
      {"sums, L2 hints", [](const Dims& d, const float* g,
                            const float* x) { return pass<Hint::l2>(d, g, x, sums_run); }},
      {"sums, no hints", [](const Dims& d, const float* g,
                            const float* x) { return pass<Hint::none>(d, g, x, sums_run); }},
      {"read only, L2 hints", [](const Dims& d, const float* g,
                                 const float* x) { return pass<Hint::l2>(d, g, x, read_run); }},
  };
  double sink = 0.0;
  std::printf("[%lld, %lld, %lld], blocks of %lld channels, %lld rounds, median (best) us\n",
              static_cast<long long>(d.N), static_cast<long long>(d.C), static_cast<long long>(d.S),
              static_cast<long long>(d.block), static_cast<long long>(rounds));
  std::printf("%-22s %18s %18s\n", "variant", "cold (DRAM)", "warm (cache)");
  // Rounds outer, variants inner, so that a change in the host's speed reaches every variant.
  const size_t kinds = std::size(variants);
  std::vector<std::vector<double>> cold(kinds), warm(kinds);
  for (int64_t r = 0; r < rounds; ++r) {
    for (size_t k = 0; k < kinds; ++k) {
      for (size_t i = 0; i < other.size(); i += 16) other[i] += 1.0f;  // evict g and x
      auto t0 = Clock::now();
      sink += variants[k].run(d, g.data(), x.data());
      auto t1 = Clock::now();
      sink += variants[k].run(d, g.data(), x.data());
      auto t2 = Clock::now();
      cold[k].push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      warm[k].push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
    }
  }
  for (size_t k = 0; k < kinds; ++k) {
    std::sort(cold[k].begin(), cold[k].end());
    std::sort(warm[k].begin(), warm[k].end());
    std::printf("%-22s %9.0f (%6.0f) %9.0f (%6.0f)\n", variants[k].name.c_str(),
                cold[k][cold[k].size() / 2], cold[k][0], warm[k][warm[k].size() / 2], warm[k][0]);
  }
  std::printf("(checksum %g)\n", sink + other[0]);
  return 0;
}

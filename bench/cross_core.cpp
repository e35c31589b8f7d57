// cross_core: what a write costs on thread 0, per 64-byte line, by where the line was last: written
// by thread 0 itself, written by the other thread (its cache holds it modified), or read by both
// threads (both caches hold it shared). Also the cost of a region of a parallel loop, and of one
// futex wake system call, which libgomp makes at every barrier.
//
// Why: on the 2-vCPU EPYC of docs/performance.md (2026-12-05) an in-place update of a line both
// cores held shared cost 8.0-8.7 ns, of one the other core held modified 1.45 ns, of its own
// 0.85 ns. An optimizer's update of a weight that both threads had read (a GEMM that packed all
// of it on each thread) paid the first price on every line; how threads split work decides which
// lines end up shared (core/gemm_avx512.cpp, "Split the wider side").
//
//   ./build/bench/cross_core [--mib 1] [--rounds 600]
// Needs two threads (OMP_NUM_THREADS unset or >= 2); the program pins nothing.
#include <linux/futex.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double micros(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Every line of a[0, n) touched: updated in place, or only read when `read`.
void touch(float* a, int64_t n, float value, bool read, volatile float* sink) {
  if (read) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i += 16) s += a[i];
    *sink = s;
  } else {
    for (int64_t i = 0; i < n; ++i) a[i] = 0.5f * a[i] + value;  // read-modify-write, as an update
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t mib = 1;
  int rounds = 600;
  for (int i = 1; i < argc; i += 2) {
    const bool has_value = i + 1 < argc;
    if (has_value && std::strcmp(argv[i], "--mib") == 0) {
      mib = std::max<int64_t>(1, std::atoll(argv[i + 1]));
    } else if (has_value && std::strcmp(argv[i], "--rounds") == 0) {
      rounds = std::max(3, std::atoi(argv[i + 1]));
    } else {
      std::fprintf(stderr,
                   "cross_core: unknown flag or missing value: %s\n"
                   "usage: cross_core [--mib N] [--rounds N]\n",
                   argv[i]);
      return 2;
    }
  }
  if (omp_get_max_threads() < 2) {
    std::fprintf(stderr, "cross_core: needs two OpenMP threads (OMP_NUM_THREADS >= 2)\n");
    return 2;
  }
  const int64_t n = mib * (int64_t{1} << 20) / static_cast<int64_t>(sizeof(float));
  const double lines = static_cast<double>(n) * sizeof(float) / 64.0;
  std::vector<float> a(static_cast<size_t>(n), 1.0f);
  volatile float sink = 0.0f;

  // Where the lines are before thread 0 writes them: 0 its own (it wrote them), 1 the other
  // thread's (it wrote them), 2 shared (both read them). Interleaved rounds, so drift cancels.
  const char* names[3] = {"written by this core", "written by the other core",
                          "read by both cores"};
  std::vector<double> write_us[3];
  for (int r = 0; r < 3 * rounds; ++r) {
    const int state = r % 3;
#pragma omp parallel num_threads(2)
    {
      const int t = omp_get_thread_num();
      if (state == 0 && t == 0) touch(a.data(), n, static_cast<float>(r), false, &sink);
      if (state == 1 && t == 1) touch(a.data(), n, static_cast<float>(r), false, &sink);
      if (state == 2) touch(a.data(), n, 0.0f, true, &sink);
    }
    const auto t0 = Clock::now();
    touch(a.data(), n, static_cast<float>(r + 1), false, &sink);
    write_us[state].push_back(micros(t0, Clock::now()));
  }

  // An empty-bodied parallel loop region of two threads, and one futex wake with no waiter.
  std::vector<double> region_us, futex_us;
  int futex_word = 0;
  for (int r = 0; r < rounds; ++r) {
    constexpr int kRepeat = 100;
    auto t0 = Clock::now();
    for (int k = 0; k < kRepeat; ++k) {
#pragma omp parallel for schedule(static) num_threads(2)
      for (int i = 0; i < 2; ++i) sink = static_cast<float>(i);
    }
    region_us.push_back(micros(t0, Clock::now()) / kRepeat);
    t0 = Clock::now();
    for (int k = 0; k < kRepeat; ++k) {
      syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    }
    futex_us.push_back(micros(t0, Clock::now()) / kRepeat);
  }

  std::printf("cross_core: thread 0 writes %lld MiB (%.0f lines), median of %d rounds each\n",
              static_cast<long long>(mib), lines, rounds);
  for (int s = 0; s < 3; ++s) {
    const double us = median(write_us[s]);
    std::printf("  lines %-26s %9.1f us  %6.2f ns/line\n", names[s], us, 1e3 * us / lines);
  }
  std::printf("  parallel loop region, 2 threads %6.2f us\n", median(region_us));
  std::printf("  futex wake, no waiter            %6.2f us\n", median(futex_us));
  return 0;
}

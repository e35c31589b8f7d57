// omp_regions: an LD_PRELOAD library that times every top-level OpenMP parallel region of a
// program, per position in the training step, so that the regions that do not speed up on a
// second thread can be found (bench/omp_regions.sh runs it and prints the table).
//
// Why: perf at two threads shows how long libgomp waits, not which region made it wait, and the
// worker's samples carry no caller. GCC compiles each `#pragma omp parallel` to a call of
// GOMP_parallel(fn, data, threads, flags) with its own outlined fn, so wrapping that one entry
// point sees every region, named by fn (addr2line turns it into the enclosing function).
//
// Regions are keyed by their ordinal within a step: the step starts at each call of the region
// whose fn has offset OMP_REGIONS_RESET (hex, from the binary's base; the script finds the first
// conv's). The first 3 steps are skipped (warm-up). For each ordinal: mean wall time inside the
// region and mean time since the previous region ended (the serial work before it), in
// microseconds. Nested regions run untimed (they are inside their parent's time). Written at exit
// to OMP_REGIONS_OUT as lines "ordinal fn-offset region-us gap-us count".
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace {

using RegionFn = void (*)(void*);
using GompParallel = void (*)(RegionFn, void*, unsigned, unsigned);

constexpr int kMaxRegions = 512;
constexpr long kSkipSteps = 3;

struct Region {
  void* fn = nullptr;
  double inside = 0.0, gap = 0.0;
  long count = 0;
};
Region regions[kMaxRegions];
GompParallel real_parallel = nullptr;
unsigned long reset_offset = 0;
int ordinal = -1;
long steps = 0;
double last_end = -1.0;
thread_local int depth = 0;

double now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

unsigned long offset_of(void* fn) {
  Dl_info info{};
  if (!dladdr(fn, &info)) return 0;
  return static_cast<unsigned long>(static_cast<char*>(fn) - static_cast<char*>(info.dli_fbase));
}

}  // namespace

extern "C" void GOMP_parallel(RegionFn fn, void* data, unsigned threads, unsigned flags) {
  if (!real_parallel) {
    real_parallel = reinterpret_cast<GompParallel>(dlsym(RTLD_NEXT, "GOMP_parallel"));
    const char* reset = std::getenv("OMP_REGIONS_RESET");
    reset_offset = reset ? std::strtoul(reset, nullptr, 16) : 0;
  }
  if (depth) {
    real_parallel(fn, data, threads, flags);
    return;
  }
  if (offset_of(reinterpret_cast<void*>(fn)) == reset_offset) {
    ordinal = 0;
    ++steps;
  } else if (ordinal >= 0) {
    ++ordinal;
  }
  ++depth;
  const double start = now();
  real_parallel(fn, data, threads, flags);
  const double end = now();
  --depth;
  if (ordinal >= 0 && ordinal < kMaxRegions && steps > kSkipSteps) {
    regions[ordinal].fn = reinterpret_cast<void*>(fn);
    regions[ordinal].inside += end - start;
    regions[ordinal].count += 1;
    if (last_end > 0.0) regions[ordinal].gap += start - last_end;
  }
  last_end = end;
}

__attribute__((destructor)) static void write_regions() {
  const char* path = std::getenv("OMP_REGIONS_OUT");
  if (!path) return;
  std::FILE* out = std::fopen(path, "w");
  if (!out) return;
  for (int i = 0; i < kMaxRegions; ++i) {
    if (!regions[i].fn) continue;
    const double n = static_cast<double>(regions[i].count);
    std::fprintf(out, "%d %lx %.1f %.1f %ld\n", i, offset_of(regions[i].fn),
                 1e6 * regions[i].inside / n, 1e6 * regions[i].gap / n, regions[i].count);
  }
  std::fclose(out);
}

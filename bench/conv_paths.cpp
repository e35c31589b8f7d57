// conv_paths: conv2d's two paths (im2col + GEMM, Winograd F(4x4, 3x3)) against each other,
// interleaved in one process, at the 3x3 conv shapes of cifar-cnn (workload W4, batch 128),
// forward alone and forward + backward (dx and dw; db is shared code).
//
// The paths alternate (A B A B ...) in `--rounds` rounds, each round timing `reps` calls of one
// path (reps sized for about 20 ms), so load from other processes hits both alike. Reported: the
// median milliseconds per call of each path and the median of the per-round ratios
// im2col / Winograd (above 1: Winograd is faster), robust to the load drifting between rounds.
//
//   OMP_NUM_THREADS=1 ./build/bench/conv_paths [--rounds 11] [--batch 128] [--filter 64->]
//                                              [--profile winograd|im2col]
// --profile runs only that path (both columns), for a profiler.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/blas.h"
#include "core/ops.h"
#include "core/ops/conv_path.h"
#include "core/ops/conv_winograd.h"
#include "core/random.h"

using namespace bnlab;
using detail::ConvPathMode;

namespace {

struct Layer {
  int64_t C, K, H;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Tensor random_tensor(const Shape& shape, uint64_t seed) {
  Rng rng(seed);
  Tensor t = Tensor::empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.normal();
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 11;
  int64_t batch = 128;
  std::string filter, profile;
  for (int i = 1; i < argc; i += 2) {
    const bool has_value = i + 1 < argc;
    if (has_value && std::strcmp(argv[i], "--rounds") == 0) {
      rounds = std::max(1, std::atoi(argv[i + 1]));
    } else if (has_value && std::strcmp(argv[i], "--batch") == 0) {
      batch = std::max(1, std::atoi(argv[i + 1]));
    } else if (has_value && std::strcmp(argv[i], "--filter") == 0) {
      filter = argv[i + 1];
    } else if (has_value && std::strcmp(argv[i], "--profile") == 0) {
      profile = argv[i + 1];
    } else {
      // A benchmark that ignored an unknown flag ran for minutes on `--help`.
      std::fprintf(stderr,
                   "conv_paths: unknown flag or missing value: %s\n"
                   "usage: conv_paths [--rounds N] [--batch N] [--filter TEXT] "
                   "[--profile winograd|im2col]\n",
                   argv[i]);
      return 2;
    }
  }
  std::printf("conv_paths: im2col vs winograd, GEMM %s, %d threads, batch %lld, %d rounds\n",
              gemm_path_name().c_str(), num_threads(), static_cast<long long>(batch), rounds);
  std::printf("%-18s %-8s %10s %10s %7s\n", "layer", "pass", "im2col ms", "wino ms", "ratio");
  // cifar-cnn's six 3x3 convs, then narrow layers that probe the path rule's channel limit.
  const Layer layers[] = {{3, 32, 32},   {32, 32, 32}, {32, 64, 16}, {64, 64, 16}, {64, 128, 8},
                          {128, 128, 8}, {8, 8, 32},   {16, 16, 32}, {8, 32, 32}};
  using Clock = std::chrono::steady_clock;
  for (const Layer& l : layers) {
    const std::string name = std::to_string(l.C) + "->" + std::to_string(l.K) + " @" +
                             std::to_string(l.H) + "x" + std::to_string(l.H);
    if (!filter.empty() && name.find(filter) == std::string::npos) continue;
    Tensor x = random_tensor({batch, l.C, l.H, l.H}, 1).set_requires_grad();
    Tensor w = random_tensor({l.K, l.C, 3, 3}, 2).set_requires_grad();
    Tensor b = random_tensor({l.K}, 3).set_requires_grad();
    const Tensor seed = random_tensor({batch, l.K, l.H, l.H}, 4);
    for (const bool backward : {false, true}) {
      auto call = [&](ConvPathMode mode) {
        detail::ScopedConvPathMode scoped(mode);
        if (!backward) {
          NoGradGuard no_grad;
          (void)conv2d(x, w, b, 1, 1);
          return;
        }
        conv2d(x, w, b, 1, 1).backward(seed);
        x.zero_grad();
        w.zero_grad();
        b.zero_grad();
      };
      ConvPathMode modes[2] = {ConvPathMode::im2col, ConvPathMode::winograd};
      if (!profile.empty()) modes[0] = modes[1] = detail::parse_conv_path_mode(profile.c_str());
      call(modes[0]);
      call(modes[1]);
      const auto t0 = Clock::now();
      call(modes[0]);
      const double once = std::chrono::duration<double>(Clock::now() - t0).count();
      const int reps = static_cast<int>(std::clamp(2e-2 / std::max(once, 1e-7), 1.0, 1e4));
      std::vector<double> ms[2], ratio;
      for (int r = 0; r < rounds; ++r) {
        double per[2];
        for (int m = 0; m < 2; ++m) {
          const auto s = Clock::now();
          for (int i = 0; i < reps; ++i) call(modes[m]);
          per[m] = std::chrono::duration<double>(Clock::now() - s).count() / reps * 1e3;
          ms[m].push_back(per[m]);
        }
        ratio.push_back(per[0] / per[1]);
      }
      std::printf("%-18s %-8s %10.3f %10.3f %7.2f\n", name.c_str(), backward ? "fwd+bwd" : "fwd",
                  median(ms[0]), median(ms[1]), median(ratio));
      std::fflush(stdout);
    }
  }
  return 0;
}

// conv_paths: conv2d's im2col + GEMM path against the faster path for each shape, interleaved in
// one process, forward alone and forward + backward (dw, and dx except for first layers, whose
// input needs no gradient; db is shared code): Winograd F(4x4, 3x3) at the 3x3 conv shapes of
// cifar-cnn (workload W4) and narrow ones that probe its channel limit; the direct kernels at the
// first layers of lenet (W3) and cifar-cnn, and at lenet's second, thick 5x5 layer.
//
// The paths alternate (A B A B ...) in `--rounds` rounds, each round timing `reps` calls of one
// path (reps sized for about 20 ms), so load from other processes hits both alike. Reported: the
// median milliseconds per call of each path and the median of the per-round ratios
// im2col / other (above 1: the other path is faster), robust to the load drifting between rounds.
//
//   OMP_NUM_THREADS=1 ./build/bench/conv_paths [--rounds 11] [--batch 128] [--filter 64->]
//                                              [--profile winograd|direct|auto|im2col]
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
  int64_t C, K, H, k, padding;
  ConvPathMode other;  // the path compared with im2col
  bool input_grad;     // false for a first layer
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
                   "[--profile winograd|direct|auto|im2col]\n",
                   argv[i]);
      return 2;
    }
  }
  std::printf("conv_paths: im2col vs winograd/direct, GEMM %s, %d threads, batch %lld, %d rounds\n",
              gemm_path_name().c_str(), num_threads(), static_cast<long long>(batch), rounds);
  std::printf("%-22s %-14s %-8s %10s %10s %7s\n", "layer", "path", "pass", "im2col ms", "other ms",
              "ratio");
  // The direct rows take the automatic rule's path: direct at first layers (direct forward and dw),
  // direct-data at thicker 5x5 ones (direct forward and dx).
  const ConvPathMode wino = ConvPathMode::winograd, direct = ConvPathMode::automatic;
  const Layer layers[] = {
      // cifar-cnn's six 3x3 convs, then narrow layers that probe Winograd's channel limit.
      {3, 32, 32, 3, 1, wino, true},
      {32, 32, 32, 3, 1, wino, true},
      {32, 64, 16, 3, 1, wino, true},
      {64, 64, 16, 3, 1, wino, true},
      {64, 128, 8, 3, 1, wino, true},
      {128, 128, 8, 3, 1, wino, true},
      {8, 8, 32, 3, 1, wino, true},
      {16, 16, 32, 3, 1, wino, true},
      {8, 32, 32, 3, 1, wino, true},
      // First layers (cifar-cnn's, lenet's), then thicker ones that probe the direct path's limit.
      {3, 32, 32, 3, 1, direct, false},
      {1, 32, 28, 5, 2, direct, false},
      {8, 32, 28, 5, 2, direct, true},
      {32, 64, 14, 5, 2, direct, true},
      // The frequency-domain path at lenet's second conv and neighbouring small-image shapes.
      {32, 64, 14, 5, 2, ConvPathMode::fourier, true},
      {16, 32, 14, 5, 2, ConvPathMode::fourier, true},
      {64, 64, 8, 5, 2, ConvPathMode::fourier, true},
      {32, 32, 16, 3, 1, ConvPathMode::fourier, true},
      {128, 128, 8, 3, 1, ConvPathMode::fourier, true},
      {8, 16, 14, 5, 2, ConvPathMode::fourier, true},
  };
  using Clock = std::chrono::steady_clock;
  for (const Layer& l : layers) {
    const std::string name = std::to_string(l.C) + "->" + std::to_string(l.K) + " " +
                             std::to_string(l.k) + "x" + std::to_string(l.k) + " @" +
                             std::to_string(l.H) + "x" + std::to_string(l.H);
    if (!filter.empty() && name.find(filter) == std::string::npos) continue;
    Tensor x = random_tensor({batch, l.C, l.H, l.H}, 1).set_requires_grad(l.input_grad);
    Tensor w = random_tensor({l.K, l.C, l.k, l.k}, 2).set_requires_grad();
    Tensor b = random_tensor({l.K}, 3).set_requires_grad();
    const Tensor seed = random_tensor({batch, l.K, l.H, l.H}, 4);
    for (const bool backward : {false, true}) {
      auto call = [&](ConvPathMode mode) {
        detail::ScopedConvPathMode scoped(mode);
        if (!backward) {
          NoGradGuard no_grad;
          (void)conv2d(x, w, b, 1, l.padding);
          return;
        }
        conv2d(x, w, b, 1, l.padding).backward(seed);
        if (l.input_grad) x.zero_grad();
        w.zero_grad();
        b.zero_grad();
      };
      ConvPathMode modes[2] = {ConvPathMode::im2col, l.other};
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
      const detail::ConvPath other =
          detail::conv2d_path(l.other, l.C, l.K, l.k, l.k, 1, l.padding, 1, l.H, l.H);
      std::printf("%-22s %-14s %-8s %10.3f %10.3f %7.2f\n", name.c_str(),
                  detail::conv_path_name(other), backward ? "fwd+bwd" : "fwd", median(ms[0]),
                  median(ms[1]), median(ratio));
      std::fflush(stdout);
    }
  }
  return 0;
}

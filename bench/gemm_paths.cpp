// gemm_paths: bnlab's own GEMM (the AVX-512 kernel, or the AVX2 one on a CPU without AVX-512F, as
// bnlab::gemm picks; BNLAB_MAX_ISA=avx2 chooses it on an AVX-512 CPU) against OpenBLAS, interleaved
// in one process, at 1024^3 and at the GEMM shapes of the workloads (conv forward / dW / dX per
// image of cifar-cnn and lenet, the dense layers of lenet and the MLPs, batch 64). Built always;
// needs a CPU with AVX2 and FMA to compare.
//
// The two paths alternate (A B A B ...) in `--rounds` rounds, each round timing `reps` calls of one
// path (reps sized for about 2 ms), so load from other processes hits both paths alike. Reported:
// median GFLOP/s of each path, and the median of the per-round ratios own / OpenBLAS (robust to the
// load drifting between rounds).
//
//   OMP_NUM_THREADS=1 ./build/bench/gemm_paths [--rounds 31] [--filter conv]
// One thread is what conv sees (it calls GEMM inside its per-image OpenMP loop); with more threads
// the dense shapes run threaded on both paths.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/blas.h"
#include "core/random.h"

using namespace bnlab;

namespace {

struct Case {
  std::string name;
  int64_t M, N, K;
  bool ta, tb;
  float beta;
};

// conv2d as GEMMs per image (core/ops/conv.cpp): Kg output channels, P = Ho*Wo positions,
// CK = Cg*kh*kw. forward: [Kg, CK] x col [CK, P]; dW += dout [Kg, P] x col^T; dcol = W^T x dout.
std::vector<Case> cases() {
  std::vector<Case> out = {{"square 1024^3", 1024, 1024, 1024, false, false, 0.0f}};
  struct Conv {
    const char* name;
    int64_t K, P, CK;
    bool first;  // the first layer's input needs no gradient: no dX GEMM
  };
  const Conv convs[] = {
      {"cifar conv1 3->32 32x32", 32, 1024, 27, true},
      {"cifar conv2 32->32 32x32", 32, 1024, 288, false},
      {"cifar conv3 32->64 16x16", 64, 256, 288, false},
      {"cifar conv4 64->64 16x16", 64, 256, 576, false},
      {"cifar conv5 64->128 8x8", 128, 64, 576, false},
      {"cifar conv6 128->128 8x8", 128, 64, 1152, false},
      {"lenet conv1 1->32 28x28", 32, 784, 25, true},
      {"lenet conv2 32->64 14x14", 64, 196, 800, false},
  };
  for (const Conv& c : convs) {
    out.push_back({std::string(c.name) + " fwd", c.K, c.P, c.CK, false, false, 0.0f});
    out.push_back({std::string(c.name) + " dW", c.K, c.CK, c.P, false, true, 1.0f});
    if (!c.first) out.push_back({std::string(c.name) + " dX", c.CK, c.P, c.K, true, false, 0.0f});
  }
  // Dense layers at batch 64 (linear: y = x W^T; dx = dy W; dW = dy^T x).
  const Case dense[] = {
      {"lenet fc 3136->128 fwd", 64, 128, 3136, false, true, 0.0f},
      {"lenet fc 3136->128 dX", 64, 3136, 128, false, false, 0.0f},
      {"lenet fc 3136->128 dW", 128, 3136, 64, true, false, 1.0f},
      {"mlp fc 784->512 fwd", 64, 512, 784, false, true, 0.0f},
      {"mlp fc 784->512 dW", 512, 784, 64, true, false, 1.0f},
      {"mlp fc 512->256 fwd", 64, 256, 512, false, true, 0.0f},
      {"mlp fc 512->256 dX", 64, 512, 256, false, false, 0.0f},
      // W2's own batch (128): every product of one training step.
      {"W2 fc1 784->512 fwd b128", 128, 512, 784, false, true, 0.0f},
      {"W2 fc1 784->512 dW b128", 512, 784, 128, true, false, 0.0f},
      {"W2 fc2 512->256 fwd b128", 128, 256, 512, false, true, 0.0f},
      {"W2 fc2 512->256 dW b128", 256, 512, 128, true, false, 0.0f},
      {"W2 fc2 512->256 dX b128", 128, 512, 256, false, false, 0.0f},
      {"W2 fc3 256->10 fwd b128", 128, 10, 256, false, true, 0.0f},
      {"W2 fc3 256->10 dW b128", 10, 256, 128, true, false, 0.0f},
      {"W2 fc3 256->10 dX b128", 128, 256, 10, false, false, 0.0f},
      {"paper-mlp fc 784->100 fwd", 64, 100, 784, false, true, 0.0f},
      {"paper-mlp fc 100->100 fwd", 64, 100, 100, false, true, 0.0f},
      {"paper-mlp fc 100->10 fwd", 64, 10, 100, false, true, 0.0f},
  };
  out.insert(out.end(), std::begin(dense), std::end(dense));
  // Narrow products (N below one 32-wide register tile), for the small-N rule in core/blas.cpp.
  for (int64_t n : {4, 8, 12, 16, 20, 24}) {
    out.push_back({"narrow N=" + std::to_string(n) + " K=100", 64, n, 100, false, true, 0.0f});
    out.push_back({"narrow N=" + std::to_string(n) + " K=800", 64, n, 800, false, true, 0.0f});
  }
  return out;
}

std::vector<float> random_vector(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = rng.normal();
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 31;
  std::string filter;
  for (int i = 1; i < argc; i += 2) {
    const bool has_value = i + 1 < argc;
    if (has_value && std::strcmp(argv[i], "--rounds") == 0) {
      rounds = std::max(1, std::atoi(argv[i + 1]));
    } else if (has_value && std::strcmp(argv[i], "--filter") == 0) {
      filter = argv[i + 1];
    } else {
      std::fprintf(stderr,
                   "gemm_paths: unknown flag or missing value: %s\n"
                   "usage: gemm_paths [--rounds N] [--filter TEXT]\n",
                   argv[i]);
      return 2;
    }
  }
  const bool avx512 = gemm_avx512_available();
  if (!avx512 && !gemm_avx2_available()) {
    std::printf("gemm_paths: this CPU lacks AVX2 and FMA; nothing to compare\n");
    return 0;
  }
  const auto own_gemm = avx512 ? &gemm_avx512 : &gemm_avx2;
  std::printf("gemm_paths: OpenBLAS (%s) vs bnlab-%s, %d threads, %d interleaved rounds\n",
              blas_config().c_str(), avx512 ? "avx512" : "avx2", num_threads(), rounds);
  std::printf("%-34s %5s %5s %5s %2s  %9s %9s  %6s\n", "shape", "M", "N", "K", "op", "openblas",
              "own", "ratio");
  using Clock = std::chrono::steady_clock;
  for (const Case& c : cases()) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    const int64_t lda = c.ta ? c.M : c.K, ldb = c.tb ? c.K : c.N;
    const auto A = random_vector(c.M * c.K, 1), B = random_vector(c.K * c.N, 2);
    std::vector<float> C(static_cast<size_t>(c.M * c.N), 0.0f);
    const double flops = 2.0 * double(c.M) * double(c.N) * double(c.K);
    auto call = [&](bool own) {
      (own ? own_gemm : &gemm_openblas)(c.ta, c.tb, c.M, c.N, c.K, 1.0f, A.data(), lda, B.data(),
                                        ldb, c.beta, C.data(), c.N);
    };
    // Warm both paths (packing buffers, OpenBLAS's threads), then size reps for ~2 ms.
    call(false);
    call(true);
    const auto t0 = Clock::now();
    call(false);
    const double once = std::chrono::duration<double>(Clock::now() - t0).count();
    const int reps = static_cast<int>(std::clamp(2e-3 / std::max(once, 1e-7), 1.0, 1e5));
    std::vector<double> gf[2], ratio;
    for (int r = 0; r < rounds; ++r) {
      double per[2];
      for (int own = 0; own < 2; ++own) {
        const auto s = Clock::now();
        for (int i = 0; i < reps; ++i) call(own != 0);
        const double sec = std::chrono::duration<double>(Clock::now() - s).count() / reps;
        per[own] = flops / sec * 1e-9;
        gf[own].push_back(per[own]);
      }
      ratio.push_back(per[1] / per[0]);
    }
    std::printf("%-34s %5lld %5lld %5lld %c%c  %9.1f %9.1f  %6.2f\n", c.name.c_str(),
                static_cast<long long>(c.M), static_cast<long long>(c.N),
                static_cast<long long>(c.K), c.ta ? 'T' : 'N', c.tb ? 'T' : 'N', median(gf[0]),
                median(gf[1]), median(ratio));
    std::fflush(stdout);
  }
  return 0;
}

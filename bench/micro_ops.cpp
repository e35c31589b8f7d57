// micro_ops: Google Benchmark microbenchmarks of bnlab's kernels, as GFLOP/s or GB/s counters next
// to the machine's reference peaks measured in the same run.
//
//   reference: raw cblas_sgemm at 1024^3 (the sgemm peak) and a STREAM-like triad a = b + s*c on
//              3 x 32 MiB arrays (memory bandwidth, 12 bytes moved per element)
//   gemm:      bnlab::gemm (labelled with its path, core/blas.h) vs raw cblas_sgemm at the
//              benchmark workloads' dense and conv shapes; bench/gemm_paths compares the two
//              paths interleaved, which is the fairer comparison on a loaded machine
//   conv2d:    forward and forward+backward of the W3/W4 conv layers (2*N*K*CK*P flops forward,
//              3x that for forward+backward)
//   batch_norm: train-mode forward and forward+backward at W3/W4 activation shapes (GB/s)
//   elementwise: relu, sigmoid, add, max_pool2d forward (GB/s of input + output)
//   train step: one training step of W1 and W3 (CPU time of this thread)
//   fast math:  the vectorizable exp and sigmoid kernels (core/ops/fast_math.h) against the scalar
//               libm loops they replace, one thread, in L2-sized arrays (Gelem/s); the activation
//               ops forward and forward+backward
//
//   ./build/bench/micro_ops [--benchmark_filter=gemm] [--benchmark_min_time=0.2]
// Threads: OMP_NUM_THREADS / the bnlab default (all cores); pin with OMP_NUM_THREADS=1.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>
#include <memory>
#include <vector>

#include "core/autograd.h"
#include "core/blas.h"
#include "core/ops.h"
#include "core/ops/fast_math.h"
#include "core/ops/plane_moments.h"
#include "optim/optim.h"
#include "train/models.h"

using namespace bnlab;

namespace {

std::vector<float> random_vector(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.normal(0.0f, 1.0f);
  return v;
}

// ---- reference peaks ----

void BM_reference_sgemm_peak(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  auto a = random_vector(static_cast<size_t>(n) * n, 1),
       b = random_vector(static_cast<size_t>(n) * n, 2);
  std::vector<float> c(static_cast<size_t>(n) * n);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_reference_sgemm_peak)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_reference_triad(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto b = random_vector(n, 3), c = random_vector(n, 4);
  std::vector<float> a(n);
  const float s = 3.0f;
  for (auto _ : state) {
#pragma omp parallel for simd
    for (size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
    benchmark::DoNotOptimize(a.data());
  }
  state.counters["GB/s"] = benchmark::Counter(12.0 * static_cast<double>(n) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_reference_triad)->Arg(8 << 20)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- GEMM: our wrapper vs raw cblas at the workloads' shapes ----
// Args: M, N, K, trans_b (the dense forward is x [N, D] @ W^T).

void gemm_counters(benchmark::State& state, double M, double N, double K) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gemm_bnlab(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool tb = state.range(3) != 0;
  auto a = random_vector(static_cast<size_t>(M * K), 1),
       b = random_vector(static_cast<size_t>(K * N), 2);
  std::vector<float> c(static_cast<size_t>(M * N));
  for (auto _ : state) {
    gemm(false, tb, M, N, K, 1.0f, a.data(), K, b.data(), tb ? K : N, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  gemm_counters(state, M, N, K);
  state.SetLabel(gemm_path_name());
}

void BM_gemm_cblas(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1)),
            K = static_cast<int>(state.range(2));
  const bool tb = state.range(3) != 0;
  auto a = random_vector(static_cast<size_t>(M) * K, 1),
       b = random_vector(static_cast<size_t>(K) * N, 2);
  std::vector<float> c(static_cast<size_t>(M) * N);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                a.data(), K, b.data(), tb ? K : N, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  gemm_counters(state, M, N, K);
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "tB"});
  b->Args({60, 100, 784, 1});   // W1 first dense
  b->Args({128, 512, 784, 1});  // W2 first dense
  b->Args({64, 128, 3136, 1});  // W3 dense
  b->Args({32, 784, 25, 0});    // W3 conv1 per image: K x P x CK
  b->Args({64, 196, 800, 0});   // W3 conv2 per image
  b->Args({64, 256, 576, 0});   // W4 block 2 conv per image
  b->Args({128, 64, 1152, 0});  // W4 block 3 conv per image
  b->Args({1024, 1024, 1024, 0});
  b->UseRealTime();
}
BENCHMARK(BM_gemm_bnlab)->Apply(gemm_shapes);
BENCHMARK(BM_gemm_cblas)->Apply(gemm_shapes);

// ---- conv2d ----
// Args: N, C, H, K, kernel, padding (square images, stride 1).

double conv_flops(const benchmark::State& s) {
  const double N = s.range(0), C = s.range(1), H = s.range(2), K = s.range(3), k = s.range(4),
               p = s.range(5);
  const double Ho = H + 2 * p - k + 1;
  return 2.0 * N * K * C * k * k * Ho * Ho;
}

// A benchmark's conv: input, weight and bias from the Args, and the padding.
struct ConvInputs {
  Tensor x, w, b;
  int64_t padding;
};

ConvInputs conv_inputs(const benchmark::State& state) {
  Rng rng(5);
  const int64_t N = state.range(0), C = state.range(1), H = state.range(2), K = state.range(3),
                k = state.range(4);
  Tensor x = Tensor::normal({N, C, H, H}, rng), w = Tensor::normal({K, C, k, k}, rng);
  return {x, w, Tensor::normal({K}, rng), state.range(5)};
}

void BM_conv2d_forward(benchmark::State& state) {
  const ConvInputs in = conv_inputs(state);
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(conv2d(in.x, in.w, in.b, 1, in.padding).data());
  state.counters["GFLOP/s"] =
      benchmark::Counter(conv_flops(state) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// The conv as Conv2d + BatchNorm2d runs it in training: each output image's plane moments computed
// right after the image is written (detail::conv2d_with_plane_moments); against BM_conv2d_forward,
// what batch norm's first pass costs inside the conv.
void BM_conv2d_forward_with_moments(benchmark::State& state) {
  const ConvInputs in = conv_inputs(state);
  std::vector<double> pm(static_cast<size_t>(2 * in.x.size(0) * in.w.size(0)));
  NoGradGuard no_grad;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        detail::conv2d_with_plane_moments(in.x, in.w, in.b, 1, in.padding, 1, false, pm.data())
            .data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(conv_flops(state) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_conv2d_forward_backward(benchmark::State& state) {
  ConvInputs in = conv_inputs(state);
  Rng rng(6);
  Tensor seed = Tensor::normal(conv2d(in.x, in.w, in.b, 1, in.padding).shape(), rng);
  in.x.set_requires_grad();
  in.w.set_requires_grad();
  in.b.set_requires_grad();
  for (auto _ : state) {
    conv2d(in.x, in.w, in.b, 1, in.padding).backward(seed);
    in.x.zero_grad();
    in.w.zero_grad();
    in.b.zero_grad();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(3.0 * conv_flops(state) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void conv_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "C", "H", "K", "k", "pad"});
  b->Args({64, 1, 28, 32, 5, 2});     // W3 conv1
  b->Args({64, 32, 14, 64, 5, 2});    // W3 conv2
  b->Args({128, 3, 32, 32, 3, 1});    // W4 conv1
  b->Args({128, 32, 32, 32, 3, 1});   // W4 conv2
  b->Args({128, 64, 16, 64, 3, 1});   // W4 block 2
  b->Args({128, 128, 8, 128, 3, 1});  // W4 block 3
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(BM_conv2d_forward)->Apply(conv_shapes);
BENCHMARK(BM_conv2d_forward_with_moments)->Apply(conv_shapes);
BENCHMARK(BM_conv2d_forward_backward)->Apply(conv_shapes);

// ---- batch_norm (train mode) ----
// Args: N, C, S (spatial size). Bytes: forward reads x and writes y; backward reads x, dy and
// writes dx.

void BM_batch_norm_forward(benchmark::State& state) {
  Rng rng(6);
  const int64_t N = state.range(0), C = state.range(1), S = state.range(2);
  Tensor x = Tensor::normal({N, C, S}, rng), g = Tensor::ones({C}), b = Tensor::zeros({C});
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(batch_norm_train(x, g, b, 1e-5f).y.data());
  state.counters["GB/s"] =
      benchmark::Counter(8.0 * N * C * S * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_batch_norm_forward_backward(benchmark::State& state) {
  Rng rng(6);
  const int64_t N = state.range(0), C = state.range(1), S = state.range(2);
  Tensor x = Tensor::normal({N, C, S}, rng), g = Tensor::ones({C}), b = Tensor::zeros({C});
  x.set_requires_grad();
  g.set_requires_grad();
  b.set_requires_grad();
  Tensor seed = Tensor::normal({N, C, S}, rng);
  for (auto _ : state) {
    batch_norm_train(x, g, b, 1e-5f).y.backward(seed);
    x.zero_grad();
    g.zero_grad();
    b.zero_grad();
  }
  state.counters["GB/s"] =
      benchmark::Counter(20.0 * N * C * S * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void bn_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "C", "S"});
  b->Args({60, 100, 1});     // W1 BatchNorm1d
  b->Args({64, 32, 784});    // W3 after conv1
  b->Args({128, 32, 1024});  // W4 block 1
  b->Args({128, 128, 64});   // W4 block 3
  b->UseRealTime();
}
BENCHMARK(BM_batch_norm_forward)->Apply(bn_shapes);
BENCHMARK(BM_batch_norm_forward_backward)->Apply(bn_shapes);

// Conv2d + BatchNorm2d + ReLU + MaxPool2d(2)'s batch-norm part in training, as Sequential runs
// it: batch_norm_train_given_planes with the conv's plane moments given (computed once here), so
// the op is its single normalize + relu + pool pass over x (the places kept, x requiring grad).
// Args: N, C, H (= W). GB/s counts x read and the pooled output written.
void BM_bn_relu_pool_forward(benchmark::State& state) {
  Rng rng(7);
  const int64_t N = state.range(0), C = state.range(1), H = state.range(2);
  Tensor x = Tensor::normal({N, C, H, H}, rng), g = Tensor::ones({C}), b = Tensor::zeros({C});
  x.set_requires_grad();
  std::vector<double> pm(static_cast<size_t>(2 * N * C));
  detail::plane_moments(pm.data(), x.data(), N * C, H * H);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        detail::batch_norm_train_given_planes(x, g, b, 1e-5f, nullptr, nullptr,
                                              detail::BatchNormThen::relu_max_pool2x2, pm.data())
            .y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * 1.25 * static_cast<double>(x.numel()) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
void bn_pool_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "C", "H"});
  b->Args({64, 32, 28});   // W3 block 1
  b->Args({64, 64, 14});   // W3 block 2
  b->Args({128, 32, 32});  // W4 block 1
  b->Args({128, 64, 16});  // W4 block 2
  b->Args({128, 128, 8});  // W4 block 3
  b->UseRealTime();
}
BENCHMARK(BM_bn_relu_pool_forward)->Apply(bn_pool_shapes);

// The same op's forward and backward: the normalize + relu + pool pass, then the sums pass and the
// dx pass over x with the planes' gradients re-formed from dp, p and the places. Args as above.
void BM_bn_relu_pool_forward_backward(benchmark::State& state) {
  Rng rng(7);
  const int64_t N = state.range(0), C = state.range(1), H = state.range(2);
  Tensor x = Tensor::normal({N, C, H, H}, rng), g = Tensor::ones({C}), b = Tensor::zeros({C});
  x.set_requires_grad();
  g.set_requires_grad();
  b.set_requires_grad();
  Tensor seed = Tensor::normal({N, C, H / 2, H / 2}, rng);
  std::vector<double> pm(static_cast<size_t>(2 * N * C));
  detail::plane_moments(pm.data(), x.data(), N * C, H * H);
  for (auto _ : state) {
    detail::batch_norm_train_given_planes(x, g, b, 1e-5f, nullptr, nullptr,
                                          detail::BatchNormThen::relu_max_pool2x2, pm.data())
        .y.backward(seed);
    x.zero_grad();
    g.zero_grad();
    b.zero_grad();
  }
}
BENCHMARK(BM_bn_relu_pool_forward_backward)->Apply(bn_pool_shapes);

// ---- elementwise ----

template <Tensor (*Op)(const Tensor&)>
void BM_unary(benchmark::State& state) {
  Rng rng(8);
  Tensor x = Tensor::normal({state.range(0)}, rng);
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(Op(x).data());
  state.counters["GB/s"] = benchmark::Counter(8.0 * static_cast<double>(state.range(0)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_unary<relu>)->Name("BM_relu")->Arg(128 * 32 * 1024)->UseRealTime();
BENCHMARK(BM_unary<sigmoid>)
    ->Name("BM_sigmoid")
    ->Arg(60 * 100)
    ->Arg(128 * 32 * 1024)
    ->UseRealTime();

void BM_add(benchmark::State& state) {
  Rng rng(9);
  Tensor a = Tensor::normal({state.range(0)}, rng), b = Tensor::normal({state.range(0)}, rng);
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(add(a, b).data());
  state.counters["GB/s"] = benchmark::Counter(12.0 * static_cast<double>(state.range(0)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_add)->Arg(128 * 32 * 1024)->UseRealTime();

void BM_max_pool2d(benchmark::State& state) {
  Rng rng(10);
  Tensor x = Tensor::normal({128, 32, 32, 32}, rng);
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(max_pool2d(x, 2).data());
  state.counters["GB/s"] = benchmark::Counter(4.0 * 1.25 * static_cast<double>(x.numel()) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_max_pool2d)->UseRealTime();

// max_pool2d 2x2/2 forward + backward at the W3 (lenet) and W4 (cifar-cnn) activation shapes, the
// input's grad dropped each iteration as a training step's intermediate grads are. Args: N, C, H (=
// W). Reported time is this thread's CPU time (run with OMP_NUM_THREADS=1 on a busy machine).
void BM_max_pool2d_forward_backward(benchmark::State& state) {
  Rng rng(12);
  const int64_t N = state.range(0), C = state.range(1), H = state.range(2);
  Tensor x = Tensor::normal({N, C, H, H}, rng);
  x.set_requires_grad();
  Tensor seed = Tensor::normal({N, C, H / 2, H / 2}, rng);
  for (auto _ : state) {
    max_pool2d(x, 2).backward(seed);
    x.zero_grad();
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * 2.5 * static_cast<double>(x.numel()) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_max_pool2d_forward_backward)
    ->ArgNames({"N", "C", "H"})
    ->Args({64, 32, 28})    // W3 pool1
    ->Args({64, 64, 14})    // W3 pool2
    ->Args({128, 32, 32})   // W4 pool1
    ->Args({128, 128, 8});  // W4 pool3

// ---- one training step of a zoo model ----
// forward + cross-entropy + backward + optimizer step + zero_grad on one fixed N(0, 1) batch, as
// `bnlab bench` times it (W1 paper-mlp: batch 60, SGD; W3 lenet: batch 64, Adam), but reported as
// this thread's CPU time, which a busy machine disturbs less than wall time (OMP_NUM_THREADS=1).

void BM_train_step(benchmark::State& state, const char* name, int64_t batch, int64_t channels,
                   int64_t size, bool adam) {
  Rng rng(42);
  ModelSpec spec;
  spec.name = name;
  spec.channels = channels;
  spec.height = size;
  spec.width = size;
  Model model = build_model(spec, rng);
  std::unique_ptr<Optimizer> opt;
  if (adam) {
    opt = std::make_unique<Adam>(model.net->parameters(), AdamOptions{.lr = 1e-3f});
  } else {
    opt = std::make_unique<Sgd>(model.net->parameters(), SgdOptions{.lr = 0.01f});
  }
  Rng data_rng(7);
  Tensor x = Tensor::normal({batch, channels, size, size}, data_rng);
  std::vector<int64_t> labels(static_cast<size_t>(batch));
  for (auto& y : labels) y = static_cast<int64_t>(data_rng.next_u32() % 10);
  model.net->train(true);
  for (auto _ : state) {
    Tensor loss = cross_entropy((*model.net)(x), labels);
    loss.backward();
    opt->step();
    opt->zero_grad();
  }
  state.counters["img/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_train_step, W1_paper_mlp, "paper-mlp", 60, 1, 28, false);
BENCHMARK_CAPTURE(BM_train_step, W3_lenet, "lenet", 64, 1, 28, true);

// ---- fast math: vectorizable kernels vs scalar libm ----
// One thread, 16 Ki floats (64 KiB in, 64 KiB out: cache-resident, so the loop's arithmetic is what
// is measured). The libm loops are what exp/sigmoid were before core/ops/fast_math.h.

template <float (*F)(float)>
void BM_fast_math(benchmark::State& state) {
  auto x = random_vector(static_cast<size_t>(state.range(0)), 11);
  for (auto& v : x) v *= 4.0f;
  std::vector<float> y(x.size());
  const int64_t n = state.range(0);
  for (auto _ : state) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[static_cast<size_t>(i)] = F(x[static_cast<size_t>(i)]);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["Gelem/s"] = benchmark::Counter(static_cast<double>(n) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
float exp_libm(float v) { return std::exp(v); }
float exp_vec(float v) { return detail::exp_fast(v); }
float sigmoid_libm(float v) {  // the former sigmoid kernel
  if (v >= 0.0f) return 1.0f / (1.0f + std::exp(-v));
  float e = std::exp(v);
  return e / (1.0f + e);
}
float silu_libm(float v) { return v * sigmoid_libm(v); }
float silu_vec(float v) { return v * detail::sigmoid_fast(v); }
float gelu_libm(float v) { return 0.5f * v * std::erfc(-v * 0.70710678f); }
float gelu_vec(float v) { return v * detail::normal_cdf(v); }
float tanh_libm(float v) { return std::tanh(v); }
float tanh_vec(float v) { return detail::tanh_fast(v); }
BENCHMARK(BM_fast_math<exp_libm>)->Name("BM_exp_libm")->Arg(1 << 14);
BENCHMARK(BM_fast_math<exp_vec>)->Name("BM_exp_fast")->Arg(1 << 14);
BENCHMARK(BM_fast_math<silu_libm>)->Name("BM_silu_libm")->Arg(1 << 14);
BENCHMARK(BM_fast_math<silu_vec>)->Name("BM_silu_fast")->Arg(1 << 14);
BENCHMARK(BM_fast_math<gelu_libm>)->Name("BM_gelu_libm")->Arg(1 << 14);
BENCHMARK(BM_fast_math<gelu_vec>)->Name("BM_gelu_fast")->Arg(1 << 14);
BENCHMARK(BM_fast_math<tanh_libm>)->Name("BM_tanh_libm")->Arg(1 << 14);
BENCHMARK(BM_fast_math<tanh_vec>)->Name("BM_tanh_fast")->Arg(1 << 14);

// The activation ops as a model runs them (allocation, OpenMP, the node in forward+backward).
template <Tensor (*Op)(const Tensor&)>
void BM_activation_fwd_bwd(benchmark::State& state) {
  Rng rng(12);
  Tensor x = Tensor::normal({state.range(0)}, rng).set_requires_grad();
  for (auto _ : state) {
    sum(Op(x)).backward();
    benchmark::DoNotOptimize(x.grad().data());
  }
  state.counters["Gelem/s"] = benchmark::Counter(static_cast<double>(state.range(0)) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
Tensor gelu_default(const Tensor& x) { return gelu(x); }
Tensor silu_op(const Tensor& x) { return silu(x); }
BENCHMARK(BM_unary<silu_op>)->Name("BM_silu")->Arg(128 * 32 * 1024)->UseRealTime();
BENCHMARK(BM_unary<gelu_default>)->Name("BM_gelu")->Arg(128 * 32 * 1024)->UseRealTime();
BENCHMARK(BM_activation_fwd_bwd<silu_op>)
    ->Name("BM_silu_fwd_bwd")
    ->Arg(128 * 32 * 1024)
    ->UseRealTime();
BENCHMARK(BM_activation_fwd_bwd<gelu_default>)
    ->Name("BM_gelu_fwd_bwd")
    ->Arg(128 * 32 * 1024)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

// conv2d: hand-computed forward values, agreement with a direct (seven-loop) convolution, gradient
// checks with and without stride/padding/bias, grouped and depthwise convs (against PyTorch too),
// dW's bits at any thread count, and shape errors.
#include <doctest/doctest.h>

#include <cstring>
#include <limits>

#include "core/blas.h"
#include "core/ops/conv_path.h"
#include "gradcheck.h"
#include "layers/conv2d.h"
#include "memory_limit.h"
#include "test_util.h"

using namespace bnlab;
using bnlab::testing::param;

namespace {
using Inputs = std::vector<Tensor>;

// The definition of conv2d, written out directly: out[n, k, oh, ow] = b[k] + sum_{c, i, j} w[k, c,
// i, j] * x[n, g*C' + c, oh*s - p + i, ow*s - p + j], zero outside the image, where C' = C/groups
// is w's second dim and g = k / (K/groups) the group of output channel k.
std::vector<float> direct_conv(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s,
                               int64_t p, int64_t groups = 1) {
  int64_t N = x.size(0), Cx = x.size(1), H = x.size(2), W = x.size(3);
  int64_t K = w.size(0), C = w.size(1), kh = w.size(2), kw = w.size(3);
  int64_t Ho = (H + 2 * p - kh) / s + 1, Wo = (W + 2 * p - kw) / s + 1;
  std::vector<float> out(static_cast<size_t>(N * K * Ho * Wo));
  const float* px = x.data();
  const float* pw = w.data();
  size_t o = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double acc = b.defined() ? b.data()[k] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                int64_t ih = oh * s - p + i, iw = ow * s - p + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t cx = k / (K / groups) * C + c;
                acc += static_cast<double>(pw[((k * C + c) * kh + i) * kw + j]) *
                       px[((n * Cx + cx) * H + ih) * W + iw];
              }
          out[o++] = static_cast<float>(acc);
        }
  return out;
}
}  // namespace

TEST_CASE("ops.conv: forward values by hand with constant weights") {
  Tensor x = Tensor::ones({1, 1, 3, 3});
  Tensor w = Tensor::ones({1, 1, 2, 2});
  Tensor b = Tensor::from({0.5f}, {1});
  SUBCASE("stride 1, no padding: every window sums four ones") {
    Tensor y = conv2d(x, w, b);
    CHECK(y.shape() == Shape{1, 1, 2, 2});
    CHECK(y.to_vector() == std::vector<float>{4.5f, 4.5f, 4.5f, 4.5f});
  }
  SUBCASE("stride 2, padding 1: corner windows see 1, 2, 2 and 4 real cells") {
    Tensor y = conv2d(x, w, b, 2, 1);
    CHECK(y.shape() == Shape{1, 1, 2, 2});
    CHECK(y.to_vector() == std::vector<float>{1.5f, 2.5f, 2.5f, 4.5f});
  }
  SUBCASE("a difference kernel and no bias") {
    Tensor x9 = Tensor::from({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
    Tensor diff = Tensor::from({1, 0, 0, -1}, {1, 1, 2, 2});  // x[i, j] - x[i+1, j+1]
    CHECK(conv2d(x9, diff, Tensor()).to_vector() == std::vector<float>{-4, -4, -4, -4});
  }
  SUBCASE("channels sum, out-channels are separate filters") {
    // channel 0 holds ones, channel 1 twos; filter 0 reads both, filter 1 only channel 1.
    // (Not {1 x 12, 0 x 4}: GCC 12.2 at -O2 with AVX-512 miscompiles exactly that float literal
    // list.)
    Tensor x2 = Tensor::from({1, 1, 1, 1, 2, 2, 2, 2}, {1, 2, 2, 2});
    Tensor w2 = Tensor::from({1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1}, {2, 2, 2, 2});
    CHECK(conv2d(x2, w2, Tensor()).to_vector() == std::vector<float>{12, 8});
  }
}

TEST_CASE("ops.conv: matches a direct convolution") {
  struct Case {
    Shape x, w;
    int64_t stride, padding;
  };
  for (const Case& c :
       {Case{{2, 3, 7, 6}, {4, 3, 3, 3}, 1, 0}, Case{{3, 2, 7, 7}, {5, 2, 3, 3}, 2, 1},
        Case{{1, 3, 5, 8}, {2, 3, 2, 3}, 2, 2}, Case{{2, 4, 3, 5}, {3, 4, 1, 1}, 1, 0},
        Case{{2, 4, 5, 5}, {3, 4, 1, 1}, 2, 0}}) {
    CAPTURE(to_string(c.x));
    CAPTURE(to_string(c.w));
    Tensor x = param(c.x, 1);
    Tensor w = param(c.w, 2);
    Tensor b = param({c.w[0]}, 3);
    std::vector<float> want = direct_conv(x, w, b, c.stride, c.padding);
    std::vector<float> got = conv2d(x, w, b, c.stride, c.padding).to_vector();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
  }
}

TEST_CASE("ops.conv: gradient checks for x, weight and bias") {
  SUBCASE("stride 2, padding 1, odd sizes") {
    CHECK_GRADIENTS("conv2d s2 p1",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 2, 1); },
                    {param({2, 3, 5, 5}, 1), param({4, 3, 3, 3}, 2), param({4}, 3)});
  }
  SUBCASE("stride 1, padding 0, odd non-square sizes and kernel") {
    CHECK_GRADIENTS("conv2d s1 p0",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 1, 0); },
                    {param({3, 2, 5, 7}, 4), param({3, 2, 3, 2}, 5), param({3}, 6)});
  }
  SUBCASE("no bias, a single image (GEMM outside the parallel loop)") {
    CHECK_GRADIENTS("conv2d no bias",
                    [](const Inputs& in) { return conv2d(in[0], in[1], Tensor(), 1, 1); },
                    {param({1, 2, 5, 5}, 7), param({3, 2, 3, 3}, 8)});
  }
  SUBCASE("groups 2 and depthwise (groups = C), with stride and padding") {
    CHECK_GRADIENTS("conv2d groups 2",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 1, 1, 2); },
                    {param({2, 4, 5, 5}, 31), param({6, 2, 3, 3}, 32), param({6}, 33)});
    CHECK_GRADIENTS("conv2d depthwise",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 2, 1, 3); },
                    {param({2, 3, 5, 6}, 34), param({3, 1, 3, 3}, 35), param({3}, 36)});
    CHECK_GRADIENTS("conv2d grouped 1x1",
                    [](const Inputs& in) { return conv2d(in[0], in[1], Tensor(), 1, 0, 2); },
                    {param({2, 4, 3, 3}, 37), param({4, 2, 1, 1}, 38)});
  }
  SUBCASE("1x1 pointwise (no im2col) and 1x1 strided") {
    CHECK_GRADIENTS("conv2d 1x1", [](const Inputs& in) { return conv2d(in[0], in[1], in[2]); },
                    {param({3, 4, 3, 3}, 9), param({2, 4, 1, 1}, 10), param({2}, 11)});
    CHECK_GRADIENTS("conv2d 1x1 s2",
                    [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 2, 0); },
                    {param({2, 3, 5, 5}, 12), param({2, 3, 1, 1}, 13), param({2}, 14)});
  }
}

TEST_CASE("ops.conv: groups and depthwise match a direct convolution") {
  struct Case {
    Shape x, w;
    int64_t stride, padding, groups;
  };
  for (const Case& c : {Case{{2, 4, 7, 6}, {6, 2, 3, 3}, 1, 1, 2},  // same-width path
                        Case{{2, 6, 7, 7}, {6, 1, 3, 3}, 2, 1, 6},  // depthwise, strided
                        Case{{1, 4, 5, 5}, {8, 1, 3, 3}, 1, 0, 4},  // depthwise, multiplier 2
                        Case{{2, 6, 4, 4}, {9, 2, 1, 1}, 1, 0, 3},  // grouped pointwise
                        Case{{3, 4, 6, 5}, {4, 4, 3, 3}, 1, 1, 1}}) {
    CAPTURE(to_string(c.w));
    CAPTURE(c.groups);
    Tensor x = param(c.x, 41);
    Tensor w = param(c.w, 42);
    Tensor b = param({c.w[0]}, 43);
    std::vector<float> want = direct_conv(x, w, b, c.stride, c.padding, c.groups);
    std::vector<float> got = conv2d(x, w, b, c.stride, c.padding, c.groups).to_vector();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
  }
}

TEST_CASE("ops.conv: grouped values and gradients match PyTorch") {
  // Produced with torch 2.x (/usr/bin/python3):
  //   x = (torch.arange(1., 33.).reshape(1, 2, 4, 4) / 8).requires_grad_()
  //   w = (torch.arange(1., 37.).reshape(4, 1, 3, 3) / 10 - 0.9).detach().requires_grad_()
  //   b = torch.tensor([.1, -.2, .3, -.4], requires_grad=True)
  //   y = F.conv2d(x, w, b, stride=2, padding=1, groups=2); (y * y).sum().backward()
  //   print(y.flatten(), x.grad.flatten()[:8], w.grad.flatten()[:9], b.grad)
  std::vector<float> xv(32), wv(36);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = static_cast<float>(i + 1) / 8;
  for (size_t i = 0; i < wv.size(); ++i) wv[i] = static_cast<float>(i + 1) / 10 - 0.9f;
  Tensor x = Tensor::from(xv, {1, 2, 4, 4});
  Tensor w = Tensor::from(wv, {4, 1, 3, 3});
  Tensor b = Tensor::from({0.1f, -0.2f, 0.3f, -0.4f}, {4});
  for (Tensor* t : {&x, &w, &b}) t->set_requires_grad();
  Tensor y = conv2d(x, w, b, 2, 1, 2);
  CHECK(y.shape() == Shape{1, 4, 2, 2});
  (y * y).sum().backward();
  auto expect = [](const Tensor& t, const std::vector<float>& want) {
    std::vector<float> got = t.to_vector();
    for (size_t i = 0; i < want.size(); ++i)
      CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
  };
  expect(y, {-0.08749997f, -0.5624999f, -1.775f, -3.875f, 1.1875f, 2.5125f, 4.337501f, 6.962501f,
             16.0625f, 24.9875f, 28.65f, 43.8f, 24.1375f, 38.4625f, 45.1625f, 70.4375f});
  expect(x.grad(), {1.2575f, 4.05f, 2.9625f, 3.3525f, 6.1375f, 18.205f, 12.3425f, 13.35f});
  expect(w.grad(), {-5.8125f, -9.0f, -10.4125f, -9.96875f, -15.09375f, -16.66875f, -14.40625f,
                    -21.39375f, -22.96875f});
  expect(b.grad(), {-12.6f, 30.0f, 227.0f, 356.4f});
}

TEST_CASE("ops.conv: the im2col path's gradients have the same bits at 1, 2 and 4 threads") {
  // dW sums over images in a fixed split (four chunks, in order), whatever the team; when the
  // threads kept their own partials the bits followed the thread count, and a run resumed at
  // another --threads was not bit-exact. 8 channels (too few for Winograd) and groups: im2col.
  for (int64_t groups : {1, 4, 8}) {  // 8: depthwise, the work split over (image, group) pairs
    CAPTURE(groups);
    auto grads = [groups](int threads) {
      int previous = num_threads();
      set_num_threads(threads);
      // Big enough (N*K*CK*P = 8*8*(72/groups)*576) that conv2d runs its parallel path.
      Tensor x = param({8, 8, 24, 24}, 21);
      Tensor w = param({8, 8 / groups, 3, 3}, 22);
      Tensor b = param({8}, 23);
      Rng rng(24);
      Tensor r = Tensor::uniform({8, 8, 24, 24}, rng, -1.0f, 1.0f);
      sum(mul(conv2d(x, w, b, 1, 1, groups), r)).backward();
      set_num_threads(previous);
      return std::vector<std::vector<float>>{x.grad().to_vector(), w.grad().to_vector(),
                                             b.grad().to_vector()};
    };
    const auto one = grads(1);
    for (int threads : {2, 4}) {
      const auto many = grads(threads);
      for (size_t t = 0; t < one.size(); ++t) {
        CAPTURE(threads);
        CAPTURE(t);
        REQUIRE(one[t].size() == many[t].size());
        CHECK(std::memcmp(one[t].data(), many[t].data(), one[t].size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("ops.conv: shape errors name the op and both shapes") {
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({2, 3, 32, 32}), Tensor::ones({16, 1, 5, 5}), Tensor()),
                       doctest::Contains("conv2d: input has 3 channels, weight expects 1 (input "
                                         "[2, 3, 32, 32], weight [16, 1, 5, 5])"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({3, 8, 8}), Tensor::ones({4, 3, 3, 3}), Tensor()),
                       doctest::Contains("conv2d: input must be [N, C, H, W]; got [3, 8, 8]"),
                       Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Tensor::ones({1, 3, 8, 8}), Tensor::ones({4, 3, 3}), Tensor()),
      doctest::Contains("conv2d: weight must be [K, C / groups, kh, kw]; got [4, 3, 3]"), Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Tensor::ones({1, 6, 8, 8}), Tensor::ones({4, 2, 3, 3}), Tensor(), 1, 0, 4),
      doctest::Contains("conv2d: groups 4 must divide both the input channels and the output "
                        "channels (input [1, 6, 8, 8], weight [4, 2, 3, 3])"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Tensor::ones({1, 6, 8, 8}), Tensor::ones({4, 2, 3, 3}), Tensor(), 1, 0, 2),
      doctest::Contains("conv2d: input has 6 channels, weight expects 4 (2 per group x 2 groups)"),
      Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Tensor::ones({1, 2, 8, 8}), Tensor::ones({2, 2, 3, 3}), Tensor(), 1, 0, 0),
      doctest::Contains("conv2d: groups must be >= 1; got 0"), Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Tensor::ones({1, 3, 8, 8}), Tensor::ones({4, 3, 3, 3}), Tensor::ones({3})),
      doctest::Contains("conv2d: bias has shape [3], expected [4]"), Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({1, 1, 8, 8}), Tensor::ones({1, 1, 3, 3}), Tensor(), 0),
                       doctest::Contains("conv2d: stride must be >= 1; got 0"), Error);
  CHECK_THROWS_WITH_AS(
      conv2d(Tensor::ones({1, 1, 8, 8}), Tensor::ones({1, 1, 3, 3}), Tensor(), 1, -1),
      doctest::Contains("conv2d: padding must be >= 0; got -1"), Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::ones({1, 1, 3, 3}), Tensor::ones({1, 1, 5, 5}), Tensor()),
                       doctest::Contains("conv2d: kernel 5x5 is larger than the padded input 3x3"),
                       Error);
}

TEST_CASE("ops.conv: a stride or padding near int64's limit neither overflows nor wraps") {
  // im2col's ceil division computed a + stride - 1 and the shape check H + 2 * padding: both
  // overflowed int64. A huge stride read every column as padding; a huge padding gave the error
  // a negative padded input.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  Tensor x = Tensor::ones({1, 1, 5, 5});
  x.set_requires_grad();
  const Tensor w = Tensor::ones({1, 1, 3, 3});
  // One window, as PyTorch: (5 - 3) / stride + 1 = 1, at the top left; with padding 1 it holds
  // 2x2 real cells.
  Tensor y = conv2d(x, w, Tensor(), kMax);
  CHECK(y.shape() == Shape{1, 1, 1, 1});
  CHECK(y.item() == 9.0f);
  CHECK(conv2d(x, w, Tensor(), kMax, 1).item() == 4.0f);
  y.backward(Tensor::ones({1, 1, 1, 1}));
  for (int64_t i = 0; i < 25; ++i)
    CHECK(x.grad().data()[i] == (i / 5 < 3 && i % 5 < 3 ? 1.0f : 0.0f));
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), 1, kMax / 2),
                       "conv2d: padding 4611686018427387903 makes the padded input overflow int64 "
                       "(input [1, 1, 5, 5], weight [1, 1, 3, 3])",
                       Error);
}

TEST_CASE("ops.conv: an output too large to allocate is refused naming conv2d and its arguments") {
  // Found by the API attack of 2026-12-06: padding 1 << 40 passed the overflow check and failed in
  // the tensor allocator, whose message names neither conv2d nor the padding.
  const Tensor x = Tensor::ones({1, 1, 5, 5});
  const Tensor w = Tensor::ones({1, 1, 3, 3});
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), 1, int64_t{1} << 40),
                       doctest::Contains("conv2d: the output [1, 1, 2199023255555, 2199023255555] "
                                         "for input [1, 1, 5, 5], weight [1, 1, 3, 3], stride 1, "
                                         "padding 1099511627776 cannot be allocated: tensor: shape "
                                         "[1, 1, 2199023255555, 2199023255555] has more elements "
                                         "than int64 can count"),
                       Error);
  // 16 TiB: more than any machine's memory.
  CHECK_THROWS_WITH_AS(conv2d_relu(x, w, Tensor(), 1, int64_t{1} << 20),
                       doctest::Contains("conv2d: the output [1, 1, 2097155, 2097155] for input "
                                         "[1, 1, 5, 5], weight [1, 1, 3, 3], stride 1, padding "
                                         "1048576 cannot be allocated: tensor: shape"),
                       Error);
  // The layer reports the op's error.
  Rng rng(1);
  Conv2d layer(Conv2dOptions{.in_channels = 1, .out_channels = 2, .padding = int64_t{1} << 40},
               rng);
  CHECK_THROWS_WITH_AS(layer(x), doctest::Contains("conv2d: the output [1, 2, 2199023255555, "),
                       Error);
}

TEST_CASE(
    "ops.conv: column buffers too large for memory are an error, not the end of the process") {
  if (!BNLAB_TEST_MEMORY_LIMIT) return;
  // The im2col buffers were allocated inside the OpenMP region, where an exception cannot leave:
  // with padding 4096 the output (256 MiB) fitted and the buffers (9x that) failed, and the
  // process ended in std::terminate. The child process runs it under an address-space limit that
  // leaves room for the output only.
  const int code = testing::child_exit_code([] {
    if (!testing::limit_address_space(size_t{1} << 30)) return 4;
    try {
      conv2d(Tensor::ones({1, 1, 5, 5}), Tensor::ones({1, 1, 3, 3}), Tensor(), 1, 4096);
      return 2;  // no error at all
    } catch (const Error& e) {
      return testing::expect_error_start(
          e,
          "conv2d: the column buffers [1, 9, 67158025] for input [1, 1, 5, 5], weight [1, 1, 3, "
          "3], stride 1, padding 4096 cannot be allocated");
    }
  });
  CHECK(code == 0);
}

// conv2d(a, a): one tensor is the input and the weight, so its gradient is the sum of both. Each
// path's backward asked for dx's target first, found it fresh, and assigned dx over the dw it had
// just added into the same buffer: a.grad was dx alone.
TEST_CASE("ops.conv: a tensor that is both input and weight gets both gradients, on every path") {
  using detail::ConvPath;
  using detail::ConvPathMode;
  struct Case {
    ConvPathMode mode;
    ConvPath path;
    int64_t size, padding;
  };
  for (const Case& c : {Case{ConvPathMode::im2col, ConvPath::im2col, 3, 1},
                        Case{ConvPathMode::winograd, ConvPath::winograd, 3, 1},
                        Case{ConvPathMode::direct, ConvPath::direct, 3, 1},
                        Case{ConvPathMode::fourier, ConvPath::fourier, 5, 2}}) {
    CAPTURE(detail::conv_path_name(c.path));
    detail::ScopedConvPathMode scoped(c.mode);
    // [2, 2, s, s] as the input (N 2, C 2) and as the weight (K 2, C 2, s x s).
    REQUIRE(detail::conv2d_path(c.mode, 2, 2, c.size, c.size, 1, c.padding, 1, c.size, c.size) ==
            c.path);
    Rng rng(41);
    const Tensor values = Tensor::normal({2, 2, c.size, c.size}, rng);
    Tensor a = values.clone().set_requires_grad();
    sum(conv2d(a, a, Tensor(), 1, c.padding)).backward();
    Tensor x = values.clone().set_requires_grad(), w = values.clone().set_requires_grad();
    sum(conv2d(x, w, Tensor(), 1, c.padding)).backward();
    const std::vector<float> got = a.grad().to_vector(), dx = x.grad().to_vector(),
                             dw = w.grad().to_vector();
    for (size_t i = 0; i < got.size(); ++i) {
      CAPTURE(i);
      CHECK(got[i] == doctest::Approx(dx[i] + dw[i]).epsilon(1e-5));
    }
  }
}

// Normalization ops, each fused with a hand-derived backward: batch norm (train and eval), batch
// renormalization, layer norm and group norm; and channel_affine, noisy batch norm's per-channel
// constant scale and shift. Batch norm has one forward and one backward for one
// process and for SyncBN: a reducer merges the per-channel statistics (and the backward sums)
// between their passes. Batch renormalization is that same forward and backward with two
// per-channel constants r and d folded into the affine (see "batch renormalization" below).
//
// Batch norm's schedule (batch_norm_passes): its math is written once, as functions of one block of
// channels (ImageBlocks below; up to 64 channels of an [N, C] one): the forward's
// "moments of these channels" and "normalize these channels with these statistics", the
// backward's "sum(dy), sum(dy * xhat) of these channels" and "dx of these channels". Between the
// first and the second of each pair sits the reducer. When it is the local one (one process:
// merge_moments and sum leave the values unchanged, so it is not called) or there is none (eval),
// each block's second pass runs right after its first, inside one parallel loop, while the block's
// values are still in cache. With a real reducer (SyncBN) the first pass runs over all channels,
// then the reducer, then the second pass over all channels. The arithmetic per channel is the same
// in both schedules, so their results are bit-identical.
//
// Legend: N batch, C channels, S = product of the dims after C (H*W for images, 1 for [N, C]),
// M = N*S values per channel (batch norm). Layer and group norm normalize contiguous ROWS of x seen
// as [R, L]: layer norm has R = numel / D rows of the D = prod(normalized_shape) trailing values;
// group norm has R = N*G rows of L = (C/G)*S values (the channels of one group of one sample are
// contiguous).
//
// Numerics, shared by all four: statistics are computed in double with two passes (the mean, then
// squared deviations from it), so a large common offset does not cancel as in E[x^2] - E[x]^2;
// batch norm on images does the two passes per (n, c) plane and merges the planes' moments with
// Chan et al.'s update (batch_norm_moments), as SyncBN merges shards. The
// variance is the biased one (divide by M or L), eps goes inside the sqrt: rstd = 1/sqrt(var +
// eps). The normalized value (x - mean) * rstd is formed in double before the affine, so the shift
// is never folded into a float x*scale + shift that would cancel again. Backward recomputes xhat
// from x and the saved mean/rstd rather than saving an xhat tensor the size of x.
//
// Backward (docs/derivations.md, "batch_norm", "layer_norm and group_norm"): with dxhat = dy *
// gamma,
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dgamma = sum(dy * xhat),  dbeta
//   = sum(dy)
// with the means and sums over the M values of a channel (batch norm) or the L values of a row.
//
// batch_norm_relu_train is batch norm followed by relu in the same passes: the normalize pass
// writes z = relu(y) instead of y, and the backward reads dz and takes relu's mask from z (z <= 0
// exactly where y <= 0) wherever batch norm's reads dy, so y and dy are never materialized: two
// passes over [N, C, S] fewer forward, three fewer backward. Every value is computed with the same
// float and double operations as the unfused pair (relu_value / relu_grad, core/ops/unary_op.h,
// are relu's own), so results are bit-identical to relu(batch_norm_train(x).y).
//
// batch_norm_sigmoid_train is the same with sigmoid in relu's place (the paper-mlp's BatchNorm1d +
// Sigmoid): the normalize pass writes z = sigmoid(y) with sigmoid()'s own sigmoid_fast, and the
// backward multiplies dz by sigmoid_derivative(z), the float sigmoid's backward writes;
// bit-identical to sigmoid(batch_norm_train(x).y), a NaN's sign aside. Images take the generic
// loops (the *_run functions below serve relu and the pooled op).
//
// batch_norm_relu_max_pool2x2_train goes one op further, max_pool2d(z, 2) where it follows
// (lenet's and cifar-cnn's conv blocks): the normalize pass forms z one plane at a time in scratch
// and pools it with max_pool2d's own plane kernel, so only the pooled p (a quarter of z) and the
// winners' places reach memory. Backward re-forms each plane's gradient w.r.t. bn(x) in scratch
// from dp, p and the places (for_pooled_planes: the same floats as the unfused chain's
// relu_grad(dz, z)), once per block: the sums pass keeps a block's planes in per-thread scratch for
// its dx pass (kept_planes). It runs the same loops on each plane as batch_norm_relu_train does on
// its runs (grad_sums_run and grad_input_run below, not inlined; their relu and none instances
// differ only in relu's mask, and the re-formed planes need none), so both reductions add in one
// order. Results are bit-identical to max_pool2d(relu(bn(x)), 2); three passes over [N, C, H, W]
// fewer forward, three fewer backward, and z is not kept for backward.
//
// References: https://pytorch.org/docs/stable/generated/torch.nn.functional.batch_norm.html,
// .../torch.nn.functional.layer_norm.html, .../torch.nn.functional.group_norm.html;
// Ioffe & Szegedy 2015; Ioffe 2017 (batch renormalization); Ba et al. 2016; Wu & He 2018.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/fast_math.h"
#include "core/ops/max_pool2x2_avx2.h"
#include "core/ops/max_pool2x2_avx512.h"
#include "core/ops/plane_moments.h"
#include "core/ops/pool_general.h"
#include "core/ops/prefetch.h"
#include "core/ops/thread_scratch.h"
#include "core/ops/unary_op.h"
#include "core/parallel.h"
#include "core/region_error.h"
#include "core/stealing_loop.h"

namespace bnlab {

namespace {

// The activation batch norm's own passes apply after normalizing (batch_norm_relu_train,
// batch_norm_sigmoid_train) and whose derivative its backward takes from their output z.
enum class Activation { none, relu, sigmoid };

// Work below this many elements stays on one thread: forking costs more than it saves.
constexpr int64_t kParallelThreshold = 1 << 15;

const float* data_or_null(const Tensor& t) { return t.defined() ? t.data() : nullptr; }

// x [N, C, *] seen as [N, C, S].
struct ChannelDims {
  int64_t N, C, S;
};

ChannelDims channel_dims(const char* op, const Tensor& x) {
  BNLAB_CHECK(x.dim() >= 2, op, ": input must be [N, C] or [N, C, *]; got ", x.shape());
  BNLAB_CHECK(x.numel() > 0, op, ": input ", x.shape(), " is empty");
  return {x.size(0), x.size(1), x.numel() / (x.size(0) * x.size(1))};
}

// An optional affine parameter (gamma, beta, weight, bias) must be undefined or exactly `expected`.
void check_param(const char* op, const char* name, const Tensor& t, const Shape& expected,
                 const Tensor& x) {
  if (!t.defined()) return;
  BNLAB_CHECK(t.shape() == expected, op, ": ", name, " has shape ", t.shape(), ", expected ",
              expected, " for input ", x.shape());
}

void check_eps(const char* op, float eps) {
  BNLAB_CHECK(eps >= 0.0f, op, ": eps must be >= 0; got ", eps);
}

// ---- batch norm: statistics per channel over N and S, merged by a reducer ----
//
// Channel c of x [N, C, S] is N strided runs of S values. One training forward and one backward
// serve a single process and SyncBN alike; each has two passes with a reducer (BatchNormReducer,
// core/ops.h) between them:
//   forward:  local moments (count, mean, M2) per channel -> reducer.merge_moments -> normalize
//   backward: local sum(dy), sum(dy * xhat) per channel -> dgamma, dbeta -> reducer.sum -> dx
// The local reducer (one process, the default) keeps this batch's values, so the statistics are
// over N and S of this batch; SyncBN's (core/distributed.h) merges them over every shard's batch
// in one collective per call. dgamma/dbeta take the local sums either way: the data-parallel
// gradient average adds them up across shards. Eval mode runs the same normalize pass with the
// running statistics, and the same backward with the statistics held constant: no reducer, and no
// correction terms in dx. Each pass is a function of one block of channels; batch_norm_passes
// schedules them (see the top of this file).

// Channel blocks: the passes below walk channels [c0, c1) together, with per-channel double
// accumulators, so that both layouts vectorize. With S > 1 (images) each channel's N runs of S
// contiguous values are reduced by `omp simd` loops (several independent partial sums, so the
// reduction is not bound by the latency of one chain of double adds); with S == 1 ([N, C], dense
// layers) the channels of one row are contiguous, so a block is up to kChannelBlock channels and
// the inner loop runs over them instead. Threads split the blocks. No result depends on the
// blocks: each channel's values are always added in the order of n.
constexpr int64_t kChannelBlock = 64;

// How an image tensor's channels are blocked. kWide: each thread's share of the channels in blocks
// of up to kChannelBlock, walked image by image, so each image's part of a block is one contiguous
// run of memory. kPageRuns: blocks of just enough channels that each image's part of a block is
// kPageFloats (4 KiB, a page) or more, walked image by image, so that the block's second pass finds
// its values in cache (1.5 MiB for cifar-cnn's [128, 32, 32, 32] with three tensors read) while
// the hardware prefetcher, which stops at 4 KiB pages, still sees runs a page long. Measured on
// cifar-cnn's shapes (batch 128, one thread, AMD EPYC): the training forward (moments, then
// normalize) takes 0.45-0.7x the time with kWide at 32 and 64 channels without the pool; the
// backward (three tensors read per pass) was not faster with kWide (0.94-1.14x the time over two
// runs), and with one channel per block (before kPageRuns) the 8x8 and 16x16 planes were 256-byte
// and 1 KiB runs that the prefetcher never followed.
enum class ImageBlocks { kWide, kPageRuns };
constexpr int64_t kPageFloats = 1024;

// Calls f(c0, c1) for every channel block [c0, c1). Threads take contiguous runs of blocks, the
// same runs in every call for the same shape, in ascending order or, with `reverse`, descending;
// in ascending order a thread that finishes its run takes over the other's last blocks.
// Below kParallelThreshold elements, at one thread and inside another region no parallel region
// is entered (core/parallel.h: a team of one costs a futex round).
template <class F>
void for_channel_blocks(const ChannelDims& d, bool reverse, F f,
                        ImageBlocks images = ImageBlocks::kWide) {
  const bool parallel = d.N * d.C * d.S > kParallelThreshold && detail::team_has_threads();
  int64_t cb = kChannelBlock;
  if (d.S > 1) {
    const int64_t team = parallel ? omp_get_max_threads() : 1;
    const int64_t share = (d.C + team - 1) / team;  // every thread gets channels
    const int64_t page = (kPageFloats + d.S - 1) / d.S;
    cb = std::clamp<int64_t>(images == ImageBlocks::kWide ? share : std::min(share, page), 1,
                             kChannelBlock);
  }
  const int64_t blocks = (d.C + cb - 1) / cb;
  auto run = [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const int64_t b = reverse ? hi - 1 - (k - lo) : k;
      const int64_t c0 = b * cb;
      f(c0, std::min(d.C, c0 + cb));
    }
  };
  if (!parallel) {
    run(0, blocks);  // forking costs more than it saves
    return;
  }
  // f may throw (a thread's scratch grown for a new shape: plane_scratch, for_pooled_planes), and
  // an exception cannot leave the region: it is rethrown after it.
  detail::RegionError error;
  if (reverse) {
#pragma omp parallel
    error.run([&] {
      const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
      run(blocks * t / team, blocks * (t + 1) / team);
    });
    error.rethrow();
    return;
  }
  // Ascending: each thread's run of blocks, the rest taken over by a thread that finishes first
  // (core/stealing_loop.h). (Descending is SyncBN's second pass, which should find in each core's
  // cache the blocks that core's first pass left there: the static runs.)
  detail::StealingLoop loop(blocks);
#pragma omp parallel
  error.run([&] { loop.run([&](int64_t b) { run(b, b + 1); }); });
  error.rethrow();
}

// Calls f(n, n + 1) for every image, each thread starting on its contiguous range [N t / team,
// N (t + 1) / team): the split of the convs that give batch norm their planes' moments (direct,
// Winograd, im2col and the frequency-domain path with moments all split images so), so that a
// thread normalizes images it wrote itself; a thread that finishes its range takes over the
// other's last images (core/stealing_loop.h), as the direct, Winograd and frequency-domain convs
// do. Below kParallelThreshold
// elements, at one thread and inside another region, f(0, N) on the calling thread.
template <class F>
void for_image_ranges(const ChannelDims& d, F f) {
  if (d.N * d.C * d.S <= kParallelThreshold || !detail::team_has_threads()) {
    f(int64_t{0}, d.N);
    return;
  }
  detail::StealingLoop images(d.N);
  detail::RegionError error;  // as for_channel_blocks
#pragma omp parallel
  error.run([&] { images.run([&](int64_t n) { f(n, n + 1); }); });
  error.rethrow();
}

// The schedule of two passes over the channel blocks with `between` (the reducer) between them.
// `fused` (nothing to do between: the local reducer, or none): one loop over the blocks runs each
// block's second pass right after its first, while its values are in cache. Otherwise (SyncBN):
// the first pass over all blocks, `between`, then the second pass over all blocks, in reverse so
// that it starts on the blocks the first pass left in this core's cache last. Either way every
// channel gets the same arithmetic, so both schedules give bit-identical results.
template <class First, class Between, class Second>
void batch_norm_passes(const ChannelDims& d, ImageBlocks images, bool fused, First first,
                       Between between, Second second) {
  if (fused) {
    for_channel_blocks(
        d, /*reverse=*/false,
        [&](int64_t c0, int64_t c1) {
          first(c0, c1);
          second(c0, c1);
        },
        images);
    return;
  }
  for_channel_blocks(d, /*reverse=*/false, first, images);
  between();
  for_channel_blocks(d, /*reverse=*/true, second, images);
}

// [N, C] sums go kSumGroup channels at a time, their sums held in registers down the whole batch
// (accumulating a block's 64 sums row by row kept them in memory: a load and a store per element).
// for_sum_groups calls group(cs, keep) for channel groups [cs, cs + kSumGroup) covering [c0, c1),
// where the channels from `keep` on are the group's new ones. A block of at least kSumGroup
// channels that is not a multiple of it ends in a group that overlaps the one before (keep > cs):
// its first channels are summed again and the result dropped, instead of summing the last few
// channels one scalar chain each down the batch (the 36-channel block of paper-mlp's 100 ended in
// four such chains). Narrower blocks (c1 - c0 < kSumGroup) take the callers' per-channel loops.
// Each channel adds its values in the order of n either way, so the sums do not depend on the
// grouping.
constexpr int64_t kSumGroup = 16;

template <class Group>
void for_sum_groups(int64_t c0, int64_t c1, Group group) {
  int64_t c = c0;
  for (; c + kSumGroup <= c1; c += kSumGroup) group(c, c);
  if (c < c1) group(c1 - kSumGroup, c);
}

// acc[c - c0] += sum over n, s of f(&x[n, c, s], c) for c in [c0, c1). f gets the element's address
// rather than its value so that it can read the same element of a second tensor of x's layout.
template <class F>
void channel_sums(double* acc, const float* x, const ChannelDims& d, int64_t c0, int64_t c1, F f) {
  if (d.S == 1 && c1 - c0 >= kSumGroup) {
    for_sum_groups(c0, c1, [&](int64_t cs, int64_t keep) {
      double a[kSumGroup];
      for (int64_t j = 0; j < kSumGroup; ++j) a[j] = cs + j >= keep ? acc[cs - c0 + j] : 0.0;
      for (int64_t n = 0; n < d.N; ++n) {
        const float* xr = x + n * d.C + cs;
#pragma omp simd
        for (int64_t j = 0; j < kSumGroup; ++j) a[j] += f(xr + j, cs + j);
      }
      for (int64_t j = 0; j < kSumGroup; ++j) {
        if (cs + j >= keep) acc[cs - c0 + j] = a[j];
      }
    });
    return;
  }
  if (d.S == 1) {
    for (int64_t c = c0; c < c1; ++c) {
      double a = acc[c - c0];
      for (int64_t n = 0; n < d.N; ++n) a += f(x + n * d.C + c, c);
      acc[c - c0] = a;
    }
    return;
  }
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t c = c0; c < c1; ++c) {
      const float* xc = x + (n * d.C + c) * d.S;
      double s_acc = 0.0;
#pragma omp simd reduction(+ : s_acc)
      for (int64_t s = 0; s < d.S; ++s) s_acc += f(xc + s, c);
      acc[c - c0] += s_acc;
    }
  }
}

// channel_sums of two functions of [N, C] (S == 1) in one pass down the batch: acc_a[c - c0] +=
// sum over n of fa(&x[n, c], c), acc_b likewise with fb. Each sum adds its values in the order of
// n, as channel_sums does, so both are the same as two channel_sums calls; what fa and fb share
// (batch norm's backward: the loads and the gradient w.r.t. y) is formed once per element.
template <class Fa, class Fb>
void channel_sum_pair(double* acc_a, double* acc_b, const float* x, const ChannelDims& d,
                      int64_t c0, int64_t c1, Fa fa, Fb fb) {
  if (c1 - c0 < kSumGroup) {
    for (int64_t c = c0; c < c1; ++c) {
      double a = acc_a[c - c0], b = acc_b[c - c0];
      for (int64_t n = 0; n < d.N; ++n) {
        a += fa(x + n * d.C + c, c);
        b += fb(x + n * d.C + c, c);
      }
      acc_a[c - c0] = a;
      acc_b[c - c0] = b;
    }
    return;
  }
  for_sum_groups(c0, c1, [&](int64_t cs, int64_t keep) {
    double a[kSumGroup], b[kSumGroup];
    for (int64_t j = 0; j < kSumGroup; ++j) {
      a[j] = cs + j >= keep ? acc_a[cs - c0 + j] : 0.0;
      b[j] = cs + j >= keep ? acc_b[cs - c0 + j] : 0.0;
    }
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xr = x + n * d.C + cs;
#pragma omp simd
      for (int64_t j = 0; j < kSumGroup; ++j) {
        a[j] += fa(xr + j, cs + j);
        b[j] += fb(xr + j, cs + j);
      }
    }
    for (int64_t j = 0; j < kSumGroup; ++j) {
      if (cs + j >= keep) {
        acc_a[cs - c0 + j] = a[j];
        acc_b[cs - c0 + j] = b[j];
      }
    }
  });
}

// out[n, c, s] = f(in[n, c, s], c) (or += with Accumulate) for c in [c0, c1).
//
// Each contiguous run goes in whole vectors of kRunLanes floats. When its length is not a multiple
// of that (paper-mlp's [N, 100] in blocks of 64 and 36), its last kRunLanes elements are computed
// first, as one vector overlapping the run's last full one, and stored after it: a scalar
// remainder of 4 elements per row, with sigmoid_fast's division in it, took 40 % of the
// BatchNorm1d + Sigmoid pass on [60, 100]. Computing the tail before the run is written is what
// makes the overlap safe when out is in (the fused sigmoid's in-place pass) or accumulated into:
// the overlapped elements' values come from the inputs as they were, the same values the full
// vectors store. Every element gets the same arithmetic, so the results are as before.
constexpr int64_t kRunLanes = 16;

template <bool Accumulate, class F>
void channel_map(float* out, const float* in, const ChannelDims& d, int64_t c0, int64_t c1, F f) {
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t c = c0; c < c1; c += (d.S == 1 ? c1 - c0 : 1)) {
      // One contiguous run: the block's channels of row n (S == 1) or channel c's S values.
      const int64_t len = d.S == 1 ? c1 - c0 : d.S;
      const int64_t base = d.S == 1 ? n * d.C + c0 : (n * d.C + c) * d.S;
      float* o = out + base;
      const float* i = in + base;
      auto value = [&](int64_t j) {
        const int64_t ch = d.S == 1 ? c0 + j : c;
        const float v = f(i[j], ch, base + j);
        if constexpr (Accumulate) {
          return o[j] + v;
        } else {
          return v;
        }
      };
      const int64_t whole = len > kRunLanes ? len / kRunLanes * kRunLanes : len;
      float tail[kRunLanes];
      const int64_t tail_at = len - kRunLanes;
      if (whole < len) {
#pragma omp simd
        for (int64_t j = 0; j < kRunLanes; ++j) tail[j] = value(tail_at + j);
      }
#pragma omp simd
      for (int64_t j = 0; j < whole; ++j) o[j] = value(j);
      if (whole < len) std::memcpy(o + tail_at, tail, sizeof tail);
    }
  }
}

// Forward, first pass: moments [C][3] = (M, mean, M2) of channels [c0, c1) of x [N, C, S], M = N *
// S, M2 = sum of squared deviations from the mean. mean_d [C] receives the mean as well (a plain
// array for the deviation loop to read). Two passes over the block: the mean, then the deviations
// (no E[x^2] - E[x]^2 cancellation). given_planes (images only, else null): x's plane_moments
// [N * C * 2], computed by the op that wrote x.
void batch_norm_moments(double* moments, double* mean_d, const float* x, const ChannelDims& d,
                        int64_t c0, int64_t c1, const double* given_planes) {
  if (d.S > 1) {
    // Images: each (n, c) plane's own two passes (plane_moments: its mean, then its squared
    // deviations, the second from L1), merged into the channel's (count, mean, M2) in the order of
    // n with Chan et al.'s update, as SyncBN merges shards. One read of x from memory instead of
    // two, in memory order when the block spans several channels; none when the conv that wrote x
    // gave its planes' moments (core/ops/plane_moments.h).
    for (int64_t c = c0; c < c1; ++c) std::fill_n(moments + 3 * c, 3, 0.0);
    const double S = static_cast<double>(d.S);
    double local[2 * kChannelBlock];
    for (int64_t n = 0; n < d.N; ++n) {
      const double* pm = local;
      if (given_planes) {
        pm = given_planes + 2 * (n * d.C + c0);
      } else {
        detail::plane_moments(local, x + (n * d.C + c0) * d.S, c1 - c0, d.S);
      }
      for (int64_t c = c0; c < c1; ++c) {
        const double plane[3] = {S, pm[2 * (c - c0)], pm[2 * (c - c0) + 1]};
        merge_moments_into(moments + 3 * c, plane, 1);
      }
    }
    for (int64_t c = c0; c < c1; ++c) mean_d[c] = moments[3 * c + 1];
    return;
  }
  const double M = static_cast<double>(d.N * d.S);
  double sum[kChannelBlock] = {}, sq[kChannelBlock] = {};
  channel_sums(sum, x, d, c0, c1, [](const float* v, int64_t) { return static_cast<double>(*v); });
  for (int64_t c = c0; c < c1; ++c) mean_d[c] = sum[c - c0] / M;
  channel_sums(sq, x, d, c0, c1, [mean_d](const float* v, int64_t c) {
    double dev = *v - mean_d[c];
    return dev * dev;
  });
  for (int64_t c = c0; c < c1; ++c) {
    moments[3 * c] = M;
    moments[3 * c + 1] = mean_d[c];
    moments[3 * c + 2] = sq[c - c0];
  }
}

// Forward, second pass: y [N, C, S] = (x - mean) * (rstd * gamma) + beta for channels [c0, c1),
// with per-channel mean_d/rstd_d [C] (double), the batch's or the running ones. In double: the
// shift is not folded into a float x * scale + shift, which would cancel. gamma/beta [C] may be
// null (no affine). kRenorm (batch renormalization): with its r, shift_d [C] it is gamma * (xhat *
// r + d) + beta, gamma * r in the scale and beta + gamma * d in the shift. A template parameter,
// not a null check, so that batch norm's instantiation is the code it was (a runtime check let the
// compiler version the loops, which cost batch norm's backward about 5%). kAct
// (batch_norm_relu_train, batch_norm_sigmoid_train): writes relu(y) or sigmoid(y) instead of y,
// the activation applied to the same float y.
// One normalized value, the expression every normalize pass uses (so that the fused ops form the
// same floats): in double, then rounded once.
inline float normalized(float v, double mean, double scale, double shift) {
  return static_cast<float>((v - mean) * scale + shift);
}

template <bool kRenorm, Activation kAct = Activation::none>
void batch_norm_normalize(float* y, const float* x, const double* mean_d, const double* rstd_d,
                          const float* gamma, const float* beta, const double* r,
                          const double* shift_d, const ChannelDims& d, int64_t c0, int64_t c1) {
  double scale[kChannelBlock], shift[kChannelBlock];
  for (int64_t c = c0; c < c1; ++c) {
    if constexpr (kRenorm) {
      const double g = gamma ? gamma[c] : 1.0;
      scale[c - c0] = rstd_d[c] * (g * r[c]);
      shift[c - c0] = (beta ? beta[c] : 0.0) + g * shift_d[c];
    } else {
      scale[c - c0] = rstd_d[c] * (gamma ? gamma[c] : 1.0);
      shift[c - c0] = beta ? beta[c] : 0.0;
    }
  }
  channel_map<false>(y, x, d, c0, c1, [&](float v, int64_t c, int64_t) {
    const float out = normalized(v, mean_d[c], scale[c - c0], shift[c - c0]);
    if constexpr (kAct == Activation::relu) return detail::relu_value(out);
    return out;
  });
  if constexpr (kAct == Activation::sigmoid) {
    // A loop of its own over the runs just written (still in cache): inside the normalize loop GCC
    // left sigmoid_fast scalar, and the fused op was slower than the pair (13 % of a paper-mlp
    // step against 7 %). The same floats either way.
    channel_map<false>(y, y, d, c0, c1,
                       [](float v, int64_t, int64_t) { return detail::sigmoid_fast(v); });
  }
}

// The gradient w.r.t. batch norm's output y of one element, given the incoming gradient g there.
// kAct relu (batch_norm_relu_train): g is the gradient w.r.t. relu's output z [N, C, S] at flat
// index i; the value is relu's backward, relu_grad(g, z), the same float relu's own backward
// writes (z <= 0 exactly where y <= 0), so every sum and dx below is bit-identical to the unfused
// pair's. kAct sigmoid (batch_norm_sigmoid_train): likewise sigmoid's backward, g * z (1 - z).
template <Activation kAct>
float grad_at(float g, const float* z, std::ptrdiff_t i) {
  if constexpr (kAct == Activation::relu) {
    return detail::relu_grad(g, z[i]);
  } else if constexpr (kAct == Activation::sigmoid) {
    return g * detail::sigmoid_derivative(z[i]);
  } else {
    return g;
  }
}

// The backward's sums pass walks a channel block [c0, c1) image by image, one run of S values per
// (n, c), and reads x (and dz, z) from memory in runs of a few KiB one image apart, which the
// hardware prefetcher picks up late on every run: in perf the sums waited on those loads. So each
// run asks for the next run's lines while it computes: next_run_base gives the next (n, c)'s offset
// in this order (or -1 after the last), and prefetch_next_run asks for its lines
// (detail::prefetch_run, core/ops/prefetch.h).
//
// Into L2, not L1. On a Zen 4 host (AMD EPYC family 25 model 17), with the runs coming from DRAM,
// the sums pass alone (bench/prefetch_levels: W3's [64, 32, 784], two-channel blocks) took
// 1470 us with L1 hints, 1140 with none and 840 with L2 hints, the loads alone 720 (our reading:
// hints into L1 hold the L1's few miss buffers that the loop's own loads need); from cache
// 650-690, 570-580 and 450-480 us. W3 + BN training at one thread, the two levels alternated in
// one process: step time 0.974x with L2 hints (W4 + BN 0.990x). On the Zen 5 hosts, where L1
// hints were measured against none, L2 hints were not tried.
template <typename T>
[[gnu::always_inline]] inline void prefetch_next_run(const T* p, int64_t count) {
  detail::prefetch_run<detail::PrefetchTo::l2>(p, count);
}

int64_t next_run_base(const ChannelDims& d, int64_t base, int64_t c, int64_t c0, int64_t c1) {
  const int64_t next = c + 1 < c1 ? base + d.S : base + (d.C - (c1 - c0) + 1) * d.S;
  return next < d.N * d.C * d.S ? next : -1;
}

// relu on images (kAct relu), one run of S values of one (n, c): returns (sum(relu_grad(dz, z)),
// sum(relu_grad(dz, z) * xhat)) over it. Each sum is a simd reduction over the run; dz and z are
// read and masked once for both. kAct none: the run's gradient g is taken as it is (plain batch
// norm's dy, or the pooled op's re-formed planes, for_pooled_planes), and zc is not read. Not
// inlined, and one template for both: batch_norm_relu_max_pool2x2_train runs the same loop on the
// planes it re-forms, so its sums add in the same order, bit for bit (relu_grad(g, z) there would
// be g for z > 0).
template <Activation kAct>
[[gnu::noinline]] std::pair<double, double> grad_sums_run(const float* gc, const float* zc,
                                                          const float* xc, double mean, double rstd,
                                                          int64_t S) {
  static_assert(kAct == Activation::relu || kAct == Activation::none);
  double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t s = 0; s < S; ++s) {
    const float g = grad_at<kAct>(gc[s], zc, s);
    a += static_cast<double>(g);
    b += g * ((xc[s] - mean) * rstd);
  }
  return {a, b};
}

// Backward, first pass: sums [2, C] = (sum(dy), sum(dy * xhat)) of channels [c0, c1), xhat = (x -
// mean) * rstd, from dy and x [N, C, S]: what dbeta, dgamma and both dx correction terms are made
// of. kAct: dy is the activation's dz, multiplied by its derivative from z [N, C, S] (grad_at); z
// is unused otherwise.
template <Activation kAct = Activation::none>
void batch_norm_grad_sums(double* sums, const float* dy, const float* z, const float* x,
                          const double* mean_d, const double* rstd_d, const ChannelDims& d,
                          int64_t c0, int64_t c1) {
  double sum_dy[kChannelBlock] = {}, sum_dy_xhat[kChannelBlock] = {};
  if constexpr (kAct == Activation::relu || kAct == Activation::none) {
    if (d.S > 1) {
      // Images: both sums in one loop (grad_sums_run), so dy (and z) are read, and masked, once,
      // not twice. Each sum is still its own simd reduction over the same runs, as below.
      for (int64_t n = 0; n < d.N; ++n) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t base = (n * d.C + c) * d.S;
          if (const int64_t next = next_run_base(d, base, c, c0, c1); next >= 0) {
            prefetch_next_run(dy + next, d.S);
            if (z) prefetch_next_run(z + next, d.S);
            prefetch_next_run(x + next, d.S);
          }
          const auto [a, b] = grad_sums_run<kAct>(dy + base, z ? z + base : nullptr, x + base,
                                                  mean_d[c], rstd_d[c], d.S);
          sum_dy[c - c0] += a;
          sum_dy_xhat[c - c0] += b;
        }
      }
      for (int64_t c = c0; c < c1; ++c) {
        sums[c] = sum_dy[c - c0];
        sums[d.C + c] = sum_dy_xhat[c - c0];
      }
      return;
    }
  }
  const auto dy_term = [dy, z](const float* g, int64_t) {
    return static_cast<double>(grad_at<kAct>(*g, z, g - dy));
  };
  // sum(dy * xhat) needs x and dy side by side. They share the layout, so x is indexed with dy's
  // offsets (dy + i -> x + i).
  const std::ptrdiff_t to_x = x - dy;
  if (d.S == 1) {
    // [N, C]: both sums in one pass (two passes read dy, z and x twice and formed the gradient
    // twice: 2.2 % of a paper-mlp + BN step, one thread).
    channel_sum_pair(sum_dy, sum_dy_xhat, dy, d, c0, c1, dy_term, [=](const float* g, int64_t c) {
      return grad_at<kAct>(*g, z, g - dy) * ((g[to_x] - mean_d[c]) * rstd_d[c]);
    });
  } else {
    channel_sums(sum_dy, dy, d, c0, c1, dy_term);
  }
  for (int64_t n = 0; n < d.N && d.S > 1; ++n) {
    for (int64_t c = c0; c < c1; ++c) {
      const float* gc = dy + (n * d.C + c) * d.S;
      const float* xc = gc + to_x;
      const double m = mean_d[c], rstd = rstd_d[c];
      double acc = 0.0;
#pragma omp simd reduction(+ : acc)
      for (int64_t s = 0; s < d.S; ++s)
        acc += grad_at<kAct>(gc[s], z, gc + s - dy) * ((xc[s] - m) * rstd);
      sum_dy_xhat[c - c0] += acc;
    }
  }
  for (int64_t c = c0; c < c1; ++c) {
    sums[c] = sum_dy[c - c0];
    sums[d.C + c] = sum_dy_xhat[c - c0];
  }
}

// The expanded training dx of one channel: dx = k_dy * dy - k_mean - k_xhat * (x - mean). With
// dxhat = dy * gamma, mean(dxhat) = gamma * sum_dy / M and mean(dxhat * xhat) = gamma *
// sum_dy_xhat / M, xhat = (x - mean) * rstd. Without sums (eval: the statistics are constants)
// only k_dy is used. g is gamma (1 without affine; batch renormalization's gamma * r).
struct DxCoefficients {
  double k_dy, k_mean, k_xhat;
};
DxCoefficients dx_coefficients(double g, double rstd, const double* sums, double M, int64_t C,
                               int64_t c) {
  return {rstd * g, sums ? rstd * g * sums[c] / M : 0.0,
          sums ? rstd * rstd * g * sums[C + c] / M : 0.0};
}

// relu on images with sums (training), one run of S values of one (n, c): dx = k.k_dy *
// relu_grad(dz, z) - k.k_mean - k.k_xhat * (x - mean), assigned (fresh: + 0.0f, what adding into a
// zeroed buffer gives) or added. kAct none: gc is taken as it is (plain batch norm's dy, or the
// pooled op's re-formed planes), zc not read. Not inlined, for batch_norm_relu_max_pool2x2_train's
// sake, as grad_sums_run.
template <Activation kAct>
[[gnu::noinline]] void grad_input_run(float* dxc, bool fresh, const float* gc, const float* zc,
                                      const float* xc, DxCoefficients k, double mean, int64_t S) {
  static_assert(kAct == Activation::relu || kAct == Activation::none);
  auto value = [&](int64_t s) {
    return static_cast<float>(k.k_dy * grad_at<kAct>(gc[s], zc, s) - k.k_mean -
                              k.k_xhat * (xc[s] - mean));
  };
  if (fresh) {
#pragma omp simd
    for (int64_t s = 0; s < S; ++s) dxc[s] = value(s) + 0.0f;
  } else {
#pragma omp simd
    for (int64_t s = 0; s < S; ++s) dxc[s] += value(s);
  }
}

// Backward, second pass: accumulates dx [N, C, S] from dy [N, C, S] for channels [c0, c1). With
// `sums` (training: the reduced sums [2, C] over the M values behind the statistics) dx = rstd *
// (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma; without (eval: the
// statistics are constants) dx = dy * gamma * rstd. kRenorm: batch renormalization's r [C] is a
// constant factor of xhat's gradient, so it scales gamma. kAct: dy is the activation's dz, times
// its derivative from z (grad_at). dx_fresh: dx is a fresh gradient buffer (grad_target), which
// this pass ASSIGNS (it writes every element of its channels) instead of adding into a zero-filled
// one.
template <bool kRenorm, Activation kAct = Activation::none>
void batch_norm_grad_input(float* dx, bool dx_fresh, const float* dy, const float* z,
                           const float* x, const double* mean_d, const double* rstd_d,
                           const float* gamma, const double* r, const double* sums, double M,
                           const ChannelDims& d, int64_t c0, int64_t c1) {
  double k_dy[kChannelBlock], k_mean[kChannelBlock], k_xhat[kChannelBlock];
  for (int64_t c = c0; c < c1; ++c) {
    double g = gamma ? gamma[c] : 1.0;
    if constexpr (kRenorm) g *= r[c];
    const DxCoefficients k = dx_coefficients(g, rstd_d[c], sums, M, d.C, c);
    k_dy[c - c0] = k.k_dy;
    k_mean[c - c0] = k.k_mean;
    k_xhat[c - c0] = k.k_xhat;
  }
  if constexpr (kAct == Activation::relu || kAct == Activation::none) {
    if (sums && d.S > 1) {
      // Run by run, in memory order, each asking for the next run's lines.
      for (int64_t n = 0; n < d.N; ++n) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t base = (n * d.C + c) * d.S;
          if (const int64_t next = next_run_base(d, base, c, c0, c1); next >= 0) {
            prefetch_next_run(dy + next, d.S);
            if (z) prefetch_next_run(z + next, d.S);
            prefetch_next_run(x + next, d.S);
          }
          const DxCoefficients k{k_dy[c - c0], k_mean[c - c0], k_xhat[c - c0]};
          grad_input_run<kAct>(dx + base, dx_fresh, dy + base, z ? z + base : nullptr, x + base, k,
                               mean_d[c], d.S);
        }
      }
      return;
    }
  }
  auto write = [&](auto f) {
    if (dx_fresh) {
      // + 0.0f: what adding into a zeroed buffer gives (-0 becomes +0), so both are bit-identical.
      channel_map<false>(dx, dy, d, c0, c1,
                         [&](float g, int64_t c, int64_t i) { return f(g, c, i) + 0.0f; });
    } else {
      channel_map<true>(dx, dy, d, c0, c1, f);
    }
  };
  if (!sums) {
    write([&](float g, int64_t c, int64_t i) {
      return static_cast<float>(k_dy[c - c0] * grad_at<kAct>(g, z, i));
    });
    return;
  }
  // dy, z and x share the layout: i is the flat index of all three.
  write([&](float g, int64_t c, int64_t i) {
    const int64_t j = c - c0;
    return static_cast<float>(k_dy[j] * grad_at<kAct>(g, z, i) - k_mean[j] -
                              k_xhat[j] * (x[i] - mean_d[c]));
  });
}

// Per-channel doubles an op needs only while it runs (the forward's moments, the backward's sums),
// zeroed, in a thread's buffer grown once. As a std::vector per call they were, from C = 43 on,
// glibc's "large" requests (1 KiB and up), and each such malloc first consolidates the fast bins:
// with the autograd's small frees, malloc_consolidate was 0.4-0.6 % of paper-mlp + BN's training
// step. `Use` tells the buffers apart, so that one op's forward and backward never share one.
template <class Use>
double* channel_doubles(size_t count) {
  thread_local std::vector<double> buffer;
  if (buffer.size() < count) buffer.resize(count);
  std::fill_n(buffer.data(), count, 0.0);
  return buffer.data();
}
struct ForwardMoments;
struct BackwardSums;

// What batch norm's backward keeps from its forward.
struct BatchNormSaved {
  ChannelDims d;
  std::vector<double> mean, rstd;  // [C], the statistics y was normalized with
  double count = 0.0;              // M behind them, over all shards (training only)
  // Training: sums the backward terms over the shards the statistics came from. Null in eval,
  // where the statistics are constants.
  std::shared_ptr<BatchNormReducer> reducer;
  std::vector<double> r, shift;  // [C] batch renormalization's r and d; empty for batch norm
  // batch_norm_relu_train / batch_norm_sigmoid_train: the node's output is z = relu(y) or
  // sigmoid(y) and its gradient is dz; backward takes the activation's derivative from z.
  Activation act = Activation::none;
  // batch_norm_relu_max_pool2x2_train (relu too): the node's output is the pooled p [N, C, H/2,
  // W/2] and its gradient dp; `place` [N, C, H/2, W/2] holds each window's winner (max_pool2d's
  // 2x2 place bytes), H x W is x's plane (S = H * W).
  std::shared_ptr<uint8_t[]> place;
  int64_t H = 0, W = 0;
};

// ---- batch_norm_relu_max_pool2x2_train: planes of z and dz formed in scratch, never stored ----

// v.resize(n) for the pooled op's per-thread scratch, whose size the input's plane decides: a
// failure is an Error naming the op (it is carried out of the OpenMP region, for_channel_blocks).
template <class T>
void grow_scratch(std::vector<T>& v, size_t n) {
  detail::grow_thread_scratch(v, n, [n] {
    BNLAB_FAIL("batch_norm_relu_max_pool2x2: a thread's scratch of ", n,
               " values (for planes of the input) cannot be allocated");
  });
}

// A thread's scratch for planes of `floats` values: grown once, so that the fused passes allocate
// nothing per channel or per step.
float* plane_scratch(size_t floats) {
  thread_local std::vector<float> scratch;
  if (scratch.size() < floats) grow_scratch(scratch, floats);
  return scratch.data();
}

// Forward, second pass of the pooled op for channels [c0, c1): each plane of z = relu(normalized
// x) is formed in scratch and pooled by max_pool2d's own plane kernel into p [N, C, H/2, W/2], with
// the winners' places (when `place` is non-null). Image by image, so that x, p and the places are
// read and written in memory order: channel by channel, cifar-cnn's 8x8 planes were 256-byte runs
// 32 KiB apart, which the hardware prefetcher (it stops at 4 KiB pages) never followed, and the
// pass took 3x the unpooled one's time.
void pooled_normalize(float* p, uint8_t* place, const float* x, const double* mean_d,
                      const double* rstd_d, const float* gamma, const float* beta,
                      const ChannelDims& d, int64_t H, int64_t W, int64_t c0, int64_t c1) {
  const int64_t P = (H / 2) * (W / 2);
  float* z = plane_scratch(static_cast<size_t>(d.S));
  double scale[kChannelBlock], shift[kChannelBlock];
  for (int64_t c = c0; c < c1; ++c) {
    scale[c - c0] = rstd_d[c] * (gamma ? gamma[c] : 1.0);
    shift[c - c0] = beta ? beta[c] : 0.0;
  }
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t c = c0; c < c1; ++c) {
      const double mean = mean_d[c], sc = scale[c - c0], sh = shift[c - c0];
      const float* xc = x + (n * d.C + c) * d.S;
#pragma omp simd
      for (int64_t s = 0; s < d.S; ++s) z[s] = detail::relu_value(normalized(xc[s], mean, sc, sh));
      const int64_t out = (n * d.C + c) * P;
      detail::max_pool2x2_plane(p + out, place ? place + out : nullptr, z, H, W);
    }
  }
}

// For each plane (n, c), c in [c0, c1), in memory order (n outer): re-forms its gradient w.r.t.
// batch norm's output and calls f(c, g, base): g [S] holds relu_grad(0 + dp, p) at each window's
// winner (its `place`: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right,
// core/ops/pool_general.h) and +0 in every other cell, base is the plane's offset in x. g is
// dest(c, base) when that is not null (the sums pass's kept planes, which its dx pass reads
// again: writing there saved a copy of every plane), else per-thread scratch. These are
// the floats of the unfused chain's relu_grad(dz, z): there dz is 0 + dp at the winner
// (max_pool2d's backward into a fresh buffer) and +0 elsewhere, z at the winner is p, and
// relu_grad(+0, anything) = +0. So the run functions take g as it is (kAct none): a stand-in z of
// ones (relu_grad(g, 1) = g) was a third stream read in both passes.
//
// Two ways to write g, by width. Rows of at least 16 windows, and on AVX2 rows of whole 8-window
// chunks (cifar-cnn's 8), are written whole: by max_pool2x2_unpool_avx512 or _avx2 (max_pool2d's
// backward routing, g as it is), else four selects per window in a loop, which GCC 12 leaves
// scalar (with it, W4's first pooled layer's backward took 4380-4460 us a step at one thread;
// with the AVX-512 routing 3060-3110). Other rows (lenet's 7 and 14, cifar-cnn's 4) would run
// mostly in a masked partial chunk: there g is zero-filled (dest) or a scratch plane kept all +0
// between planes (one store per window after f resets it), and one store per window sets the
// winner. Measured on the AMD EPYC Zen 3 (BM_bn_relu_pool_forward_backward, docs/performance.md):
// whole rows at 8 windows took 0.80x the time of the stores per window, at 7 and 4 1.05-1.35x.
// The pooled backward's re-formed planes of one channel block [c0, c1), kept by its first pass for
// its second ([N][c1 - c0][S], per thread, grown once), when that fits in kKeptPlanesMaxFloats.
// Re-forming a plane (for_pooled_planes) costs more than reading it back from cache: lenet's
// narrow rows take one scalar store per window.
constexpr int64_t kKeptPlanesMaxFloats = int64_t{4} << 20;  // 16 MiB
float* kept_planes(int64_t floats) {
  thread_local std::vector<float> kept;
  if (kept.size() < static_cast<size_t>(floats)) grow_scratch(kept, static_cast<size_t>(floats));
  return kept.data();
}

template <class Dest, class F>
void for_pooled_planes(const BatchNormSaved& s, const float* dp, const float* p, int64_t c0,
                       int64_t c1, Dest dest, F f) {
  const ChannelDims& d = s.d;
  const int64_t H = s.H, W = s.W, Ho = H / 2, Wo = W / 2;
  const CpuIsa isa = detail::max_pool2x2_isa();
  const auto unpool = isa == CpuIsa::avx512 ? detail::max_pool2x2_unpool_avx512
                      : isa == CpuIsa::avx2 ? detail::max_pool2x2_unpool_avx2
                                            : nullptr;
  // Rows written whole: at least 16 windows, or on AVX2 whole 8-window chunks (cifar-cnn's 8).
  const bool dense = Wo >= 16 || (isa == CpuIsa::avx2 && Wo % 8 == 0);
  // Per thread, grown once. `sparse` is all +0 whenever no plane is in it.
  thread_local std::vector<float> plane, sparse, masked;
  const size_t S = static_cast<size_t>(d.S);
  if (plane.size() < S) {     // plane last: a failed growth leaves it short, to be retried
    grow_scratch(sparse, S);  // new values are +0, as sparse must be
    grow_scratch(masked, S / 4);
    grow_scratch(plane, S);
  }
  float* __restrict g = sparse.data();
  float* __restrict gm = masked.data();  // each window's relu_grad(0 + dp, p), [Ho, Wo]
  // v where `keep`, else +0; on the bits, so that the compiler never makes it a branch (as
  // max_pool2d's pick), which would be mispredicted half the time on real data.
  auto keep_if = [](bool keep, float v) {
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) & (0u - static_cast<uint32_t>(keep)));
  };
  const int64_t offset[4] = {0, 1, W, W + 1};  // of each place from its window's top-left cell
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t out = (n * d.C + c) * Ho * Wo;
      const float* __restrict dpp = dp + out;
      const float* __restrict pp = p + out;
      const uint8_t* __restrict k = s.place.get() + out;
      // The next plane's dp, p and places (see next_run_base), a quarter of x's run each.
      if (const int64_t next = next_run_base(d, (n * d.C + c) * d.S, c, c0, c1); next >= 0) {
        const int64_t next_out = next / d.S * Ho * Wo;
        prefetch_next_run(dp + next_out, Ho * Wo);
        prefetch_next_run(p + next_out, Ho * Wo);
        prefetch_next_run(s.place.get() + next_out, Ho * Wo);
      }
#pragma omp simd
      for (int64_t j = 0; j < Ho * Wo; ++j) gm[j] = detail::relu_grad(0.0f + dpp[j], pp[j]);
      if (dense) {
        float* __restrict g = dest(c, (n * d.C + c) * d.S);
        if (!g) g = plane.data();
        for (int64_t oh = 0; oh < Ho; ++oh) {
          float* __restrict top = g + 2 * oh * W;
          float* __restrict bottom = top + W;
          const uint8_t* __restrict kr = k + oh * Wo;
          const float* __restrict gr = gm + oh * Wo;
          if (unpool) {
            unpool(top, bottom, gr, kr, Wo);
          } else {
#pragma omp simd
            for (int64_t ow = 0; ow < Wo; ++ow) {
              top[2 * ow] = keep_if(kr[ow] == 0, gr[ow]);
              top[2 * ow + 1] = keep_if(kr[ow] == 1, gr[ow]);
              bottom[2 * ow] = keep_if(kr[ow] == 2, gr[ow]);
              bottom[2 * ow + 1] = keep_if(kr[ow] == 3, gr[ow]);
            }
          }
          if (W % 2) top[W - 1] = bottom[W - 1] = 0.0f;  // the column no window covers
        }
        if (H % 2) std::fill_n(g + (H - 1) * W, W, 0.0f);  // the row no window covers
        f(c, static_cast<const float*>(g), (n * d.C + c) * d.S);
        continue;
      }
      auto winner = [&](int64_t oh, int64_t ow) {
        return 2 * oh * W + 2 * ow + offset[k[oh * Wo + ow] & 3];
      };
      if (float* __restrict to = dest(c, (n * d.C + c) * d.S)) {
        std::fill_n(to, d.S, 0.0f);
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow) to[winner(oh, ow)] = gm[oh * Wo + ow];
        f(c, static_cast<const float*>(to), (n * d.C + c) * d.S);
        continue;
      }
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) g[winner(oh, ow)] = gm[oh * Wo + ow];
      f(c, static_cast<const float*>(g), (n * d.C + c) * d.S);
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) g[winner(oh, ow)] = 0.0f;
    }
  }
}

// One process: its batch is the whole batch, so merging and summing leave the values alone.
class LocalReducer final : public BatchNormReducer {
 public:
  void merge_moments(double*, int64_t) override {}
  void sum(double*, int64_t) override {}
};

const std::shared_ptr<BatchNormReducer>& local_reducer() {
  static const std::shared_ptr<BatchNormReducer> local = std::make_shared<LocalReducer>();
  return local;
}

// The backward of batch_norm_train, batch_renorm_train (kRenorm), batch_norm_relu_train and
// batch_norm_sigmoid_train (kAct,
// `out` = z) and batch_norm_eval: accumulates into the grads of in = {x, gamma, beta} (those that
// want one).
// kPool (batch_norm_relu_max_pool2x2_train, with relu): `out` is p, `dout` dp, and each plane's dz
// and z are re-formed from them (for_pooled_planes).
template <bool kRenorm, Activation kAct, bool kPool = false>
void batch_norm_backward_passes(const BatchNormSaved& s, const Tensor& out, const Tensor& dout,
                                const std::vector<Tensor>& in) {
  static_assert(!kPool || (kAct == Activation::relu && !kRenorm));
  const ChannelDims& d = s.d;
  const float* z = kAct != Activation::none ? out.data() : nullptr;
  // The input-gradient pass writes every element of dx, so a fresh buffer is assigned, never
  // zero-filled first (a zero fill was 3 % of a cifar-cnn + BN training step).
  const GradTarget dx_target = grad_target(in[0]);
  float* dx = dx_target.data;
  float* dgamma = grad_buffer(in[1]);
  float* dbeta = grad_buffer(in[2]);
  const float *dy = dout.data(), *x = in[0].data(), *gamma = data_or_null(in[1]);
  const double* r = kRenorm ? s.r.data() : nullptr;
  const bool training = s.reducer != nullptr;
  const bool want_sums = training || dgamma || dbeta;
  double* sums = channel_doubles<BackwardSums>(want_sums ? static_cast<size_t>(2 * d.C) : 0);
  // Nothing between the passes without dx (every shard has the same graph, so all skip the
  // reducer's sum together), in eval (no reducer) or with the local reducer.
  const bool fused = !dx || !training || s.reducer == local_reducer();
  // kPool: whether a block's first pass keeps its re-formed planes for its second (kept_planes):
  // only when the second runs right after the first on the same thread (fused) and needs them.
  auto keep_planes = [&](int64_t c0, int64_t c1) {
    return kPool && fused && want_sums && dx != nullptr &&
           d.N * (c1 - c0) * d.S <= kKeptPlanesMaxFloats;
  };
  // Plane (n, c)'s place in a block's kept planes, from its offset `base` in x.
  auto kept_offset = [&](int64_t c0, int64_t c1, int64_t c, int64_t base) {
    const int64_t n = base / (d.C * d.S);
    return (n * (c1 - c0) + (c - c0)) * d.S;
  };
  batch_norm_passes(
      d, ImageBlocks::kPageRuns, fused,
      // This shard's sums; dbeta is sum(dy), dgamma sum(dy * xhat) (batch renormalization:
      // sum(dy * (xhat * r + d)) = r * sum(dy * xhat) + d * sum(dy)).
      [&](int64_t c0, int64_t c1) {
        if (!want_sums) return;
        if constexpr (kPool) {
          for (int64_t c = c0; c < c1; ++c) {
            sums[static_cast<size_t>(c)] = 0.0;
            sums[static_cast<size_t>(d.C + c)] = 0.0;
          }
          float* kept = keep_planes(c0, c1) ? kept_planes(d.N * (c1 - c0) * d.S) : nullptr;
          // Each plane is re-formed straight into its place in kept.
          auto slot = [&](int64_t c, int64_t base) {
            return kept ? kept + kept_offset(c0, c1, c, base) : nullptr;
          };
          for_pooled_planes(s, dy, z, c0, c1, slot, [&](int64_t c, const float* gp, int64_t base) {
            const size_t k = static_cast<size_t>(c);
            // The next plane's x (its dp, p and places are a quarter of the size).
            if (const int64_t next = next_run_base(d, base, c, c0, c1); next >= 0)
              prefetch_next_run(x + next, d.S);
            const auto [a, b] =
                grad_sums_run<Activation::none>(gp, nullptr, x + base, s.mean[k], s.rstd[k], d.S);
            sums[k] += a;
            sums[static_cast<size_t>(d.C) + k] += b;
          });
        } else {
          batch_norm_grad_sums<kAct>(sums, dy, z, x, s.mean.data(), s.rstd.data(), d, c0, c1);
        }
        for (int64_t c = c0; c < c1; ++c) {
          const size_t k = static_cast<size_t>(c);
          double sum_dy_xhat = sums[static_cast<size_t>(d.C) + k];
          if constexpr (kRenorm) sum_dy_xhat = r[k] * sum_dy_xhat + s.shift[k] * sums[k];
          if (dgamma) dgamma[c] += static_cast<float>(sum_dy_xhat);
          if (dbeta) dbeta[c] += static_cast<float>(sums[k]);
        }
      },
      // The statistics depend on every shard's x, so dx needs every shard's sums.
      [&] { s.reducer->sum(sums, 2 * d.C); },
      [&](int64_t c0, int64_t c1) {
        if (!dx) return;
        if constexpr (kPool) {
          DxCoefficients coef[kChannelBlock];
          for (int64_t c = c0; c < c1; ++c) {
            coef[c - c0] = dx_coefficients(gamma ? gamma[c] : 1.0, s.rstd[static_cast<size_t>(c)],
                                           sums, s.count, d.C, c);
          }
          auto dx_run = [&](int64_t c, const float* gp, int64_t base) {
            grad_input_run<Activation::none>(dx + base, dx_target.fresh, gp, nullptr, x + base,
                                             coef[c - c0], s.mean[static_cast<size_t>(c)], d.S);
          };
          if (keep_planes(c0, c1)) {
            // The planes the first pass kept (the same floats), in memory order.
            const float* kept = kept_planes(d.N * (c1 - c0) * d.S);
            for (int64_t n = 0; n < d.N; ++n) {
              for (int64_t c = c0; c < c1; ++c) {
                const int64_t base = (n * d.C + c) * d.S;
                if (const int64_t next = next_run_base(d, base, c, c0, c1); next >= 0)
                  prefetch_next_run(x + next, d.S);
                dx_run(c, kept + kept_offset(c0, c1, c, base), base);
              }
            }
            return;
          }
          for_pooled_planes(
              s, dy, z, c0, c1, [](int64_t, int64_t) -> float* { return nullptr; }, dx_run);
          return;
        }
        batch_norm_grad_input<kRenorm, kAct>(dx, dx_target.fresh, dy, z, x, s.mean.data(),
                                             s.rstd.data(), gamma, r, training ? sums : nullptr,
                                             s.count, d, c0, c1);
      });
}

void batch_norm_backward(const BatchNormSaved& s, const Tensor& out, const Tensor& dout,
                         const std::vector<Tensor>& in) {
  if (s.place) {
    batch_norm_backward_passes<false, Activation::relu, true>(s, out, dout, in);
  } else if (s.act == Activation::relu) {
    batch_norm_backward_passes<false, Activation::relu>(s, out, dout, in);
  } else if (s.act == Activation::sigmoid) {
    batch_norm_backward_passes<false, Activation::sigmoid>(s, out, dout, in);
  } else if (s.r.empty()) {
    batch_norm_backward_passes<false, Activation::none>(s, out, dout, in);
  } else {
    batch_norm_backward_passes<true, Activation::none>(s, out, dout, in);
  }
}

// ---- layer norm and group norm: normalized rows with a per-parameter affine ----

// x seen as R contiguous rows of L values. The affine parameter of element j of row r is
// p = p0(r) + j / inner, p0(r) = (r * L / inner) % P: layer norm has P = L, inner = 1 (one
// parameter per trailing position); group norm has P = C, inner = S (one per channel, a row
// spanning C/G channels).
struct RowsAffine {
  int64_t R, L, P, inner;
};

// y [R, L] = (x - mean_r) * rstd_r * w[p] + b[p]; saves mean_d/rstd_d [R]. w/b may be null.
void norm_rows_forward(float* y, double* mean_d, double* rstd_d, const float* x, const float* w,
                       const float* b, const RowsAffine& d, float eps) {
  const int64_t blocks = d.L / d.inner;
  detail::parallel_for(d.R, d.R * d.L > kParallelThreshold, [&](int64_t r) {
    const float* xr = x + r * d.L;
    float* yr = y + r * d.L;
    // Two passes in double: the mean, then the biased variance from deviations.
    double sum = 0.0;
    for (int64_t j = 0; j < d.L; ++j) sum += xr[j];
    const double m = sum / static_cast<double>(d.L);
    double sq = 0.0;
    for (int64_t j = 0; j < d.L; ++j) {
      double dev = xr[j] - m;
      sq += dev * dev;
    }
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(d.L) + static_cast<double>(eps));
    mean_d[r] = m;
    rstd_d[r] = rstd;
    const int64_t p0 = (r * blocks) % d.P;
    for (int64_t q = 0; q < blocks; ++q) {
      const double g = w ? w[p0 + q] : 1.0;
      const double bias = b ? b[p0 + q] : 0.0;
      for (int64_t i = 0; i < d.inner; ++i) {
        int64_t j = q * d.inner + i;
        yr[j] = static_cast<float>((xr[j] - m) * rstd * g + bias);
      }
    }
  });
}

// Accumulates dx [R, L], dw [P], db [P] (null when not wanted) from dy [R, L].
void norm_rows_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                        const double* mean_d, const double* rstd_d, const float* w,
                        const RowsAffine& d) {
  const int64_t blocks = d.L / d.inner;
  const bool parallel = d.R * d.L > kParallelThreshold;
  // dw and db sum over rows, which threads split. The rows go in kRowChunks contiguous chunks (R
  // if fewer), a split that does not depend on the thread count; each chunk adds into its own
  // double slots [2, P], and the slots are reduced afterwards in chunk order. So dw and db have
  // the same bits at any thread count (with one slot pair per thread, the sums' grouping followed
  // the team).
  constexpr int64_t kRowChunks = 16;
  const int64_t chunks = std::min(kRowChunks, d.R);
  const bool want_params = dw || db;
  std::vector<double> partials(want_params ? static_cast<size_t>(chunks * 2 * d.P) : 0, 0.0);
  const int team =
      parallel ? static_cast<int>(std::min<int64_t>(omp_get_max_threads(), chunks)) : 1;
#pragma omp parallel for schedule(static) num_threads(team) if (parallel)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    double* acc_w = want_params ? partials.data() + chunk * 2 * d.P : nullptr;
    double* acc_b = want_params ? acc_w + d.P : nullptr;
    for (int64_t r = d.R * chunk / chunks; r < d.R * (chunk + 1) / chunks; ++r) {
      const float* xr = x + r * d.L;
      const float* gr = dy + r * d.L;
      const double m = mean_d[r], rstd = rstd_d[r];
      const int64_t p0 = (r * blocks) % d.P;
      // Pass 1: sums of dxhat = dy * w and of dxhat * xhat over the row, and the parameter sums.
      double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
      for (int64_t q = 0; q < blocks; ++q) {
        const double g = w ? w[p0 + q] : 1.0;
        double block_dy = 0.0, block_dy_xhat = 0.0;
        for (int64_t i = 0; i < d.inner; ++i) {
          int64_t j = q * d.inner + i;
          double xhat = (xr[j] - m) * rstd;
          block_dy += gr[j];
          block_dy_xhat += gr[j] * xhat;
        }
        sum_dxhat += g * block_dy;
        sum_dxhat_xhat += g * block_dy_xhat;
        if (want_params) {
          acc_w[p0 + q] += block_dy_xhat;
          acc_b[p0 + q] += block_dy;
        }
      }
      if (!dx) continue;
      // Pass 2: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
      const double mean_dxhat = sum_dxhat / static_cast<double>(d.L);
      const double mean_dxhat_xhat = sum_dxhat_xhat / static_cast<double>(d.L);
      float* dxr = dx + r * d.L;
      for (int64_t q = 0; q < blocks; ++q) {
        const double g = w ? w[p0 + q] : 1.0;
        for (int64_t i = 0; i < d.inner; ++i) {
          int64_t j = q * d.inner + i;
          double xhat = (xr[j] - m) * rstd;
          dxr[j] += static_cast<float>(rstd * (g * gr[j] - mean_dxhat - xhat * mean_dxhat_xhat));
        }
      }
    }
  }
  if (!want_params) return;
  for (int64_t p = 0; p < d.P; ++p) {
    double sw = 0.0, sb = 0.0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      sw += partials[static_cast<size_t>(chunk * 2 * d.P + p)];
      sb += partials[static_cast<size_t>((chunk * 2 + 1) * d.P + p)];
    }
    if (dw) dw[p] += static_cast<float>(sw);
    if (db) db[p] += static_cast<float>(sb);
  }
}

// The op body shared by layer_norm and group_norm: forward, then the node whose closure runs the
// backward.
Tensor norm_rows(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                 const RowsAffine& d, float eps) {
  Tensor y = Tensor::empty(x.shape());
  std::vector<double> mean_d(static_cast<size_t>(d.R)), rstd_d(static_cast<size_t>(d.R));
  norm_rows_forward(y.data(), mean_d.data(), rstd_d.data(), x.data(), data_or_null(weight),
                    data_or_null(bias), d, eps);
  if (needs_grad({x, weight, bias})) {
    // x and weight (PyTorch's saved pair); the bias's gradient is a sum of dout.
    constexpr Reads kReads{{Reads::kAlways, Reads::kAlways, Reads::kNever}, Reads::kNever};
    attach(y, op, {x, weight, bias}, kReads,
           [d, mean_d = std::move(mean_d), rstd_d = std::move(rstd_d)](
               const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             norm_rows_backward(grad_buffer(in[0]), grad_buffer(in[1]), grad_buffer(in[2]),
                                dout.data(), in[0].data(), mean_d.data(), rstd_d.data(),
                                data_or_null(in[1]), d);
           });
  }
  return y;
}

// ---- batch renormalization (Ioffe 2017) ----
//
// y = gamma * (xhat * r + d) + beta with xhat batch norm's, r = clip(sigma_B / sigma, 1/r_max,
// r_max), d = clip((mu_B - mu) / sigma, -d_max, d_max), sigma_B = sqrt(var_B + eps) and sigma =
// sqrt(running_var + eps). r and d are stop-gradient constants, so they only enter as per-channel
// factors: the forward's scale and shift (batch_norm_normalize) and backward's gamma * r
// (batch_norm_grad_input) and dgamma = r * sum(dy * xhat) + d * sum(dy). They need mu_B and
// sigma_B, so they are computed where the statistics are (after the reducer: under SyncBN over the
// global batch, and the same on every shard since the running statistics are). r_max = 1 gives r =
// 1 and d_max = 0 gives d = 0 exactly, not by clipping, so a NaN in the moving statistics cannot
// reach what is then plain batch norm.

// What follows batch norm inside its op (nothing with renorm).
using detail::BatchNormThen;

// The training forward of batch norm (renorm null), of batch renormalization, and of batch norm
// followed by relu (batch_norm_relu_train) or by relu and max_pool2d(., 2)
// (batch_norm_relu_max_pool2x2_train).
BatchNormResult batch_norm_train_impl(const char* op, const Tensor& x, const Tensor& gamma,
                                      const Tensor& beta, float eps,
                                      const std::shared_ptr<BatchNormReducer>& reducer,
                                      const BatchRenormArgs* renorm, BatchNormThen then,
                                      const double* given_planes = nullptr) {
  const Activation act = then == BatchNormThen::sigmoid   ? Activation::sigmoid
                         : then == BatchNormThen::nothing ? Activation::none
                                                          : Activation::relu;
  const bool pool = then == BatchNormThen::relu_max_pool2x2;
  if (pool) {
    BNLAB_CHECK(x.dim() == 4 && x.size(2) >= 2 && x.size(3) >= 2, op,
                ": input must be [N, C, H, W] with H, W >= 2; got ", x.shape());
  }
  const ChannelDims d = channel_dims(op, x);
  check_param(op, "gamma", gamma, {d.C}, x);
  check_param(op, "beta", beta, {d.C}, x);
  check_eps(op, eps);
  // One value per channel normalizes to 0 and leaves only beta, which is no training signal (as
  // PyTorch's F.batch_norm). Under a reducer (SyncBN) a shard may hold one: merge checks the total.
  BNLAB_CHECK(reducer || d.N * d.S > 1, op,
              ": expected more than 1 value per channel when training; got input ", x.shape());
  const size_t C = static_cast<size_t>(d.C);
  // count: this shard's M until the reducer merges the moments (the local one leaves it).
  BatchNormSaved s{d,
                   std::vector<double>(C),
                   std::vector<double>(C),
                   static_cast<double>(d.N * d.S),
                   reducer ? reducer : local_reducer(),
                   {},
                   {},
                   act,
                   nullptr,
                   pool ? x.size(2) : 0,
                   pool ? x.size(3) : 0};
  double* moments = channel_doubles<ForwardMoments>(3 * C);
  // y, shape of x; mean, var: [C], returned without grad (they are statistics, not outputs to
  // train on). var is the biased one, M2 / M; eps goes inside the sqrt. With the pool, y is p [N,
  // C, H/2, W/2], and `place` its windows' winners when backward needs them (default-initialized:
  // the forward writes every byte).
  const bool wants_grad = needs_grad({x, gamma, beta});
  Tensor y = pool ? Tensor::empty({d.N, d.C, s.H / 2, s.W / 2}) : Tensor::empty(x.shape());
  if (pool && wants_grad) s.place.reset(new uint8_t[static_cast<size_t>(y.numel())]);
  Tensor mean = Tensor::empty({d.C});
  Tensor var = Tensor::empty({d.C});
  float* mean_f = mean.data();
  float* var_f = var.data();
  float* y_p = y.data();
  const float *x_p = x.data(), *gamma_p = data_or_null(gamma), *beta_p = data_or_null(beta);
  // Batch renormalization: r, d [C] in double for the passes and as float tensors to return.
  Tensor r_out, d_out;
  float *r_f = nullptr, *d_f = nullptr;
  const float *run_mean = nullptr, *run_var = nullptr;
  if (renorm) {
    BNLAB_CHECK(renorm->running_mean.defined() && renorm->running_var.defined(), op,
                ": running_mean and running_var are required (input ", x.shape(), ")");
    check_param(op, "running_mean", renorm->running_mean, {d.C}, x);
    check_param(op, "running_var", renorm->running_var, {d.C}, x);
    BNLAB_CHECK(std::isfinite(renorm->r_max) && renorm->r_max >= 1.0f, op,
                ": r_max must be a finite number >= 1; got ", renorm->r_max);
    BNLAB_CHECK(std::isfinite(renorm->d_max) && renorm->d_max >= 0.0f, op,
                ": d_max must be a finite number >= 0; got ", renorm->d_max);
    s.r.resize(C);
    s.shift.resize(C);
    r_out = Tensor::empty({d.C});
    d_out = Tensor::empty({d.C});
    r_f = r_out.data();
    d_f = d_out.data();
    run_mean = renorm->running_mean.data();
    run_var = renorm->running_var.data();
  }
  const double r_max = renorm ? renorm->r_max : 1.0, d_max = renorm ? renorm->d_max : 0.0;
  // kRenorm and kAct as compile-time constants (see batch_norm_normalize): batch norm runs the
  // code without the correction.
  auto forward = [&](auto renorm_tag, auto act_tag) {
    constexpr bool kRenorm = decltype(renorm_tag)::value;
    constexpr Activation kAct = decltype(act_tag)::value;
    // This shard's moments.
    auto moments_of = [&](int64_t c0, int64_t c1) {
      batch_norm_moments(moments, s.mean.data(), x_p, d, c0, c1, given_planes);
    };
    // The moments of all shards' values.
    auto merge = [&] {
      s.reducer->merge_moments(moments, d.C);
      s.count = moments[0];
      BNLAB_CHECK(s.count >= static_cast<double>(d.N * d.S), op,
                  ": the reducer returned a count of ", s.count,
                  " values per channel, fewer than this shard's ", d.N * d.S, " (input ", x.shape(),
                  ")");
      BNLAB_CHECK(s.count > 1.0, op,
                  ": expected more than 1 value per channel over all shards when training; got ",
                  s.count, " (this shard's input ", x.shape(), ")");
    };
    // The statistics from the moments (and r, d from them).
    auto statistics = [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const double v = moments[3 * c + 2] / s.count;
        s.mean[c] = moments[3 * c + 1];
        s.rstd[c] = 1.0 / std::sqrt(v + static_cast<double>(eps));
        mean_f[c] = static_cast<float>(s.mean[c]);
        var_f[c] = static_cast<float>(v);
        if constexpr (!kRenorm) continue;
        const double sigma = std::sqrt(static_cast<double>(run_var[c]) + eps);
        const double r = std::sqrt(v + static_cast<double>(eps)) / sigma;
        const double shift = (s.mean[c] - run_mean[c]) / sigma;
        s.r[c] = r_max > 1.0 ? std::clamp(r, 1.0 / r_max, r_max) : 1.0;
        s.shift[c] = d_max > 0.0 ? std::clamp(shift, -d_max, d_max) : 0.0;
        r_f[c] = static_cast<float>(s.r[c]);
        d_f[c] = static_cast<float>(s.shift[c]);
      }
    };
    // y for channels [c0, c1) of the images of `part` (x's dims with N of them), from image n0.
    auto normalize = [&](const ChannelDims& part, int64_t n0, int64_t c0, int64_t c1) {
      const int64_t in = n0 * d.C * d.S;
      if (pool) {
        const int64_t out = n0 * d.C * (s.H / 2) * (s.W / 2);
        pooled_normalize(y_p + out, s.place ? s.place.get() + out : nullptr, x_p + in,
                         s.mean.data(), s.rstd.data(), gamma_p, beta_p, part, s.H, s.W, c0, c1);
        return;
      }
      batch_norm_normalize<kRenorm, kAct>(y_p + in, x_p + in, s.mean.data(), s.rstd.data(), gamma_p,
                                          beta_p, s.r.data(), s.shift.data(), part, c0, c1);
    };
    if (!given_planes) {
      batch_norm_passes(d, ImageBlocks::kWide, s.reducer == local_reducer(), moments_of, merge,
                        [&](int64_t c0, int64_t c1) {
                          statistics(c0, c1);
                          normalize(d, 0, c0, c1);
                        });
      return;
    }
    // The conv that wrote x gave its planes' moments, so the statistics cost no pass over x, and
    // the normalize pass is free to split the images between threads as that conv did (see
    // for_image_ranges): split by channel, each thread read half of every image, much of it
    // still in the other core's cache, and the pass ran little faster on two threads than on one.
    // Merging the planes' moments reads two doubles per (n, c) plane, not x: 6-26 us a layer at
    // one thread on lenet's and cifar-cnn's, which a parallel region made 9-29 us at two
    // (bench/omp_regions.sh), so it stays on the calling thread.
    for (int64_t c0 = 0; c0 < d.C; c0 += kChannelBlock)
      moments_of(c0, std::min(d.C, c0 + kChannelBlock));
    if (s.reducer != local_reducer()) merge();
    statistics(0, d.C);
    for_image_ranges(d, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t c0 = 0; c0 < d.C; c0 += kChannelBlock)
          normalize({1, d.C, d.S}, n, c0, std::min(d.C, c0 + kChannelBlock));
    });
  };
  using None = std::integral_constant<Activation, Activation::none>;
  if (renorm) {
    forward(std::true_type{}, None{});
  } else if (act == Activation::relu) {
    forward(std::false_type{}, std::integral_constant<Activation, Activation::relu>{});
  } else if (act == Activation::sigmoid) {
    forward(std::false_type{}, std::integral_constant<Activation, Activation::sigmoid>{});
  } else {
    forward(std::false_type{}, None{});
  }
  const int64_t count = static_cast<int64_t>(s.count);
  if (wants_grad) {
    // x and gamma as PyTorch saves them; z (or p) too when an activation follows, whose derivative
    // comes from it; beta's gradient is sum(dy) and never reads beta.
    const Reads reads{{Reads::kAlways, Reads::kAlways, Reads::kNever},
                      s.act != Activation::none || s.place ? Reads::kAlways : Reads::kNever};
    attach(
        y, op, {x, gamma, beta}, reads,
        [s = std::move(s)](const Tensor& out, const Tensor& dout, const std::vector<Tensor>& in) {
          batch_norm_backward(s, out, dout, in);
        });
  }
  return {y, mean, var, count, r_out, d_out};
}

}  // namespace

BatchNormResult batch_norm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                 float eps, const std::shared_ptr<BatchNormReducer>& reducer) {
  return batch_norm_train_impl("batch_norm", x, gamma, beta, eps, reducer, nullptr,
                               BatchNormThen::nothing);
}

BatchNormResult batch_norm_relu_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                      float eps, const std::shared_ptr<BatchNormReducer>& reducer) {
  return batch_norm_train_impl("batch_norm_relu", x, gamma, beta, eps, reducer, nullptr,
                               BatchNormThen::relu);
}

BatchNormResult batch_norm_sigmoid_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                         float eps,
                                         const std::shared_ptr<BatchNormReducer>& reducer) {
  return batch_norm_train_impl("batch_norm_sigmoid", x, gamma, beta, eps, reducer, nullptr,
                               BatchNormThen::sigmoid);
}

BatchNormResult batch_norm_relu_max_pool2x2_train(
    const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
    const std::shared_ptr<BatchNormReducer>& reducer) {
  return batch_norm_train_impl("batch_norm_relu_max_pool2x2", x, gamma, beta, eps, reducer, nullptr,
                               BatchNormThen::relu_max_pool2x2);
}

BatchNormResult batch_renorm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   float eps, const BatchRenormArgs& renorm,
                                   const std::shared_ptr<BatchNormReducer>& reducer) {
  return batch_norm_train_impl("batch_renorm", x, gamma, beta, eps, reducer, &renorm,
                               BatchNormThen::nothing);
}

namespace detail {

BatchNormResult batch_norm_train_given_planes(const Tensor& x, const Tensor& gamma,
                                              const Tensor& beta, float eps,
                                              const std::shared_ptr<BatchNormReducer>& reducer,
                                              const BatchRenormArgs* renorm, BatchNormThen then,
                                              const double* pm) {
  const char* op = renorm                           ? "batch_renorm"
                   : then == BatchNormThen::nothing ? "batch_norm"
                   : then == BatchNormThen::relu    ? "batch_norm_relu"
                   : then == BatchNormThen::sigmoid ? "batch_norm_sigmoid"
                                                    : "batch_norm_relu_max_pool2x2";
  BNLAB_CHECK(x.dim() == 4 && pm, op, ": given plane moments need an [N, C, H, W] input; got ",
              x.shape());
  BNLAB_CHECK(!renorm || then == BatchNormThen::nothing, op,
              ": renorm is not fused with an activation");
  return batch_norm_train_impl(op, x, gamma, beta, eps, reducer, renorm, then, pm);
}

}  // namespace detail

void merge_moments_into(double* a, const double* b, int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) {
    double* ma = a + 3 * c;
    const double* mb = b + 3 * c;
    const double n = ma[0] + mb[0];
    if (mb[0] == 0.0) continue;
    if (ma[0] == 0.0) {
      ma[0] = mb[0], ma[1] = mb[1], ma[2] = mb[2];
      continue;
    }
    const double delta = mb[1] - ma[1];
    ma[1] += delta * mb[0] / n;
    ma[2] += mb[2] + delta * delta * ma[0] * mb[0] / n;
    ma[0] = n;
  }
}

Tensor batch_norm_eval(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                       const Tensor& gamma, const Tensor& beta, float eps) {
  const ChannelDims d = channel_dims("batch_norm_eval", x);
  BNLAB_CHECK(running_mean.defined() && running_var.defined(),
              "batch_norm_eval: running_mean and running_var are required (input ", x.shape(), ")");
  check_param("batch_norm_eval", "running_mean", running_mean, {d.C}, x);
  check_param("batch_norm_eval", "running_var", running_var, {d.C}, x);
  check_param("batch_norm_eval", "gamma", gamma, {d.C}, x);
  check_param("batch_norm_eval", "beta", beta, {d.C}, x);
  check_eps("batch_norm_eval", eps);
  // The statistics are copied: the layer updates its running buffers in place on the next training
  // step, which must not change the backward of a graph recorded before it. No reducer: they are
  // constants.
  const size_t C = static_cast<size_t>(d.C);
  BatchNormSaved s{d,
                   std::vector<double>(C),
                   std::vector<double>(C),
                   0.0,
                   nullptr,
                   {},
                   {},
                   Activation::none,
                   nullptr,
                   0,
                   0};
  const float* rm = running_mean.data();
  const float* rv = running_var.data();
  for (size_t c = 0; c < C; ++c) {
    s.mean[c] = rm[c];
    s.rstd[c] = 1.0 / std::sqrt(static_cast<double>(rv[c]) + eps);
  }
  Tensor y = Tensor::empty(x.shape());
  float* y_p = y.data();
  const float *x_p = x.data(), *gamma_p = data_or_null(gamma), *beta_p = data_or_null(beta);
  for_channel_blocks(d, /*reverse=*/false, [&](int64_t c0, int64_t c1) {
    batch_norm_normalize<false>(y_p, x_p, s.mean.data(), s.rstd.data(), gamma_p, beta_p, nullptr,
                                nullptr, d, c0, c1);
  });
  // Inputs are x, gamma, beta only: the running statistics are buffers and never receive a
  // gradient.
  if (needs_grad({x, gamma, beta})) {
    // x and gamma, as batch_norm_train's node: the statistics are copies in the closure.
    constexpr Reads kReads{{Reads::kAlways, Reads::kAlways, Reads::kNever}, Reads::kNever};
    attach(
        y, "batch_norm_eval", {x, gamma, beta}, kReads,
        [s = std::move(s)](const Tensor& out, const Tensor& dout, const std::vector<Tensor>& in) {
          batch_norm_backward(s, out, dout, in);
        });
  }
  return y;
}

// ---- channel_affine: y = scale[c] * x + shift[c] with constant scale and shift ----
//
// Noisy batch norm's injected shift of mean and variance (layers/batch_norm.h, BatchNormNoise).
// Not a broadcast mul + add: one pass instead of two, no intermediate the size of x, and the
// per-channel constants are copied, so the backward stays right if the caller refills its tensors
// for the next step. In float, as the ops it replaces: there is no statistic to cancel here.
Tensor channel_affine(const Tensor& x, const Tensor& scale, const Tensor& shift) {
  const ChannelDims d = channel_dims("channel_affine", x);
  BNLAB_CHECK(scale.defined() && shift.defined(),
              "channel_affine: scale and shift are required (input ", x.shape(), ")");
  check_param("channel_affine", "scale", scale, {d.C}, x);
  check_param("channel_affine", "shift", shift, {d.C}, x);
  // They get no gradient: refuse rather than leave a parameter silently untrained.
  BNLAB_CHECK(!scale.requires_grad() && !shift.requires_grad(),
              "channel_affine: scale and shift are constants and get no gradient; got one that "
              "requires grad (scale ",
              scale.shape(), ", shift ", shift.shape(), ")");
  std::vector<float> k(scale.data(), scale.data() + d.C);  // [C], kept for backward
  const float* mu = shift.data();
  Tensor y = Tensor::empty(x.shape());
  float* y_p = y.data();
  const float* x_p = x.data();
  for_channel_blocks(d, /*reverse=*/false, [&](int64_t c0, int64_t c1) {
    channel_map<false>(y_p, x_p, d, c0, c1,
                       [&](float v, int64_t c, int64_t) { return k[c] * v + mu[c]; });
  });
  if (needs_grad({x})) {
    // dx = scale[c] * dy.
    attach(y, "channel_affine", {x}, Reads::nothing(),
           [d, k = std::move(k)](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             float* dx = grad_buffer(in[0]);
             const float* dy = dout.data();
             for_channel_blocks(d, /*reverse=*/false, [&](int64_t c0, int64_t c1) {
               channel_map<true>(dx, dy, d, c0, c1,
                                 [&](float g, int64_t c, int64_t) { return k[c] * g; });
             });
           });
  }
  return y;
}

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, float eps) {
  const size_t k = normalized_shape.size();
  BNLAB_CHECK(k >= 1, "layer_norm: normalized_shape must name at least one dim (input ", x.shape(),
              ")");
  bool trailing =
      static_cast<size_t>(x.dim()) >= k &&
      Shape(x.shape().end() - static_cast<std::ptrdiff_t>(k), x.shape().end()) == normalized_shape;
  BNLAB_CHECK(trailing, "layer_norm: normalized_shape ", normalized_shape,
              " does not match the trailing dims of input ", x.shape());
  check_param("layer_norm", "weight", weight, normalized_shape, x);
  check_param("layer_norm", "bias", bias, normalized_shape, x);
  check_eps("layer_norm", eps);
  const int64_t L = numel_of(normalized_shape);
  BNLAB_CHECK(x.numel() > 0, "layer_norm: input ", x.shape(), " is empty");
  return norm_rows("layer_norm", x, weight, bias, RowsAffine{x.numel() / L, L, L, 1}, eps);
}

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias,
                  float eps) {
  const ChannelDims d = channel_dims("group_norm", x);
  BNLAB_CHECK(groups >= 1, "group_norm: groups must be >= 1; got ", groups);
  BNLAB_CHECK(d.C % groups == 0, "group_norm: ", d.C, " channels not divisible into ", groups,
              " groups (input ", x.shape(), ")");
  check_param("group_norm", "weight", weight, {d.C}, x);
  check_param("group_norm", "bias", bias, {d.C}, x);
  check_eps("group_norm", eps);
  const int64_t L = d.C / groups * d.S;
  // A group of one value normalizes to exactly 0: the output is the bias whatever x is, and x gets
  // no gradient. PyTorch refuses it ("Expected more than 1 value per channel when training"), and
  // so does InstanceNorm (groups = C) here, in eval too, as the statistics are the same in both.
  BNLAB_CHECK(L > 1, "group_norm: expected more than 1 value per group; got input ", x.shape(),
              " in ", groups, " groups of ", d.C / groups, " channel(s) x ", d.S,
              " position(s), each of which would normalize to 0");
  return norm_rows("group_norm", x, weight, bias, RowsAffine{d.N * groups, L, d.C, d.S}, eps);
}

}  // namespace bnlab

// Reductions over all elements or one dimension (sum, mean, max/min with indices, argmax/argmin,
// var, std), softmax and log_softmax; the Tensor methods of the same names.
//
// A reduction over dim d views x as [outer, n, inner] (outer = product of dims before d, inner =
// after), so one loop nest serves every rank and dim. The reducing kernels walk x in tiles of
// kTile columns of `inner`: for each k they read one contiguous run of a row and update kTile
// accumulators, so a reduction over an outer or middle dim streams memory in order instead of
// striding by `inner` once per output. With inner == 1 (the last dim) each output's n values are
// contiguous already. Tiles are independent, so OpenMP splits them, and each output is computed by
// one thread in a fixed order: results do not depend on the thread count.
//
// Conventions (as PyTorch's CPU kernels; tested in tests/core/test_ops_reduce_dim.cpp):
//   - negative dims count from the end; keepdim leaves a size-1 dim in place of the reduced one;
//   - max/min over a dim return values and int64 indices along that dim (std::vector<int64_t>,
//     bnlab's integer type, as for labels), ties to the FIRST index; a NaN wins (the first NaN),
//     so NaNs propagate; the gradient flows to that one index;
//   - max()/min() over all elements split the gradient evenly among tied extrema, as PyTorch's
//     (its evenly_distribute_backward);
//   - var divides by max(0, n - correction) (correction 1: unbiased, 0: biased), so n <= correction
//     gives inf or NaN, as PyTorch; sums and moments accumulate in double.
//
// Reference: https://pytorch.org/docs/stable/generated/torch.var.html and torch.max.html
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/unary_op.h"
#include "core/parallel.h"

namespace bnlab {

namespace {

struct DimView {
  int64_t outer, n, inner;
  Shape reduced_shape;  // x's shape without dim (or with 1 there when keepdim)
};

DimView view_over(const char* op, const Tensor& x, int64_t dim, bool keepdim) {
  const int64_t rank = x.dim();
  // A 0-d tensor reduces over "dim 0" (or -1), its one value, to a 0-d tensor, as in PyTorch
  // (which wraps dims of a scalar as if it had one): sum(s, 0) is s, softmax(s, 0) is 1.
  const int64_t named = std::max<int64_t>(rank, 1);
  const int64_t d = dim < 0 ? dim + named : dim;
  BNLAB_CHECK(d >= 0 && d < named, op, ": dim ", dim, " out of range for shape ", x.shape(),
              " (expected a dim in [", -named, ", ", named - 1, "])");
  if (rank == 0) return DimView{1, 1, 1, {}};
  DimView v{1, x.shape()[static_cast<size_t>(d)], 1, {}};
  for (int64_t i = 0; i < d; ++i) v.outer *= x.shape()[static_cast<size_t>(i)];
  for (int64_t i = d + 1; i < rank; ++i) v.inner *= x.shape()[static_cast<size_t>(i)];
  for (int64_t i = 0; i < rank; ++i) {
    if (i != d) {
      v.reduced_shape.push_back(x.shape()[static_cast<size_t>(i)]);
    } else if (keepdim) {
      v.reduced_shape.push_back(1);
    }
  }
  return v;
}

// All elements as one row: [1, numel, 1], reduced to a 0-d scalar.
DimView view_all(const Tensor& x) { return DimView{1, x.numel(), 1, {}}; }

// Columns of `inner` reduced together: 64 doubles of accumulators stay in registers/L1.
constexpr int64_t kTile = 64;

// Calls fn(o, i0, i1) for every tile (outer index o, columns [i0, i1) of inner), in parallel when
// the reduction is large enough to pay for the team.
template <class Fn>
void for_each_tile(const DimView& v, Fn fn) {
  const int64_t tiles = (v.inner + kTile - 1) / kTile;
  const int64_t total = v.outer * tiles;
  detail::parallel_for(total, v.outer * v.n * v.inner > (1 << 16) && total > 1, [&](int64_t t) {
    const int64_t i0 = (t % tiles) * kTile;
    fn(t / tiles, i0, std::min(i0 + kTile, v.inner));
  });
}

// acc[i - i0] = sum over k of x[o, k, i] for i in [i0, i1), in double.
void tile_sum(double* acc, const float* x, const DimView& v, int64_t o, int64_t i0, int64_t i1) {
  const float* base = x + o * v.n * v.inner;
  if (v.inner == 1) {
    // One contiguous row: a simd reduction keeps several partial sums instead of one serial chain
    // of double adds (bound by the add latency); its order is fixed at compile time.
    double a = 0.0;
#pragma omp simd reduction(+ : a)
    for (int64_t k = 0; k < v.n; ++k) a += base[k];
    acc[0] = a;
    return;
  }
  const int64_t w = i1 - i0;
  std::fill_n(acc, w, 0.0);
  for (int64_t k = 0; k < v.n; ++k) {
    const float* row = base + k * v.inner + i0;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) acc[i] += row[i];
  }
}

// dx[o, k, i] += g[o, i] * scale for every k: the backward of a (scaled) sum over the viewed dim.
void broadcast_add(float* dx, const float* g, float scale, const DimView& v) {
  if (v.inner == 1) {
    // Reducing the last dim (or everything): each output's gradient fills a contiguous row, so
    // vectorize along k rather than along the one-wide inner loop below.
    detail::parallel_for(v.outer, v.outer * v.n > (1 << 16), [=](int64_t o) {
      const float go = g[o] * scale;
      float* row = dx + o * v.n;
#pragma omp simd
      for (int64_t k = 0; k < v.n; ++k) row[k] += go;
    });
    return;
  }
  detail::parallel_for(v.outer, v.outer * v.n * v.inner > (1 << 16) && v.outer > 1, [=](int64_t o) {
    const float* go = g + o * v.inner;
    for (int64_t k = 0; k < v.n; ++k) {
      float* row = dx + (o * v.n + k) * v.inner;
#pragma omp simd
      for (int64_t i = 0; i < v.inner; ++i) row[i] += go[i] * scale;
    }
  });
}

// Sum over the viewed dim, scaled (1 for sum, 1/n for mean).
Tensor scaled_sum(const char* op, const Tensor& x, const DimView& v, bool average) {
  // Mean over an empty dim is 0/0 = NaN, as PyTorch.
  const float scale = average ? 1.0f / static_cast<float>(v.n) : 1.0f;
  Tensor out = Tensor::empty(v.reduced_shape);
  const float* px = x.data();
  float* po = out.data();
  for_each_tile(v, [&](int64_t o, int64_t i0, int64_t i1) {
    double acc[kTile];
    tile_sum(acc, px, v, o, i0, i1);
    for (int64_t i = i0; i < i1; ++i) po[o * v.inner + i] = static_cast<float>(acc[i - i0]) * scale;
  });
  if (needs_grad({x})) {
    attach(out, op, {x}, Reads::nothing(),
           [v, scale](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             broadcast_add(grad_buffer(in[0]), dout.data(), scale, v);
           });
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) { return scaled_sum("sum", x, view_all(x), false); }
// The mean of nothing is NaN (0 / 0), as torch.mean and mean(dim) over an empty dim; so are the
// losses, which are means.
Tensor mean(const Tensor& x) { return scaled_sum("mean", x, view_all(x), true); }
Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  return scaled_sum("sum", x, view_over("sum", x, dim, keepdim), false);
}
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  return scaled_sum("mean", x, view_over("mean", x, dim, keepdim), true);
}

namespace {

// v beats best for a max (kMax) or a min: strictly better, or the first NaN (NaN propagates and
// then stays, since nothing beats it).
template <bool kMax>
inline bool beats(float v, float best) {
  return (kMax ? v > best : v < best) | (std::isnan(v) & !std::isnan(best));
}

// values[o, i] and index[o, i] (along the viewed dim) of the first extremum of x over the dim.
template <bool kMax>
void extremum_forward(float* values, int64_t* index, const float* x, const DimView& v) {
  for_each_tile(v, [&](int64_t o, int64_t i0, int64_t i1) {
    const float* base = x + o * v.n * v.inner;
    float* vo = values + o * v.inner;
    int64_t* io = index + o * v.inner;
    for (int64_t i = i0; i < i1; ++i) {
      vo[i] = base[i];
      io[i] = 0;
    }
    for (int64_t k = 1; k < v.n; ++k) {
      const float* row = base + k * v.inner;
      for (int64_t i = i0; i < i1; ++i) {
        // Selects rather than branches: on real data the comparison is unpredictable.
        const bool b = beats<kMax>(row[i], vo[i]);
        vo[i] = b ? row[i] : vo[i];
        io[i] = b ? k : io[i];
      }
    }
  });
}

template <bool kMax>
ValuesIndices extremum_dim(const char* op, const Tensor& x, int64_t dim, bool keepdim) {
  DimView v = view_over(op, x, dim, keepdim);
  BNLAB_CHECK(v.n > 0, op, ": cannot reduce the empty dim ", dim, " of shape ", x.shape());
  ValuesIndices r{Tensor::empty(v.reduced_shape),
                  std::vector<int64_t>(static_cast<size_t>(v.outer * v.inner))};
  extremum_forward<kMax>(r.values.data(), r.indices.data(), x.data(), v);
  if (needs_grad({x})) {
    // The gradient goes to the selected element only (ties: the first), as PyTorch's max(dim).
    attach(
        r.values, op, {x}, Reads::nothing(),
        [v, index = r.indices](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
          float* dx = grad_buffer(in[0]);
          const float* g = dout.data();
          for (int64_t o = 0; o < v.outer; ++o)
            for (int64_t i = 0; i < v.inner; ++i) {
              const int64_t j = o * v.inner + i;
              dx[(o * v.n + index[static_cast<size_t>(j)]) * v.inner + i] += g[j];
            }
        });
  }
  return r;
}

// max()/min() over all elements. The gradient is split evenly among the elements equal to the
// result (all NaNs when it is NaN), as PyTorch does for a full reduction.
template <bool kMax>
Tensor extremum_all(const char* op, const Tensor& x) {
  BNLAB_CHECK(x.numel() > 0, op, ": cannot reduce an empty tensor of shape ", x.shape(),
              "; give a dim");
  DimView v = view_all(x);
  float value;
  int64_t index;
  extremum_forward<kMax>(&value, &index, x.data(), v);
  Tensor out = Tensor::scalar(value);
  if (needs_grad({x})) {
    attach(out, op, {x}, Reads::only_inputs(),
           [value](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             const float* px = in[0].data();
             const int64_t n = in[0].numel();
             auto hit = [value](float e) { return std::isnan(value) ? std::isnan(e) : e == value; };
             int64_t count = 0;
             for (int64_t i = 0; i < n; ++i) count += hit(px[i]);
             const float g = dout.data()[0] / static_cast<float>(count);
             float* dx = grad_buffer(in[0]);
             for (int64_t i = 0; i < n; ++i)
               if (hit(px[i])) dx[i] += g;
           });
  }
  return out;
}

template <bool kMax>
std::vector<int64_t> arg_extremum(const char* op, const Tensor& x, const DimView& v) {
  BNLAB_CHECK(v.n > 0, op, ": cannot reduce an empty dim of shape ", x.shape());
  std::vector<int64_t> index(static_cast<size_t>(v.outer * v.inner));
  std::vector<float> values(index.size());
  extremum_forward<kMax>(values.data(), index.data(), x.data(), v);
  return index;
}

}  // namespace

ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) {
  return extremum_dim<true>("max", x, dim, keepdim);
}
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim) {
  return extremum_dim<false>("min", x, dim, keepdim);
}
Tensor max(const Tensor& x) { return extremum_all<true>("max", x); }
Tensor min(const Tensor& x) { return extremum_all<false>("min", x); }
std::vector<int64_t> argmax(const Tensor& x, int64_t dim) {
  return arg_extremum<true>("argmax", x, view_over("argmax", x, dim, false));
}
std::vector<int64_t> argmin(const Tensor& x, int64_t dim) {
  return arg_extremum<false>("argmin", x, view_over("argmin", x, dim, false));
}
int64_t argmax(const Tensor& x) { return arg_extremum<true>("argmax", x, view_all(x))[0]; }
int64_t argmin(const Tensor& x) { return arg_extremum<false>("argmin", x, view_all(x))[0]; }

namespace {

// Variance over the viewed dim with divisor max(0, n - correction); mean is saved for backward:
// d var / dx[k] = 2 (x[k] - mean) / divisor.
Tensor variance(const char* op, const Tensor& x, const DimView& v, double correction) {
  BNLAB_CHECK(correction >= 0.0, op, ": correction must be >= 0; got ", correction);
  const double divisor = std::max(0.0, static_cast<double>(v.n) - correction);
  Tensor out = Tensor::empty(v.reduced_shape);
  std::vector<float> means(static_cast<size_t>(v.outer * v.inner));
  const float* px = x.data();
  float* po = out.data();
  for_each_tile(v, [&](int64_t o, int64_t i0, int64_t i1) {
    // Two passes (mean, then squared deviations), so no E[x^2] - E[x]^2 cancellation.
    double mu[kTile], m2[kTile];
    tile_sum(mu, px, v, o, i0, i1);
    const int64_t w = i1 - i0;
    for (int64_t i = 0; i < w; ++i) {
      mu[i] /= static_cast<double>(v.n);
      m2[i] = 0.0;
    }
    const float* base = px + o * v.n * v.inner + i0;
    for (int64_t k = 0; k < v.n; ++k) {
      const float* row = base + k * v.inner;
#pragma omp simd
      for (int64_t i = 0; i < w; ++i) {
        const double d = row[i] - mu[i];
        m2[i] += d * d;
      }
    }
    for (int64_t i = 0; i < w; ++i) {
      po[o * v.inner + i0 + i] = static_cast<float>(m2[i] / divisor);
      means[static_cast<size_t>(o * v.inner + i0 + i)] = static_cast<float>(mu[i]);
    }
  });
  if (needs_grad({x})) {
    attach(out, op, {x}, Reads::only_inputs(),
           [v, divisor, means = std::move(means)](const Tensor&, const Tensor& dout,
                                                  const std::vector<Tensor>& in) {
             const float scale = static_cast<float>(2.0 / divisor);
             const float* xin = in[0].data();
             const float* g = dout.data();
             float* dx = grad_buffer(in[0]);
             detail::parallel_for(v.outer, v.outer * v.n * v.inner > (1 << 16) && v.outer > 1,
                                  [&](int64_t o) {
                                    const float* go = g + o * v.inner;
                                    const float* mo = means.data() + o * v.inner;
                                    for (int64_t k = 0; k < v.n; ++k) {
                                      const int64_t at = (o * v.n + k) * v.inner;
#pragma omp simd
                                      for (int64_t i = 0; i < v.inner; ++i)
                                        dx[at + i] += go[i] * scale * (xin[at + i] - mo[i]);
                                    }
                                  });
           });
  }
  return out;
}

}  // namespace

Tensor var(const Tensor& x, int64_t dim, double correction, bool keepdim) {
  return variance("var", x, view_over("var", x, dim, keepdim), correction);
}
Tensor var(const Tensor& x) { return variance("var", x, view_all(x), 1.0); }
namespace {

// std = sqrt(var), composed: the backward gives PyTorch's std gradient, dout * (x - mean) /
// (divisor * std). Where std is 0 (a constant row) it is 0, as PyTorch's std_backward masks it;
// plain sqrt's 0.5 / 0 = inf times var's zero gradient would be NaN.
Tensor sqrt_of_variance(const Tensor& variance) {
  return detail::unary(
      "std", variance, detail::kReadsY, [](float v) { return std::sqrt(v); },
      [](float, float y) { return y == 0.0f ? 0.0f : 0.5f / y; });
}

}  // namespace

Tensor std(const Tensor& x, int64_t dim, double correction, bool keepdim) {
  return sqrt_of_variance(var(x, dim, correction, keepdim));
}
Tensor std(const Tensor& x) { return sqrt_of_variance(var(x)); }

namespace {

// Writes softmax (log_space=false) or log_softmax (true) of x over the viewed dim into out.
void softmax_forward(float* out, const float* x, const DimView& v, bool log_space) {
  detail::parallel_for(v.outer, v.outer * v.n * v.inner > (1 << 15), [&](int64_t o) {
    for (int64_t i = 0; i < v.inner; ++i) {
      const float* row = x + o * v.n * v.inner + i;
      float* orow = out + o * v.n * v.inner + i;
      // Subtract the max so exp never overflows; the result is unchanged mathematically.
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t k = 0; k < v.n; ++k) m = std::max(m, row[k * v.inner]);
      double z = 0.0;
      for (int64_t k = 0; k < v.n; ++k) z += std::exp(static_cast<double>(row[k * v.inner] - m));
      if (log_space) {
        // (x - m) - log z, as PyTorch: x - (m + log z) rounded log z into m's ulp, so logits of
        // 1e6 in a three-way tie gave -1.125, not -log 3, and at 1e8 log z vanished (0).
        const float log_z = static_cast<float>(std::log(z));
        for (int64_t k = 0; k < v.n; ++k) orow[k * v.inner] = (row[k * v.inner] - m) - log_z;
      } else {
        float inv = static_cast<float>(1.0 / z);
        for (int64_t k = 0; k < v.n; ++k) orow[k * v.inner] = std::exp(row[k * v.inner] - m) * inv;
      }
    }
  });
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  DimView v = view_over("softmax", x, dim, false);
  Tensor out = Tensor::empty(x.shape());
  softmax_forward(out.data(), x.data(), v, false);
  if (needs_grad({x})) {
    // dx = y * (dout - sum_k dout_k y_k)
    attach(out, "softmax", {x}, Reads::only_output(),
           [v](const Tensor& y, const Tensor& dout, const std::vector<Tensor>& in) {
             float* dx = grad_buffer(in[0]);
             const float* py = y.data();
             const float* pd = dout.data();
             for (int64_t o = 0; o < v.outer; ++o) {
               for (int64_t i = 0; i < v.inner; ++i) {
                 int64_t base = o * v.n * v.inner + i;
                 double dot = 0.0;
                 for (int64_t k = 0; k < v.n; ++k)
                   dot += pd[base + k * v.inner] * py[base + k * v.inner];
                 for (int64_t k = 0; k < v.n; ++k) {
                   int64_t at = base + k * v.inner;
                   dx[at] += py[at] * (pd[at] - static_cast<float>(dot));
                 }
               }
             }
           });
  }
  return out;
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  DimView v = view_over("log_softmax", x, dim, false);
  Tensor out = Tensor::empty(x.shape());
  softmax_forward(out.data(), x.data(), v, true);
  if (needs_grad({x})) {
    // dx = dout - softmax * sum_k dout_k, with softmax = exp(y).
    attach(out, "log_softmax", {x}, Reads::only_output(),
           [v](const Tensor& y, const Tensor& dout, const std::vector<Tensor>& in) {
             float* dx = grad_buffer(in[0]);
             const float* py = y.data();
             const float* pd = dout.data();
             for (int64_t o = 0; o < v.outer; ++o) {
               for (int64_t i = 0; i < v.inner; ++i) {
                 int64_t base = o * v.n * v.inner + i;
                 double total = 0.0;
                 for (int64_t k = 0; k < v.n; ++k) total += pd[base + k * v.inner];
                 for (int64_t k = 0; k < v.n; ++k) {
                   int64_t at = base + k * v.inner;
                   dx[at] += pd[at] - std::exp(py[at]) * static_cast<float>(total);
                 }
               }
             }
           });
  }
  return out;
}

// The Tensor methods: the free functions above, as PyTorch offers both (x.sum(1) == sum(x, 1)).
Tensor Tensor::sum() const { return bnlab::sum(*this); }
Tensor Tensor::sum(int64_t dim, bool keepdim) const { return bnlab::sum(*this, dim, keepdim); }
Tensor Tensor::mean() const { return bnlab::mean(*this); }
Tensor Tensor::mean(int64_t dim, bool keepdim) const { return bnlab::mean(*this, dim, keepdim); }
Tensor Tensor::max() const { return bnlab::max(*this); }
ValuesIndices Tensor::max(int64_t dim, bool keepdim) const {
  return bnlab::max(*this, dim, keepdim);
}
Tensor Tensor::min() const { return bnlab::min(*this); }
ValuesIndices Tensor::min(int64_t dim, bool keepdim) const {
  return bnlab::min(*this, dim, keepdim);
}
int64_t Tensor::argmax() const { return bnlab::argmax(*this); }
std::vector<int64_t> Tensor::argmax(int64_t dim) const { return bnlab::argmax(*this, dim); }
int64_t Tensor::argmin() const { return bnlab::argmin(*this); }
std::vector<int64_t> Tensor::argmin(int64_t dim) const { return bnlab::argmin(*this, dim); }
Tensor Tensor::var() const { return bnlab::var(*this); }
Tensor Tensor::var(int64_t dim, double correction, bool keepdim) const {
  return bnlab::var(*this, dim, correction, keepdim);
}
Tensor Tensor::std() const { return bnlab::std(*this); }
Tensor Tensor::std(int64_t dim, double correction, bool keepdim) const {
  return bnlab::std(*this, dim, correction, keepdim);
}

}  // namespace bnlab

// Reductions over all elements or one dimension, max/argmax, softmax and log_softmax.
//
// A reduction over dim d views x as [outer, n, inner] (outer = product of dims before d, inner =
// after), so one loop nest serves every rank and dim.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/autograd.h"
#include "core/ops.h"

namespace bnlab {

namespace {

struct DimView {
  int64_t outer, n, inner;
  Shape reduced_shape;  // x's shape without dim (or with 1 there when keepdim)
};

DimView view_over(const char* op, const Tensor& x, int64_t dim, bool keepdim) {
  int64_t rank = x.dim();
  int64_t d = dim < 0 ? dim + rank : dim;
  BNLAB_CHECK(d >= 0 && d < rank, op, ": dim ", dim, " out of range for shape ", x.shape());
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

// sum over dim, scaled: shared by sum and mean.
Tensor scaled_sum(const char* op, const Tensor& x, int64_t dim, bool keepdim, bool average) {
  DimView v = view_over(op, x, dim, keepdim);
  float scale = average ? 1.0f / static_cast<float>(v.n) : 1.0f;
  Tensor out = Tensor::empty(v.reduced_shape);
  const float* px = x.data();
  float* po = out.data();
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t i = 0; i < v.inner; ++i) {
      double acc = 0.0;
      for (int64_t k = 0; k < v.n; ++k) acc += px[(o * v.n + k) * v.inner + i];
      po[o * v.inner + i] = static_cast<float>(acc) * scale;
    }
  }
  if (needs_grad({x})) {
    attach(out, op, {x},
           [v, scale](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             float* dx = grad_buffer(in[0]);
             const float* pd = dout.data();
             for (int64_t o = 0; o < v.outer; ++o)
               for (int64_t k = 0; k < v.n; ++k)
                 for (int64_t i = 0; i < v.inner; ++i)
                   dx[(o * v.n + k) * v.inner + i] += pd[o * v.inner + i] * scale;
           });
  }
  return out;
}

Tensor scaled_total(const char* op, const Tensor& x, bool average) {
  const float* px = x.data();
  int64_t n = x.numel();
  double acc = 0.0;
#pragma omp parallel for reduction(+ : acc) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) acc += px[i];
  float scale = average ? 1.0f / static_cast<float>(std::max<int64_t>(n, 1)) : 1.0f;
  Tensor out = Tensor::scalar(static_cast<float>(acc) * scale);
  if (average) BNLAB_CHECK(n > 0, op, ": mean of an empty tensor of shape ", x.shape());
  if (needs_grad({x})) {
    attach(out, op, {x}, [scale](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
      float* dx = grad_buffer(in[0]);
      float g = dout.data()[0] * scale;
      int64_t n = in[0].numel();
      for (int64_t i = 0; i < n; ++i) dx[i] += g;
    });
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) { return scaled_total("sum", x, false); }
Tensor mean(const Tensor& x) { return scaled_total("mean", x, true); }
Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  return scaled_sum("sum", x, dim, keepdim, false);
}
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  return scaled_sum("mean", x, dim, keepdim, true);
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  DimView v = view_over("max", x, dim, keepdim);
  BNLAB_CHECK(v.n > 0, "max: empty dimension ", dim, " in shape ", x.shape());
  Tensor out = Tensor::empty(v.reduced_shape);
  std::vector<int64_t> where(
      static_cast<size_t>(v.outer * v.inner));  // flat index of each max in x
  const float* px = x.data();
  float* po = out.data();
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t i = 0; i < v.inner; ++i) {
      int64_t best = o * v.n * v.inner + i;
      for (int64_t k = 1; k < v.n; ++k) {
        int64_t at = (o * v.n + k) * v.inner + i;
        if (px[at] > px[best]) best = at;  // strict: ties keep the first index
      }
      po[o * v.inner + i] = px[best];
      where[static_cast<size_t>(o * v.inner + i)] = best;
    }
  }
  if (needs_grad({x})) {
    attach(out, "max", {x},
           [where = std::move(where)](const Tensor&, const Tensor& dout,
                                      const std::vector<Tensor>& in) {
             float* dx = grad_buffer(in[0]);
             const float* pd = dout.data();
             for (size_t j = 0; j < where.size(); ++j) dx[where[j]] += pd[j];
           });
  }
  return out;
}

std::vector<int64_t> argmax(const Tensor& x, int64_t dim) {
  DimView v = view_over("argmax", x, dim, false);
  BNLAB_CHECK(v.n > 0, "argmax: empty dimension ", dim, " in shape ", x.shape());
  std::vector<int64_t> result(static_cast<size_t>(v.outer * v.inner));
  const float* px = x.data();
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t i = 0; i < v.inner; ++i) {
      int64_t best = 0;
      for (int64_t k = 1; k < v.n; ++k)
        if (px[(o * v.n + k) * v.inner + i] > px[(o * v.n + best) * v.inner + i]) best = k;
      result[static_cast<size_t>(o * v.inner + i)] = best;
    }
  }
  return result;
}

namespace {

// Writes softmax (log_space=false) or log_softmax (true) of x over the viewed dim into out.
void softmax_forward(float* out, const float* x, const DimView& v, bool log_space) {
#pragma omp parallel for if (v.outer * v.n * v.inner > (1 << 15))
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t i = 0; i < v.inner; ++i) {
      const float* row = x + o * v.n * v.inner + i;
      float* orow = out + o * v.n * v.inner + i;
      // Subtract the max so exp never overflows; the result is unchanged mathematically.
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t k = 0; k < v.n; ++k) m = std::max(m, row[k * v.inner]);
      double z = 0.0;
      for (int64_t k = 0; k < v.n; ++k) z += std::exp(static_cast<double>(row[k * v.inner] - m));
      if (log_space) {
        float log_z = static_cast<float>(std::log(z)) + m;
        for (int64_t k = 0; k < v.n; ++k) orow[k * v.inner] = row[k * v.inner] - log_z;
      } else {
        float inv = static_cast<float>(1.0 / z);
        for (int64_t k = 0; k < v.n; ++k) orow[k * v.inner] = std::exp(row[k * v.inner] - m) * inv;
      }
    }
  }
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  DimView v = view_over("softmax", x, dim, false);
  Tensor out = Tensor::empty(x.shape());
  softmax_forward(out.data(), x.data(), v, false);
  if (needs_grad({x})) {
    // dx = y * (dout - sum_k dout_k y_k)
    attach(out, "softmax", {x},
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
    attach(out, "log_softmax", {x},
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

}  // namespace bnlab

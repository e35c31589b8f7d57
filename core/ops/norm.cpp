// Normalization ops, each fused with a hand-derived backward: batch norm (train and eval), layer
// norm and group norm.
//
// Legend: N batch, C channels, S = product of the dims after C (H*W for images, 1 for [N, C]),
// M = N*S values per channel (batch norm). Layer and group norm normalize contiguous ROWS of x seen
// as [R, L]: layer norm has R = numel / D rows of the D = prod(normalized_shape) trailing values;
// group norm has R = N*G rows of L = (C/G)*S values (the channels of one group of one sample are
// contiguous).
//
// Numerics, shared by all four: statistics are computed in double with two passes (the mean, then
// squared deviations from it), so a large common offset does not cancel as in E[x^2] - E[x]^2. The
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
// References: https://pytorch.org/docs/stable/generated/torch.nn.functional.batch_norm.html,
// .../torch.nn.functional.layer_norm.html, .../torch.nn.functional.group_norm.html;
// Ioffe & Szegedy 2015; Ba et al. 2016; Wu & He 2018.
#include <omp.h>

#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"

namespace bnlab {

namespace {

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

// ---- batch norm: statistics per channel over N and S (channel c is N strided runs of S values)
// ----

// y [N, C, S], mean/var [C] (float, returned) and mean_d/rstd_d [C] (double, saved) from x [N, C,
// S]. gamma/beta [C] may be null (no affine).
void batch_norm_forward(float* y, float* mean, float* var, double* mean_d, double* rstd_d,
                        const float* x, const float* gamma, const float* beta, const ChannelDims& d,
                        float eps) {
  const int64_t M = d.N * d.S;
#pragma omp parallel for if (d.N * d.C * d.S > kParallelThreshold)
  for (int64_t c = 0; c < d.C; ++c) {
    // Pass 1: the mean.
    double sum = 0.0;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xc = x + (n * d.C + c) * d.S;
      for (int64_t s = 0; s < d.S; ++s) sum += xc[s];
    }
    const double m = sum / static_cast<double>(M);
    // Pass 2: the biased variance, from deviations (no cancellation).
    double sq = 0.0;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xc = x + (n * d.C + c) * d.S;
      for (int64_t s = 0; s < d.S; ++s) {
        double dev = xc[s] - m;
        sq += dev * dev;
      }
    }
    const double v = sq / static_cast<double>(M);
    const double rstd = 1.0 / std::sqrt(v + static_cast<double>(eps));
    mean[c] = static_cast<float>(m);
    var[c] = static_cast<float>(v);
    mean_d[c] = m;
    rstd_d[c] = rstd;
    // Pass 3: y = xhat * gamma + beta.
    const double g = gamma ? gamma[c] : 1.0;
    const double b = beta ? beta[c] : 0.0;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xc = x + (n * d.C + c) * d.S;
      float* yc = y + (n * d.C + c) * d.S;
      for (int64_t s = 0; s < d.S; ++s) yc[s] = static_cast<float>((xc[s] - m) * rstd * g + b);
    }
  }
}

// Accumulates dx [N, C, S], dgamma [C], dbeta [C] (null when not wanted) from dy [N, C, S].
void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                         const double* mean_d, const double* rstd_d, const float* gamma,
                         const ChannelDims& d) {
  const int64_t M = d.N * d.S;
#pragma omp parallel for if (d.N * d.C * d.S > kParallelThreshold)
  for (int64_t c = 0; c < d.C; ++c) {
    const double m = mean_d[c], rstd = rstd_d[c];
    // Pass 1: sum(dy) and sum(dy * xhat), which give dbeta, dgamma and both dx correction terms.
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xc = x + (n * d.C + c) * d.S;
      const float* gc = dy + (n * d.C + c) * d.S;
      for (int64_t s = 0; s < d.S; ++s) {
        sum_dy += gc[s];
        sum_dy_xhat += gc[s] * ((xc[s] - m) * rstd);
      }
    }
    if (dgamma) dgamma[c] += static_cast<float>(sum_dy_xhat);
    if (dbeta) dbeta[c] += static_cast<float>(sum_dy);
    if (!dx) continue;
    // Pass 2: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) with dxhat = dy *
    // gamma, so mean(dxhat) = gamma * sum_dy / M and mean(dxhat * xhat) = gamma * sum_dy_xhat / M.
    const double g = gamma ? gamma[c] : 1.0;
    const double mean_dxhat = g * sum_dy / static_cast<double>(M);
    const double mean_dxhat_xhat = g * sum_dy_xhat / static_cast<double>(M);
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xc = x + (n * d.C + c) * d.S;
      const float* gc = dy + (n * d.C + c) * d.S;
      float* dxc = dx + (n * d.C + c) * d.S;
      for (int64_t s = 0; s < d.S; ++s) {
        double xhat = (xc[s] - m) * rstd;
        dxc[s] += static_cast<float>(rstd * (g * gc[s] - mean_dxhat - xhat * mean_dxhat_xhat));
      }
    }
  }
}

// y [N, C, S] = (x - mean) * rstd * gamma + beta with given per-channel mean and rstd (double,
// [C]).
void batch_norm_eval_forward(float* y, const float* x, const double* mean_d, const double* rstd_d,
                             const float* gamma, const float* beta, const ChannelDims& d) {
#pragma omp parallel for if (d.N * d.C * d.S > kParallelThreshold)
  for (int64_t c = 0; c < d.C; ++c) {
    const double m = mean_d[c], rstd = rstd_d[c];
    const double g = gamma ? gamma[c] : 1.0;
    const double b = beta ? beta[c] : 0.0;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xc = x + (n * d.C + c) * d.S;
      float* yc = y + (n * d.C + c) * d.S;
      for (int64_t s = 0; s < d.S; ++s) yc[s] = static_cast<float>((xc[s] - m) * rstd * g + b);
    }
  }
}

// Accumulates dx, dgamma, dbeta. The statistics are constants here, so dx is simply dy * gamma *
// rstd.
void batch_norm_eval_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                              const float* x, const double* mean_d, const double* rstd_d,
                              const float* gamma, const ChannelDims& d) {
#pragma omp parallel for if (d.N * d.C * d.S > kParallelThreshold)
  for (int64_t c = 0; c < d.C; ++c) {
    const double m = mean_d[c], rstd = rstd_d[c];
    const double scale = (gamma ? gamma[c] : 1.0) * rstd;
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xc = x + (n * d.C + c) * d.S;
      const float* gc = dy + (n * d.C + c) * d.S;
      float* dxc = dx ? dx + (n * d.C + c) * d.S : nullptr;
      for (int64_t s = 0; s < d.S; ++s) {
        sum_dy += gc[s];
        sum_dy_xhat += gc[s] * ((xc[s] - m) * rstd);
        if (dxc) dxc[s] += static_cast<float>(gc[s] * scale);
      }
    }
    if (dgamma) dgamma[c] += static_cast<float>(sum_dy_xhat);
    if (dbeta) dbeta[c] += static_cast<float>(sum_dy);
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
#pragma omp parallel for if (d.R * d.L > kParallelThreshold)
  for (int64_t r = 0; r < d.R; ++r) {
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
  }
}

// Accumulates dx [R, L], dw [P], db [P] (null when not wanted) from dy [R, L].
void norm_rows_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                        const double* mean_d, const double* rstd_d, const float* w,
                        const RowsAffine& d) {
  const int64_t blocks = d.L / d.inner;
  const bool parallel = d.R * d.L > kParallelThreshold;
  const int team = parallel ? omp_get_max_threads() : 1;
  // dw and db sum over rows, which threads split: each thread adds into its own double slots [2,
  // P], reduced afterwards in thread order (deterministic for a given thread count).
  const bool want_params = dw || db;
  std::vector<double> partials(want_params ? static_cast<size_t>(team) * 2 * d.P : 0, 0.0);
#pragma omp parallel num_threads(team) if (parallel)
  {
    double* acc_w = want_params ? partials.data() + omp_get_thread_num() * 2 * d.P : nullptr;
    double* acc_b = want_params ? acc_w + d.P : nullptr;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < d.R; ++r) {
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
    for (int t = 0; t < team; ++t) {
      sw += partials[(static_cast<size_t>(t) * 2) * d.P + p];
      sb += partials[(static_cast<size_t>(t) * 2 + 1) * d.P + p];
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
    attach(y, op, {x, weight, bias},
           [d, mean_d = std::move(mean_d), rstd_d = std::move(rstd_d)](
               const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             norm_rows_backward(grad_buffer(in[0]), grad_buffer(in[1]), grad_buffer(in[2]),
                                dout.data(), in[0].data(), mean_d.data(), rstd_d.data(),
                                data_or_null(in[1]), d);
           });
  }
  return y;
}

}  // namespace

BatchNormResult batch_norm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                 float eps) {
  const ChannelDims d = channel_dims("batch_norm", x);
  check_param("batch_norm", "gamma", gamma, {d.C}, x);
  check_param("batch_norm", "beta", beta, {d.C}, x);
  check_eps("batch_norm", eps);
  // y: shape of x; mean, var: [C], returned without grad (they are statistics, not outputs to train
  // on).
  Tensor y = Tensor::empty(x.shape());
  Tensor mean = Tensor::empty({d.C});
  Tensor var = Tensor::empty({d.C});
  std::vector<double> mean_d(static_cast<size_t>(d.C)), rstd_d(static_cast<size_t>(d.C));
  batch_norm_forward(y.data(), mean.data(), var.data(), mean_d.data(), rstd_d.data(), x.data(),
                     data_or_null(gamma), data_or_null(beta), d, eps);
  if (needs_grad({x, gamma, beta})) {
    attach(y, "batch_norm", {x, gamma, beta},
           [d, mean_d = std::move(mean_d), rstd_d = std::move(rstd_d)](
               const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             batch_norm_backward(grad_buffer(in[0]), grad_buffer(in[1]), grad_buffer(in[2]),
                                 dout.data(), in[0].data(), mean_d.data(), rstd_d.data(),
                                 data_or_null(in[1]), d);
           });
  }
  return {y, mean, var};
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
  // step, which must not change the backward of a graph recorded before it.
  std::vector<double> mean_d(static_cast<size_t>(d.C)), rstd_d(static_cast<size_t>(d.C));
  const float* rm = running_mean.data();
  const float* rv = running_var.data();
  for (int64_t c = 0; c < d.C; ++c) {
    mean_d[static_cast<size_t>(c)] = rm[c];
    rstd_d[static_cast<size_t>(c)] = 1.0 / std::sqrt(static_cast<double>(rv[c]) + eps);
  }
  Tensor y = Tensor::empty(x.shape());
  batch_norm_eval_forward(y.data(), x.data(), mean_d.data(), rstd_d.data(), data_or_null(gamma),
                          data_or_null(beta), d);
  // Inputs are x, gamma, beta only: the running statistics are buffers and never receive a
  // gradient.
  if (needs_grad({x, gamma, beta})) {
    attach(y, "batch_norm_eval", {x, gamma, beta},
           [d, mean_d = std::move(mean_d), rstd_d = std::move(rstd_d)](
               const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             batch_norm_eval_backward(grad_buffer(in[0]), grad_buffer(in[1]), grad_buffer(in[2]),
                                      dout.data(), in[0].data(), mean_d.data(), rstd_d.data(),
                                      data_or_null(in[1]), d);
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
  return norm_rows("group_norm", x, weight, bias, RowsAffine{d.N * groups, L, d.C, d.S}, eps);
}

}  // namespace bnlab

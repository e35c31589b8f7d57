// Every differentiable op in bnlab, one line of contract each. Bodies live in
// core/ops/<family>.cpp, each op's forward and backward in one function. Ops record a graph node
// only when an input requires a grad.
//
// Legend: N batch, C channels, H/W height/width, D features, K out-features or out-channels.
// Broadcasting follows NumPy/PyTorch: shapes align at the right, dims of size 1 stretch. A
// per-channel vector for NCHW data is therefore [C, 1, 1], as in PyTorch. Gradients of broadcast
// inputs are reduced back to their shapes by one helper, sum_to_shape.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace bnlab {

// ---- elementwise (core/ops/elementwise.cpp) ----
Tensor add(const Tensor& a, const Tensor& b);  ///< a + b, broadcasting
Tensor sub(const Tensor& a, const Tensor& b);  ///< a - b, broadcasting
Tensor mul(const Tensor& a, const Tensor& b);  ///< a * b, broadcasting
Tensor div(const Tensor& a, const Tensor& b);  ///< a / b, broadcasting
Tensor neg(const Tensor& x);                   ///< -x
Tensor add_scalar(const Tensor& x, float s);   ///< x + s
Tensor mul_scalar(const Tensor& x, float s);   ///< x * s
Tensor exp(const Tensor& x);                   ///< e^x
Tensor log(const Tensor& x);                   ///< natural log; x <= 0 gives -inf/nan as in IEEE
Tensor sqrt(const Tensor& x);                  ///< square root
/// x^p, as PyTorch: p = 0.5 and -0.5 via sqrt (NaN at -inf); d/dx = p x^(p-1), and 0 for p = 0.
Tensor pow(const Tensor& x, float exponent);
/// max(x, 0), NaN passing through. Backward as PyTorch's (threshold_backward): dout where x > 0 or
/// x is NaN, else 0, even where dout is NaN or inf; so relu'(0) = 0 (also in conv2d_relu and the
/// fused batch norm + ReLU ops).
Tensor relu(const Tensor& x);
Tensor leaky_relu(const Tensor& x,
                  float negative_slope = 0.01f);  ///< x if x > 0 else slope*x; '(0)=slope
Tensor sigmoid(const Tensor& x);                  ///< 1 / (1 + e^-x), stable for large |x|
Tensor tanh(const Tensor& x);                     ///< hyperbolic tangent
Tensor abs(const Tensor& x);                      ///< |x|; abs'(0) = 0
Tensor sign(const Tensor& x);        ///< -1, 0 or 1 (NaN stays NaN); zero gradient everywhere
Tensor square(const Tensor& x);      ///< x * x
Tensor reciprocal(const Tensor& x);  ///< 1 / x
Tensor rsqrt(const Tensor& x);       ///< 1 / sqrt(x)
Tensor sin(const Tensor& x);         ///< sine
Tensor cos(const Tensor& x);         ///< cosine
Tensor log1p(const Tensor& x);       ///< log(1 + x), accurate near 0
Tensor expm1(const Tensor& x);       ///< e^x - 1, accurate near 0
/// min(max(x, min), max) with either bound optional (not both absent); min > max makes every
/// output max. Gradient passes where min <= x <= max (bounds included); NaN stays NaN.
Tensor clamp(const Tensor& x, std::optional<float> min, std::optional<float> max);
Tensor clamp_min(const Tensor& x, float min);  ///< clamp(x, min, none)
Tensor clamp_max(const Tensor& x, float max);  ///< clamp(x, none, max)
/// Elementwise max, broadcasting; NaN in either gives NaN; at ties each input gets half the grad.
Tensor maximum(const Tensor& a, const Tensor& b);
/// Elementwise min, broadcasting; NaN in either gives NaN; at ties each input gets half the grad.
Tensor minimum(const Tensor& a, const Tensor& b);
/// a where condition is 1, b where it is 0; all three broadcast. condition must hold only 0 and 1
/// (bnlab's bool tensor) and gets no gradient.
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);

Tensor operator+(const Tensor& a, const Tensor& b);  ///< add(a, b)
Tensor operator-(const Tensor& a, const Tensor& b);  ///< sub(a, b)
Tensor operator*(const Tensor& a, const Tensor& b);  ///< mul(a, b)
Tensor operator/(const Tensor& a, const Tensor& b);  ///< div(a, b)
Tensor operator-(const Tensor& x);                   ///< neg(x)
Tensor operator+(const Tensor& x, float s);          ///< add_scalar(x, s)
Tensor operator+(float s, const Tensor& x);          ///< add_scalar(x, s)
Tensor operator-(const Tensor& x, float s);          ///< add_scalar(x, -s)
Tensor operator-(float s, const Tensor& x);          ///< s - x
Tensor operator*(const Tensor& x, float s);          ///< mul_scalar(x, s)
Tensor operator*(float s, const Tensor& x);          ///< mul_scalar(x, s)
Tensor operator/(const Tensor& x, float s);          ///< mul_scalar(x, 1 / s)

/// The shape a and b broadcast to; throws naming `op` and both shapes if they do not.
Shape broadcast_shape(const char* op, const Shape& a, const Shape& b);
/// Sums `g` (of a broadcast shape) down to `shape`: the one reduction every broadcasting op's
/// backward uses.
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

// ---- activations (core/ops/activation.cpp) ----
/// x Phi(x) (Phi the standard normal CDF) with approximate = "none"; with "tanh",
/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as torch.nn.functional.gelu.
Tensor gelu(const Tensor& x, std::string_view approximate = "none");
Tensor silu(const Tensor& x);  ///< x * sigmoid(x) (swish)
/// x if x > 0 else alpha (e^x - 1); gradient alpha at x = 0, as PyTorch.
Tensor elu(const Tensor& x, float alpha = 1.0f);
/// log(1 + e^(beta x)) / beta, and x itself where beta x > threshold; never overflows.
Tensor softplus(const Tensor& x, float beta = 1.0f, float threshold = 20.0f);
Tensor softsign(const Tensor& x);  ///< x / (1 + |x|)
/// clamp to [min_val, max_val]; zero gradient at and beyond the bounds (PyTorch's).
Tensor hardtanh(const Tensor& x, float min_val = -1.0f, float max_val = 1.0f);

// ---- shape (core/ops/shape.cpp) ----
Tensor reshape(const Tensor& x, const Shape& shape);  ///< shares data; one dim may be -1
/// The dims from start_dim on merged into one, their product (torch.flatten(x, start_dim)):
/// [N, ...] -> [N, prod(...)] by default, also when x is empty ([0, 3, 4] -> [0, 12]); shares data
Tensor flatten(const Tensor& x, int64_t start_dim = 1);
Tensor clone(const Tensor& x);  ///< copies data; grad passes through

// ---- indexing, joining and views (core/ops/index.cpp, core/ops/shape.cpp) ----
// Which results share the input's data and which are copies: docs/guide/tensors-autodiff.md. A
// result shares when its elements are one contiguous block of the input (bnlab tensors are always
// contiguous); writes through data(), fill_ or copy_ are then seen by both.
/// `dim` as an index in [0, rank): negative dims count from the end (PyTorch's rule); throws naming
/// `op`, the dim, `shape` and the valid range otherwise. For argument checks of ops, users' too.
int64_t wrap_dim(const char* op, int64_t dim, int64_t rank, const Shape& shape);
/// Elements [start, end) of dimension `dim`, every `step`-th (step >= 1), as Python's x[..., a:b:s]
/// and PyTorch's Tensor::slice: negative start/end count from the end, out-of-range ones clamp (an
/// empty result is fine). Shares data when contiguous (dim 0, step 1), else copies.
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
/// `length` elements of dimension `dim` from `start` (negative start counts from the end), as
/// torch.narrow; throws if they do not fit. Shares data when contiguous, else copies.
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
/// Index `index` of dimension `dim`, which is removed (torch.select; x[i] is select(x, 0, i));
/// index in [-size, size). Shares data when contiguous, else copies.
Tensor select(const Tensor& x, int64_t dim, int64_t index);
/// Joins tensors along an existing dimension `dim` (torch.cat): same rank, equal sizes in every
/// other dimension. Always a copy; backward hands each input its slice of the gradient.
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
/// Joins equal-shaped tensors along a new dimension `dim` in [-rank-1, rank] (torch.stack): cat of
/// the inputs unsqueezed at dim. Always a copy.
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
/// Same data, new shape: reshape under PyTorch's other name (bnlab tensors are contiguous, so a
/// view never needs a copy). Shares data.
Tensor view(const Tensor& x, const Shape& shape);
/// Dimensions dim0 and dim1 swapped (torch.transpose). A copy: bnlab tensors stay contiguous.
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
/// Result dimension i is input dimension dims[i] (torch.permute; dims a permutation of the
/// dimensions, negative ones count from the end). A copy.
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
/// Inserts a dimension of size 1 at `dim` in [-rank-1, rank] (torch.unsqueeze). Shares data.
Tensor unsqueeze(const Tensor& x, int64_t dim);
/// Removes every dimension of size 1 (torch.squeeze). Shares data.
Tensor squeeze(const Tensor& x);
/// Removes dimension `dim` if its size is 1, else returns the same shape (torch.squeeze(x, dim)).
/// Shares data.
Tensor squeeze(const Tensor& x, int64_t dim);

// ---- reductions (core/ops/reduce.cpp; also Tensor methods: x.sum(1) == sum(x, 1)) ----
// dim may be negative (counts from the end); keepdim keeps the reduced dim with size 1. Indices
// are int64 positions along dim in a std::vector (bnlab's integer type, as for labels), row-major
// over the values' shape.
Tensor sum(const Tensor& x);                                      ///< scalar sum of all elements
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);   ///< sum over one dim
Tensor mean(const Tensor& x);                                     ///< scalar mean (NaN if empty)
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);  ///< mean over one dim
/// Max over dim: values (grad flows to the chosen element) and their indices along dim; ties go
/// to the first index and a NaN wins (the first NaN), as PyTorch's CPU max.
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim = false);
/// Min over dim; as max(x, dim, keepdim).
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim = false);
/// Scalar max of all elements; the grad is split evenly among tied maxima (as PyTorch).
Tensor max(const Tensor& x);
/// Scalar min of all elements; the grad is split evenly among tied minima (as PyTorch).
Tensor min(const Tensor& x);
std::vector<int64_t> argmax(const Tensor& x, int64_t dim);  ///< max(x, dim).indices (no grad)
std::vector<int64_t> argmin(const Tensor& x, int64_t dim);  ///< min(x, dim).indices (no grad)
int64_t argmax(const Tensor& x);  ///< flat (row-major) index of the first max of all elements
int64_t argmin(const Tensor& x);  ///< flat (row-major) index of the first min of all elements
/// Variance over dim with divisor max(0, n - correction): correction 1 (or true) is unbiased,
/// 0 (or false) biased, as torch.var(x, dim, correction=...); n <= correction gives inf/NaN.
Tensor var(const Tensor& x, int64_t dim, double correction = 1.0, bool keepdim = false);
Tensor var(const Tensor& x);  ///< unbiased variance of all elements (scalar)
/// Standard deviation: sqrt(var(x, dim, correction, keepdim)).
Tensor std(const Tensor& x, int64_t dim, double correction = 1.0, bool keepdim = false);
Tensor std(const Tensor& x);  ///< unbiased standard deviation of all elements (scalar)
Tensor softmax(const Tensor& x, int64_t dim = -1);      ///< stable (subtracts the max)
Tensor log_softmax(const Tensor& x, int64_t dim = -1);  ///< stable log-sum-exp

// ---- matmul (core/ops/matmul.cpp) ----
/// [M, K] x [K, N] -> [M, N]; trans_a / trans_b use a^T / b^T (stored as given) via GEMM flags, no
/// copies.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
/// Fully connected: x [N, D], weight [K, D] (PyTorch layout), bias [K] or undefined -> [N, K]; one
/// GEMM.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// ---- losses (core/ops/loss.cpp) ----
/// Mean over the batch of -log softmax(logits)[label]; logits [N, K], labels N values in [0, K).
/// With label_smoothing s the target is (1-s) one-hot + s/K uniform (PyTorch's definition). Fused,
/// stable.
Tensor cross_entropy(const Tensor& logits, const std::vector<int64_t>& labels,
                     float label_smoothing = 0.0f);
/// Mean of (a - b)^2 over all elements; composed from primitives.
Tensor mse_loss(const Tensor& a, const Tensor& b);
/// Mean of |a - b| over all elements (same shapes); gradient sign(a - b), 0 at a == b.
Tensor l1_loss(const Tensor& a, const Tensor& b);
/// Mean of 0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (d = a - b, same shapes);
/// beta = 0 is l1_loss.
Tensor smooth_l1_loss(const Tensor& a, const Tensor& b, float beta = 1.0f);
/// Mean of 0.5 d^2 where |d| <= delta, delta (|d| - 0.5 delta) elsewhere (d = a - b, same shapes).
Tensor huber_loss(const Tensor& a, const Tensor& b, float delta = 1.0f);
/// Mean over the targets other than ignore_index of -log_probs[n, target n]; log_probs [N, C]
/// (e.g. from log_softmax), targets N class indices in [0, C). All ignored gives NaN, as torch.
Tensor nll_loss(const Tensor& log_probs, const std::vector<int64_t>& targets,
                int64_t ignore_index = -100);
/// Mean of -[w y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], w = pos_weight (undefined: 1, else
/// broadcast to the logits' shape, e.g. [C] for [N, C]); targets (probabilities) have the logits'
/// shape. Stable for any logit; gradients to logits, targets and pos_weight.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets,
                                        const Tensor& pos_weight = Tensor());
/// Mean of -[y log p + (1 - y) log(1 - p)] with each log clamped at -100 (as torch); probs in
/// [0, 1] (else throws), targets of the same shape.
Tensor binary_cross_entropy(const Tensor& probs, const Tensor& targets);

// ---- conv (core/ops/conv.cpp) ----
/// x [N, C, H, W], weight [K, C/groups, kh, kw], bias [K] or undefined -> [N, K, Ho, Wo],
/// Ho = (H + 2*padding - kh) / stride + 1. With groups G the channels split into G groups, output
/// group g seeing only input group g (groups == C: depthwise), as PyTorch. The implementation is
/// chosen from the shape (im2col + GEMM, direct kernels, Winograd F(4x4, 3x3), frequency domain;
/// `BNLAB_CONV=im2col|direct|winograd|fourier` forces one where it applies); all agree with
/// PyTorch within float rounding on finite inputs (Winograd's and the frequency domain's error
/// scales with the largest value in a tile or plane, not in each window). A NaN or inf in x, weight
/// or the gradient reaches exactly the outputs PyTorch's does: Winograd and the frequency domain,
/// which would spread it over a 4x4 tile or a whole image, hand such a call (or its backward) to
/// im2col + GEMM; so do operands whose magnitudes come within about 2^32 times the number of terms
/// of float's range, where those paths' intermediates could overflow before the true sums do.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride = 1,
              int64_t padding = 0, int64_t groups = 1);
/// relu(conv2d(x, weight, bias, ...)), the same values and gradients bit for bit. The ReLU is
/// applied as each image's output is written, saving relu's pass over the output (and, in
/// training, keeping the pre-ReLU output); Sequential runs an unhooked Conv2d + ReLU pair through
/// it (a folded BatchNorm's Identity between them included). Its graph node is "conv2d_relu".
Tensor conv2d_relu(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride = 1,
                   int64_t padding = 0, int64_t groups = 1);

// ---- pooling (core/ops/pool.cpp) ----
/// x [N, C, H, W] -> [N, C, Ho, Wo]; stride defaults to kernel (stride 0 = kernel); padded
/// cells are -inf. Ties go to the first index in row-major window order. A NaN in the window
/// wins, the last of several in row-major order, as PyTorch's CPU kernel.
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0, int64_t padding = 0);
/// x [N, C, H, W] -> [N, C, Ho, Wo] window means (floor mode), Ho as max_pool2d; stride 0 =
/// kernel; padding <= kernel / 2 adds zeros, counted in the divisor k*k when count_include_pad (as
/// torch.nn.functional.avg_pool2d), else left out of it.
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0, int64_t padding = 0,
                  bool count_include_pad = true);
/// x [N, C, H, W] -> [N, C, oh, ow]: output cell (i, j) averages the rows from floor(i*H/oh) to
/// ceil((i+1)*H/oh) (exclusive) and likewise the columns, PyTorch's formula; {1, 1} is global
/// average pooling. oh, ow >= 1 may exceed H, W (windows then repeat), as in PyTorch; throws,
/// naming both shapes, if the output is too large for a tensor.
Tensor adaptive_avg_pool2d(const Tensor& x, std::array<int64_t, 2> output_size);
/// adaptive_avg_pool2d(x, {output_size, output_size}).
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t output_size);

// ---- dropout (core/ops/dropout.cpp) ----
/// Training: zero each element with probability p and scale survivors by 1/(1-p) (inverted
/// dropout); the mask drawn from rng drives backward. Not training (or p == 0): returns x itself.
Tensor dropout(const Tensor& x, float p, bool training, Rng& rng);

// ---- normalization (core/ops/norm.cpp) ----
/// What batch_norm_train returns: the output and the batch statistics behind it.
struct BatchNormResult {
  Tensor y;           ///< normalized, scaled and shifted; same shape as x
  Tensor mean;        ///< [C] batch mean (no grad)
  Tensor var;         ///< [C] biased batch variance (no grad); running_var wants var * M / (M - 1)
  int64_t count = 0;  ///< M: values per channel behind mean/var (all shards' under a reducer)
  Tensor r;           ///< [C] batch_renorm_train's scale correction r (no grad); undefined for BN
  Tensor d;           ///< [C] batch_renorm_train's shift correction d (no grad); undefined for BN
};
/// Batch renormalization's moving statistics and clip limits (batch_renorm_train).
struct BatchRenormArgs {
  Tensor running_mean;  ///< [C] mu, the moving mean r and d are measured against
  Tensor running_var;   ///< [C] moving variance: sigma = sqrt(running_var + eps)
  float r_max = 1.0f;   ///< r is clipped to [1 / r_max, r_max]; must be >= 1 (1: r = 1)
  float d_max = 0.0f;   ///< d is clipped to [-d_max, d_max]; must be >= 0 (0: d = 0)
};
/// Combines batch-norm statistics across the shards of one data-parallel batch (SyncBN).
///
/// batch_norm_train calls it between its statistics pass and its normalize pass, and between
/// the two passes of its backward; every shard must make the same calls in the same order
/// (they are collectives). Without one, batch_norm_train runs the same per-channel code with
/// nothing to merge: each channel's second pass right after its first, while its values are in
/// cache. Implementations: core/distributed.h (MPI ranks) and test fakes.
class BatchNormReducer {
 public:
  virtual ~BatchNormReducer() = default;
  /// Merges per-channel moments in place: `moments` holds `channels` triples (count, mean, M2)
  /// where M2 is the sum of squared deviations from mean; on return each triple describes the
  /// union of all shards' values (merge_moments order: shard 0 first).
  virtual void merge_moments(double* moments, int64_t channels) = 0;
  /// Sums `n` doubles element-wise over all shards, in place.
  virtual void sum(double* values, int64_t n) = 0;
};
/// Folds moments `b` into `a` (both `channels` triples (count, mean, M2)) with Chan et al.'s
/// pairwise update, so no E[x^2] - E[x]^2 cancellation: M2 = M2a + M2b + d^2 na nb / n.
void merge_moments_into(double* a, const double* b, int64_t channels);
/// Train-mode batch norm, fused: x [N, C] or [N, C, *] normalized per channel over every dim but C
/// with the biased batch variance, eps inside the sqrt; gamma/beta [C] or undefined (no affine).
/// Hand-derived backward to x, gamma and beta (docs/derivations.md). With a `reducer` (SyncBN) the
/// statistics cover every shard's batch (count = all shards' M); dgamma/dbeta stay local sums
/// (the data-parallel gradient average adds them up), dx uses the global sums. Throws unless M > 1
/// (more than 1 value per channel, over all shards under a reducer), as PyTorch; so do the fused
/// and renorm variants below.
BatchNormResult batch_norm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                 float eps,
                                 const std::shared_ptr<BatchNormReducer>& reducer = nullptr);
/// Train-mode batch norm followed by relu, fused: batch_norm_train(x, gamma, beta, eps, reducer)
/// with y = relu(bn(x)) (relu'(0) = 0, NaN passes through), computed without materializing bn(x)
/// or its gradient. Statistics, output and the grads of x, gamma and beta are bit-identical to
/// relu(batch_norm_train(...).y)'s; Sequential runs a training BatchNorm1d/2d + ReLU pair with it.
BatchNormResult batch_norm_relu_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                      float eps,
                                      const std::shared_ptr<BatchNormReducer>& reducer = nullptr);
/// Train-mode batch norm followed by sigmoid, fused: batch_norm_train(x, gamma, beta, eps, reducer)
/// with y = sigmoid(bn(x)), computed without materializing bn(x) or its gradient (the backward
/// takes sigmoid' = y (1 - y) from y). Statistics, output and the grads of x, gamma and beta are
/// bit-identical to sigmoid(batch_norm_train(...).y)'s (a NaN result is NaN in both, its sign
/// unspecified, as IEEE leaves it); Sequential runs a training
/// BatchNorm1d/2d + Sigmoid pair with it (the paper-mlp of Ioffe & Szegedy).
BatchNormResult batch_norm_sigmoid_train(
    const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
    const std::shared_ptr<BatchNormReducer>& reducer = nullptr);
/// batch_norm_relu_train followed by max_pool2d(., 2) (2x2 windows, stride 2, no padding, floor
/// mode), fused: x [N, C, H, W] with H, W >= 2; y = max_pool2d(relu(bn(x)), 2), [N, C, H/2, W/2],
/// with mean, var and count of the whole x. Neither bn(x) nor relu's output is materialized.
/// Statistics, output and the grads of x, gamma and beta are bit-identical to the unfused chain's;
/// Sequential runs a training BatchNorm2d + ReLU + MaxPool2d(2) with it.
BatchNormResult batch_norm_relu_max_pool2x2_train(
    const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
    const std::shared_ptr<BatchNormReducer>& reducer = nullptr);
/// Train-mode batch renormalization (Ioffe 2017): batch_norm_train's statistics (and reducer),
/// then per channel r = clip(sigma_B / sigma, 1/r_max, r_max), d = clip((mu_B - mu) / sigma,
/// -d_max, d_max) against the moving statistics, and y = gamma * (xhat * r + d) + beta. r and d
/// are constants to backward (stop-gradient): dx is batch norm's with gamma * r in place of
/// gamma, dgamma = sum(dy * (xhat * r + d)) (docs/derivations.md, "batch_renorm"). With r_max = 1
/// and d_max = 0 every output and gradient is bit-identical to batch_norm_train's.
BatchNormResult batch_renorm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   float eps, const BatchRenormArgs& renorm,
                                   const std::shared_ptr<BatchNormReducer>& reducer = nullptr);
/// Eval-mode batch norm with given statistics (no grad to the statistics): y = (x -
/// mean)/sqrt(var+eps)*g + b; batch_norm_train's normalize pass and backward, the statistics held
/// constant.
Tensor batch_norm_eval(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                       const Tensor& gamma, const Tensor& beta, float eps);
/// y = scale[c] * x + shift[c] for x [N, C] or [N, C, *], scale/shift [C] constants (they must not
/// require grad; backward goes to x only: dx = scale[c] * dy). Noisy batch norm's injected shift.
Tensor channel_affine(const Tensor& x, const Tensor& scale, const Tensor& shift);
/// Layer norm over the trailing dims `normalized_shape` (as torch.nn.functional.layer_norm);
/// weight/bias of that shape or undefined.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, float eps);
/// Group norm: x [N, C, *] split into `groups` groups of C/groups channels, each normalized over
/// its channels and spatial positions; weight/bias [C] or undefined. Throws when a group holds a
/// single value (C / groups channels x the spatial positions = 1), as PyTorch does.
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias,
                  float eps);

}  // namespace bnlab

// Matrix products through OpenBLAS: matmul with transposes as GEMM flags, and the fused linear
// layer op.
//
// Backward writes straight into the gradient buffers with beta = 1, so accumulation costs no extra
// pass and no temporary. For C = op(A) op(B): dop(A) = dC op(B)^T and dop(B) = op(A)^T dC; when an
// operand was used transposed, its stored gradient is the transpose of that, which is again just a
// flag.
#include <algorithm>
#include <cstring>

#include "core/autograd.h"
#include "core/blas.h"
#include "core/frozen_weights.h"
#include "core/ops.h"

namespace bnlab {

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  BNLAB_CHECK(a.dim() == 2 && b.dim() == 2, "matmul: expects 2-D operands; got ", a.shape(),
              " and ", b.shape());
  int64_t M = trans_a ? a.size(1) : a.size(0);
  int64_t K = trans_a ? a.size(0) : a.size(1);
  int64_t Kb = trans_b ? b.size(1) : b.size(0);
  int64_t N = trans_b ? b.size(0) : b.size(1);
  BNLAB_CHECK(K == Kb, "matmul: inner dimensions differ; ", a.shape(), trans_a ? "^T" : "", " x ",
              b.shape(), trans_b ? "^T" : "", " (", K, " vs ", Kb, ")");
  int64_t lda = a.size(1), ldb = b.size(1);
  Tensor out = Tensor::empty({M, N});
  gemm(trans_a, trans_b, M, N, K, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, out.data(), N);
  if (needs_grad({a, b})) {
    attach(out, "matmul", {a, b}, Reads::crosswise(),
           [=](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             const float* A = in[0].data();
             const float* B = in[1].data();
             const float* dC = dout.data();
             if (float* dA = grad_buffer(in[0])) {
               if (!trans_a) {
                 gemm(false, !trans_b, M, K, N, 1.0f, dC, N, B, ldb, 1.0f, dA, K);  // dC op(B)^T
               } else {
                 gemm(trans_b, true, K, M, N, 1.0f, B, ldb, dC, N, 1.0f, dA, M);  // op(B) dC^T
               }
             }
             if (float* dB = grad_buffer(in[1])) {
               if (!trans_b) {
                 gemm(!trans_a, false, K, N, M, 1.0f, A, lda, dC, N, 1.0f, dB, N);  // op(A)^T dC
               } else {
                 gemm(true, trans_a, N, K, M, 1.0f, dC, N, A, lda, 1.0f, dB, K);  // dC^T op(A)
               }
             }
           });
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  BNLAB_CHECK(x.dim() == 2, "linear: input must be [N, D]; got ", x.shape());
  BNLAB_CHECK(weight.dim() == 2, "linear: weight must be [K, D]; got ", weight.shape());
  int64_t N = x.size(0), D = x.size(1), K = weight.size(0);
  BNLAB_CHECK(weight.size(1) == D, "linear: input has ", D, " features, weight expects ",
              weight.size(1), " (input ", x.shape(), ", weight ", weight.shape(), ")");
  if (bias.defined()) {
    BNLAB_CHECK(bias.shape() == Shape{K}, "linear: bias must be [", K, "]; got ", bias.shape());
  }
  // out [N, K] = x [N, D] @ weight^T [D, K] (+ bias broadcast over rows, pre-filled so GEMM adds
  // onto it)
  Tensor out = Tensor::empty({N, K});
  float* po = out.data();
  if (bias.defined()) {
    const float* pb = bias.data();
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(po + n * K, pb, static_cast<size_t>(K) * sizeof(float));
  }
  const float beta = bias.defined() ? 1.0f : 0.0f;
  if (const PackedB* packed = detail::frozen_packed_transposed(weight)) {
    // Under a FrozenWeightsGuard: the weight packed once, not per batch (the same bits).
    gemm(false, N, 1.0f, x.data(), D, *packed, beta, po, K);
  } else {
    gemm(false, true, N, K, D, 1.0f, x.data(), D, weight.data(), D, beta, po, K);
  }
  if (needs_grad({x, weight, bias})) {
    attach(out, "linear", {x, weight, bias}, Reads::crosswise(),
           [N, D, K](const Tensor&, const Tensor& dout, const std::vector<Tensor>& in) {
             const float* dC = dout.data();
             // A fresh gradient is written by beta 0 (assigned), an existing one added to.
             if (const GradTarget dx = grad_target(in[0])) {
               gemm(false, false, N, D, K, 1.0f, dC, K, in[1].data(), D, dx.beta(), dx.data,
                    D);  // dout W
             }
             if (const GradTarget dw = grad_target(in[1])) {
               gemm(true, false, K, D, N, 1.0f, dC, K, in[0].data(), D, dw.beta(), dw.data,
                    D);  // dout^T x
             }
             if (const GradTarget db = grad_target(in[2])) {
               for (int64_t k = 0; k < K; ++k) db.data[k] = db.fresh ? 0.0f : db.data[k];
               for (int64_t n = 0; n < N; ++n)
                 for (int64_t k = 0; k < K; ++k) db.data[k] += dC[n * K + k];
             }
           });
  }
  return out;
}

}  // namespace bnlab

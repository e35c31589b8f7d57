// Frequency-domain convolution: conv2d's path for stride-1, ungrouped convs on small images with
// large kernels (lenet's 5x5 convs), where each image plane is transformed whole by a 2-D discrete
// Fourier transform and the channel sums become one complex GEMM per frequency
// (core/ops/conv_fourier.cpp; detail, not installed). The rule that picks it is
// core/ops/conv_path.h's.
#pragma once
#include <cstdint>
#include <memory>

namespace bnlab::detail {

/// A stride-1, ungrouped conv: x [N, C, H, W], w [K, C, kh, kw], out [N, K, Ho, Wo] with
/// Ho = H + 2 padding - kh + 1 (likewise Wo).
struct FourierConvShape {
  int64_t N, C, H, W, K, kh, kw, padding, Ho, Wo;
};

/// True when the frequency-domain kernels can compute this conv: stride 1, one group, the padded
/// image at most 32 rows and 31 columns, and the input, output and kernel widths at most 16
/// (each row of a plane is one 16-lane register). Whether they do is conv2d_path's rule.
bool conv2d_fourier_eligible(int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
                             int64_t padding, int64_t groups);

/// Tests: caps the images per chunk (0: no cap beyond the memory budget) and returns the previous
/// cap, so a small batch can take several chunks. Not for use while another thread runs
/// convolutions.
int64_t limit_fourier_chunk(int64_t max_images);

/// What a forward keeps for its backward (training): the weights' spectra and, when the batch
/// was one chunk of images, the images' spectra, so the backward need not transform them again.
/// Opaque; it holds the values of x and w as the forward saw them.
struct FourierSaved;

/// out = conv(x, w) + b (b may be null), through relu when `relu`; with pm, also its planes'
/// plane_moments (core/ops/plane_moments.h), [N * K * 2]. Requires an eligible shape. Returns the
/// spectra for fourier_conv2d_backward when `save`, else null.
std::shared_ptr<FourierSaved> fourier_conv2d_forward(float* out, const float* x, const float* w,
                                                     const float* b, const FourierConvShape& s,
                                                     bool relu = false, bool save = false,
                                                     double* pm = nullptr);

/// dx [N, C, H, W] and dw [K, C, kh, kw] (either may be null: not wanted) from dout
/// [N, K, Ho, Wo]: dx is assigned when dx_fresh (a fresh, unfilled gradient buffer), else added
/// to; dw is added to. `saved` (may be null) is the forward's return for the same x and w. The
/// bias gradient is conv.cpp's, shared by every path.
void fourier_conv2d_backward(float* dx, bool dx_fresh, float* dw, const float* dout, const float* x,
                             const float* w, const FourierConvShape& s,
                             const FourierSaved* saved = nullptr);

}  // namespace bnlab::detail

// Batch norm's first pass on images, the per-(n, c) plane moments, computed by the conv that writes
// the planes (internal; not installed).
//
// Batch norm's statistics on [N, C, H, W] are merged from each plane's own (mean, M2) in the order
// of n (core/ops/norm.cpp). A conv writing its output image by image has each image's planes in
// cache right after writing them; computing their moments there saves batch norm a pass over the
// whole tensor, from memory. Both sides call the one plane_moments below (not inlined), so the
// statistics, and everything computed from them, are bit-identical to batch norm's own.
//
// Used by Conv2d + BatchNorm2d in training (layers/conv2d.cpp): conv2d_with_plane_moments, then
// batch_norm_train_given_planes on its output.
#pragma once
#include <cstdint>
#include <memory>

#include "core/ops.h"

namespace bnlab::detail {

/// pm[2 * i] and pm[2 * i + 1] = the mean and M2 (the sum of squared deviations from that mean,
/// both in double, two passes) of plane i of `planes` contiguous planes of S floats at x.
[[gnu::noinline]] void plane_moments(double* pm, const float* x, int64_t planes, int64_t S);

/// conv2d (conv2d_relu with `relu`), also writing pm [N * K * 2], the plane_moments of the output
/// [N, K, Ho, Wo]'s planes in order, each image's while it is in cache; pm must hold N * K * 2
/// doubles. Same output and backward as conv2d.
Tensor conv2d_with_plane_moments(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 int64_t stride, int64_t padding, int64_t groups, bool relu,
                                 double* pm);

/// What follows batch norm inside its op.
enum class BatchNormThen {
  nothing,           ///< batch_norm_train
  relu,              ///< batch_norm_relu_train
  relu_max_pool2x2,  ///< batch_norm_relu_max_pool2x2_train
  sigmoid,           ///< batch_norm_sigmoid_train
};

/// batch_norm_train / batch_norm_relu_train / batch_norm_relu_max_pool2x2_train /
/// batch_norm_sigmoid_train (by `then`), or
/// batch_renorm_train when renorm is not null, with the per-plane moments of the 4-D x given:
/// pm [N * C * 2] as plane_moments computes them for x's planes (conv2d_with_plane_moments).
/// Results bit-identical to the op computing them itself.
BatchNormResult batch_norm_train_given_planes(const Tensor& x, const Tensor& gamma,
                                              const Tensor& beta, float eps,
                                              const std::shared_ptr<BatchNormReducer>& reducer,
                                              const BatchRenormArgs* renorm, BatchNormThen then,
                                              const double* pm);

}  // namespace bnlab::detail

// Shared by the conv fusion tests (test_conv_relu_fusion.cpp, test_conv_bn_fusion.cpp): one conv
// shape per conv path, each with the mode that sends it there, and bitwise equality of tensors.
#pragma once

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "core/ops/conv_direct.h"
#include "core/ops/conv_path.h"
#include "core/tensor.h"

namespace bnlab::testing {

// Bitwise equality of two tensors' values (NaN == NaN, -0 != +0).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  return std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// A conv x [N, C, H, W] * w [K, C, k, k] that `mode` sends down `path`.
struct ConvCase {
  const char* name;
  Shape x, w;
  int64_t stride, padding;
  detail::ConvPath path;
  detail::ConvPathMode mode;
};

// One case per conv path; direct_data only where the automatic rule picks it (AVX-512F).
inline std::vector<ConvCase> conv_cases() {
  using detail::ConvPath;
  using detail::ConvPathMode;
  std::vector<ConvCase> cases = {
      {"im2col, strided",
       {2, 3, 9, 11},
       {5, 3, 3, 3},
       2,
       1,
       ConvPath::im2col,
       ConvPathMode::automatic},
      {"winograd",
       {2, 32, 9, 10},
       {32, 32, 3, 3},
       1,
       1,
       ConvPath::winograd,
       ConvPathMode::winograd},
      {"direct", {2, 1, 12, 21}, {9, 1, 5, 5}, 1, 2, ConvPath::direct, ConvPathMode::direct},
      {"direct, 3x3", {2, 3, 8, 18}, {10, 3, 3, 3}, 1, 1, ConvPath::direct, ConvPathMode::direct},
      {"fourier", {3, 4, 14, 14}, {6, 4, 5, 5}, 1, 2, ConvPath::fourier, ConvPathMode::fourier},
  };
  // Automatic mode picks the direct forward and dx for a thick 5x5 only with AVX-512F.
  if (detail::direct_conv_isa() == detail::DirectIsa::avx512) {
    cases.push_back({"direct_data",
                     {3, 12, 9, 20},
                     {7, 12, 5, 5},
                     1,
                     2,
                     ConvPath::direct_data,
                     ConvPathMode::automatic});
  }
  return cases;
}

// Requires that c's mode sends c's shape down c's path (the case tests what it names).
inline void require_path(const ConvCase& c) {
  REQUIRE(detail::conv2d_path(c.mode, c.x[1], c.w[0], c.w[2], c.w[3], c.stride, c.padding, 1,
                              c.x[2], c.x[3]) == c.path);
}

}  // namespace bnlab::testing

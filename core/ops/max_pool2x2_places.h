// The 2x2 max-pool kernels' place bytes (internal; not installed): one byte per window, the
// winner's place in it (core/ops/pool.cpp). Shared by the AVX-512F and AVX2 row kernels.
#pragma once

#include <cstdint>
#include <cstring>

namespace bnlab::detail {

// The low n (< 8) bytes of `bytes` to dst, in pieces of 4, 2 and 1: a memcpy of a variable n is a
// library call, and it was 8-15 % of batch norm's pooled forward at lenet's 7-wide rows.
inline void store_low_place_bytes(uint8_t* dst, uint64_t bytes, int64_t n) {
  if (n & 4) {
    const auto v = static_cast<uint32_t>(bytes);
    std::memcpy(dst, &v, 4);
    dst += 4;
    bytes >>= 32;
  }
  if (n & 2) {
    const auto v = static_cast<uint16_t>(bytes);
    std::memcpy(dst, &v, 2);
    dst += 2;
    bytes >>= 16;
  }
  if (n & 1) *dst = static_cast<uint8_t>(bytes);
}

// The inverse: n (< 8) bytes from src as the low bytes of the result, the rest 0, reading no byte
// past src + n.
inline uint64_t load_low_place_bytes(const uint8_t* src, int64_t n) {
  uint64_t bytes = 0;
  int shift = 0;
  if (n & 4) {
    uint32_t v;
    std::memcpy(&v, src, 4);
    src += 4;
    bytes = v;
    shift = 32;
  }
  if (n & 2) {
    uint16_t v;
    std::memcpy(&v, src, 2);
    src += 2;
    bytes |= static_cast<uint64_t>(v) << shift;
    shift += 16;
  }
  if (n & 1) bytes |= static_cast<uint64_t>(*src) << shift;
  return bytes;
}

}  // namespace bnlab::detail

// Guards against a compiler miscompilation seen here: GCC 12.2 with -march=native on an AVX-512 CPU
// filled a 16-float initializer list {1 x12, 0 x4} with sixteen 1s (one vpbroadcastd). The build
// adds -mprefer-vector-width=256, which avoids it; this test fails if that protection is lost.
#include <doctest/doctest.h>

#include <vector>

namespace {
__attribute__((noinline)) float sum_of(const std::vector<float>& v) {
  float s = 0;
  for (float f : v) s += f;
  return s;
}
}  // namespace

TEST_CASE("toolchain: 16-element constant initializer lists keep their values") {
  CHECK(sum_of({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}) == 12.0f);
  CHECK(sum_of({2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0}) == 16.0f);
}

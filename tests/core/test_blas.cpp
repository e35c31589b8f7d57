// The linked BLAS is OpenBLAS's OpenMP build, so it shares OpenMP's threads instead of
// oversubscribing.
#include <doctest/doctest.h>

#include "core/blas.h"

TEST_CASE("blas: linked OpenBLAS reports OpenMP parallelism") {
  CHECK(bnlab::blas_parallel_mode() == "OpenMP");
}

TEST_CASE("blas: thread count is set for OpenMP and OpenBLAS together") {
  int before = bnlab::num_threads();
  bnlab::set_num_threads(1);
  CHECK(bnlab::num_threads() == 1);
  bnlab::set_num_threads(before);
  CHECK(bnlab::num_threads() == before);
}

// Rng: the bulk draws (fill_uniform) are the single draws (uniform) in bulk, state included.
#include <doctest/doctest.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/random.h"

using namespace bnlab;

TEST_CASE("random: fill_uniform gives the values of uniform() and leaves the same state") {
  // Lengths around the 8 chains fill_uniform runs (below, at, just over a multiple) and a long
  // one; two streams, so that the jump-ahead's increment term is tested with more than one inc.
  for (uint64_t stream : {uint64_t{0x14057b7ef767814fULL}, uint64_t{3}}) {
    for (int64_t n : {0, 1, 7, 8, 9, 16, 63, 8195}) {
      CAPTURE(stream);
      CAPTURE(n);
      Rng one(1234, stream), bulk(1234, stream);
      one.uniform();  // start both mid-sequence
      bulk.uniform();
      std::vector<float> expected(static_cast<std::size_t>(n)), got(static_cast<std::size_t>(n));
      for (float& v : expected) v = one.uniform();
      bulk.fill_uniform(got.data(), n);
      int mismatches = 0;
      for (std::size_t i = 0; i < got.size(); ++i)
        mismatches += std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(expected[i]);
      CHECK(mismatches == 0);
      CHECK(bulk.state().state == one.state().state);
      CHECK(bulk.next_u32() == one.next_u32());
    }
  }
}

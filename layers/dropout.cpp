#include "layers/dropout.h"

#include <sstream>

#include "core/ops.h"

namespace bnlab {

Dropout::Dropout(float p, Rng& rng) : p_(p), rng_(&rng) {
  BNLAB_CHECK(p >= 0.0f && p <= 1.0f, "Dropout: p (the drop probability) must be in [0, 1]; got ",
              p);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p_, is_training(), *rng_); }

std::string Dropout::extra_repr() const {
  std::ostringstream os;
  os << "p=" << p_;
  return os.str();
}

}  // namespace bnlab

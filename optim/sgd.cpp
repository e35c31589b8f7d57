// Sgd: torch.optim.SGD's update, one elementwise pass per parameter (see sgd.h for the rule).
//
// Reference: https://pytorch.org/docs/stable/generated/torch.optim.SGD.html
#include "optim/sgd.h"

#include <type_traits>

#include "core/parallel.h"

namespace bnlab {

namespace {
std::vector<std::string> sgd_slots(const SgdOptions& options) {
  if (options.momentum != 0.0f) return {"momentum_buffer"};
  return {};
}
}  // namespace

Sgd::Sgd(std::vector<Tensor> params, SgdOptions options)
    : Sgd(std::vector<ParamGroup>{ParamGroup{std::move(params), options.lr, options.weight_decay}},
          options) {}

Sgd::Sgd(std::vector<ParamGroup> groups, SgdOptions options)
    : Optimizer("sgd", std::move(groups), sgd_slots(options)), options_(options) {
  detail::check_nonnegative("sgd", "momentum", options.momentum);
  detail::check_nonnegative("sgd", "dampening", options.dampening);
  BNLAB_CHECK(!options.nesterov || (options.momentum > 0.0f && options.dampening == 0.0f),
              "sgd: nesterov momentum requires momentum > 0 and dampening == 0; got momentum ",
              options.momentum, ", dampening ", options.dampening);
}

void Sgd::update_param(size_t index, const ParamGroup& group, float* p, const float* g, int64_t n,
                       int64_t step) {
  const float lr = group.lr;
  const float weight_decay = group.weight_decay;
  const float momentum = options_.momentum;
  // Scalars that torch computes in Python (double), rounded once to float.
  const float one_minus_dampening =
      static_cast<float>(1.0 - static_cast<double>(options_.dampening));
  const bool nesterov = options_.nesterov;
  float* buf = momentum != 0.0f ? state(0, index) : nullptr;  // [n] momentum_buffer
  const bool first = step == 1;

  // The momentum buffer's presence as a compile-time constant: with `if (buf)` in the loop, GCC
  // vectorized it with masked loads and stores of buf, which on a null buf made every vector
  // trap into a microcode assist (momentum-free SGD ran 2x slower per paper-mlp step).
  auto update = [&](auto with_buffer) {
    constexpr bool kBuffer = decltype(with_buffer)::value;
    detail::parallel_for(n, n >= detail::kOptimParallelThreshold, [=](int64_t i) {
      float d = g[i];
      // L2 weight decay goes into the gradient (grad.add(param, alpha=weight_decay)), so momentum
      // sees it.
      if (weight_decay != 0.0f) d += weight_decay * p[i];
      if constexpr (kBuffer) {
        // The first update copies the gradient into the buffer, without dampening
        // (torch.clone(grad)).
        if (first) {
          buf[i] = d;
        } else {
          buf[i] *= momentum;
          buf[i] += one_minus_dampening * d;
        }
        d = nesterov ? d + momentum * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    });
  };
  if (buf) {
    update(std::true_type{});
  } else {
    update(std::false_type{});
  }
}

}  // namespace bnlab

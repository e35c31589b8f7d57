// BatchNorm folding into the preceding Dense/Conv2d for inference (see bn_fold.h).
#include "layers/bn_fold.h"

#include <cmath>
#include <set>
#include <string>
#include <typeinfo>
#include <vector>

#include "core/random.h"
#include "layers/activation.h"
#include "layers/batch_norm.h"
#include "layers/conv2d.h"
#include "layers/dense.h"

namespace bnlab {

namespace {

// w_out [K, rest...] and b_out [K] (allocated, the shapes of weight and of a bias) from the layer's
// weight and bias (bias may be undefined) and the BatchNorm's running statistics and affine.
void fold(const Tensor& weight, const Tensor& bias, const BatchNorm& bn, const Tensor& w_out,
          const Tensor& b_out) {
  const int64_t K = weight.size(0);
  const int64_t per_k = weight.numel() / K;
  const float* w = weight.data();
  const float* b = bias.defined() ? bias.data() : nullptr;
  const float* mean = bn.running_mean().data();
  const float* var = bn.running_var().data();
  const float* gamma = bn.weight().defined() ? bn.weight().data() : nullptr;
  const float* beta = bn.bias().defined() ? bn.bias().data() : nullptr;
  const double eps = bn.options().eps;
  float* wf = w_out.data();
  float* bf = b_out.data();
  for (int64_t k = 0; k < K; ++k) {
    // The scale in double, as batch_norm_eval computes rstd; rounded once to float for the GEMM.
    const double s = (gamma ? gamma[k] : 1.0) / std::sqrt(static_cast<double>(var[k]) + eps);
    const float sf = static_cast<float>(s);
    for (int64_t i = 0; i < per_k; ++i) wf[k * per_k + i] = w[k * per_k + i] * sf;
    bf[k] = static_cast<float>(((b ? b[k] : 0.0) - mean[k]) * s + (beta ? beta[k] : 0.0));
  }
}

// The BatchNorm `next` when `layer` + `next` is a foldable pair (bn_fold.h lists the rules; the
// training mode is checked by the caller), else null.
const BatchNorm* foldable(const Module& layer, const Module& next) {
  if (layer.has_forward_hooks() || next.has_forward_hooks()) return nullptr;
  // Exact types: a subclass may compute something else, and the pair is replaced. BatchRenorm1d/2d
  // are listed by name: in eval they are BatchNorm with its running statistics (batch_norm_eval),
  // as the fold assumes; r and d exist only in training, which the caller refuses.
  const std::type_info& bn_type = typeid(next);
  const bool bn1d = bn_type == typeid(BatchNorm1d) || bn_type == typeid(BatchRenorm1d);
  const bool bn2d = bn_type == typeid(BatchNorm2d) || bn_type == typeid(BatchRenorm2d);
  int64_t outputs = 0;
  if (typeid(layer) == typeid(Dense) && bn1d) {
    outputs = static_cast<const Dense&>(layer).options().out_features;
  } else if (typeid(layer) == typeid(Conv2d) && bn2d) {
    outputs = static_cast<const Conv2d&>(layer).options().out_channels;
  } else {
    return nullptr;
  }
  const auto& bn = static_cast<const BatchNorm&>(next);
  // A mismatch is left for the BatchNorm's forward to report. Batch statistics (none tracked, or
  // set_eval_batch_statistics) are no constants to fold.
  if (!bn.options().track_running_stats || bn.eval_batch_statistics() ||
      bn.options().num_features != outputs)
    return nullptr;
  return &bn;
}

// A foldable pair: (*seq)[i] and (*seq)[i + 1]; `path` names seq ("" or "features.").
struct Pair {
  Sequential* seq;
  size_t i;
  std::string path;
};

// Appends the foldable pairs of m and its descendants; `seen` skips a module that appears twice in
// the tree (a shared child), whose pairs must be replaced once.
void find_pairs(Module& m, const std::string& path, std::set<const Module*>* seen,
                std::vector<Pair>* out) {
  if (!seen->insert(&m).second) return;
  if (auto* seq = dynamic_cast<Sequential*>(&m)) {
    for (size_t i = 0; i + 1 < seq->size(); ++i) {
      if (!foldable((*seq)[i], (*seq)[i + 1])) continue;
      out->push_back({seq, i, path});
      ++i;  // the BatchNorm cannot start a pair
    }
  }
  for (const auto& [name, child] : m.children()) find_pairs(*child, path + name + ".", seen, out);
}

// The one layer that computes layer + bn (a foldable pair).
std::shared_ptr<Module> folded(const Module& layer, const BatchNorm& bn) {
  Rng rng(0);  // the constructors' initial weights are overwritten at once
  if (const auto* dense = dynamic_cast<const Dense*>(&layer)) {
    DenseOptions o = dense->options();
    o.bias = true;
    auto out = std::make_shared<Dense>(o, rng);
    fold(dense->weight(), dense->bias(), bn, out->weight(), out->bias());
    return out;
  }
  const auto& conv = dynamic_cast<const Conv2d&>(layer);
  Conv2dOptions o = conv.options();
  o.bias = true;
  auto out = std::make_shared<Conv2d>(o, rng);
  fold(conv.weight(), conv.bias(), bn, out->weight(), out->bias());
  return out;
}

}  // namespace

int64_t fold_batch_norm(Module& model) {
  std::vector<Pair> pairs;
  std::set<const Module*> seen;
  find_pairs(model, "", &seen, &pairs);
  // All pairs are checked before the first is replaced, so a refusal leaves the model as it was.
  for (const Pair& p : pairs) {
    const Module& layer = (*p.seq)[p.i];
    const Module& bn = (*p.seq)[p.i + 1];
    BNLAB_CHECK(!layer.is_training() && !bn.is_training(), "fold_batch_norm: ", p.path, p.i, " (",
                layer.type_name(), ") + ", p.path, p.i + 1, " (", bn.type_name(),
                ") is in training mode; folding bakes in the running statistics that training "
                "updates: call eval() first");
  }
  for (const Pair& p : pairs) {
    const auto& bn = static_cast<const BatchNorm&>((*p.seq)[p.i + 1]);
    p.seq->set(p.i, folded((*p.seq)[p.i], bn));
    p.seq->set(p.i + 1, std::make_shared<Identity>());
  }
  return static_cast<int64_t>(pairs.size());
}

}  // namespace bnlab

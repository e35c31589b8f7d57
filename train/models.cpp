// Model definitions. Layer order for one hidden block with placement "before":
//   Dense/Conv -> Norm -> Activation      ("after": Dense/Conv -> Activation -> Norm)
#include "train/models.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include "optim/adam.h"
#include "optim/rmsprop.h"

namespace bnlab {

namespace {

// The largest group count <= limit that divides `channels` (GroupNorm needs an exact split).
int64_t group_count(int64_t channels, int64_t limit) {
  for (int64_t g = std::min(limit, channels); g > 1; --g)
    if (channels % g == 0) return g;
  return 1;
}

// Where a zoo model puts a normalization: after a conv ([N, C, H, W]); after a dense layer that
// follows convs (lenet's hidden dense layer, [N, C]); after a dense layer of a dense-only model
// ([N, C]). Only instance normalization tells the two dense sites apart.
enum class NormSite { kConv, kDenseAfterConv, kDense };

// The normalizations a model spec can ask for, one row each: the name (--norm, the norm factor,
// config.json) and how to make the layer for `channels` features at `site`; `seed` is this layer's
// own stream for per-step noise (noisy-batch). Adding a normalization to the CLI and to ablations
// is one row here once its layer exists.
struct NormKind {
  const char* name;
  std::shared_ptr<Module> (*make)(const ModelSpec& spec, int64_t channels, NormSite site,
                                  uint64_t seed);
};

const std::vector<NormKind>& norm_kinds() {
  static const std::vector<NormKind> kinds{
      {"none",
       [](const ModelSpec&, int64_t, NormSite, uint64_t) -> std::shared_ptr<Module> {
         return nullptr;
       }},
      {"batch",
       [](const ModelSpec& spec, int64_t channels, NormSite site,
          uint64_t) -> std::shared_ptr<Module> {
         BatchNormOptions o{
             .num_features = channels, .eps = spec.bn_eps, .momentum = spec.bn_momentum};
         if (site == NormSite::kConv) return std::make_shared<BatchNorm2d>(o);
         return std::make_shared<BatchNorm1d>(o);
       }},
      // BatchNorm's layer and running statistics, trained with batch renormalization's r and d on
      // the spec's schedule (docs/ablation.md).
      {"batch-renorm",
       [](const ModelSpec& spec, int64_t channels, NormSite site,
          uint64_t) -> std::shared_ptr<Module> {
         BatchNormOptions o{
             .num_features = channels, .eps = spec.bn_eps, .momentum = spec.bn_momentum};
         BatchRenormOptions renorm{.r_max = spec.renorm_rmax,
                                   .d_max = spec.renorm_dmax,
                                   .warmup = spec.renorm_warmup,
                                   .ramp = spec.renorm_ramp};
         if (site == NormSite::kConv) return std::make_shared<BatchRenorm2d>(o, renorm);
         return std::make_shared<BatchRenorm1d>(o, renorm);
       }},
      // Santurkar et al. 2018's "noisy BN", an experiment tool: BatchNorm with a random mean and
      // variance injected after it, drawn anew every step and per channel (layers/batch_norm.h).
      {"noisy-batch",
       [](const ModelSpec& spec, int64_t channels, NormSite site,
          uint64_t seed) -> std::shared_ptr<Module> {
         BatchNormOptions o{
             .num_features = channels,
             .eps = spec.bn_eps,
             .momentum = spec.bn_momentum,
             .noise = BatchNormNoise{
                 .mean_range = spec.bn_noise_mean, .var_max = spec.bn_noise_var, .seed = seed}};
         if (site == NormSite::kConv) return std::make_shared<BatchNorm2d>(o);
         return std::make_shared<BatchNorm1d>(o);
       }},
      // Dense: over the features. Conv: over (C, H, W) per sample = GroupNorm with one group,
      // which keeps the parameters per channel and the model independent of the spatial size.
      {"layer",
       [](const ModelSpec&, int64_t channels, NormSite site, uint64_t) -> std::shared_ptr<Module> {
         if (site == NormSite::kConv)
           return std::make_shared<GroupNorm>(
               GroupNormOptions{.num_groups = 1, .num_channels = channels});
         return std::make_shared<LayerNorm>(LayerNormOptions{.normalized_shape = {channels}});
       }},
      {"group",
       [](const ModelSpec& spec, int64_t channels, NormSite, uint64_t) -> std::shared_ptr<Module> {
         return std::make_shared<GroupNorm>(GroupNormOptions{
             .num_groups = group_count(channels, spec.groups), .num_channels = channels});
       }},
      // Conv: InstanceNorm2d with affine = true (PyTorch's default is false) so that this arm has
      // a learnable per-channel scale and shift like the others; no running statistics (PyTorch's
      // default), so eval normalizes each image by itself as training does. A dense layer's [N, C]
      // output has one position per channel, which instance normalization maps to 0: lenet's
      // dense layer after its convs stays unnormalized, and a dense-only model is refused.
      {"instance",
       [](const ModelSpec&, int64_t channels, NormSite site, uint64_t) -> std::shared_ptr<Module> {
         if (site == NormSite::kDenseAfterConv) return nullptr;
         BNLAB_CHECK(site == NormSite::kConv,
                     "instance normalization needs spatial positions; --norm instance applies to "
                     "conv models (lenet, cifar-cnn)");
         return std::make_shared<InstanceNorm2d>(
             InstanceNormOptions{.num_features = channels, .affine = true});
       }},
  };
  return kinds;
}

std::shared_ptr<Module> make_norm(const ModelSpec& spec, int64_t channels, NormSite site,
                                  uint64_t seed) {
  for (const NormKind& kind : norm_kinds())
    if (spec.norm == kind.name) return kind.make(spec, channels, site, seed);
  return nullptr;  // build_model has checked the name
}

// Appends norm and activation in the model's spec's order; returns the activation (the probe
// candidate). The norm's noise stream is the model's noise seed mixed with its position in `net`.
Module* add_norm_and_activation(Sequential& net, const Model& model, int64_t channels,
                                NormSite site, std::shared_ptr<Module> activation) {
  const ModelSpec& spec = model.spec;
  auto norm = make_norm(spec, channels, site, mix_seed(model.noise_seed, net.size()));
  if (norm && spec.placement == "before") net.add(norm);
  net.add(activation);
  if (norm && spec.placement == "after") net.add(norm);
  return activation.get();
}

void initialize(const ModelSpec& spec, const std::string& model_default, Sequential& net,
                Rng& rng) {
  std::string scheme = spec.init.empty() ? model_default : spec.init;
  if (scheme == "default") return;  // layers already hold PyTorch's default init
  for (const auto& [name, child] : net.children()) {
    if (auto* d = dynamic_cast<Dense*>(child.get()))
      init::apply_scheme(scheme, d->weight(), d->bias(), rng);
    if (auto* c = dynamic_cast<Conv2d*>(child.get()))
      init::apply_scheme(scheme, c->weight(), c->bias(), rng);
  }
}

}  // namespace

const std::vector<std::string>& norm_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const NormKind& kind : norm_kinds()) v.emplace_back(kind.name);
    return v;
  }();
  return names;
}

namespace {

// The zoo's five models. Each adds its layers to a Sequential and initializes them.
void build_zoo_model(Model& model, Rng& rng) {
  const ModelSpec& spec = model.spec;
  auto seq = std::make_shared<Sequential>();
  model.net = seq;
  Sequential& net = *seq;
  const int64_t D = spec.channels * spec.height * spec.width;
  const int64_t K = spec.num_classes;
  auto dense = [&](int64_t in, int64_t out) {
    net.add(std::make_shared<Dense>(DenseOptions{.in_features = in, .out_features = out}, rng));
  };
  auto conv = [&](int64_t in, int64_t out, int64_t kernel, int64_t padding) {
    net.add(std::make_shared<Conv2d>(
        Conv2dOptions{.in_channels = in, .out_channels = out, .kernel = kernel, .padding = padding},
        rng));
  };
  auto dropout = [&](float default_p) {
    float p = spec.dropout < 0.0f ? default_p : spec.dropout;
    if (p > 0.0f) net.add(std::make_shared<Dropout>(p, *model.dropout_rng));
  };

  // `depth` hidden layers of 100 sigmoid units, then the classifier.
  auto sigmoid_mlp = [&](int depth) {
    net.add(std::make_shared<Flatten>());
    int64_t in = D;
    for (int i = 0; i < depth; ++i) {
      dense(in, 100);
      model.probe =
          add_norm_and_activation(net, model, 100, NormSite::kDense, std::make_shared<Sigmoid>());
      model.probe_width = 100;
      in = 100;
    }
    dropout(0.0f);
    dense(100, K);
  };

  std::string default_init = "default";
  if (spec.name == "paper-mlp") {
    // Ioffe & Szegedy (2015), section 4.1: 3 fully connected hidden layers of 100 sigmoid units,
    // weights from a small random Gaussian; BN (when on) before each nonlinearity.
    default_init = "normal:0.01";
    sigmoid_mlp(3);
  } else if (spec.name == "deep-mlp") {
    // For the gradient-flow question: the paper-mlp's layers four times deeper (12), PyTorch's
    // default init. Without normalization the gradient reaching the first layers shrinks layer by
    // layer (sigmoid' <= 1/4).
    sigmoid_mlp(12);
  } else if (spec.name == "mlp") {
    net.add(std::make_shared<Flatten>());
    dense(D, 512);
    add_norm_and_activation(net, model, 512, NormSite::kDense, std::make_shared<ReLU>());
    dropout(0.0f);
    dense(512, 256);
    model.probe =
        add_norm_and_activation(net, model, 256, NormSite::kDense, std::make_shared<ReLU>());
    model.probe_width = 256;
    dropout(0.0f);
    dense(256, K);
  } else if (spec.name == "lenet") {
    // conv(C->32, 5x5, pad 2) -> pool -> conv(32->64, 5x5, pad 2) -> pool -> dense 128 -> dropout
    // -> dense.
    // Two 2x2 pools leave H/4 x W/4 positions: below 4x4 none, and the Dense layer's error (0
    // features) would name neither the model nor the input.
    BNLAB_CHECK(spec.height >= 4 && spec.width >= 4,
                "model: lenet needs inputs of at least 4x4; got ", spec.height, "x", spec.width);
    conv(spec.channels, 32, 5, 2);
    add_norm_and_activation(net, model, 32, NormSite::kConv, std::make_shared<ReLU>());
    net.add(std::make_shared<MaxPool2d>(2));
    conv(32, 64, 5, 2);
    add_norm_and_activation(net, model, 64, NormSite::kConv, std::make_shared<ReLU>());
    net.add(std::make_shared<MaxPool2d>(2));
    net.add(std::make_shared<Flatten>());
    dense(64 * (spec.height / 4) * (spec.width / 4), 128);
    model.probe = add_norm_and_activation(net, model, 128, NormSite::kDenseAfterConv,
                                          std::make_shared<ReLU>());
    model.probe_width = 128;
    dropout(0.5f);
    dense(128, K);
  } else {  // cifar-cnn: VGG-style, three blocks of two 3x3 convs at 32/64/128 channels.
    int64_t in = spec.channels, h = spec.height, w = spec.width;
    for (int64_t width : {32, 64, 128}) {
      conv(in, width, 3, 1);
      add_norm_and_activation(net, model, width, NormSite::kConv, std::make_shared<ReLU>());
      conv(width, width, 3, 1);
      model.probe =
          add_norm_and_activation(net, model, width, NormSite::kConv, std::make_shared<ReLU>());
      model.probe_width = width;
      net.add(std::make_shared<MaxPool2d>(2));
      in = width;
      h /= 2;
      w /= 2;
    }
    BNLAB_CHECK(h > 0 && w > 0, "model: cifar-cnn needs inputs of at least 8x8; got ", spec.height,
                "x", spec.width);
    net.add(std::make_shared<Flatten>());
    dropout(0.0f);
    dense(128 * h * w, K);
  }
  initialize(spec, default_init, net, rng);
}

// row-rnn: sequential MNIST read a row at a time (issue 15's recurrent question). The image [N, C,
// H, W] is H time steps of C * W pixels; an Elman RNN of 128 tanh units (layers/rnn.h) reads them,
// and its last hidden state goes through Dropout (when on) to a Dense classifier. spec.norm picks
// the RNN's normalization of its pre-activation: none, layer (one LayerNorm shared across steps) or
// batch (one BatchNorm1d per step, H of them: statistics per time step). State dict: rnn.*, fc.*.
class RowRNN : public Module {
 public:
  RowRNN(const ModelSpec& spec, Rng& rng, Rng& dropout_rng) {
    const std::vector<std::string> norms = {"none", "layer", "batch"};
    BNLAB_CHECK(std::find(norms.begin(), norms.end(), spec.norm) != norms.end(),
                "model: row-rnn supports --norm none, layer or batch (of the recurrent "
                "pre-activation); got '",
                spec.norm, "'");
    BNLAB_CHECK(spec.placement == "before",
                "model: row-rnn normalizes the pre-activation, before the tanh; --placement after "
                "does not apply to it");
    RNNNorm norm = spec.norm == "layer"   ? RNNNorm::kLayer
                   : spec.norm == "batch" ? RNNNorm::kBatch
                                          : RNNNorm::kNone;
    rnn_ = register_module(
        "rnn", std::make_shared<RNN>(RNNOptions{.input_size = spec.channels * spec.width,
                                                .hidden_size = kHidden,
                                                .norm = norm,
                                                .steps = spec.height,
                                                .eps = spec.bn_eps,
                                                .momentum = spec.bn_momentum},
                                     rng));
    if (spec.dropout > 0.0f)
      dropout_ = register_module("dropout", std::make_shared<Dropout>(spec.dropout, dropout_rng));
    fc_ = register_module(
        "fc", std::make_shared<Dense>(
                  DenseOptions{.in_features = kHidden, .out_features = spec.num_classes}, rng));
    if (!spec.init.empty() && spec.init != "default") {
      init::apply_scheme(spec.init, rnn_->weight_ih(), rnn_->bias_ih(), rng);
      init::apply_scheme(spec.init, rnn_->weight_hh(), rnn_->bias_hh(), rng);
      init::apply_scheme(spec.init, fc_->weight(), fc_->bias(), rng);
    }
  }

  Tensor forward(const Tensor& x) override {
    BNLAB_CHECK(x.dim() == 4, "row-rnn: expected images [N, C, H, W]; got ", x.shape());
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    // Row h of every channel is time step h: [N, H, C * W].
    Tensor seq = C == 1 ? reshape(x, {N, H, W}) : reshape(permute(x, {0, 2, 1, 3}), {N, H, C * W});
    Tensor last = select((*rnn_)(seq), 1, H - 1);  // [N, hidden]
    if (dropout_) last = (*dropout_)(last);
    return (*fc_)(last);
  }
  std::string type_name() const override { return "RowRNN"; }

  static constexpr int64_t kHidden = 128;

 private:
  std::shared_ptr<RNN> rnn_;
  std::shared_ptr<Dropout> dropout_;
  std::shared_ptr<Dense> fc_;
};

void build_row_rnn(Model& model, Rng& rng) {
  model.net = std::make_shared<RowRNN>(model.spec, rng, *model.dropout_rng);
}

struct Entry {
  std::string name;
  ModelFactory factory;
  float default_lr;
};

struct Registry {
  std::mutex mutex;
  std::vector<Entry> entries;  // in registration order
  Registry() {
    // Default SGD rates: paper-mlp's is the BN paper's Figure 1 setup (docs/ablation.md); for
    // cifar-cnn, lr 0.5 kills the plain network (10 %, chance) while 0.05 trains both arms
    // (issue 15's measurement: .397 without BN, .542 with, 1500 steps); mlp and lenet take common
    // SGD rates for ReLU networks of their size, not tuned values.
    entries.push_back({"paper-mlp", build_zoo_model, 0.5f});
    entries.push_back({"mlp", build_zoo_model, 0.1f});
    entries.push_back({"deep-mlp", build_zoo_model, 0.5f});
    entries.push_back({"lenet", build_zoo_model, 0.05f});
    entries.push_back({"cifar-cnn", build_zoo_model, 0.05f});
    // row-rnn: plain SGD on a tanh RNN explodes above ~0.02 without normalization (MNIST, batch
    // 60, 2000 steps: none .846 at 0.02, .352 at 0.05, .098 at 0.1 with loss 11.6), while layer
    // and batch train at 0.05-0.2; 0.02 is the largest rate tried at which every arm trains.
    entries.push_back({"row-rnn", build_row_rnn, 0.02f});
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i == 0 ? "" : ", ") + v[i];
  return out;
}

}  // namespace

void register_model(const std::string& name, ModelFactory factory, float default_lr) {
  BNLAB_CHECK(!name.empty() && name.find_first_of(",= \t\n/") == std::string::npos,
              "register_model: bad model name '", name,
              "' (it must be non-empty, without spaces, ',', '=' or '/')");
  BNLAB_CHECK(factory != nullptr, "register_model: no factory given for '", name, "'");
  BNLAB_CHECK(std::isfinite(default_lr) && default_lr > 0.0f, "register_model: default_lr of '",
              name, "' must be a positive number, got ", default_lr);
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const Entry& e : r.entries)
    BNLAB_CHECK(e.name != name, "register_model: a model named '", name, "' is registered already");
  r.entries.push_back({name, std::move(factory), default_lr});
}

float default_lr(const std::string& name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const Entry& e : r.entries)
    if (e.name == name) return e.default_lr;
  BNLAB_FAIL("model: unknown model '", name, "'");
}

std::optional<float> optimizer_default_lr(const std::string& optimizer) {
  // torch.optim's defaults, which the options structs hold (optim/adam.h, optim/rmsprop.h); SGD
  // has none (torch.optim.SGD requires lr), so its rate is the model's.
  if (optimizer == "sgd") return std::nullopt;
  if (optimizer == "adam") return AdamOptions{}.lr;
  if (optimizer == "adamw") return AdamWOptions{}.lr;
  if (optimizer == "rmsprop") return RmspropOptions{}.lr;
  BNLAB_FAIL("optimizer: unknown optimizer '", optimizer,
             "'; expected sgd, adam, adamw or rmsprop");
}

float default_lr(const std::string& model, const std::string& optimizer) {
  const float model_lr = default_lr(model);  // checks the name whatever the optimizer
  return optimizer_default_lr(optimizer).value_or(model_lr);
}

ModelSpec with_geometry_of(ModelSpec spec, const ImageDataset& data) {
  spec.channels = data.channels;
  spec.height = data.height;
  spec.width = data.width;
  spec.num_classes = std::max<int64_t>(data.num_classes(), 2);
  return spec;
}

std::vector<std::string> model_names() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> names;
  for (const Entry& e : r.entries) names.push_back(e.name);
  return names;
}

Model build_model(const ModelSpec& spec, Rng& rng) {
  ModelFactory factory;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    for (const Entry& e : r.entries)
      if (e.name == spec.name) factory = e.factory;
  }
  BNLAB_CHECK(factory != nullptr, "model: unknown model '", spec.name, "'; expected one of ",
              join(model_names()));
  const auto& norms = norm_names();
  BNLAB_CHECK(std::find(norms.begin(), norms.end(), spec.norm) != norms.end(),
              "model: unknown norm '", spec.norm, "'; expected one of ", join(norms));
  BNLAB_CHECK(spec.placement == "before" || spec.placement == "after", "model: unknown placement '",
              spec.placement, "'; expected before or after");
  BNLAB_CHECK(spec.channels > 0 && spec.height > 0 && spec.width > 0 && spec.num_classes > 1,
              "model: bad input geometry ", spec.channels, "x", spec.height, "x", spec.width,
              " with ", spec.num_classes, " classes");

  Model model;
  model.spec = spec;
  // Split off first, whatever the factory draws, so dropout masks do not depend on the weights'
  // draws.
  model.dropout_rng = std::make_unique<Rng>(rng.split(0xd40u));
  // split() does not advance rng: the weights stay those of the other arms.
  Rng noise = rng.split(0x5015eu);
  model.noise_seed = (static_cast<uint64_t>(noise.next_u32()) << 32) | noise.next_u32();
  factory(model, rng);
  BNLAB_CHECK(model.net != nullptr, "model: the factory of '", spec.name, "' set no model.net");
  BNLAB_CHECK(model.probe == nullptr || model.probe_width > 0, "model: the factory of '", spec.name,
              "' set a probe layer without its width (probe_width)");
  return model;
}

}  // namespace bnlab

// BatchNorm or not, on a network of your own: the model is a Module defined here, with the
// normalization as a choice; registered by name, it runs through bnlab's experiment machinery
// (matched seeds and initial weights, results.csv, summary.md, accuracy.png) exactly as
// `bnlab ablate` runs the zoo's models.
//
//   custom_ablation DATA_DIR OUT_DIR [--steps N] [--seeds S] [--min-accuracy A]
//
// DATA_DIR holds mnist/ with the four IDX files (bash scripts/fetch_data.sh mnist). Running it
// again reuses the finished runs in OUT_DIR. --min-accuracy makes the program fail (exit 1) unless
// both arms end at test accuracy A or more (scripts/test_install.sh checks it this way).
#include <bnlab/bnlab.h>

#include <cstdlib>
#include <iostream>
#include <string>

using namespace bnlab;
using std::make_shared;

// flatten -> [dense -> norm? -> tanh] x 2 -> dense: the norm is BatchNorm1d when spec.norm is
// "batch", LayerNorm for "layer", nothing for "none". Dense layers are drawn from the Rng in the
// same order in every arm, so the arms start from the same weights.
class TanhNet : public Module {
 public:
  TanhNet(const ModelSpec& spec, Rng& rng) {
    int64_t in = spec.channels * spec.height * spec.width;
    for (int i = 0; i < 2; ++i) {
      std::string n = std::to_string(i + 1);
      fc_[i] = register_module("fc" + n, make_shared<Dense>(DenseOptions{in, 64}, rng));
      if (spec.norm == "batch")
        norm_[i] = register_module(
            "bn" + n, make_shared<BatchNorm1d>(BatchNormOptions{
                          .num_features = 64, .eps = spec.bn_eps, .momentum = spec.bn_momentum}));
      else if (spec.norm == "layer")
        norm_[i] = register_module("ln" + n, make_shared<LayerNorm>(LayerNormOptions{{64}}));
      else if (spec.norm != "none")
        throw Error("tanh-net: norm must be none, batch or layer, got '" + spec.norm + "'");
      act_[i] = register_module("act" + n, make_shared<Tanh>());
      in = 64;
    }
    out_ = register_module("out", make_shared<Dense>(DenseOptions{64, spec.num_classes}, rng));
  }

  Tensor forward(const Tensor& x) override {
    Tensor h = flatten(x);
    for (int i = 0; i < 2; ++i) {
      h = (*fc_[i])(h);
      if (norm_[i]) h = (*norm_[i])(h);
      h = (*act_[i])(h);
    }
    return (*out_)(h);
  }
  std::string type_name() const override { return "TanhNet"; }
  Module* last_activation() const { return act_[1].get(); }

 private:
  std::shared_ptr<Dense> fc_[2], out_;
  std::shared_ptr<Module> norm_[2], act_[2];
};

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: custom_ablation DATA_DIR OUT_DIR [--steps N] [--seeds S] "
                 "[--min-accuracy A]\n";
    return 2;
  }
  int64_t steps = 600, seeds = 1;
  double min_accuracy = -1;
  for (int i = 3; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--steps")
      steps = std::atoll(argv[i + 1]);
    else if (flag == "--seeds")
      seeds = std::atoll(argv[i + 1]);
    else if (flag == "--min-accuracy")
      min_accuracy = std::atof(argv[i + 1]);
    else
      throw Error("unknown flag " + flag);
  }

  Experiment exp(argv[2]);
  // The factory: how the experiment builds the model for one arm. Recording the last activation's
  // input as the probe gives the BN paper's percentile curves (percentiles.png) too.
  exp.model("tanh-net", [](Model& model, Rng& rng) {
    auto net = make_shared<TanhNet>(model.spec, rng);
    model.probe = net->last_activation();
    model.probe_width = 64;
    model.net = net;
  });
  exp.vary("norm", {"none", "batch"}).seeds(seeds).title("TanhNet: BatchNorm or not");
  TrainConfig& base = exp.base();  // what every arm shares
  base.dataset = "mnist";
  base.data_dir = argv[1];
  base.steps = steps;
  base.batch_size = 60;
  base.lr = 0.1f;
  base.eval_every = steps / 6 > 0 ? steps / 6 : 1;

  AblationReport report = exp.run();
  if (report.interrupted_by) return 128 + report.interrupted_by;
  std::cout << report.table << "\nwrote " << report.results_csv << ", " << report.summary_md
            << "\n";
  for (const std::string& m : report.messages) std::cout << m << "\n";

  for (const auto& [arm, accuracy] : report.final_accuracy) {
    if (!(accuracy >= min_accuracy)) {  // NaN: every run of the arm failed
      std::cerr << "custom_ablation: " << arm << " ended at accuracy " << accuracy << ", below "
                << min_accuracy << "\n";
      return 1;
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "custom_ablation: " << e.what() << "\n";
  return 1;
}

// export_for_pytorch: the bnlab half of the PyTorch parity check (tools/compare_pytorch.py,
// docs/pytorch-parity.md). Builds a zoo model, optionally loads a state dict, runs a fixed batch
// through it and writes everything PyTorch needs to redo the same computation and compare:
//
//   export_for_pytorch --model NAME --norm NORM --out DIR [--seed S] [--placement before|after]
//                      [--load STATE.safetensors]
//
// Files written to DIR (safetensors; tensors named as noted):
//   initial_state.safetensors      state_dict before any forward (after --load, if given)
//   input.safetensors              "input" [8, C, H, W] ~ N(0, 1), "labels" [8] (I64)
//   initial_eval_out.safetensors   "logits": eval-mode forward of the initial state (no updates)
//   train_out.safetensors          "logits", "loss": a train-mode forward, its cross entropy
//   after_train_state.safetensors  state_dict after that forward (BatchNorm running stats)
//   eval_out.safetensors           "logits": eval-mode forward after the train-mode one
//   grads.safetensors              d loss / d parameter, under the parameter's state_dict name
//   after_step_state.safetensors   state_dict after one plain SGD step (lr 0.1) with those grads
//
// Models are built with dropout 0 (no Dropout layers at all), so train mode is deterministic and
// the layer names match a torch.nn.Sequential without dropout. cifar-cnn takes 3x32x32 inputs,
// the others 1x28x28; 10 classes.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/serialize.h"
#include "optim/sgd.h"
#include "train/models.h"

namespace {

using namespace bnlab;

constexpr int64_t kBatch = 8;
constexpr float kSgdLr = 0.1f;

struct Args {
  std::string model, norm = "none", placement = "before", out, load;
  uint64_t seed = 0;
};

void usage(std::ostream& os) {
  os << "usage: export_for_pytorch --model NAME --norm NORM --out DIR [--seed S]\n"
        "                          [--placement before|after] [--load STATE.safetensors]\n"
        "  NAME: paper-mlp | mlp | lenet | cifar-cnn; NORM: none | batch | layer | group | "
        "instance\n";
}

// Returns false (after printing why) on a bad command line.
bool parse_args(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      usage(std::cout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::cerr << "export_for_pytorch: " << flag << " needs a value (or is unknown)\n";
      return false;
    }
    std::string value = argv[++i];
    if (flag == "--model") {
      a->model = value;
    } else if (flag == "--norm") {
      a->norm = value;
    } else if (flag == "--placement") {
      a->placement = value;
    } else if (flag == "--out") {
      a->out = value;
    } else if (flag == "--load") {
      a->load = value;
    } else if (flag == "--seed") {
      char* end = nullptr;
      a->seed = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0') {
        std::cerr << "export_for_pytorch: --seed expects a non-negative integer; got '" << value
                  << "'\n";
        return false;
      }
    } else {
      std::cerr << "export_for_pytorch: unknown flag " << flag << "\n";
      return false;
    }
  }
  if (a->model.empty() || a->out.empty()) {
    std::cerr << "export_for_pytorch: --model and --out are required\n";
    return false;
  }
  return true;
}

std::vector<NamedTensor> named(const Module::NamedTensors& tensors) {
  std::vector<NamedTensor> out;
  for (const auto& [name, t] : tensors) out.push_back({name, t, DType::F32});
  return out;
}

int run(const Args& args) {
  ModelSpec spec;
  spec.name = args.model;
  spec.norm = args.norm;
  spec.placement = args.placement;
  spec.dropout = 0.0f;
  if (spec.name == "cifar-cnn") {
    spec.channels = 3;
    spec.height = spec.width = 32;
  }
  Rng rng(args.seed);
  Model model = build_model(spec, rng);
  Sequential& net = dynamic_cast<Sequential&>(*model.net);  // the zoo builds Sequentials
  if (!args.load.empty()) net.load_state_dict(load_safetensors(args.load).tensors, /*strict=*/true);

  const std::filesystem::path dir(args.out);
  std::filesystem::create_directories(dir);
  auto path = [&](const char* file) { return (dir / file).string(); };
  const Metadata meta{{"model", spec.name},
                      {"norm", spec.norm},
                      {"placement", spec.placement},
                      {"seed", std::to_string(args.seed)},
                      {"loaded", args.load.empty() ? "no" : "yes"}};

  // The fixed batch, from its own stream so it does not depend on the model's draws.
  Rng data_rng(args.seed, 0xda7a);
  Tensor x = Tensor::normal({kBatch, spec.channels, spec.height, spec.width}, data_rng);
  std::vector<int64_t> labels;
  std::vector<float> label_values;
  for (int64_t i = 0; i < kBatch; ++i) {
    labels.push_back(data_rng.below(static_cast<uint32_t>(spec.num_classes)));
    label_values.push_back(static_cast<float>(labels.back()));
  }
  Tensor label_tensor = Tensor::from(label_values, {kBatch});

  save_safetensors(path("initial_state.safetensors"), net.state_dict(), meta);
  save_safetensors(path("input.safetensors"),
                   {{"input", x, DType::F32}, {"labels", label_tensor, DType::I64}}, meta);

  {  // Eval mode on the initial (possibly loaded) state: BatchNorm uses the running stats as given.
    NoGradGuard no_grad;
    net.eval();
    save_safetensors(path("initial_eval_out.safetensors"), {{"logits", net(x), DType::F32}}, meta);
  }

  net.train();
  Tensor logits = net(x);
  Tensor loss = cross_entropy(logits, labels);
  save_safetensors(path("train_out.safetensors"),
                   {{"logits", logits.detach(), DType::F32}, {"loss", loss.detach(), DType::F32}},
                   meta);
  save_safetensors(path("after_train_state.safetensors"), net.state_dict(), meta);

  {
    NoGradGuard no_grad;
    net.eval();
    save_safetensors(path("eval_out.safetensors"), {{"logits", net(x), DType::F32}}, meta);
  }

  loss.backward();
  Module::NamedTensors grads;
  for (const auto& [name, p] : net.named_parameters()) {
    BNLAB_CHECK(p.has_grad(), "export_for_pytorch: parameter ", name, " received no gradient");
    grads.emplace_back(name, p.grad());
  }
  save_safetensors(path("grads.safetensors"), named(grads), meta);

  Sgd sgd(net.parameters(), SgdOptions{.lr = kSgdLr});
  sgd.step();
  save_safetensors(path("after_step_state.safetensors"), net.state_dict(), meta);

  std::cout << "export_for_pytorch: " << spec.name << " norm " << spec.norm << " seed " << args.seed
            << (args.load.empty() ? "" : " loaded " + args.load) << ": loss " << loss.item()
            << ", wrote " << dir.string() << "/\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!parse_args(argc, argv, &args)) {
    usage(std::cerr);
    return 2;
  }
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::cerr << "export_for_pytorch: " << e.what() << "\n";
    return 1;
  }
}

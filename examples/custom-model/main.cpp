// A model of your own on top of an installed bnlab: a small residual network with BatchNorm,
// defined as your own Modules, trained on MNIST for a few steps, evaluated, saved to a safetensors
// checkpoint, reloaded into a freshly initialized model and evaluated again. The program fails
// (exit 1) unless the reloaded model gives the same accuracy and the same outputs bit for bit.
//
//   custom_model DATA_DIR [--steps N] [--batch-size B] [--lr LR] [--checkpoint FILE]
//                [--min-accuracy A]
//
// DATA_DIR holds mnist/ with the four IDX files (as bash scripts/fetch_data.sh mnist leaves them in
// data/). --min-accuracy makes a run that learned less than A on the test set fail too, which is
// how scripts/test_install.sh checks that training works in an installed bnlab. The guide
// (docs/guide/README.md) explains each step.
#include <bnlab/bnlab.h>

#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

using namespace bnlab;
using std::make_shared;

// out = relu(x + bn2(conv2(relu(bn1(conv1(x)))))): He et al. (2016)'s basic block, channels and
// size kept, so the skip connection is a plain add. Its children are registered by name, which is
// what makes parameters() find their weights, train()/eval() reach the BatchNorms and state_dict()
// name the tensors "conv1.weight", "bn1.running_mean", ... as the same PyTorch module would.
class ResidualBlock : public Module {
 public:
  ResidualBlock(int64_t channels, Rng& rng) {
    // No conv bias: the BatchNorm right after each conv subtracts it and adds its own beta.
    Conv2dOptions conv{
        .in_channels = channels, .out_channels = channels, .padding = 1, .bias = false};
    conv1_ = register_module("conv1", make_shared<Conv2d>(conv, rng));
    bn1_ = register_module("bn1",
                           make_shared<BatchNorm2d>(BatchNormOptions{.num_features = channels}));
    conv2_ = register_module("conv2", make_shared<Conv2d>(conv, rng));
    bn2_ = register_module("bn2",
                           make_shared<BatchNorm2d>(BatchNormOptions{.num_features = channels}));
  }

  // x: [N, C, H, W] -> [N, C, H, W]. Children are called as (*child)(x): operator() also runs the
  // forward hooks summary() relies on.
  Tensor forward(const Tensor& x) override {
    Tensor h = relu((*bn1_)((*conv1_)(x)));
    h = (*bn2_)((*conv2_)(h));
    return relu(x + h);  // the skip: gradients flow through the add to both branches
  }
  std::string type_name() const override { return "ResidualBlock"; }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
};

// [N, 1, 28, 28] -> stem conv + BN -> pool to 14x14 -> residual block -> pool to 7x7 -> Dense ->
// [N, 10]
class Net : public Module {
 public:
  explicit Net(Rng& rng) {  // the Rng draws the initial weights: same seed, same model
    stem_ = register_module(
        "stem",
        make_shared<Conv2d>(
            Conv2dOptions{.in_channels = 1, .out_channels = 8, .padding = 1, .bias = false}, rng));
    bn_ = register_module("bn", make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 8}));
    block_ = register_module("block", make_shared<ResidualBlock>(8, rng));
    fc_ = register_module("fc", make_shared<Dense>(DenseOptions{8 * 7 * 7, 10}, rng));
  }

  Tensor forward(const Tensor& x) override {
    Tensor h = max_pool2d(relu((*bn_)((*stem_)(x))), 2);  // [N, 8, 14, 14]
    h = max_pool2d((*block_)(h), 2);                      // [N, 8, 7, 7]
    return (*fc_)(flatten(h));                            // logits [N, 10]
  }
  std::string type_name() const override { return "Net"; }

 private:
  std::shared_ptr<Conv2d> stem_;
  std::shared_ptr<BatchNorm2d> bn_;
  std::shared_ptr<ResidualBlock> block_;
  std::shared_ptr<Dense> fc_;
};

// Test-set accuracy in eval mode (BatchNorm uses its running statistics), without recording a
// graph.
double accuracy(Net& model, const ImageDataset& test, const NormalizeOptions& norm) {
  model.eval();
  NoGradGuard no_grad;
  DataLoader loader(test, {.batch_size = 500, .shuffle = false, .normalize = norm});
  int64_t correct = 0;
  Batch batch;
  while (loader.next(batch)) {
    std::vector<int64_t> pred = argmax(model(batch.images), 1);
    for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == batch.labels[i];
  }
  return static_cast<double>(correct) / static_cast<double>(test.size());
}

struct Args {
  std::string data_dir;
  int64_t steps = 100;
  int64_t batch_size = 64;
  float lr = 0.02f;
  std::string checkpoint;
  double min_accuracy = 0.0;
};

Args parse_args(int argc, char** argv) {
  const char* usage =
      "usage: custom_model DATA_DIR [--steps N] [--batch-size B] [--lr LR] [--checkpoint FILE] "
      "[--min-accuracy A]\n  DATA_DIR holds mnist/ (bash scripts/fetch_data.sh mnist)";
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(arg + " needs a value\n" + usage);
      return argv[++i];
    };
    if (arg == "--steps") {
      a.steps = std::stoll(value());
    } else if (arg == "--lr") {
      a.lr = std::stof(value());
    } else if (arg == "--batch-size") {
      a.batch_size = std::stoll(value());
    } else if (arg == "--checkpoint") {
      a.checkpoint = value();
    } else if (arg == "--min-accuracy") {
      a.min_accuracy = std::stod(value());
    } else if (arg == "-h" || arg == "--help") {
      std::cout << usage << "\n";
      std::exit(0);
    } else if (a.data_dir.empty() && arg.rfind("--", 0) != 0) {
      a.data_dir = arg;
    } else {
      throw Error("unknown argument " + arg + "\n" + usage);
    }
  }
  if (a.data_dir.empty()) throw Error(std::string("missing DATA_DIR\n") + usage);
  if (a.steps < 1 || a.batch_size < 2 || !(a.lr > 0.0f))
    throw Error("--steps must be >= 1, --batch-size >= 2 (BatchNorm needs 2 images), --lr > 0");
  if (a.checkpoint.empty())
    a.checkpoint = (std::filesystem::temp_directory_path() / "custom_model.safetensors").string();
  return a;
}

int main(int argc, char** argv) try {
  Args args = parse_args(argc, argv);

  // 1. Data: uint8 images in memory; the loader makes normalized float batches [N, 1, 28, 28].
  ImageDataset train = load_dataset("mnist", "train", args.data_dir);
  ImageDataset test = load_dataset("mnist", "test", args.data_dir);
  NormalizeOptions norm = standard_normalization("mnist");  // mean 0.1307, std 0.3081
  std::cout << "data: " << train.size() << " training and " << test.size() << " test images from "
            << args.data_dir << "\n";

  // 2. Model and optimizer.
  Rng rng(42);
  Net model(rng);
  std::cout << summary(model, {1, 1, 28, 28}) << std::fixed << std::setprecision(4);
  Sgd opt(model.parameters(), SgdOptions{.lr = args.lr, .momentum = 0.9f});

  // 3. Training. drop_last keeps every batch full-sized (BatchNorm's statistics need a batch).
  DataLoader loader(
      train, {.batch_size = args.batch_size, .drop_last = true, .seed = 1, .normalize = norm});
  model.train();
  Batch batch;
  for (int64_t step = 1, epoch = 0; step <= args.steps; ++step) {
    if (!loader.next(batch)) {  // the epoch is over: the next one, in a new shuffled order
      loader.start_epoch(++epoch);
      if (!loader.next(batch)) throw Error("fewer training images than --batch-size");
    }
    Tensor loss = cross_entropy(model(batch.images), batch.labels);
    opt.zero_grad();  // gradients accumulate across backward() calls until cleared
    loss.backward();
    opt.step();
    if (step % 10 == 0 || step == args.steps)
      std::cout << "step " << step << "  loss " << loss.item() << "\n";
  }

  // 4. Evaluation.
  double acc = accuracy(model, test, norm);
  std::cout << "test accuracy: " << acc << "\n";

  // 5. Checkpoint: state_dict() holds the parameters AND the buffers (BatchNorm's running
  // statistics) under PyTorch's names; save_safetensors writes it atomically.
  save_safetensors(args.checkpoint, model.state_dict(), {{"steps", std::to_string(args.steps)}});
  Rng other_rng(7);  // different initial weights: only the load can make the two models agree
  Net fresh(other_rng);
  fresh.load_state_dict(load_safetensors(args.checkpoint).tensors);  // strict: every key and shape
  double reloaded_acc = accuracy(fresh, test, norm);
  std::cout << "saved " << args.checkpoint << " (" << model.state_dict().size()
            << " tensors); reloaded model's test accuracy: " << reloaded_acc << "\n";

  // The same outputs bit for bit on a test batch, not just the same accuracy.
  DataLoader probe_loader(test, {.batch_size = 64, .shuffle = false, .normalize = norm});
  probe_loader.next(batch);
  bool same_outputs;
  {
    NoGradGuard no_grad;
    same_outputs = model(batch.images).to_vector() == fresh(batch.images).to_vector();
  }
  if (reloaded_acc != acc || !same_outputs) {
    std::cerr << "error: the reloaded model differs from the saved one\n";
    return 1;
  }
  if (acc < args.min_accuracy) {
    std::cerr << "error: test accuracy " << acc << " is below --min-accuracy " << args.min_accuracy
              << "\n";
    return 1;
  }
  std::cout << "reload: same accuracy and identical outputs\n";
  return 0;
} catch (const std::exception& e) {  // bnlab reports bad input as bnlab::Error with a clear message
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}

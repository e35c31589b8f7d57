// A ResNet-style network written against the installed bnlab, trained on CIFAR-10 for a few hundred
// steps: residual blocks (conv-BN-ReLU-conv-BN plus an identity or a 1x1-projection shortcut),
// global average pooling (AdaptiveAvgPool2d) and a Dense head, as torchvision's ResNet with one
// BasicBlock per stage and widths 16/32/64 (He et al., 2016, "Deep Residual Learning for Image
// Recognition", section 4.2, the CIFAR variant).
//
//   resnet_cifar [DATA_DIR] [--steps N] [--batch-size B] [--lr LR] [--eval-images M]
//                [--synthetic] [--min-accuracy A]
//
// Data: CIFAR-10 from DATA_DIR/cifar-10 (without DATA_DIR, bnlab's usual data directory:
// $BNLAB_DATA,
// ./data, then ~/.local/share/bnlab; bash scripts/fetch_data.sh cifar10 downloads it). If it is not
// there (or with --synthetic) the program writes a small generated dataset in the CIFAR-10 binary
// format and trains on that instead, so it runs anywhere; it prints which one it used. The
// generated images have a learnable signal (each class is an oriented stripe pattern in one colour
// at a random phase, under noise), so accuracy must rise far above chance (10%) either way.
// --min-accuracy makes the program fail (exit 1) below A, which is how scripts/test_install.sh
// checks training through the installed library. Everything is seeded: the same command and thread
// count print the same numbers.
#include <bnlab/bnlab.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <numbers>
#include <string>
#include <vector>

using namespace bnlab;
using std::make_shared;

// The basic block: out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)). When the block
// changes the channel count or the resolution, the shortcut is a strided 1x1 conv + BN (PyTorch's
// "downsample"), else the identity. The child names match torchvision's BasicBlock, so a PyTorch
// twin of this model loads the state_dict unchanged.
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride, Rng& rng) {
    // No conv biases: each conv is followed by a BatchNorm, whose beta plays that role.
    conv1_ = register_module("conv1", make_shared<Conv2d>(Conv2dOptions{.in_channels = in,
                                                                        .out_channels = out,
                                                                        .stride = stride,
                                                                        .padding = 1,
                                                                        .bias = false},
                                                          rng));
    bn1_ = register_module("bn1", make_shared<BatchNorm2d>(BatchNormOptions{.num_features = out}));
    conv2_ = register_module(
        "conv2",
        make_shared<Conv2d>(
            Conv2dOptions{.in_channels = out, .out_channels = out, .padding = 1, .bias = false},
            rng));
    bn2_ = register_module("bn2", make_shared<BatchNorm2d>(BatchNormOptions{.num_features = out}));
    if (stride != 1 || in != out) {
      auto down = make_shared<Sequential>();
      down->add(make_shared<Conv2d>(
          Conv2dOptions{
              .in_channels = in, .out_channels = out, .kernel = 1, .stride = stride, .bias = false},
          rng));
      down->add(make_shared<BatchNorm2d>(BatchNormOptions{.num_features = out}));
      downsample_ = register_module("downsample", down);
    }
  }

  // x: [N, in, H, W] -> [N, out, H / stride, W / stride]
  Tensor forward(const Tensor& x) override {
    Tensor h = relu((*bn1_)((*conv1_)(x)));
    h = (*bn2_)((*conv2_)(h));
    Tensor skip = downsample_ ? (*downsample_)(x) : x;
    return relu(h + skip);  // gradients flow through the add into both paths
  }
  std::string type_name() const override { return "BasicBlock"; }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Sequential> downsample_;  // null: identity shortcut
};

// [N, 3, 32, 32] -> stem conv-BN-ReLU (16 ch) -> layer1 (16, 32x32) -> layer2 (32, 16x16) ->
// layer3 (64, 8x8) -> global average pool [N, 64, 1, 1] -> flatten -> fc -> logits [N, 10]
class ResNet : public Module {
 public:
  ResNet(int64_t num_classes, Rng& rng) {
    conv1_ = register_module(
        "conv1",
        make_shared<Conv2d>(
            Conv2dOptions{.in_channels = 3, .out_channels = 16, .padding = 1, .bias = false}, rng));
    bn1_ = register_module("bn1", make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 16}));
    layer1_ = register_module("layer1", make_shared<BasicBlock>(16, 16, 1, rng));
    layer2_ = register_module("layer2", make_shared<BasicBlock>(16, 32, 2, rng));
    layer3_ = register_module("layer3", make_shared<BasicBlock>(32, 64, 2, rng));
    avgpool_ = register_module("avgpool", make_shared<AdaptiveAvgPool2d>(1));
    fc_ = register_module("fc", make_shared<Dense>(DenseOptions{64, num_classes}, rng));
  }

  Tensor forward(const Tensor& x) override {
    Tensor h = relu((*bn1_)((*conv1_)(x)));
    h = (*layer3_)((*layer2_)((*layer1_)(h)));
    return (*fc_)(flatten((*avgpool_)(h)));  // [N, 64, 1, 1] -> [N, 64] -> [N, classes]
  }
  std::string type_name() const override { return "ResNet"; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<BasicBlock> layer1_, layer2_, layer3_;
  std::shared_ptr<AdaptiveAvgPool2d> avgpool_;
  std::shared_ptr<Dense> fc_;
};

// Writes `count` CIFAR-10 records (label byte + 3 x 32 x 32 pixel bytes, R then G then B planes)
// with a learnable signal: class k draws stripes of orientation k % 5 (horizontal, vertical, two
// diagonals, a checkerboard) in colour k / 5 (warm or cool) at a random phase, over uniform noise.
void write_synthetic_cifar(const std::string& path, int64_t count, uint64_t seed) {
  Rng rng(seed);
  std::vector<char> bytes(static_cast<size_t>(count) * 3073);
  for (int64_t r = 0; r < count; ++r) {
    char* rec = bytes.data() + r * 3073;
    const int k = static_cast<int>(rng.below(10));
    rec[0] = static_cast<char>(k);
    const int orientation = k % 5;
    const int phase = static_cast<int>(rng.below(4));
    const float tint[2][3] = {{1.0f, 0.6f, 0.2f}, {0.2f, 0.6f, 1.0f}};  // warm, cool
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 32; ++y) {
        for (int x = 0; x < 32; ++x) {
          const int t = orientation == 0   ? y
                        : orientation == 1 ? x
                        : orientation == 2 ? x + y
                        : orientation == 3 ? x - y + 32
                                           : (x / 4 + y / 4) * 2;
          const float stripe = ((t + phase) / 2) % 2 == 0 ? 1.0f : -1.0f;
          const float v = 128.0f + 90.0f * rng.uniform() - 45.0f + 20.0f * stripe * tint[k / 5][c];
          rec[1 + c * 1024 + y * 32 + x] =
              static_cast<char>(static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f)));
        }
      }
    }
  }
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw Error("cannot write " + path);
}

// Accuracy in eval mode (BatchNorm uses its running statistics) without recording a graph.
double accuracy(ResNet& model, const ImageDataset& data, const NormalizeOptions& norm) {
  model.eval();
  NoGradGuard no_grad;
  DataLoader loader(data, {.batch_size = 250, .shuffle = false, .normalize = norm});
  int64_t correct = 0;
  Batch batch;
  while (loader.next(batch)) {
    std::vector<int64_t> pred = model(batch.images).argmax(1);  // int64 indices, as PyTorch's
    for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == batch.labels[i];
  }
  model.train();
  return static_cast<double>(correct) / static_cast<double>(data.size());
}

struct Args {
  std::string data_dir;  // "" = bnlab's default data directory
  int64_t steps = 300;
  int64_t batch_size = 32;
  float lr = 0.05f;
  int64_t eval_images = 1000;
  bool synthetic = false;
  double min_accuracy = 0.0;
};

Args parse_args(int argc, char** argv) {
  const char* usage =
      "usage: resnet_cifar [DATA_DIR] [--steps N] [--batch-size B] [--lr LR] [--eval-images M] "
      "[--synthetic] [--min-accuracy A]\n  DATA_DIR holds cifar-10/ (bash scripts/fetch_data.sh "
      "cifar10); without it, generated CIFAR-format data is used";
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(arg + " needs a value\n" + usage);
      return argv[++i];
    };
    if (arg == "--steps") {
      a.steps = std::stoll(value());
    } else if (arg == "--batch-size") {
      a.batch_size = std::stoll(value());
    } else if (arg == "--lr") {
      a.lr = std::stof(value());
    } else if (arg == "--eval-images") {
      a.eval_images = std::stoll(value());
    } else if (arg == "--synthetic") {
      a.synthetic = true;
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
  if (a.steps < 1 || a.batch_size < 2 || !(a.lr > 0.0f) || a.eval_images < 1)
    throw Error("--steps and --eval-images must be >= 1, --batch-size >= 2, --lr > 0");
  return a;
}

// The first `count` images of `data` (all of them if it has fewer).
ImageDataset first(const ImageDataset& data, int64_t count) {
  std::vector<int64_t> idx(static_cast<size_t>(std::min(count, data.size())));
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  return subset(data, idx, data.split);
}

int main(int argc, char** argv) try {
  Args args = parse_args(argc, argv);

  // 1. Data: real CIFAR-10 if bnlab finds it, else generated records in the same binary format.
  ImageDataset train, test;
  DataDir dir = find_data_dir(args.data_dir);
  bool real = false;
  if (!args.synthetic) {
    try {
      train = load_dataset("cifar10", "train", dir.path);  // data_batch_1-4
      test = load_dataset("cifar10", "test", dir.path);    // test_batch, or test_first1000
      real = true;
    } catch (const Error& e) {
      std::cout << "no CIFAR-10 here (" << e.what() << ")\n";
    }
  }
  if (real) {
    std::cout << "data: real CIFAR-10 from " << dir.path << "/cifar-10: " << train.size()
              << " training images, " << test.title() << "\n";
  } else {
    const std::string gen = (std::filesystem::temp_directory_path() /
                             ("resnet_cifar_synthetic_" + std::to_string(::getpid())))
                                .string();
    std::filesystem::create_directories(gen);
    write_synthetic_cifar(gen + "/train.bin", 8000, 1);
    write_synthetic_cifar(gen + "/test.bin", 1000, 2);
    train = read_cifar_batches({gen + "/train.bin"}, CifarLayout::kCifar10, "synthetic-cifar10",
                               "train");
    test =
        read_cifar_batches({gen + "/test.bin"}, CifarLayout::kCifar10, "synthetic-cifar10", "test");
    std::filesystem::remove_all(gen);
    std::cout << "data: synthetic CIFAR-format images (generated, learnable stripes): "
              << train.size() << " training, " << test.size() << " test\n";
  }
  test = first(test, args.eval_images);
  NormalizeOptions norm = standard_normalization("cifar10");

  // 2. Model and optimizer: SGD with momentum and weight decay, the learning rate cosine-annealed.
  Rng rng(42);
  ResNet model(10, rng);
  std::cout << summary(model, {1, 3, 32, 32}) << std::fixed << std::setprecision(4);
  Sgd opt(model.parameters(),
          SgdOptions{.lr = args.lr, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = true});

  // 3. Training; drop_last keeps every batch full-sized for BatchNorm.
  DataLoader loader(
      train, {.batch_size = args.batch_size, .drop_last = true, .seed = 1, .normalize = norm});
  model.train();
  auto start = std::chrono::steady_clock::now();
  Batch batch;
  double running_loss = 0.0;
  for (int64_t step = 1, epoch = 0; step <= args.steps; ++step) {
    if (!loader.next(batch)) {
      loader.start_epoch(++epoch);
      if (!loader.next(batch)) throw Error("fewer training images than --batch-size");
    }
    opt.set_lr(static_cast<float>(args.lr * 0.5 *
                                  (1.0 + std::cos(std::numbers::pi * static_cast<double>(step - 1) /
                                                  static_cast<double>(args.steps)))));
    Tensor loss = cross_entropy(model(batch.images), batch.labels);
    opt.zero_grad();
    loss.backward();
    opt.step();
    running_loss += loss.item();
    if (step % 50 == 0 || step == args.steps) {
      std::cout << "step " << step << "  loss " << running_loss / (step % 50 ? step % 50 : 50)
                << "\n";
      running_loss = 0.0;
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // 4. Evaluation.
  double acc = accuracy(model, test, norm);
  std::cout << "accuracy on " << test.size() << " " << test.title() << " images after "
            << args.steps << " steps of " << args.batch_size << ": " << acc
            << " (chance 0.1); training took " << std::setprecision(1) << seconds << " s\n";
  if (acc < args.min_accuracy) {
    std::cerr << "error: accuracy " << acc << " is below --min-accuracy " << args.min_accuracy
              << "\n";
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}

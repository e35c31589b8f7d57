// A custom model in C++: define a small CNN with BatchNorm as your own Module, train it with SGD,
// evaluate it, save it to a safetensors file and load it back into a fresh model.
//
// Build and run (from the repository root):
//   cmake -S . -B build && cmake --build build -j --target custom_model
//   BNLAB_DATA=/path/to/data build/apps/examples/custom_model
// It trains on MNIST if $BNLAB_DATA/mnist (or ./data/mnist) holds the IDX files, and otherwise on a
// synthetic dataset it generates, so it always runs. docs/custom-model.md walks through it.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "core/autograd.h"   // NoGradGuard
#include "core/ops.h"        // cross_entropy, argmax
#include "core/serialize.h"  // save_safetensors, load_safetensors
#include "data/data_loader.h"
#include "data/datasets.h"  // load_dataset, resolve_data_dir, standard_normalization
#include "layers/layers.h"
#include "optim/optim.h"

using namespace bnlab;

// Every child is registered by name in the constructor: that is what makes parameters() find the
// weights, train()/eval() reach the BatchNorms, and state_dict() name tensors "conv1.weight",
// "bn1.running_mean", ... exactly as the same PyTorch module would.
class Net : public Module {
 public:
  explicit Net(Rng& rng) {  // the Rng draws the initial weights: same seed, same model
    conv1 = register_module(
        "conv1",
        std::make_shared<Conv2d>(
            Conv2dOptions{
                .in_channels = 1, .out_channels = 8, .kernel = 3, .padding = 1, .bias = false},
            rng));  // no bias: the BatchNorm after it has its own
    bn1 =
        register_module("bn1", std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 8}));
    relu1 = register_module("relu1", std::make_shared<ReLU>());
    pool1 = register_module("pool1", std::make_shared<MaxPool2d>(2));  // 28x28 -> 14x14
    conv2 = register_module(
        "conv2",
        std::make_shared<Conv2d>(
            Conv2dOptions{
                .in_channels = 8, .out_channels = 16, .kernel = 3, .padding = 1, .bias = false},
            rng));
    bn2 =
        register_module("bn2", std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 16}));
    relu2 = register_module("relu2", std::make_shared<ReLU>());
    pool2 = register_module("pool2", std::make_shared<MaxPool2d>(2));  // 14x14 -> 7x7
    flatten = register_module("flatten", std::make_shared<Flatten>());
    fc = register_module(
        "fc",
        std::make_shared<Dense>(DenseOptions{.in_features = 16 * 7 * 7, .out_features = 10}, rng));
  }

  // Call children as (*child)(x), not child->forward(x): operator() also runs forward hooks, which
  // summary() uses to record each layer's output shape.
  Tensor forward(const Tensor& x) override {
    Tensor h = (*pool1)((*relu1)((*bn1)((*conv1)(x))));
    h = (*pool2)((*relu2)((*bn2)((*conv2)(h))));
    return (*fc)((*flatten)(h));  // logits [N, 10]
  }
  std::string type_name() const override { return "Net"; }

 private:
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
  std::shared_ptr<ReLU> relu1, relu2;
  std::shared_ptr<MaxPool2d> pool1, pool2;
  std::shared_ptr<Flatten> flatten;
  std::shared_ptr<Dense> fc;
};

// Stand-in for MNIST: class k is a bright 6x6 square at its own place on a noisy 28x28 image.
ImageDataset synthetic(int64_t n, uint64_t seed, const std::string& split) {
  ImageDataset d{.name = "synthetic", .split = split, .channels = 1, .height = 28, .width = 28};
  for (int k = 0; k < 10; ++k) d.class_names.push_back(std::to_string(k));
  d.pixels.resize(static_cast<size_t>(n * d.image_bytes()));
  Rng rng(seed);
  for (int64_t i = 0; i < n; ++i) {
    int64_t k = rng.below(10), y0 = 4 + (k / 5) * 12 + rng.below(3), x0 = 1 + (k % 5) * 5;
    uint8_t* img = d.pixels.data() + i * d.image_bytes();
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x) {
        bool on = y >= y0 && y < y0 + 6 && x >= x0 && x < x0 + 6;
        img[y * 28 + x] = static_cast<uint8_t>(on ? 200 + rng.below(56) : rng.below(60));
      }
    d.labels.push_back(k);
  }
  return d;
}

// The logits of `images` in eval mode (running BatchNorm statistics), without recording a graph.
Tensor predict(Net& model, const Tensor& images) {
  model.eval();
  NoGradGuard no_grad;
  return model(images);
}

int main() try {
  // 1. Data: MNIST if present, otherwise the synthetic stand-in.
  ImageDataset train, test;
  try {
    std::string dir = resolve_data_dir();  // $BNLAB_DATA, else ./data
    train = load_dataset("mnist", "train", dir);
    test = load_dataset("mnist", "test", dir);
    std::printf("data: MNIST from %s (%ld train, %ld test images)\n", dir.c_str(),
                static_cast<long>(train.size()), static_cast<long>(test.size()));
  } catch (const Error& e) {
    std::printf("data: MNIST not found, using a SYNTHETIC dataset generated here\n  (%s)\n",
                e.what());
    train = synthetic(4000, 1, "train");
    test = synthetic(1000, 2, "test");
  }
  // MNIST's mean/std: the loader turns uint8 pixels into normalized float batches [N, 1, 28, 28].
  NormalizeOptions norm = standard_normalization("mnist");

  // 2. Model and optimizer.
  Rng rng(42);
  Net model(rng);
  std::printf("%s\n%s", model.to_string().c_str(), summary(model, {1, 1, 28, 28}).c_str());
  Sgd opt(model.parameters(), SgdOptions{.lr = 0.05f, .momentum = 0.9f});

  // 3. Training: 100 steps of batch 64. drop_last keeps every BatchNorm batch full-sized.
  DataLoader loader(train, {.batch_size = 64, .drop_last = true, .seed = 1, .normalize = norm});
  model.train();  // batch statistics in BatchNorm (summary() left the model as it found it)
  Batch batch;
  int64_t epoch = 0;
  for (int64_t step = 1; step <= 100;) {
    if (!loader.next(batch)) {  // end of an epoch: reshuffle and go on
      loader.start_epoch(++epoch);
      continue;
    }
    Tensor loss = cross_entropy(model(batch.images), batch.labels);
    opt.zero_grad();  // gradients accumulate across backward() calls until cleared
    loss.backward();
    opt.step();
    if (step % 20 == 0) std::printf("step %3ld  loss %.4f\n", static_cast<long>(step), loss.item());
    ++step;
  }

  // 4. Held-out accuracy, in eval mode (predict() switches it).
  DataLoader test_loader(test, {.batch_size = 1000, .shuffle = false, .normalize = norm});
  int64_t correct = 0;
  Tensor probe;  // the first test batch, kept for the reload check below
  while (test_loader.next(batch)) {
    if (!probe.defined()) probe = batch.images;  // holding the handle keeps the loader off its data
    std::vector<int64_t> pred = argmax(predict(model, batch.images), 1);
    for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == batch.labels[i];
  }
  std::printf("test accuracy: %.2f%% (%ld / %ld)\n",
              100.0 * static_cast<double>(correct) / static_cast<double>(test.size()),
              static_cast<long>(correct), static_cast<long>(test.size()));

  // 5. Checkpoint: state_dict() holds parameters AND buffers (BatchNorm's running statistics), so
  // the reloaded model must reproduce the eval outputs bit for bit.
  std::string path = (std::filesystem::temp_directory_path() / "custom_model.safetensors").string();
  save_safetensors(path, model.state_dict());
  Rng other_rng(7);  // different initial weights, so only the load can make the outputs agree
  Net fresh(other_rng);
  fresh.load_state_dict(load_safetensors(path).tensors);  // strict: every key and shape must match
  bool same = predict(model, probe).to_vector() == predict(fresh, probe).to_vector();
  std::printf("saved %s (%zu tensors)\nreload: %s\n", path.c_str(), model.state_dict().size(),
              same ? "identical outputs" : "OUTPUTS DIFFER");
  return same ? 0 : 1;
} catch (const std::exception& e) {  // bnlab reports bad input as bnlab::Error with a clear message
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}

// A custom model in C++: define a small CNN with BatchNorm as your own Module, train it with SGD,
// evaluate it, save it to a safetensors file and load it back into a fresh model.
// Trains on MNIST if $BNLAB_DATA/mnist (default ./data/mnist) holds its IDX files, otherwise on a
// synthetic dataset generated here, so it always runs. docs/custom-model.md walks through it.
#include <filesystem>
#include <iomanip>
#include <iostream>
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
using std::make_shared;

// Every child is registered by name in the constructor: that is what makes parameters() find the
// weights, train()/eval() reach the BatchNorms, and state_dict() name tensors "conv1.weight",
// "bn1.running_mean", ... exactly as the same PyTorch module would.
class Net : public Module {
 public:
  explicit Net(Rng& rng) {  // the Rng draws the initial weights: same seed, same model
    // The convs have no bias: the BatchNorm right after each one cancels it and adds its own beta.
    Conv2dOptions c1{.in_channels = 1, .out_channels = 8, .kernel = 3, .padding = 1, .bias = false};
    Conv2dOptions c2 = c1;
    c2.in_channels = 8, c2.out_channels = 16;
    conv1 = register_module("conv1", make_shared<Conv2d>(c1, rng));
    bn1 = register_module("bn1", make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 8}));
    relu1 = register_module("relu1", make_shared<ReLU>());
    pool1 = register_module("pool1", make_shared<MaxPool2d>(2));  // 28x28 -> 14x14
    conv2 = register_module("conv2", make_shared<Conv2d>(c2, rng));
    bn2 = register_module("bn2", make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 16}));
    relu2 = register_module("relu2", make_shared<ReLU>());
    pool2 = register_module("pool2", make_shared<MaxPool2d>(2));  // 14x14 -> 7x7
    flatten = register_module("flatten", make_shared<Flatten>());
    fc = register_module("fc", make_shared<Dense>(DenseOptions{16 * 7 * 7, 10}, rng));  // D -> K
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

// Stand-in for MNIST: class k is a 6x6 square near its own place (2 rows of 5 places) on a noisy
// 28x28 image. Neighbouring places overlap, so it takes some training, as MNIST does.
ImageDataset synthetic(int64_t n, uint64_t seed) {
  ImageDataset d;
  d.name = "synthetic", d.channels = 1, d.height = 28, d.width = 28;
  for (int k = 0; k < 10; ++k) d.class_names.push_back(std::to_string(k));
  Rng rng(seed);
  for (int64_t i = 0; i < n; ++i) {
    int64_t k = rng.below(10);
    int64_t y0 = 2 + (k / 5) * 12 + rng.below(6), x0 = (k % 5) * 5 + rng.below(6);
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x) {
        bool on = y >= y0 && y < y0 + 6 && x >= x0 && x < x0 + 6;
        d.pixels.push_back(static_cast<uint8_t>(on ? 80 + rng.below(176) : rng.below(140)));
      }
    d.labels.push_back(k);
  }
  return d;
}

// Logits without recording an autograd graph (nothing will call backward on them).
Tensor predict(Net& model, const Tensor& images) {
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
    std::cout << "data: MNIST from " << dir << " (" << train.size() << " train, " << test.size()
              << " test images)\n";
  } catch (const Error& e) {
    std::cout << "data: MNIST not found, using a SYNTHETIC dataset generated here\n  (" << e.what()
              << ")\n";
    train = synthetic(4000, /*seed=*/1);
    test = synthetic(1000, /*seed=*/2);
  }
  // MNIST's mean/std: the loader turns uint8 pixels into normalized float batches [N, 1, 28, 28].
  NormalizeOptions norm = standard_normalization("mnist");

  // 2. Model and optimizer.
  Rng rng(42);
  Net model(rng);
  std::cout << summary(model, {1, 1, 28, 28}) << std::fixed << std::setprecision(4);
  Sgd opt(model.parameters(), SgdOptions{.lr = 0.05f, .momentum = 0.9f});

  // 3. Training: 100 steps of batch 64. drop_last keeps every BatchNorm batch full-sized.
  DataLoader loader(train, {.batch_size = 64, .drop_last = true, .seed = 1, .normalize = norm});
  model.train();  // batch statistics in BatchNorm (summary() left the model as it found it)
  Batch batch;
  for (int64_t step = 1, epoch = 0; step <= 100; ++step) {
    if (!loader.next(batch)) {  // the epoch is over: start the next one, in a new shuffled order
      loader.start_epoch(++epoch);
      loader.next(batch);
    }
    Tensor loss = cross_entropy(model(batch.images), batch.labels);
    opt.zero_grad();  // gradients accumulate across backward() calls until cleared
    loss.backward();
    opt.step();
    if (step % 20 == 0) std::cout << "step " << step << "  loss " << loss.item() << "\n";
  }

  // 4. Held-out accuracy. eval(): BatchNorm now uses its running statistics, not the batch's.
  model.eval();
  DataLoader test_loader(test, {.batch_size = 1000, .shuffle = false, .normalize = norm});
  int64_t correct = 0;
  Tensor probe;  // the first test batch, kept for the reload check below
  while (test_loader.next(batch)) {
    if (!probe.defined()) probe = batch.images;  // holding the handle keeps the loader off its data
    std::vector<int64_t> pred = argmax(predict(model, batch.images), 1);
    for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == batch.labels[i];
  }
  std::cout << "test accuracy: " << static_cast<double>(correct) / test.size() << " (" << correct
            << " / " << test.size() << ")\n";

  // 5. Checkpoint: state_dict() holds parameters AND buffers (BatchNorm's running statistics), so
  // the reloaded model must reproduce the eval outputs bit for bit.
  std::string path = (std::filesystem::temp_directory_path() / "custom_model.safetensors").string();
  save_safetensors(path, model.state_dict());
  Rng other_rng(7);  // different initial weights, so only the load can make the outputs agree
  Net fresh(other_rng);
  fresh.eval();
  fresh.load_state_dict(load_safetensors(path).tensors);  // strict: every key and shape must match
  bool same = predict(model, probe).to_vector() == predict(fresh, probe).to_vector();
  std::cout << "saved " << path << " (" << model.state_dict().size()
            << " tensors)\nreload: " << (same ? "identical outputs" : "OUTPUTS DIFFER") << "\n";
  return same ? 0 : 1;
} catch (const std::exception& e) {  // bnlab reports bad input as bnlab::Error with a clear message
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}

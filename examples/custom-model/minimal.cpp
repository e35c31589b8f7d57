#include <bnlab/bnlab.h>

#include <iostream>
using namespace bnlab;

struct Net : Module {  // children registered by name: parameters(), train()/eval(), state_dict()
  std::shared_ptr<Conv2d> conv;
  std::shared_ptr<BatchNorm2d> bn;
  std::shared_ptr<Dense> fc;
  explicit Net(Rng& rng) {
    Conv2dOptions c{.in_channels = 1, .out_channels = 8, .kernel = 3, .padding = 1, .bias = false};
    conv = register_module("conv", std::make_shared<Conv2d>(c, rng));
    bn = register_module("bn", std::make_shared<BatchNorm2d>(BatchNormOptions{.num_features = 8}));
    fc = register_module("fc", std::make_shared<Dense>(DenseOptions{8 * 14 * 14, 10}, rng));
  }
  Tensor forward(const Tensor& x) override {  // [N, 1, 28, 28] -> logits [N, 10]
    return (*fc)(flatten(max_pool2d(relu((*bn)((*conv)(x))), 2)));
  }
  std::string type_name() const override { return "Net"; }
};

int main(int argc, char** argv) {
  ImageDataset train = load_dataset("mnist", "train", resolve_data_dir(argc > 1 ? argv[1] : ""));
  DataLoader loader(train, {.batch_size = 64, .normalize = standard_normalization("mnist")});
  Rng rng(0);
  Net model(rng);
  Sgd opt(model.parameters(), {.lr = 0.05f, .momentum = 0.9f});
  Batch b;
  for (int step = 1; step <= 200 && loader.next(b); ++step) {
    Tensor loss = cross_entropy(model(b.images), b.labels);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 50 == 0) std::cout << "step " << step << "  loss " << loss.item() << "\n";
  }
  save_safetensors("net.safetensors", model.state_dict());  // PyTorch's key names: conv.weight, ...
}

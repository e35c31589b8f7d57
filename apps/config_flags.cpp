#include "apps/config_flags.h"

#include <sstream>

#include "apps/commands.h"
#include "data/datasets.h"

namespace bnlab::apps {

void add_config_flags(CLI::App& app, TrainConfig& cfg) {
  app.add_option("--model", cfg.model.name, "Model: paper-mlp, mlp, lenet, cifar-cnn")
      ->check(CLI::IsMember(model_names()))
      ->capture_default_str();
  app.add_option("--dataset", cfg.dataset,
                 "Dataset: mnist, fashion-mnist, cifar10, cifar100, folder:PATH")
      ->capture_default_str();
  app.add_option("--data-dir", cfg.data_dir, "Data directory (default: $BNLAB_DATA or data/)");
  app.add_option("--norm", cfg.model.norm, "Normalization: none, batch, layer, group")
      ->check(CLI::IsMember(norm_names()))
      ->capture_default_str();
  app.add_option("--placement", cfg.model.placement, "Normalization before or after the activation")
      ->check(CLI::IsMember({"before", "after"}))
      ->capture_default_str();
  app.add_option("--groups", cfg.model.groups, "GroupNorm: at most this many groups per layer")
      ->check(kFinitePositive)
      ->capture_default_str();
  app.add_option("--dropout", cfg.model.dropout, "Dropout probability (-1: the model's default)")
      ->check(CLI::Range(-1.0f, 1.0f))
      ->capture_default_str();
  app.add_option(
      "--init", cfg.model.init,
      "Weight init: default (PyTorch's), xavier-uniform, xavier-normal, kaiming-uniform, "
      "kaiming-normal, normal:<std> (empty: the model's own)");
  auto* epochs = app.add_option("--epochs", cfg.epochs, "Epochs to train (when --steps is 0)")
                     ->check(kFiniteNonNegative)
                     ->capture_default_str();
  app.add_option("--steps", cfg.steps, "Optimizer steps to train (overrides --epochs)")
      ->check(kFiniteNonNegative)
      ->capture_default_str();
  (void)epochs;
  app.add_option("--batch-size,-b", cfg.batch_size,
                 "Mini-batch size per process (under mpirun -np P the global batch is P times it)")
      ->check(kFinitePositive)
      ->capture_default_str();
  app.add_option("--optimizer", cfg.optimizer, "sgd, adam, adamw, rmsprop")
      ->check(CLI::IsMember({"sgd", "adam", "adamw", "rmsprop"}))
      ->capture_default_str();
  app.add_option("--lr", cfg.lr, "Learning rate")->check(kFinitePositive)->capture_default_str();
  app.add_option("--momentum", cfg.momentum, "Momentum (sgd, rmsprop)")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  app.add_flag("--nesterov", cfg.nesterov, "Nesterov momentum (sgd)");
  app.add_option("--weight-decay", cfg.weight_decay,
                 "Weight decay (not applied to biases and norm parameters)")
      ->check(kFiniteNonNegative)
      ->capture_default_str();
  app.add_flag("--decay-all", cfg.decay_norm_and_bias,
               "Apply weight decay to biases and norm parameters too");
  app.add_option(
         "--schedule", cfg.schedule,
         "LR schedule: constant, step:<n>[:<gamma>], multistep:<m1>,<m2>[:<gamma>], exp:<gamma>, "
         "cosine[:<eta_min>], warmup:<n>[:<start>][+<schedule>]")
      ->capture_default_str();
  app.add_option("--clip-grad-norm", cfg.clip_grad_norm, "Clip the global gradient norm (0: off)")
      ->check(kFiniteNonNegative)
      ->capture_default_str();
  app.add_option("--on-nan", cfg.on_nan,
                 "When the loss or a gradient is NaN/Inf: stop (the run is diverged), skip "
                 "(drop that step's update) or continue")
      ->check(CLI::IsMember({"stop", "skip", "continue"}))
      ->capture_default_str();
  app.add_option("--label-smoothing", cfg.label_smoothing, "Cross-entropy label smoothing")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  app.add_flag("--augment", cfg.augment, "Random crop (padding 4) and horizontal flip");
  app.add_option("--seed", cfg.seed, "Seed for weights, data order, dropout and augmentation")
      ->capture_default_str();
  app.add_option("--threads", cfg.threads, "Threads (0: all cores)")
      ->check(kFiniteNonNegative)
      ->capture_default_str();
  app.add_option("--eval-every", cfg.eval_every, "Evaluate every N steps (0: every epoch)")
      ->check(kFiniteNonNegative)
      ->capture_default_str();
  app.add_flag("--sync-bn", cfg.sync_bn,
               "Under mpirun: BatchNorm statistics over the global batch of all ranks (default: "
               "each rank's own batch, as PyTorch DDP)");
  app.add_option("--probe-unit", cfg.probe_unit,
                 "Unit of the last hidden layer whose input percentiles are recorded (-1: off)")
      ->capture_default_str();
}

std::string describe_config(const TrainConfig& c) {
  std::ostringstream os;
  os << "model:        " << c.model.name << " (norm " << c.model.norm << ", placement "
     << c.model.placement << (c.model.init.empty() ? "" : ", init " + c.model.init)
     << (c.model.dropout >= 0 ? ", dropout " + std::to_string(c.model.dropout) : "") << ")\n"
     << "dataset:      " << c.dataset << " (data dir " << resolve_data_dir(c.data_dir) << ")\n"
     << "length:       "
     << (c.steps > 0 ? std::to_string(c.steps) + " steps" : std::to_string(c.epochs) + " epochs")
     << ", batch " << c.batch_size << ", eval every "
     << (c.eval_every > 0 ? std::to_string(c.eval_every) + " steps" : std::string("epoch")) << "\n"
     << "optimizer:    " << c.optimizer << " lr " << c.lr;
  if (c.momentum > 0) os << " momentum " << c.momentum << (c.nesterov ? " (nesterov)" : "");
  if (c.weight_decay > 0) os << " weight_decay " << c.weight_decay;
  os << ", schedule " << c.schedule;
  if (c.clip_grad_norm > 0) os << ", clip " << c.clip_grad_norm;
  if (c.label_smoothing > 0) os << ", label smoothing " << c.label_smoothing;
  if (c.on_nan != "stop") os << ", on NaN " << c.on_nan;
  os << "\n"
     << "seed:         " << c.seed << ", threads "
     << (c.threads > 0 ? std::to_string(c.threads) : std::string("all"))
     << (c.augment ? ", augment" : "") << "\n";
  if (!c.out_dir.empty()) os << "output:       " << c.out_dir << "\n";
  return os.str();
}

}  // namespace bnlab::apps

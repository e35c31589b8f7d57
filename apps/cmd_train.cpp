// bnlab train: one run, with progress, metrics.csv, checkpoints and summary.json in --out.
#include <filesystem>
#include <iostream>

#include "apps/commands.h"
#include "apps/config_flags.h"
#include "core/io.h"
#include "layers/module.h"

namespace bnlab::apps {

Command add_train_command(CLI::App& parent) {
  auto cfg = std::make_shared<TrainConfig>();
  cfg->model.name = "lenet";
  cfg->model.norm = "batch";
  cfg->epochs = 1;
  cfg->lr = 0.01f;
  cfg->momentum = 0.9f;
  cfg->out_dir = "runs/train";
  auto resume = std::make_shared<std::string>();
  auto show_summary = std::make_shared<bool>(false);

  CLI::App* app = parent.add_subcommand(
      "train", "Train one model and write metrics, checkpoints and a summary");
  add_config_flags(*app, *cfg);
  app->add_option("--out", cfg->out_dir, "Output directory")->capture_default_str();
  app->add_option("--resume", *resume,
                  "Continue the run in DIR from its last checkpoint (its config.json; "
                  "--steps/--epochs may extend it)");
  app->add_flag("--summary", *show_summary, "Print the model's layer table before training");

  Runner run = [cfg, resume, show_summary, app]() {
    TrainConfig c = *cfg;
    bool resuming = !resume->empty();
    if (resuming) {
      std::string path = (std::filesystem::path(*resume) / "config.json").string();
      TrainConfig saved = config_from_json(read_file(path), path);
      if (app->count("--steps")) saved.steps = c.steps;
      if (app->count("--epochs")) saved.epochs = c.epochs;
      if (app->count("--threads")) saved.threads = c.threads;
      c = saved;
      c.out_dir = *resume;
    }
    std::cout << "== bnlab train" << (resuming ? " (resuming " + *resume + ")" : "") << "\n"
              << describe_config(c);
    RunData data = load_run_data(c.dataset, c.data_dir);
    std::cout << "data:         " << data.train.title() << " " << data.train.size()
              << " images, evaluating on " << data.eval.title() << " " << data.eval.size() << "\n";
    if (*show_summary) {
      ModelSpec spec = c.model;
      spec.channels = data.train.channels;
      spec.height = data.train.height;
      spec.width = data.train.width;
      spec.num_classes = data.train.num_classes();
      Rng rng(c.seed);
      Model m = build_model(spec, rng);
      std::cout << summary(*m.net, {1, spec.channels, spec.height, spec.width});
    }
    TrainResult r = train(c, data, resuming);
    std::cout << "\n";
    if (r.diverged) std::cout << "DIVERGED at step " << r.diverged_step << "\n";
    if (!r.rows.empty()) {
      const MetricsRow& last = r.rows.back();
      std::printf("final: step %ld | %s loss %.4f | %s accuracy %.4f | %.0f img/s training\n",
                  static_cast<long>(last.step), data.eval.split.c_str(), last.test_loss,
                  data.eval.split.c_str(), last.test_acc, r.images_per_second);
    }
    std::cout << "wrote: " << c.out_dir
              << "/{config.json, metrics.csv, model.safetensors, train_state.safetensors, "
              << "summary.json}\n";
    return r.diverged ? 3 : 0;
  };
  return {app, run};
}

}  // namespace bnlab::apps

// bnlab ablate: matched runs that differ in one factor only. With no arguments it reproduces Ioffe
// & Szegedy (2015), Figure 1, on MNIST: paper-mlp with vs without BN, batch 60, the same SGD
// learning rate.
#include <iostream>

#include "apps/commands.h"
#include "apps/config_flags.h"
#include "core/distributed.h"
#include "core/error.h"
#include "train/ablation.h"
#include "train/interrupt.h"
#include "train/knobs.h"
#include "train/run_dir.h"

namespace bnlab::apps {

Command add_ablate_command(CLI::App& parent) {
  auto spec = std::make_shared<AblationSpec>();
  TrainConfig& b = spec->base;
  // The Figure 1 defaults (docs/ablation.md explains the learning-rate choice).
  b.model.name = "paper-mlp";
  b.dataset = "mnist";
  b.batch_size = 60;
  b.optimizer = "sgd";
  b.lr = 0.5f;
  b.steps = 50000;
  b.eval_every = 500;
  spec->out_dir = "runs/ablate";
  auto preset = std::make_shared<std::string>("fig1");
  auto vary = std::make_shared<std::vector<std::string>>();

  std::string factor_list;
  for (const auto& [name, what] : factor_help()) factor_list += "\n    " + name + ": " + what;
  std::string presets;
  for (const std::string& p : preset_names()) presets += (presets.empty() ? "" : ", ") + p;

  CLI::App* app = parent.add_subcommand(
      "ablate",
      "Matched runs differing in one factor (same seed, initial weights and data order): a results "
      "table, "
      "results.csv and plots. No arguments: the BN paper's Figure 1 on MNIST.");
  add_config_flags(*app, b);
  app->get_option("--lr")
      ->description(
          "Learning rate, every arm's base (default: with sgd each model's own rate, e.g. "
          "paper-mlp 0.5, lenet 0.05; with adam or adamw 1e-3 and rmsprop 1e-2, PyTorch's "
          "defaults; docs/ablation.md)")
      ->default_str("");
  app->add_option("--preset", *preset, "Factor preset: " + presets)->capture_default_str();
  app->add_option(
         "--vary", *vary,
         "A factor and its values, NAME=V1,V2 (repeat for a grid; replaces the preset). Factors:" +
             factor_list)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);  // every --vary, not the last
  app->add_option("--seeds", spec->seeds, "Seeds per arm (mean and spread reported)")
      ->check(whole_number_in(1, 1000))
      ->capture_default_str();
  app->add_option("--jobs,-j", spec->jobs,
                  "Runs trained at once, sharing the cores (0: one per core)")
      ->check(whole_number_in(0, 1024))
      ->capture_default_str();
  app->add_option("--out", spec->out_dir, "Output directory")->capture_default_str();
  app->add_option("--title", spec->title, "Title for the table and plots");
  app->add_flag("--equal-samples", spec->equal_samples,
                "Arms with another batch size train on as many images as the base (steps scaled; "
                "tables and plots in epochs). The batch-size preset sets it");
  app->add_option("--thresholds", spec->thresholds,
                  "Accuracies for the 'steps to' columns, e.g. 0.9,0.95, each once (default: "
                  "the dataset's)")
      ->delimiter(',')
      ->check(finite_number_in(0.0, 1.0));

  Runner run = [app, spec, preset, vary]() {
    install_interrupt_handlers();  // SIGINT/SIGTERM: each running arm checkpoints and stops
    // Under mpirun rank 0 alone reports (the runs' progress is rank 0's too: train/trainer.cpp).
    if (world().rank() != 0) std::cout.setstate(std::ios::failbit);
    AblationSpec s = *spec;
    // Without --lr each arm trains at its model's default SGD rate (paper-mlp 0.5, cifar-cnn
    // 0.05...), or with another optimizer at that optimizer's own (adam 1e-3, as PyTorch's).
    s.lr_from_model = app->get_option("--lr")->count() == 0;
    if (s.lr_from_model) s.base.lr = default_lr(s.base.model.name, s.base.optimizer);
    try {
      if (vary->empty()) {
        apply_preset(s, *preset);
        // batch-size compares at equal samples: by default one MNIST epoch at the base batch 60
        // (batch 2 then takes 30 000 steps), evaluated every tenth of it.
        if ((*preset == "batch-size" || *preset == "inference") &&
            app->get_option("--steps")->count() == 0 && app->get_option("--epochs")->count() == 0) {
          s.base.steps = 1000;
          if (app->get_option("--eval-every")->count() == 0) s.base.eval_every = 100;
        }
      } else {
        for (const std::string& v : *vary) s.factors.push_back(parse_factor(v));
      }
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
    const bool auto_title = s.title.empty();
    if (auto_title) {
      s.title = vary->empty() ? "preset " + *preset : "ablation";
      if (vary->empty() && *preset == "fig1") s.title = "Ioffe and Szegedy (2015), Figure 1";
    }
    // Every flag and factor value is checked before any data is read (exit 2 on a bad one).
    if (s.out_dir.empty()) throw UsageError("--out must name a directory, got ''");
    std::vector<Arm> arms;
    try {
      check_thresholds(s.thresholds);
      check_config(s.base);
      arms = expand_arms(s);
      for (const Arm& a : arms) check_config(a.config);
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
    // One sweep per directory at a time; each arm's run directory is locked by train() as well.
    RunDirLock lock;
    if (world().rank() == 0) lock = RunDirLock(s.out_dir);
    if (auto_title) s.title += ": " + arms_models_and_data(arms);  // what the arms train
    std::cout << "== bnlab ablate: " << s.title << ": " << arms.size() << " arm"
              << (arms.size() > 1 ? "s" : "") << " x " << s.seeds << " seed"
              << (s.seeds > 1 ? "s" : "") << " -> " << s.out_dir << "\n";
    for (const Arm& a : arms)
      std::cout << "arm:          " << a.name << " (lr " << a.config.lr << ")\n";
    // Before the data is loaded and the arms run: a log's stdout is fully buffered (cmd_train.cpp).
    std::cout << describe_config(s.base) << std::flush;
    AblationReport r;
    try {
      r = run_ablation(s);
    } catch (const AblationSettingError& e) {
      throw UsageError(e.what());  // a flag or --vary value the data refuses: exit 2
    }
    if (r.interrupted_by) {
      std::cout << "\ninterrupted by " << signal_name(r.interrupted_by) << ": " << r.unfinished
                << " run" << (r.unfinished > 1 ? "s" : "")
                << " unfinished; the running ones saved a checkpoint at their last step in "
                << s.out_dir << "/runs\n"
                << "resume with: " << quoted_command_line() << std::endl;
      return 128 + r.interrupted_by;
    }
    std::cout << "\n" << r.table << "\n";
    for (const std::string& m : r.messages) std::cout << m << "\n";
    std::cout << "results: " << r.results_csv << "\nsummary: " << r.summary_md << "\n";
    return 0;
  };
  return {app, run};
}

}  // namespace bnlab::apps

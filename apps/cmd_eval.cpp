// bnlab eval: accuracy, per-class accuracy and the confusion matrix of a trained run's checkpoint.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "apps/commands.h"
#include "core/error.h"
#include "core/io.h"
#include "core/serialize.h"
#include "data/datasets.h"
#include "layers/bn_fold.h"
#include "train/knobs.h"
#include "train/run_dir.h"
#include "train/trainer.h"

namespace bnlab::apps {

namespace {

// cifar10's batch 5, or a folder's PATH/val/ (without it a folder's "val" would be PATH itself).
bool has_own_val_split(const std::string& dataset) {
  if (dataset.rfind("folder:", 0) == 0) {
    std::error_code ec;
    return std::filesystem::is_directory(std::filesystem::path(dataset.substr(7)) / "val", ec);
  }
  const std::vector<std::string> splits = dataset_splits(dataset);
  return std::find(splits.begin(), splits.end(), "val") != splits.end();
}

// The step at which the run in `dir` diverged, as its summary.json records it (-1 when the
// summary has no step); nullopt when it did not diverge or has no summary (running, interrupted).
std::optional<int64_t> diverged_step(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "summary.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  try {
    const nlohmann::json j = nlohmann::json::parse(read_file(path));
    if (!j.value("diverged", false)) return std::nullopt;
    return j.value("diverged_step", int64_t{-1});
  } catch (const nlohmann::json::exception& e) {
    BNLAB_FAIL(path, ": unreadable summary: ", e.what());
  }
}

}  // namespace

Command add_eval_command(CLI::App& parent) {
  struct Options {
    std::string checkpoint, dataset, split = "test", data_dir;
    int64_t batch_size = 1000;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* app = parent.add_subcommand(
      "eval", "Evaluate a trained run: accuracy, per-class accuracy, confusion matrix");
  app->add_option("--checkpoint", o->checkpoint,
                  "Run directory written by bnlab train (config.json, model.safetensors)")
      ->required();
  app->add_option("--dataset", o->dataset, "Dataset (default: the one the run trained on)")
      ->check(knob_value("--dataset"));
  app->add_option("--split", o->split,
                  "Split: test; val (the images --val-split held out, or cifar10's batch 5); train "
                  "(the images the run trained on: without those --val-split held out, "
                  "--train-subset applied); trainval and test_first1000 (cifar10)")
      ->capture_default_str();
  app->add_option("--data-dir", o->data_dir,
                  "Data directory (default, for the run's own dataset: the one it trained from, "
                  "as its config.json records it; else, or if that is gone, as bnlab train finds "
                  "it: $BNLAB_DATA, else ./data if it exists, else $XDG_DATA_HOME/bnlab)");
  app->add_option("--batch-size", o->batch_size, "Evaluation batch size")
      ->check(whole_number_in(1, int64_t{1} << 24))
      ->capture_default_str();
  app->add_flag("--json", o->json, "Also write eval_<dataset>_<split>.json into the run directory");

  Runner run = [o]() {
    std::string config_path = (std::filesystem::path(o->checkpoint) / "config.json").string();
    TrainConfig cfg = config_from_json(read_file(config_path), config_path);
    std::string dataset = o->dataset.empty() ? cfg.dataset : o->dataset;
    // On the run's own dataset, train and val are what training used and held out.
    const bool own = dataset == cfg.dataset;
    const bool held_out = own && cfg.val_split > 0;
    if (o->split == "val" && !held_out && !has_own_val_split(dataset)) {
      throw UsageError("--split val: " + o->checkpoint +
                       " has no validation split: it trained without --val-split, and " + dataset +
                       " has no val split of its own (use --split test)");
    }
    if (!(o->split == "val" && held_out)) check_split(dataset, o->split);
    // A diverged run stopped without saving the step that failed: model.safetensors, if any, is
    // its last checkpoint before that. With none, "cannot open model.safetensors" would hide why.
    const std::optional<int64_t> diverged_at = diverged_step(o->checkpoint);
    const std::string at_step = diverged_at && *diverged_at >= 0
                                    ? " at step " + std::to_string(*diverged_at)
                                    : std::string();
    const std::string weights_path =
        (std::filesystem::path(o->checkpoint) / "model.safetensors").string();
    std::error_code exists_ec;
    if (diverged_at && !std::filesystem::exists(weights_path, exists_ec)) {
      write_whole_line(STDERR_FILENO, "error: " + o->checkpoint + " diverged" + at_step +
                                          " (its summary.json), before its first checkpoint: "
                                          "there is no model.safetensors to evaluate\n");
      return 3;  // the code of a diverged run (docs/robustness.md)
    }
    // Without --data-dir, the run's own dataset is read where training read it (recorded
    // absolute): the default lookup, from another working directory or under another $BNLAB_DATA,
    // would find other files or none. A recorded directory that is gone (the data moved) leaves
    // the lookup as it was.
    DataDir data_dir = find_data_dir(o->data_dir);
    cfg.data_dir = o->data_dir;  // "" keeps the lookup's reason in a "not found" error
    if (o->data_dir.empty() && own) {
      std::error_code ec;
      const std::optional<std::string> recorded = recorded_data_dir(o->checkpoint);
      if (recorded && std::filesystem::is_directory(*recorded, ec)) {
        data_dir = {*recorded, "the run's, from its config.json"};
        cfg.data_dir = *recorded;
      }
    }
    // A folder's split is checked against the run's training split, which a run whose config.json
    // predates its normalization also needs for the statistics: loaded once for both.
    std::optional<ImageDataset> run_train;
    ImageDataset data =
        own ? load_run_split(cfg, o->split, &run_train) : load_dataset(dataset, o->split, data_dir);
    std::string what;
    if (own && o->split == "train" && (cfg.val_split > 0 || cfg.train_subset > 0)) {
      what = ": the images the run trained on";
      if (cfg.val_split > 0)
        what += ", without the " + std::to_string(cfg.val_split) + " --val-split held out";
      if (cfg.train_subset > 0) what += ", its --train-subset";
    } else if (held_out && o->split == "val") {
      what = ": the training images --val-split held out for validation";
    }
    Model model = load_trained_model(o->checkpoint, data);
    // Weights from before the divergence are a real model, so they are evaluated (exit 0 if all
    // is finite: exit 3 is for non-finite weights or outputs), but not as the run's result.
    if (diverged_at) {
      const Metadata meta = load_safetensors(weights_path).metadata;
      const auto step = meta.find("step");
      const std::string from = step != meta.end() ? "step " + step->second : "an earlier step";
      write_whole_line(STDERR_FILENO,
                       "warning: " + o->checkpoint + " diverged" + at_step +
                           " (its summary.json); model.safetensors holds the weights of " + from +
                           ", its last checkpoint before that: the figures below are that "
                           "model's, not the run's result\n");
    }
    // A diverged run's weights (NaN/Inf) still "evaluate", to a meaningless accuracy: say so and
    // exit 3, the code `bnlab train` gives a diverged run.
    std::string nonfinite;
    for (const NamedTensor& t : model.net->state_dict()) {
      if (t.dtype != DType::F32 || !nonfinite.empty()) continue;
      const float* p = t.tensor.data();
      for (int64_t i = 0; i < t.tensor.numel(); ++i) {
        if (!std::isfinite(p[i])) {
          nonfinite = t.name;
          break;
        }
      }
    }
    if (!nonfinite.empty()) {
      write_whole_line(STDERR_FILENO, "warning: " + o->checkpoint +
                                          "/model.safetensors holds NaN or Inf values (first in '" +
                                          nonfinite +
                                          "'): the run diverged, and the figures below mean "
                                          "nothing\n");
    }
    // Inference only from here on: each Dense/Conv2d + BatchNorm pair runs as one layer.
    model.net->eval();
    fold_batch_norm(*model.net);
    // A named dataset is normalized with its published constants, whichever run evaluates it; a
    // folder has none, so it is normalized as the run's training images were.
    std::optional<NormalizeOptions> norm = find_standard_normalization(dataset);
    if (!norm) {
      // On the run's own dataset, --split train is the run's training split itself.
      const ImageDataset* train = own && o->split == "train" ? &data
                                  : run_train                ? &*run_train
                                                             : nullptr;
      norm = run_normalization(o->checkpoint, cfg, train);
    }
    EvalResult ev = evaluate(model, data, *norm, o->batch_size, -1);
    // Finite weights can still give non-finite logits (weights large enough to overflow): the
    // figures are as meaningless as a diverged run's, and get its exit code, not 0.
    const bool nonfinite_result = !std::isfinite(ev.loss) || !std::isfinite(ev.accuracy);
    if (nonfinite_result && nonfinite.empty()) {
      char figures[96];
      std::snprintf(figures, sizeof figures, "loss %g, accuracy %g", ev.loss, ev.accuracy);
      write_whole_line(STDERR_FILENO,
                       "warning: " + o->checkpoint + " evaluates to " + figures + " on " +
                           data.title() +
                           ": its outputs are not finite although its weights are (large enough "
                           "to overflow float32), so the figures below mean nothing\n");
    }

    int64_t K = data.num_classes();
    std::vector<std::vector<int64_t>> confusion(static_cast<size_t>(K),
                                                std::vector<int64_t>(static_cast<size_t>(K)));
    for (size_t i = 0; i < ev.predictions.size(); ++i) {
      auto truth = static_cast<size_t>(data.labels[i]);
      auto pred = static_cast<size_t>(ev.predictions[i]);
      if (pred < static_cast<size_t>(K)) ++confusion[truth][pred];
    }
    if (dataset.rfind("folder:", 0) != 0)  // a folder names its own directory
      std::printf("data dir:  %s (%s)\n", data_dir.path.c_str(), data_dir.origin.c_str());
    std::printf("%s on %s (%ld images%s): accuracy %.4f, loss %.4f\n\n", o->checkpoint.c_str(),
                data.title().c_str(), static_cast<long>(data.size()), what.c_str(), ev.accuracy,
                ev.loss);
    std::printf("%-14s %8s %8s\n", "class", "images", "accuracy");
    nlohmann::json per_class = nlohmann::json::array();
    for (int64_t k = 0; k < K; ++k) {
      int64_t total = 0;
      for (int64_t v : confusion[static_cast<size_t>(k)]) total += v;
      double acc =
          total ? static_cast<double>(confusion[static_cast<size_t>(k)][static_cast<size_t>(k)]) /
                      static_cast<double>(total)
                : NAN;
      std::printf("%-14s %8ld %8.4f\n", data.class_names[static_cast<size_t>(k)].c_str(),
                  static_cast<long>(total), acc);
      per_class.push_back({{"class", data.class_names[static_cast<size_t>(k)]},
                           {"images", total},
                           {"accuracy", acc}});
    }
    std::printf("\nconfusion matrix (rows: true class, columns: predicted)\n      ");
    for (int64_t k = 0; k < K; ++k) std::printf("%6ld", static_cast<long>(k));
    std::printf("\n");
    for (int64_t t = 0; t < K; ++t) {
      std::printf("%6ld", static_cast<long>(t));
      for (int64_t p = 0; p < K; ++p)
        std::printf("%6ld",
                    static_cast<long>(confusion[static_cast<size_t>(t)][static_cast<size_t>(p)]));
      std::printf("\n");
    }
    if (o->json) {
      nlohmann::json j{{"dataset", dataset},      {"split", o->split}, {"images", data.size()},
                       {"accuracy", ev.accuracy}, {"loss", ev.loss},   {"per_class", per_class},
                       {"confusion", confusion}};
      std::string path =
          (std::filesystem::path(o->checkpoint) / eval_report_name(dataset, o->split)).string();
      write_file_atomic(path, j.dump(2) + "\n");
      std::printf("wrote %s\n", path.c_str());
    }
    return nonfinite.empty() && !nonfinite_result ? 0 : 3;
  };
  return {app, run};
}

}  // namespace bnlab::apps

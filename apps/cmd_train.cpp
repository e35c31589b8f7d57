// bnlab train: one run, with progress, metrics.csv, checkpoints and summary.json in --out.
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include "apps/commands.h"
#include "apps/config_flags.h"
#include "core/distributed.h"
#include "core/error.h"
#include "core/io.h"
#include "layers/module.h"
#include "train/checkpoint.h"
#include "train/interrupt.h"
#include "train/knobs.h"
#include "train/run_dir.h"

namespace bnlab::apps {

namespace {

namespace fs = std::filesystem;

// The command that continues run `c` (after SIGINT/SIGTERM): --resume DIR, plus the flags a resume
// may change (length, threads, data dir) where they differ from DIR/config.json.
std::string resume_command(const TrainConfig& c) {
  const auto& argv = command_line();
  std::string out = shell_quote(argv.empty() ? std::string("bnlab") : argv[0]) +
                    " train --resume " + shell_quote(c.out_dir);
  std::string path = (std::filesystem::path(c.out_dir) / "config.json").string();
  TrainConfig saved = config_from_json(read_file(path), path);
  for (const Knob& k : knobs()) {
    if (k.resume_may_change && k.get(saved) != k.get(c))
      out += " " + k.flag + " " + shell_quote(k.get(c));
  }
  return out;
}

// The flags a resume may change ("--data-dir, --epochs, ..."), for its help and its refusals.
std::string resume_changeable_flags() {
  std::string flags;
  for (const Knob& k : knobs()) {
    if (k.resume_may_change) flags += (flags.empty() ? "" : ", ") + k.flag;
  }
  return flags;
}

// A resume continues from its checkpoint, so it cannot end before it: refused as the bad flag value
// it is (`flag` gave the length). Run length `steps` is c.steps, or what c.epochs come to.
void check_not_shortened(const TrainConfig& c, std::optional<int64_t> checkpoint,
                         const std::string& flag, int64_t steps = 0) {
  if (steps == 0) steps = c.steps;
  if (!checkpoint || *checkpoint <= steps) return;
  const std::string value = std::to_string(flag == "--epochs" ? c.epochs : c.steps);
  throw UsageError(flag + " " + value + ": the checkpoint in " + c.out_dir + " is at step " +
                   std::to_string(*checkpoint) + ", past the requested " + std::to_string(steps) +
                   " steps; a resumed run can only be extended");
}

// The config of the run in `dir`, with the flags given now that may change on resume applied. A
// flag that would change anything else is refused, naming the saved value: a resumed run that
// silently ignored --lr would not be the run the user asked for.
TrainConfig resumed_config(const CLI::App& app, const TrainConfig& given, const std::string& dir) {
  std::string path = (fs::path(dir) / "config.json").string();
  BNLAB_CHECK(fs::exists(path), dir, " holds no run to resume (no config.json)");
  TrainConfig saved = config_from_json(read_file(path), path);
  const std::string may_change = resume_changeable_flags();
  // The saved steps override --epochs, which would be set in config.json and silently ignored.
  if (app.count("--epochs") > 0 && app.count("--steps") == 0 && saved.steps > 0) {
    throw UsageError("--epochs " + std::to_string(given.epochs) + ": " + path +
                     " has steps = " + std::to_string(saved.steps) +
                     ", a run measured in steps; give its new length with --steps");
  }
  for (const Knob& k : knobs()) {
    if (k.flag.empty() || app.count(k.flag) == 0) continue;
    if (k.resume_may_change) {
      k.set(saved, k.get(given));
    } else if (k.get(given) != k.get(saved)) {
      throw UsageError(k.flag + " " + k.get(given) +
                       " conflicts with the run being resumed: " + path + " has " + k.key + " = " +
                       k.get(saved) + ". A resumed run keeps its settings; only " + may_change +
                       " may change (start a new run with another --out to change others)");
    }
  }
  saved.out_dir = dir;
  try {
    check_config(saved);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  if (app.count("--steps") > 0) check_not_shortened(saved, checkpoint_step(dir), "--steps");
  return saved;
}

}  // namespace

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
  auto overwrite = std::make_shared<bool>(false);

  CLI::App* app = parent.add_subcommand(
      "train", "Train one model and write metrics, checkpoints and a summary");
  add_config_flags(*app, *cfg);
  app->get_option("--lr")
      ->description(
          "Learning rate (default: 0.01 with sgd; with adam or adamw 1e-3 and rmsprop 1e-2, "
          "PyTorch's defaults)")
      ->default_str("");
  app->get_option("--momentum")
      ->description("Momentum (default: 0.9 with sgd; 0 with rmsprop, PyTorch's default)")
      ->default_str("");
  app->add_option("--out", cfg->out_dir, "Output directory")->capture_default_str();
  app->add_option("--resume", *resume,
                  "Continue the run in DIR from its last checkpoint with its saved config "
                  "(--steps/--epochs may extend it; only " +
                      resume_changeable_flags() + " may change)");
  app->add_flag("--overwrite", *overwrite,
                "Replace the run already in --out (its config, metrics, checkpoints, plots and "
                "eval --json reports)");
  app->add_flag("--summary", *show_summary, "Print the model's layer table before training");

  Runner run = [cfg, resume, show_summary, overwrite, app]() {
    install_interrupt_handlers();  // SIGINT/SIGTERM: checkpoint at the next step boundary
    TrainConfig c = *cfg;
    // Given at all, not "given and not empty": --resume '' silently started a new run in
    // runs/train.
    const bool resuming = app->count("--resume") > 0;
    // Everything the flags decide is checked before any data is read.
    if (resuming) {
      if (resume->empty()) throw UsageError("--resume must name a run directory, got ''");
      if (*overwrite) throw UsageError("--overwrite and --resume contradict each other");
      // The same directory however it is spelled (run/, ./run, a symlink): compared as strings,
      // --resume run/ --out run was refused as a conflict.
      std::error_code ec;
      const bool same_dir =
          fs::equivalent(c.out_dir, *resume, ec) ||
          fs::path(c.out_dir).lexically_normal() == fs::path(*resume).lexically_normal();
      if (app->count("--out") && !same_dir) {
        throw UsageError("--out " + c.out_dir + " conflicts with --resume " + *resume +
                         ": a resumed run stays in its directory");
      }
      c = resumed_config(*app, c, *resume);
    } else {
      if (c.out_dir.empty()) throw UsageError("--out must name a directory, got ''");
      // 0.01 is an SGD rate: another optimizer without --lr takes its own default, as in PyTorch.
      if (app->count("--lr") == 0) c.lr = optimizer_default_lr(c.optimizer).value_or(c.lr);
      // 0.9 is train's SGD default; torch.optim.RMSprop's momentum is 0.
      if (app->count("--momentum") == 0 && c.optimizer == "rmsprop") c.momentum = 0.0f;
      try {
        check_config(c);
      } catch (const Error& e) {
        throw UsageError(e.what());
      }
    }
    // Under mpirun every rank runs this; rank 0 alone prints, writes and holds the lock
    // (train/data_parallel.h).
    Communicator& comm = world();
    const bool root = comm.rank() == 0;
    RunDirLock lock;
    if (root) {
      lock = RunDirLock(c.out_dir);
      std::vector<std::string> files = run_files_in(c.out_dir);
      if (!resuming && !files.empty()) {
        std::string list;
        for (const std::string& f : files) list += (list.empty() ? "" : ", ") + f;
        BNLAB_CHECK(*overwrite, c.out_dir, " already holds a run (", list,
                    "); continue it with --resume ", shell_quote(c.out_dir),
                    ", replace it with --overwrite, or choose another --out");
      }
      BNLAB_CHECK(!resuming || fs::exists(fs::path(c.out_dir) / "config.json"), c.out_dir,
                  " holds no run to resume (no config.json)");
    }
    if (!root) c.quiet = true;
    std::ostringstream out;
    out << "== bnlab train" << (resuming ? " (resuming " + *resume + ")" : "") << "\n"
        << describe_config(c);
    if (comm.size() > 1) {
      out << "parallel:     " << comm.describe() << ", global batch " << comm.size() << " x "
          << c.batch_size << " = " << comm.size() * c.batch_size << ", BatchNorm statistics "
          << (c.sync_bn ? "over the global batch (--sync-bn)" : "per rank") << "\n";
    }
    // Flushed before each long wait (loading the data here, training below): a log's stdout is
    // fully buffered, and the header would wait for the first progress line, lost to a run killed
    // before it (a second Ctrl-C).
    if (root) std::cout << out.str() << std::flush;
    RunData data = load_run_data(c);
    if (c.steps == 0) {
      // Flag checks that need the run's length in steps, known with --epochs only now: the same
      // usage errors as with --steps. Whole global batches per epoch, as the Trainer's loader.
      const int64_t steps = c.epochs * (data.train.size() / (c.batch_size * comm.size()));
      if (steps > 0) {
        try {
          check_schedule_fits(c, steps);
        } catch (const Error& e) {
          throw UsageError(e.what());
        }
        if (resuming && app->count("--epochs") > 0)
          check_not_shortened(c, checkpoint_step(c.out_dir), "--epochs", steps);
      }
    }
    if (root) {
      std::cout << "data:         " << data.train.title() << " " << data.train.size()
                << " images, evaluating on " << data.eval.title() << " " << data.eval.size()
                << (data.test ? ", testing once on " + data.test->title() + " " +
                                    std::to_string(data.test->size())
                              : std::string())
                << "\n";
    }
    if (*show_summary && root) {
      ModelSpec spec = with_geometry_of(c.model, data.train);
      Rng rng(c.seed);
      Model m = build_model(spec, rng);
      std::cout << summary(*m.net, {1, spec.channels, spec.height, spec.width});
    }
    if (root) std::cout.flush();
    TrainResult r = train(c, data, resuming);
    if (!root) return r.diverged ? 3 : 0;
    std::cout << "\n";
    if (r.interrupted_by) {
      std::cout << "interrupted by " << signal_name(r.interrupted_by) << " at step " << r.steps_done
                << "; checkpoint saved in " << c.out_dir << "\n"
                << "resume with: " << resume_command(c) << std::endl;
      return 128 + r.interrupted_by;
    }
    if (r.diverged) std::cout << "DIVERGED at step " << r.diverged_step << "\n";
    if (r.collapsed) std::cout << "COLLAPSED: " << r.collapse_reason << "\n";
    if (r.nonfinite_steps > 0 && !r.diverged) {
      std::cout << r.nonfinite_steps << " step" << (r.nonfinite_steps > 1 ? "s" : "")
                << " had a non-finite loss or gradient (first at step " << r.first_nonfinite_step
                << "; --on-nan " << c.on_nan << ")\n";
    }
    if (!r.rows.empty()) {
      const MetricsRow& last = r.rows.back();
      const std::string kind = split_kind(r.eval_split);
      std::printf("final: step %ld | %s loss %.4f | %s accuracy %.4f | %.0f img/s training\n",
                  static_cast<long>(last.step), kind.c_str(), last.eval_loss, kind.c_str(),
                  last.eval_acc, r.images_per_second);
      if (r.stopped_early) std::printf("stopped early at step %ld\n", static_cast<long>(last.step));
      if (kind == "val") {
        std::printf("best: step %ld | val accuracy %.4f%s\n", static_cast<long>(r.best_step),
                    r.best_eval_acc, c.out_dir.empty() ? "" : " | saved as best.safetensors");
      }
      if (!std::isnan(r.test_acc)) {
        std::printf("test: final model %.4f", r.test_acc);
        if (!std::isnan(r.best_test_acc)) std::printf(" | best model %.4f", r.best_test_acc);
        std::printf(" (measured once, not used for selection)\n");
      }
    }
    if (r.ranks > 1 && r.steps_done > 0) {
      std::printf("allreduce: %.2f ms/step on rank 0 (gradients and loss, %d ranks)\n",
                  1e3 * r.allreduce_seconds / static_cast<double>(r.steps_done), r.ranks);
    }
    if (r.finished_before) {
      std::cout << "unchanged: " << c.out_dir << "\n";
      return r.diverged ? 3 : 0;
    }
    // This run's render, not an existing file: a failed one leaves an older curves.png in place.
    bool curves_drawn = false;
    for (const PlotResult& p : r.plots) {
      if (!p.rendered) std::cout << p.message << "\n";
      if (p.rendered && fs::path(p.png).filename() == "curves.png") curves_drawn = true;
    }
    std::cout << "wrote: " << c.out_dir
              << "/{config.json, metrics.csv, model.safetensors, train_state.safetensors, "
              << "summary.json"
              << (fs::exists(fs::path(c.out_dir) / "best.safetensors") ? ", best.safetensors" : "")
              << (curves_drawn ? ", curves.png" : "") << "}\n";
    return r.diverged ? 3 : 0;
  };
  return {app, run};
}

}  // namespace bnlab::apps

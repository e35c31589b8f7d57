// bnlab data show | info: look at what a model trains on.
#include <algorithm>
#include <iostream>

#include "apps/commands.h"
#include "data/datasets.h"
#include "data/preview.h"
#include "train/knobs.h"

namespace bnlab::apps {

Command add_data_command(CLI::App& parent) {
  struct Options {
    std::string dataset = "mnist", split = "train", data_dir, out = "grid.png";
    int64_t count = 64;
    bool random = false;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* app = parent.add_subcommand(
      "data", "Look at a dataset: a PNG grid of samples, or sizes and statistics");
  app->require_subcommand(1);
  auto common = [&](CLI::App* sub) {
    sub->add_option("--dataset", o->dataset, "mnist, fashion-mnist, cifar10, cifar100, folder:PATH")
        ->check(knob_value("--dataset"))
        ->capture_default_str();
    sub->add_option("--split", o->split,
                    "Split (train, test; cifar10 also val, trainval, test_first1000)")
        ->capture_default_str();
    // The help text of train's --data-dir: one wording of the default rule.
    sub->add_option("--data-dir", o->data_dir, find_knob_by_flag("--data-dir")->help);
    sub->failure_message(CLI::FailureMessage::help);
  };
  CLI::App* show =
      app->add_subcommand("show", "Write a PNG grid of sample images (labels in <out>.txt)");
  common(show);
  show->add_option("--out", o->out,
                   "PNG to write; a symlink's target is written, and a stream (/dev/stdout, a "
                   "FIFO) gets the PNG without the <out>.txt labels")
      ->capture_default_str();
  show->add_option("--count", o->count, "Images in the grid")
      ->check(whole_number_in(1, 1'000'000))
      ->capture_default_str();
  show->add_flag("--random", o->random, "A seeded random sample instead of the first images");
  show->add_option("--seed", o->seed, "Seed for --random")
      ->check(kUnsigned64)
      ->capture_default_str();
  CLI::App* info =
      app->add_subcommand("info", "Print size, class balance and per-channel mean/std");
  common(info);

  Runner run = [o, show]() {
    check_split(o->dataset, o->split);
    // Before the data is read, as ablate's --out: an empty name would only fail at the write.
    if (show->parsed() && o->out.empty()) throw UsageError("--out must name a file, got ''");
    ImageDataset data = load_dataset(o->dataset, o->split, find_data_dir(o->data_dir));
    if (show->parsed()) {
      GridOptions g;
      g.shuffle = o->random;
      g.seed = o->seed;
      // The limit depends on the image size, known only from the data.
      const int64_t fit = max_sample_grid_images(data, g);
      if (std::min(o->count, data.size()) > fit) {
        throw UsageError("--count " + std::to_string(o->count) + ": at most " +
                         std::to_string(fit) + " images of " + std::to_string(data.height) + "x" +
                         std::to_string(data.width) +
                         " fit in one PNG grid (its encoder's sizes are ints)");
      }
      int64_t n = write_sample_grid(data, o->count, o->out, g);
      const std::string listing = sample_grid_listing_path(o->out);
      // A PNG sent to stdout (--out /dev/stdout | display) must stay a PNG: the note goes to
      // stderr.
      (listing.empty() ? std::cerr : std::cout)
          << "wrote " << o->out << " (" << n << " images of " << data.title() << "; "
          << (listing.empty() ? "no label listing: not a regular file" : "labels in " + listing)
          << ")\n";
    } else {
      std::cout << format_info(compute_info(data));
    }
    return 0;
  };
  return {app, run};
}

}  // namespace bnlab::apps

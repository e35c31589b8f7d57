// bnlab study: every claim about batch normalization bnlab can test, each answered by the preset
// built for it, with a verdict (train/study.h). One report: OUT/report.md and OUT/verdicts.csv.
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>

#include "apps/commands.h"
#include "core/error.h"
#include "train/interrupt.h"
#include "train/run_dir.h"
#include "train/study.h"

namespace bnlab::apps {

Command add_study_command(CLI::App& parent) {
  auto spec = std::make_shared<StudySpec>();
  auto budget = std::make_shared<std::string>("quick");
  auto claims = std::make_shared<std::vector<std::string>>();
  auto seeds = std::make_shared<int64_t>(0);
  auto list = std::make_shared<bool>(false);

  std::string claim_list;
  for (const ClaimInfo& c : study_claims()) claim_list += "\n    " + c.id + ": " + c.claim;
  CLI::App* app = parent.add_subcommand(
      "study",
      "Every claim about BN that bnlab can test, each with controls and a verdict: runs the "
      "presets (MNIST, Fashion-MNIST, CIFAR-10) and writes report.md and verdicts.csv");
  app->add_option("--budget", *budget,
                  "quick (a few minutes on 2 cores), standard, or full (the publishable one)")
      ->check(CLI::IsMember({"quick", "standard", "full"}))
      ->capture_default_str();
  app->add_option("--out", spec->out_dir, "Output directory")->capture_default_str();
  app->add_option("--data-dir", spec->data_dir,
                  "Where the datasets are (default: find_data_dir); a directory that exists");
  app->add_option("--claims", *claims, "Answer only these claims (comma-separated):" + claim_list)
      ->delimiter(',');
  app->add_option("--seeds", *seeds, "Seeds per arm (default: the budget's)")
      ->check(whole_number_in(1, 100));
  app->add_option("--seed", spec->seed, "The first seed")
      ->check(kUnsigned64)
      ->capture_default_str();
  app->add_option("--jobs,-j", spec->jobs,
                  "Runs trained at once, sharing the cores (0: one per core)")
      ->check(whole_number_in(0, 1024))
      ->capture_default_str();
  app->add_flag("--list", *list, "List the claims and the experiment answering each, then exit");

  Runner run = [spec, budget, claims, seeds, list]() {
    if (*list) {
      for (const ClaimInfo& c : study_claims())
        std::cout << c.id << " (" << c.experiment << "): " << c.claim
                  << "\n    measure: " << c.measure << "\n";
      return 0;
    }
    StudySpec s = *spec;
    s.budget = study_budget(*budget);
    if (*seeds > 0) s.budget.seeds = *seeds;
    // Each arm's runs take seeds --seed .. --seed + seeds - 1. run_ablation refuses a last seed
    // past 2^64 - 1 too, but only once the study is under way (exit 1); a flag's value is a usage
    // error, found before anything runs, as ablate does.
    constexpr uint64_t kMaxSeed = std::numeric_limits<uint64_t>::max();
    const auto last_offset = static_cast<uint64_t>(s.budget.seeds - 1);
    if (last_offset > kMaxSeed - s.seed) {
      throw UsageError("--seed " + std::to_string(s.seed) + " with " +
                       std::to_string(s.budget.seeds) + " seeds per arm needs seeds past " +
                       std::to_string(kMaxSeed) + ", the largest; use a --seed of at most " +
                       std::to_string(kMaxSeed - last_offset));
    }
    s.claims = *claims;
    for (const std::string& id : s.claims) {
      bool known = false;
      for (const ClaimInfo& c : study_claims()) known |= c.id == id;
      if (!known) throw UsageError("--claims: unknown claim '" + id + "'; see bnlab study --list");
    }
    if (s.out_dir.empty()) throw UsageError("--out must name a directory, got ''");
    // Every experiment would be skipped as "not run": a typo must not look like a study.
    std::error_code ec;
    if (!s.data_dir.empty() && !std::filesystem::is_directory(s.data_dir, ec)) {
      throw UsageError(
          "--data-dir: " + s.data_dir +
          (std::filesystem::exists(s.data_dir, ec) ? " is not a directory" : " does not exist"));
    }
    s.command = quoted_command_line();
    install_interrupt_handlers();
    RunDirLock lock(s.out_dir);  // one study per directory at a time
    std::cout << "== bnlab study: budget " << s.budget.name << ", " << s.budget.seeds
              << " seeds per arm -> " << s.out_dir << std::endl;
    StudyReport r = run_study(s);
    if (r.interrupted_by) {
      // 128 + the signal, as train and ablate: a supervisor tells its own SIGTERM from a Ctrl-C.
      std::cout << "\ninterrupted by " << signal_name(r.interrupted_by)
                << ": the running runs saved a checkpoint; resume with: " << quoted_command_line()
                << std::endl;
      return 128 + r.interrupted_by;
    }
    std::cout << "\n";
    for (const ClaimResult& c : r.claims)
      std::cout << c.verdict.verdict << ": " << c.info.claim << "\n";
    std::cout << "report:   " << r.report_md << "\nverdicts: " << r.verdicts_csv << "\n";
    return 0;
  };
  return {app, run};
}

}  // namespace bnlab::apps

// apps ablate end to end on a tiny MNIST-shaped dataset: the default Figure 1 preset's results.csv,
// summary.md, curves and gnuplot scripts (and PNGs when gnuplot is installed), reuse of finished
// runs, a grid of factors, and a diverging arm recorded (with the step) without stopping the study.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "apps_test_util.h"

using namespace apps_test;

namespace {

std::string ablate_flags(const TempDir& dir, const std::string& out) {
  return "ablate --threads 1 --data-dir " + shell_quote(dir.file("data")) + " --out " +
         shell_quote(out);
}

// results.csv rows as column name -> cell maps (header first in the file).
std::vector<std::map<std::string, std::string>> read_results(const std::string& path) {
  auto rows = parse_csv(read_text(path));
  REQUIRE(!rows.empty());
  std::vector<std::map<std::string, std::string>> out;
  for (size_t i = 1; i < rows.size(); ++i) {
    REQUIRE(rows[i].size() == rows[0].size());
    std::map<std::string, std::string> m;
    for (size_t c = 0; c < rows[0].size(); ++c) m[rows[0][c]] = rows[i][c];
    out.push_back(m);
  }
  return out;
}

bool starts_with_png_signature(const std::string& path) {
  std::string bytes = read_text(path);
  return bytes.size() > 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
}

bool gnuplot_on_path() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

// The summary.md table row of `arm`, or "" when there is none.
std::string table_row(const std::string& markdown, const std::string& arm) {
  size_t at = markdown.find("\n| " + arm + " |");
  if (at == std::string::npos) return "";
  size_t end = markdown.find('\n', at + 1);
  return markdown.substr(at + 1, end == std::string::npos ? std::string::npos : end - at - 1);
}

}  // namespace

TEST_CASE("apps.ablate: the default preset runs both arms, writes the report and reuses runs") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  const std::string out = dir.file("fig1");
  const std::string command =
      ablate_flags(dir, out) + " --steps 30 --eval-every 10 --batch-size 30";
  CliResult r = run_cli(command);
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "2 arms"));

  auto results = read_results(out + "/results.csv");
  std::map<std::string, std::vector<std::string>> steps_by_arm;
  for (auto& row : results) {
    CHECK(row.count("norm") == 1);
    CHECK(row["arm"] == "norm=" + row["norm"]);
    CHECK(row["diverged"] == "0");
    CHECK(row["seed"] == "1");
    steps_by_arm[row["arm"]].push_back(row["step"]);
  }
  const std::vector<std::string> steps = {"0", "10", "20", "30"};
  CHECK(steps_by_arm.size() == 2);
  CHECK(steps_by_arm["norm=none"] == steps);
  CHECK(steps_by_arm["norm=batch"] == steps);
  // Matched arms: the same initial weights, so the untrained models score (nearly) the same (BN in
  // eval mode at initialization only divides by sqrt(1 + eps)).
  CHECK(std::stod(results[0]["test_loss"]) ==
        doctest::Approx(std::stod(results[4]["test_loss"])).epsilon(1e-3));

  const std::string summary = read_text(out + "/summary.md");
  CHECK(contains(summary, "| arm |"));
  CHECK(contains(summary, "| failed |"));
  CHECK(table_row(summary, "norm=none") != "");
  CHECK(table_row(summary, "norm=batch") != "");
  CHECK(contains(r.output, table_row(summary, "norm=batch")));  // the table is printed too
  for (const char* f : {"curves.dat", "accuracy.gp", "percentiles.gp"}) {
    CAPTURE(f);
    CHECK(fs::exists(fs::path(out) / f));
  }
  CHECK(contains(read_text(out + "/curves.dat"), "# norm=batch"));
  if (gnuplot_on_path()) {
    REQUIRE(fs::exists(out + "/accuracy.png"));
    CHECK(starts_with_png_signature(out + "/accuracy.png"));
    CHECK(fs::exists(out + "/percentiles.png"));
  }
  CHECK(fs::exists(out + "/runs/norm-none/seed-1/summary.json"));
  CHECK(fs::exists(out + "/runs/norm-batch/seed-1/model.safetensors"));

  // The same command again trains nothing: both runs are reused and the results are identical.
  const std::string csv = read_text(out + "/results.csv");
  CliResult again = run_cli(command);
  CAPTURE(again.output);
  REQUIRE(again.exit_code == 0);
  CHECK(contains(again.output, "norm=none: already finished"));
  CHECK(contains(again.output, "norm=batch: already finished"));
  CHECK(contains(again.output, "reusing"));
  CHECK(read_text(out + "/results.csv") == csv);
  CHECK(read_text(out + "/summary.md") == summary);
}

TEST_CASE("apps.ablate: a finished run whose metrics.csv disagrees with its summary is refused") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  const std::string out = dir.file("fig1");
  const std::string command =
      ablate_flags(dir, out) + " --steps 10 --eval-every 5 --batch-size 30 --vary norm=none";
  REQUIRE(run_cli(command).exit_code == 0);
  const std::string metrics = out + "/runs/norm-none/seed-1/metrics.csv";
  const std::string full = read_text(metrics);
  const std::string header = full.substr(0, full.find('\n') + 1);
  const std::string without_last_row = full.substr(0, full.rfind('\n', full.size() - 2) + 1);
  // Rewrites metrics.csv and runs the same sweep again.
  auto rerun_with = [&](const std::string& text) {
    std::ofstream(metrics) << text;
    return run_cli(command);
  };

  CliResult emptied = rerun_with(header);
  CAPTURE(emptied.output);
  CHECK(emptied.exit_code == 1);
  CHECK(contains(emptied.output, "metrics.csv has no rows"));
  CHECK(contains(emptied.output, "summary.json records a finished run"));
  CliResult cut = rerun_with(without_last_row);
  CAPTURE(cut.output);
  CHECK(cut.exit_code == 1);
  CHECK(contains(cut.output, "metrics.csv's last row (step 5)"));
  CHECK(contains(cut.output, "the files are not from one run"));
  // The refusals changed nothing: restored, the run is reused as before.
  CliResult restored = rerun_with(full);
  CAPTURE(restored.output);
  CHECK(restored.exit_code == 0);
  CHECK(contains(restored.output, "norm=none: already finished"));
}

// An interrupted sweep rerun with one flag changed used to start the unfinished arms over, deleting
// their checkpoints without a word.
TEST_CASE("apps.ablate: an unfinished run with a different config is refused and kept") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  const std::string out = dir.file("out");
  const std::string command = ablate_flags(dir, out) +
                              " --model mlp --steps 10 --eval-every 5 --batch-size 20 "
                              "--vary norm=batch";
  REQUIRE(run_cli(command).exit_code == 0);
  // The run as if the sweep had stopped after its last checkpoint: no summary.json.
  const std::string run = out + "/runs/norm-batch/seed-1";
  fs::remove(run + "/summary.json");
  const std::string state = read_text(run + "/train_state.safetensors");
  const std::string metrics = read_text(run + "/metrics.csv");

  CliResult changed = run_cli(command + " --lr 0.4");
  CAPTURE(changed.output);
  CHECK(changed.exit_code == 1);
  CHECK(contains(changed.output, "error: ablate: " + run +
                                     " holds an unfinished run (checkpoint at step 10) with a "
                                     "different config (lr 0.1 -> 0.4); rerun the command that "
                                     "started it to resume it"));
  CHECK(read_text(run + "/train_state.safetensors") == state);
  CHECK(read_text(run + "/metrics.csv") == metrics);
  CHECK_FALSE(fs::exists(run + "/summary.json"));

  // The command that started it resumes it and finishes the sweep.
  CliResult same = run_cli(command);
  CAPTURE(same.output);
  CHECK(same.exit_code == 0);
  CHECK(fs::exists(run + "/summary.json"));
}

TEST_CASE("apps.ablate: two --vary factors give one arm per combination") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  const std::string out = dir.file("grid");
  CliResult r = run_cli(ablate_flags(dir, out) +
                        " --steps 10 --eval-every 10 --batch-size 30 --vary norm=none,batch "
                        "--vary lr-mult=1,30");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "4 arms"));

  const std::set<std::string> expected = {"norm=none,lr-mult=1", "norm=none,lr-mult=30",
                                          "norm=batch,lr-mult=1", "norm=batch,lr-mult=30"};
  std::set<std::string> arms;
  for (auto& row : read_results(out + "/results.csv")) {
    arms.insert(row["arm"]);
    CHECK(row["arm"] == "norm=" + row["norm"] + ",lr-mult=" + row["lr-mult"]);
    // lr-mult multiplies the preset's base learning rate, 0.5.
    CHECK(std::stod(row["lr"]) == doctest::Approx(0.5 * std::stod(row["lr-mult"])));
  }
  CHECK(arms == expected);
  const std::string summary = read_text(out + "/summary.md");
  for (const std::string& arm : expected) {
    CAPTURE(arm);
    CHECK(table_row(summary, arm) != "");
  }
}

TEST_CASE("apps.ablate: a diverging arm is recorded as diverged and the study finishes") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  const std::string out = dir.file("diverge");
  CliResult r = run_cli(ablate_flags(dir, out) +
                        " --model mlp --steps 10 --eval-every 5 --batch-size 20 "
                        "--vary lr-mult=1,1e6");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "diverged"));

  const std::string summary = read_text(out + "/summary.md");
  const std::string stable = table_row(summary, "lr-mult=1");
  const std::string diverged = table_row(summary, "lr-mult=1e6");
  CAPTURE(summary);
  REQUIRE(stable != "");
  REQUIRE(diverged != "");
  // The step it diverged at is in the table, in results.csv and in the run's summary.json.
  const std::string summary_json = read_text(out + "/runs/lr-mult-1e6/seed-1/summary.json");
  const std::string key = "\"diverged_step\": ";
  const size_t at = summary_json.find(key) + key.size();
  REQUIRE(at >= key.size());
  const std::string step = summary_json.substr(at, summary_json.find_first_of(",\n", at) - at);
  CAPTURE(step);
  CHECK(std::stoll(step) >= 1);
  CHECK(contains(diverged, "| 1/1 diverged at step " + step + " |"));
  CHECK_FALSE(contains(stable, "diverged"));  // (in 10 steps it may count as collapsed)
  for (auto& row : read_results(out + "/results.csv")) {
    CAPTURE(row["arm"]);
    const bool bad = row["arm"] == "lr-mult=1e6";
    CHECK(row["diverged"] == (bad ? "1" : "0"));
    CHECK(row["diverged_step"] == (bad ? step : "-1"));
  }
}

TEST_CASE("apps.ablate: without --lr each model trains at its own default rate") {
  TempDir dir;  // no data: the arms are listed before any is read
  CliResult r = run_cli(ablate_flags(dir, dir.file("out")) +
                        " --vary model=paper-mlp,lenet,cifar-cnn --vary lr-mult=1,2");
  CAPTURE(r.output);
  CHECK(contains(r.output, "arm:          model=paper-mlp,lr-mult=1 (lr 0.5)"));
  CHECK(contains(r.output, "arm:          model=lenet,lr-mult=1 (lr 0.05)"));
  CHECK(contains(r.output, "arm:          model=lenet,lr-mult=2 (lr 0.1)"));
  CHECK(contains(r.output, "arm:          model=cifar-cnn,lr-mult=2 (lr 0.1)"));
  // An explicit --lr is every arm's base rate; an lr factor sets the rate outright.
  r = run_cli(ablate_flags(dir, dir.file("out2")) + " --lr 0.2 --vary model=mlp,lenet");
  CHECK(contains(r.output, "arm:          model=mlp (lr 0.2)"));
  CHECK(contains(r.output, "arm:          model=lenet (lr 0.2)"));
  r = run_cli(ablate_flags(dir, dir.file("out3")) + " --vary lr=0.3 --vary model=mlp,lenet");
  CHECK(contains(r.output, "arm:          lr=0.3,model=lenet (lr 0.3)"));
  CHECK(
      contains(r.output, "ablation: mlp, lenet on mnist"));  // the title names what the arms train
}

// summary.md gave the base model's rate (paper-mlp's 0.5) when every arm trained mlp at 0.1 (the
// regularization preset).
TEST_CASE("apps.ablate: the summary gives the learning rates the arms train at") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  const std::string out = dir.file("out");
  CliResult r = run_cli(ablate_flags(dir, out) +
                        " --steps 2 --eval-every 2 --batch-size 20 --vary model=mlp "
                        "--vary lr-mult=1,3");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  std::string summary = read_text(out + "/summary.md");
  CAPTURE(summary);
  CHECK(contains(summary, ", sgd lr by arm 0.1, 0.3 (each model's default: 0.1 for mlp), 2 steps"));
  CHECK_FALSE(contains(summary, "paper-mlp"));
  // An explicit --lr is the one rate.
  r = run_cli(ablate_flags(dir, out + "2") +
              " --lr 0.2 --steps 2 --eval-every 2 --batch-size 20 --vary model=mlp");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  summary = read_text(out + "2/summary.md");
  CHECK(contains(summary, ", sgd lr 0.2, 2 steps"));
}

// The inference table's "batch 1000" column measured one batch of the 64-image test split.
TEST_CASE("apps.ablate: an inference batch larger than the test split is labelled as the split") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 64);
  const std::string out = dir.file("out");
  CliResult r = run_cli(ablate_flags(dir, out) + " --preset inference --steps 2 --eval-every 2");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string summary = read_text(out + "/summary.md");
  CAPTURE(summary);
  CHECK(contains(summary,
                 "| arm | running averages | batch statistics, batch 4 | batch statistics, batch "
                 "60 | batch statistics, batch 64 (the whole split; 1000 asked) |\n"));
}

// The batch-size=20 arm trained first; then the Trainer refused batch 1000 (exit 1) without naming
// the arm, and no report was written.
TEST_CASE("apps.ablate: an arm whose batch exceeds the training set is refused before any arm") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  const std::string out = dir.file("out");
  CliResult r = run_cli(ablate_flags(dir, out) +
                        " --model mlp --steps 2 --eval-every 2 --vary batch-size=20,1000");
  CAPTURE(r.output);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.output,
                 "error: ablate: arm batch-size=1000 has batch size 1000, more than the 120 "
                 "training images of mnist/train; choose a batch size of at most 120"));
  CHECK_FALSE(fs::exists(out + "/runs/batch-size-20/seed-1/config.json"));  // nothing trained
}

// accuracy.png's title was gnuplot "enhanced" text: My_title^2 was drawn with a subscript "t" and
// a superscript "2".
TEST_CASE("apps.ablate: the accuracy plot's title is drawn verbatim") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  const std::string out = dir.file("out");
  CliResult r = run_cli(ablate_flags(dir, out) +
                        " --model mlp --steps 2 --eval-every 2 --batch-size 20 --vary norm=none "
                        "--title 'My_title^2 @{x}'");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string gp = read_text(out + "/accuracy.gp");
  CAPTURE(gp);
  const size_t at = gp.find("set multiplot layout 1,2 title ");
  REQUIRE(at != std::string::npos);
  const std::string line = gp.substr(at, gp.find('\n', at) - at);
  CHECK(contains(line, "My_title^2 @{x} (1 seed)"));
  CHECK(line.size() > 10);
  CHECK(line.substr(line.size() - 10) == "noenhanced");
}

// The lr preset holds out 5000 validation images; on a small training set the error named a
// --val-split the user never passed.
TEST_CASE("apps.ablate: a validation split the lr preset chose is named as the preset's") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  CliResult r = run_cli(ablate_flags(dir, dir.file("out")) + " --preset lr --steps 2");
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output,
                 "error: --val-split 5000 leaves no training images of mnist/train's 120 "
                 "(--preset lr sets --val-split 5000 to choose each arm's rate on held-out "
                 "images; give a smaller --val-split)"));
  // A --val-split given is the user's own: its message is the plain one.
  r = run_cli(ablate_flags(dir, dir.file("out")) + " --preset lr --steps 2 --val-split 200");
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(
      contains(r.output, "error: --val-split 200 leaves no training images of mnist/train's 120"));
  CHECK_FALSE(contains(r.output, "sets --val-split"));
}

// Those default rates are SGD rates: Adam, AdamW and RMSprop took them too (paper-mlp's 0.5), where
// a PyTorch user expects the optimizer's own default, and Adam at 0.5 collapses.
TEST_CASE("apps.ablate: without --lr another optimizer trains at its own default rate") {
  TempDir dir;  // no data: the arms are listed before any is read
  CliResult r =
      run_cli(ablate_flags(dir, dir.file("out")) + " --vary optimizer=sgd,adam,adamw,rmsprop");
  CAPTURE(r.output);
  CHECK(contains(r.output, "arm:          optimizer=sgd (lr 0.5)"));
  CHECK(contains(r.output, "arm:          optimizer=adam (lr 0.001)"));
  CHECK(contains(r.output, "arm:          optimizer=adamw (lr 0.001)"));
  CHECK(contains(r.output, "arm:          optimizer=rmsprop (lr 0.01)"));
  r = run_cli(ablate_flags(dir, dir.file("out2")) + " --optimizer adam --vary norm=none,batch");
  CAPTURE(r.output);
  CHECK(contains(r.output, "arm:          norm=none (lr 0.001)"));
  CHECK(contains(r.output, "optimizer:    adam lr 0.001,"));
  r = run_cli(ablate_flags(dir, dir.file("out3")) + " --optimizer adam --lr 0.02 --vary norm=none");
  CHECK(contains(r.output, "arm:          norm=none (lr 0.02)"));
  CHECK(contains(run_cli("ablate --help").output, "with adam or adamw 1e-3 and rmsprop 1e-2"));
}

TEST_CASE("apps.ablate: one table per dataset, with thresholds that suit it") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  fs::copy(dir.file("data") + "/mnist", dir.file("data") + "/fashion-mnist");  // same format
  const std::string out = dir.file("out");
  CliResult r = run_cli(ablate_flags(dir, out) +
                        " --model mlp --steps 10 --eval-every 5 --batch-size 20 "
                        "--vary dataset=mnist,fashion-mnist --vary norm=none,batch");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string summary = read_text(out + "/summary.md");
  CAPTURE(summary);
  const size_t mnist = summary.find("### mnist"), fashion = summary.find("### fashion-mnist");
  REQUIRE(mnist != std::string::npos);
  REQUIRE(fashion != std::string::npos);
  CHECK(summary.find("steps to 98%", mnist) < fashion);               // MNIST's thresholds
  CHECK(summary.find("steps to 85%", fashion) != std::string::npos);  // Fashion-MNIST's
  CHECK(summary.find("steps to 98%", fashion) == std::string::npos);
  // Each table's baseline is its first arm on that dataset.
  CHECK(summary.find("| dataset=fashion-mnist,norm=none |", fashion) != std::string::npos);
  // Plots people can read: legend outside the curves, arm colours from one palette, percentile
  // panels in a grid of at most four columns.
  const std::string acc_gp = read_text(out + "/accuracy.gp");
  CHECK(contains(acc_gp, "set key outside right top"));
  CHECK(contains(acc_gp, "lc rgb '#0072B2' dt 1"));
  CHECK(contains(read_text(out + "/percentiles.gp"), "set multiplot layout 1,4"));
  // --thresholds replaces them everywhere.
  r = run_cli(ablate_flags(dir, out) +
              " --model mlp --steps 10 --eval-every 5 --batch-size 20 "
              "--vary dataset=mnist,fashion-mnist --vary norm=none,batch --thresholds 0.2,0.3");
  REQUIRE(r.exit_code == 0);
  const std::string again = read_text(out + "/summary.md");
  CHECK(contains(again, "steps to 20% | steps to 30% |"));
  CHECK_FALSE(contains(again, "steps to 85%"));
  CHECK(run_cli(ablate_flags(dir, out) + " --thresholds 1.5").exit_code == 2);
  // NaN passes every range comparison; it made a column "steps to nan%".
  for (const char* bad : {"nan", "0.9,nan", "inf", "0.9x"}) {
    CAPTURE(bad);
    const CliResult t = run_cli(ablate_flags(dir, out) + " --thresholds " + bad);
    CHECK(t.exit_code == 2);
    CHECK(contains(t.output, "--thresholds"));
    CHECK(contains(t.output, "from 0 to 1"));
  }
}

TEST_CASE("apps.ablate: a rate sweep also compares each arm at its own best rate, chosen on val") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 200, 60);
  const std::string out = dir.file("out");
  CliResult r = run_cli(ablate_flags(dir, out) +
                        " --model mlp --steps 20 --eval-every 10 --batch-size 20 --val-split 60 "
                        "--vary norm=none,batch --vary lr-mult=0.1,1,3");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string summary = read_text(out + "/summary.md");
  CAPTURE(summary);
  const size_t at = summary.find("Each arm at its own best learning rate (chosen on val accuracy");
  REQUIRE(at != std::string::npos);
  CHECK(summary.find("Test accuracy of the chosen arms (measured once", at) != std::string::npos);
  // The chosen arm of each norm is the one with the highest final val_acc in results.csv (the
  // first of equal ones), unless it failed.
  for (const std::string norm : {"none", "batch"}) {
    std::string best_arm;
    double best = -1;
    for (const std::string mult : {"0.1", "1", "3"}) {
      const std::string arm = "norm=" + norm + ",lr-mult=" + mult;
      double last = -1;
      for (auto& row : read_results(out + "/results.csv"))
        if (row["arm"] == arm) last = std::stod(row["val_acc"]);
      const std::string main_row = table_row(summary.substr(0, at), arm);
      if (contains(main_row, "collapsed") || contains(main_row, "diverged")) continue;
      if (last > best) {
        best = last;
        best_arm = arm;
      }
    }
    CAPTURE(norm);
    if (!best_arm.empty()) CHECK(table_row(summary.substr(at), best_arm) != "");
  }
}

// Without --val-split the runs evaluate on test, and summary.json's final_test_acc is that. A
// rerun that reused the runs read it as a held-out split and added "Test accuracy of the chosen
// arms (measured once, not used to choose)" under a table chosen on test accuracy.
TEST_CASE("apps.ablate: a rerun of a rate sweep reusing its runs writes the same summary") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 200, 60);
  const std::string out = dir.file("out");
  const std::string command = ablate_flags(dir, out) +
                              " --model mlp --steps 4 --eval-every 2 --batch-size 20 "
                              "--vary norm=none,batch --vary lr-mult=1,3";
  CliResult fresh = run_cli(command);
  CAPTURE(fresh.output);
  REQUIRE(fresh.exit_code == 0);
  const std::string summary = read_text(out + "/summary.md");
  CAPTURE(summary);
  CHECK(contains(summary, "Each arm at its own best learning rate (chosen on test accuracy"));
  CHECK_FALSE(contains(summary, "measured once"));

  CliResult again = run_cli(command);
  CAPTURE(again.output);
  REQUIRE(again.exit_code == 0);
  CHECK(contains(again.output, "reusing"));
  CHECK(read_text(out + "/summary.md") == summary);
}

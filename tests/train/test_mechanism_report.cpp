// The mechanism preset's analysis: reading a run's mechanism.csv / ics.csv back (the readers of
// train/mechanism.h), the per-run summaries the study's claims use (on numbers worked out by
// hand), and the preset and its study rows end to end on a tiny MNIST.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "apps/apps_test_util.h"
#include "core/error.h"
#include "core/io.h"
#include "train/mechanism_report.h"
#include "train/study.h"
#include "train/study_test_util.h"

using namespace bnlab;
using apps_test::TempDir;

namespace {

const char* kMechanismHeader =
    "step,loss,grad_norm,loss_min,loss_max,grad_diff_min,grad_diff_max,beta_smoothness,probe_p15,"
    "probe_p50,probe_p85,probe_mean,probe_std\n";

}  // namespace

TEST_CASE("train.mechanism_report: a run's measurements read back, summarised as documented") {
  TempDir dir;
  write_file_atomic(dir.file("mechanism.csv"),
                    std::string(kMechanismHeader) +
                        "10,2.0,1.0,1.9,2.1,0.1,0.5,10,-1,0,1,0.0,1.0\n"
                        "20,1.5,0.8,1.4,1.6,0.1,0.4,100,-1,0,1,0.3,1.4\n"
                        "30,1.2,0.7,1.1,1.3,0.1,0.3,1000,-1,0,1,0.3,1.4\n");
  write_file_atomic(dir.file("ics.csv"),
                    "step,layer,param,grad_norm,grad_norm_after,l2_diff,cosine\n"
                    "10,0,0.weight,1.0,1.0,0,1\n"
                    "10,1,2.weight,2.0,2.1,1.0,0.5\n"
                    "20,0,0.weight,1.0,1.0,0,1\n"
                    "20,1,2.weight,4.0,4.1,1.0,0.7\n");
  MechanismRun run = read_mechanism_run(dir.path.string());
  REQUIRE(run.steps.size() == 3);
  REQUIRE(run.ics.size() == 4);
  CHECK(run.steps[1].step == 20);
  CHECK(run.steps[1].loss_max == doctest::Approx(1.6));
  CHECK(run.steps[2].beta_smoothness == doctest::Approx(1000));
  // ICS summaries skip layer 0, which has no preceding layer: cosines 0.5 and 0.7.
  CHECK(mean_ics_cosine(run) == doctest::Approx(0.6));
  CHECK(mean_ics_relative_l2(run) == doctest::Approx((0.5 + 0.25) / 2));
  CHECK(mean_log10_beta(run) == doctest::Approx(2.0));
  // (mean, std) moves by (0.3, 0.4) then (0, 0): RMS of |change| = sqrt((0.25 + 0) / 2).
  CHECK(activation_drift(run) == doctest::Approx(std::sqrt(0.125)));
}

TEST_CASE("train.mechanism_report: no measurements is empty, a malformed file is named") {
  TempDir dir;
  MechanismRun none = read_mechanism_run(dir.path.string());
  CHECK(none.empty());
  CHECK(std::isnan(activation_drift(none)));
  CHECK(std::isnan(mean_ics_cosine(none)));
  write_file_atomic(dir.file("mechanism.csv"), std::string(kMechanismHeader) + "10,2.0,1.0\n");
  CHECK_THROWS_WITH(read_mechanism_run(dir.path.string()),
                    doctest::Contains("mechanism.csv: expected 13 columns"));
  write_file_atomic(dir.file("mechanism.csv"),
                    std::string(kMechanismHeader) + "10,2.0,1.0,1.9,2.1,0.1,0.5,x,-1,0,1,0,1\n");
  CHECK_THROWS_WITH(read_mechanism_run(dir.path.string()),
                    doctest::Contains("mechanism.csv: cannot read line"));
}

TEST_CASE("train.mechanism_report: the mechanism preset and its study rows, end to end") {
  TempDir dir;
  StudySpec spec = study_test::tiny_study(dir);
  spec.claims = {"ics-reduced", "noisy-bn-shift", "noisy-bn-speed", "smoother"};
  StudyReport r = run_study(spec);
  REQUIRE(r.claims.size() == 4);
  for (const ClaimResult& c : r.claims) {
    CAPTURE(c.info.id);
    CHECK(c.verdict.n == 2);
    CHECK(std::isfinite(c.verdict.mean));
  }
  // Every arm measured at each evaluation (steps 10 and 20).
  for (const char* arm : {"norm-none", "norm-batch", "norm-noisy-batch"}) {
    CAPTURE(arm);
    MechanismRun run = read_mechanism_run(
        (std::filesystem::path(spec.out_dir) / "mechanism" / "runs" / arm / "seed-1").string());
    REQUIRE(run.steps.size() == 2);
    CHECK(run.steps[0].step == 10);
    CHECK(!run.ics.empty());
  }
  const std::string csv = read_file(r.verdicts_csv);
  CHECK(csv.find("\nics-explains,") != std::string::npos);
  const std::string md = read_file(r.report_md);
  CHECK(md.find("Does reducing ICS explain BN's speed-up?") != std::string::npos);
  CHECK(md.find("### Mechanism") != std::string::npos);
}

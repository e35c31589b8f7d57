// bnlab study: the verdict rule on known numbers, and a small study end to end on a tiny MNIST
// (claims whose data is missing are reported as not run, with the reason; corrupt data stops it).
#include <doctest/doctest.h>

#include <cmath>

#include "apps/apps_test_util.h"
#include "core/io.h"
#include "train/study.h"
#include "train/study_test_util.h"

using namespace bnlab;
using apps_test::TempDir;

TEST_CASE("train.study: the verdict is the 95 % t interval's side of zero") {
  // mean 2, sd 1, n 3: t(2) = 4.303, half width 4.303 / sqrt(3) = 2.484: [-0.484, 4.484].
  Verdict wide = verdict_of({1, 2, 3});
  CHECK(wide.n == 3);
  CHECK(wide.mean == doctest::Approx(2));
  CHECK(wide.std == doctest::Approx(1));
  CHECK(wide.ci_low == doctest::Approx(2 - 4.303 / std::sqrt(3.0)));
  CHECK(wide.ci_high == doctest::Approx(2 + 4.303 / std::sqrt(3.0)));
  CHECK(wide.verdict == "inconclusive");
  CHECK(verdict_of({1.0, 1.1, 0.9, 1.0, 1.05}).verdict == "supported");
  CHECK(verdict_of({-1.0, -1.1, -0.9, -1.0, -1.05}).verdict == "not supported");
  // Past 30 degrees of freedom: Student's t, not the normal's 1.96 (4 % too narrow at df 31).
  // Quantiles from tables: df 31 2.0395, 40 2.0211, 60 2.0003, 99 1.9842.
  for (const auto& [n, quantile] :
       {std::pair{32, 2.0395}, {41, 2.0211}, {61, 2.0003}, {100, 1.9842}}) {
    CAPTURE(n);
    std::vector<double> values;
    for (int i = 0; i < n; ++i) values.push_back(i % 2 ? 1.0 : -1.0);
    const Verdict v = verdict_of(values);
    const double half = quantile * v.std / std::sqrt(static_cast<double>(n));
    CHECK(v.ci_high - v.mean == doctest::Approx(half).epsilon(2e-4));
  }
  // One value, or NaNs only: no interval.
  CHECK(verdict_of({0.5}).verdict == "inconclusive");
  CHECK(std::isnan(verdict_of({0.5}).ci_low));
  Verdict nans = verdict_of({NAN, NAN, 0.2});
  CHECK(nans.n == 1);
  CHECK(nans.verdict == "inconclusive");
}

TEST_CASE("train.study: budgets and claims are named, unknown ones refused") {
  CHECK(study_budget("quick").seeds >= 2);
  CHECK(study_budget("full").mnist_steps > study_budget("standard").mnist_steps);
  CHECK_THROWS_WITH(study_budget("huge"), doctest::Contains("quick, standard or full"));
  StudySpec spec;
  spec.claims = {"no-such-claim"};
  CHECK_THROWS_WITH(run_study(spec), doctest::Contains("unknown claim 'no-such-claim'"));
  for (const ClaimInfo& c : study_claims()) {
    CAPTURE(c.id);
    CHECK(!c.claim.empty());
    CHECK(!c.measure.empty());
  }
}

TEST_CASE("train.study: a small study writes verdicts for what it ran and says what it could not") {
  TempDir dir;
  StudySpec spec = study_test::tiny_study(dir);
  spec.claims = {"faster-shared-lr", "cost", "placement", "cifar10"};
  StudyReport r = run_study(spec);
  REQUIRE(r.claims.size() == 4);
  for (const ClaimResult& c : r.claims) {
    CAPTURE(c.info.id);
    if (c.info.id == "cifar10") {
      CHECK(c.verdict.verdict == "not run");
      CHECK(c.verdict.note.find("cifar") != std::string::npos);  // the loader's reason
      continue;
    }
    CHECK(c.verdict.n == 2);
    CHECK((c.verdict.verdict == "supported" || c.verdict.verdict == "not supported" ||
           c.verdict.verdict == "inconclusive"));
    CHECK(std::isfinite(c.verdict.mean));
  }
  const std::string md = read_file(r.report_md);
  CHECK(md.find("**The rule.**") != std::string::npos);
  CHECK(md.find("## fig1") != std::string::npos);
  CHECK(md.find("## placement") != std::string::npos);
  CHECK(md.find("## cifar10\n\nNot run: ") != std::string::npos);
  const std::string csv = read_file(r.verdicts_csv);
  CHECK(csv.rfind("claim_id,claim,experiment,measure,n,mean,std,ci_low,ci_high,verdict,note\n",
                  0) == 0);
  CHECK(csv.find("\ncifar10,") != std::string::npos);
  // Both fig1 claims read one experiment: it ran once (two arms x two seeds).
  CHECK(std::filesystem::exists(dir.file("study/fig1/runs")));
  CHECK(!std::filesystem::exists(dir.file("study/lr")));

  // Run again: every run is reused, and the per-seed effects come out the same (to the digits
  // metrics.csv keeps).
  StudyReport again = run_study(spec);
  for (size_t i = 0; i < r.claims.size(); ++i) {
    if (r.claims[i].info.id == "cost" || r.claims[i].info.id == "cifar10") continue;  // timing
    CHECK(again.claims[i].verdict.mean == doctest::Approx(r.claims[i].verdict.mean).epsilon(1e-5));
  }
}

// A dataset that is there but corrupt is not "missing": skipping it reported "not run" and exit 0,
// where data info and train stop naming the file.
TEST_CASE("train.study: a corrupt dataset stops the study naming the file") {
  TempDir dir;
  StudySpec spec = study_test::tiny_study(dir);
  spec.claims = {"faster-shared-lr"};
  const std::string images = dir.file("data") + "/mnist/train-images-idx3-ubyte";
  std::string bytes = read_file(images);
  bytes += "12345678";  // trailing bytes after the last image
  write_file_atomic(images, bytes);
  try {
    run_study(spec);
    FAIL("run_study accepted a corrupt dataset");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(msg.find("train-images-idx3-ubyte") != std::string::npos);
    CHECK(msg.find("trailing") != std::string::npos);
  }
  CHECK(!std::filesystem::exists(dir.file("study/fig1/runs")));  // nothing was trained
}

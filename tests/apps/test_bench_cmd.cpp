// bnlab bench: a minimal real run writes the table and a JSON document with every measured field,
// and --paired the in-process cost of a norm against none and the speed-up over the first thread
// count; bad or empty lists and an empty --json are rejected with the offending value named;
// bench/compare_pytorch.py's pure helpers pass their own tests. (No timing is asserted.)
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "apps_test_util.h"
#include "core/blas.h"
#include "core/io.h"

using namespace bnlab;
using namespace bnlab::testing;
using namespace apps_test;

namespace {

// `bnlab bench FLAGS --json FILE` in a temporary directory: the run and, when it succeeded, the
// JSON it wrote (else null).
struct BenchRun {
  CliResult cli;
  nlohmann::json doc;
};

BenchRun run_bench(const std::string& flags) {
  TempDir dir;
  const std::string json_path = dir.file("bench.json");
  BenchRun run{run_cli("bench " + flags + " --json " + shell_quote(json_path)), nullptr};
  if (run.cli.exit_code == 0) run.doc = nlohmann::json::parse(read_file(json_path));
  return run;
}

// One paired measurement of --repeats 1: its rounds and ordered quartiles of positive ratios.
void check_paired_quartiles(const nlohmann::json& q) {
  CHECK(q["rounds"] == 7);  // at least 7, 3 x --repeats otherwise
  CHECK(q["steps_per_round"].get<int64_t>() >= 1);
  CHECK(q["q1"].get<double>() > 0.0);
  CHECK(q["q1"].get<double>() <= q["median"].get<double>());
  CHECK(q["median"].get<double>() <= q["q3"].get<double>());
}

}  // namespace

TEST_CASE("apps.bench: one short workload writes the table and the JSON") {
  const BenchRun run = run_bench(
      "--workloads W1 --norms none,batch --threads 1 --repeats 2 --seconds 0.01 --warmup 0");
  const CliResult& r = run.cli;
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("paper-mlp") != std::string::npos);
  CHECK(r.output.find("no-BN/BN train") != std::string::npos);
  const auto& doc = run.doc;
  REQUIRE(doc["results"].size() == 2);
  for (const auto& row : doc["results"]) {
    CHECK(row["workload"] == "W1");
    CHECK(row["batch"] == 60);
    CHECK(row["threads"] == 1);
    CHECK(row["train"]["repeats"] == 2);
    CHECK(row["train"]["min"].get<double>() > 0.0);
    CHECK(row["train"]["min"].get<double>() <= row["train"]["median"].get<double>());
    CHECK(row["train"]["median"].get<double>() <= row["train"]["max"].get<double>());
    CHECK(row["infer"]["median"].get<double>() > 0.0);
    CHECK(row["peak_rss_mb"].get<double>() > 0.0);
    // Each child records its own OpenBLAS (build string with the kernel core, threading, threads).
    CHECK(row["blas"].get<std::string>().find("OpenBLAS") != std::string::npos);
    CHECK(row["blas_parallel"] == "OpenMP");
    CHECK(row["blas_threads"] == 1);
    // ... and which GEMM ran (the child inherits this process's environment and CPU).
    CHECK(row["gemm"] == gemm_path_name());
  }
  CHECK(doc["gemm"] == gemm_path_name());
  CHECK(r.output.find("GEMM " + gemm_path_name()) != std::string::npos);
  CHECK(doc["results"][0]["norm"] == "none");
  CHECK(doc["results"][1]["norm"] == "batch");
}

TEST_CASE("apps.bench: --norms takes every zoo normalization and reports each one's cost") {
  const BenchRun run = run_bench(
      "--workloads W1 --norms none,batch-renorm,layer --threads 1 --repeats 1 --seconds 0.01 "
      "--warmup 0 --train-only");
  const CliResult& r = run.cli;
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("none/batch-renorm train") != std::string::npos);
  CHECK(r.output.find("none/layer train") != std::string::npos);
  const auto& doc = run.doc;
  REQUIRE(doc["results"].size() == 3);
  CHECK(doc["results"][1]["norm"] == "batch-renorm");
  CHECK(doc["results"][2]["norm"] == "layer");
}

TEST_CASE("apps.bench: --paired measures each norm against none in one process") {
  const BenchRun run = run_bench(
      "--workloads W1 --norms none,batch --threads 1 --repeats 1 --seconds 0.01 --warmup 0 "
      "--paired");
  const CliResult& r = run.cli;
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("W1  1 thr: batch/none train ") != std::string::npos);
  CHECK(r.output.find(", infer ") != std::string::npos);
  const auto& doc = run.doc;
  REQUIRE(doc["paired"].size() == 1);
  const auto& p = doc["paired"][0];
  CHECK(p["workload"] == "W1");
  CHECK(p["norm"] == "batch");
  for (const char* mode : {"train", "infer"}) {
    CAPTURE(mode);
    check_paired_quartiles(p[mode]);
  }
  // Without --paired there is no such section.
  CliResult plain = run_cli(
      "bench --workloads W1 --norms none,batch --threads 1 --repeats 1 --seconds 0.01 "
      "--warmup 0 --train-only");
  CHECK(plain.exit_code == 0);
  CHECK(plain.output.find("batch/none train") == std::string::npos);
}

TEST_CASE("apps.bench: --paired with several thread counts measures the scaling in one process") {
  const BenchRun run = run_bench(
      "--workloads W1 --norms none,batch --threads 1,2 --repeats 1 --seconds 0.01 --warmup 0 "
      "--paired --train-only");
  const CliResult& r = run.cli;
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("speed-up at each thread count over 1") != std::string::npos);
  CHECK(r.output.find("W1  2 thr / 1, none: train ") != std::string::npos);
  CHECK(r.output.find("W1  2 thr / 1, batch: train ") != std::string::npos);
  const auto& doc = run.doc;
  REQUIRE(doc["paired_scaling"].size() == 2);
  for (const auto& p : doc["paired_scaling"]) {
    CHECK(p["workload"] == "W1");
    CHECK(p["threads"] == 2);
    CHECK(p["base_threads"] == 1);
    CHECK_FALSE(p.contains("infer"));  // --train-only
    check_paired_quartiles(p["train"]);
  }
  // With one thread count there is nothing to scale against.
  const BenchRun one = run_bench(
      "--workloads W1 --norms none --threads 1 --repeats 1 --seconds 0.01 --warmup 0 --paired "
      "--train-only");
  CHECK(one.cli.exit_code == 0);
  CHECK(one.doc["paired_scaling"].empty());
  CHECK(one.cli.output.find("speed-up") == std::string::npos);
}

TEST_CASE("apps.bench: a value listed twice is measured once") {
  const BenchRun run = run_bench(
      "--workloads W1,w1,W1 --norms none,none --threads 1,1 --repeats 1 --seconds 0.01 --warmup 0 "
      "--train-only");
  INFO(run.cli.output);
  REQUIRE(run.cli.exit_code == 0);
  CHECK(run.doc["results"].size() == 1);
}

// The parent passes --seconds and --warmup on to each child; with six decimals a valid 1e-7 arrived
// as 0 and the child refused it (exit 1, "the child ... failed").
TEST_CASE("apps.bench: a tiny --seconds reaches the child unchanged") {
  const BenchRun run = run_bench(
      "--workloads W1 --norms none --threads 1 --repeats 1 --seconds 1e-7 --warmup 1e-9 "
      "--train-only");
  INFO(run.cli.output);
  REQUIRE(run.cli.exit_code == 0);
  CHECK(run.doc["seconds"].get<double>() == 1e-7);
  CHECK(run.doc["results"][0]["train"]["repeats"] == 1);
}

TEST_CASE("apps.bench: unknown workloads, norms and thread counts are flag errors (exit 2)") {
  CliResult w = run_cli("bench --workloads W1,W9");
  CHECK(w.exit_code == 2);
  CHECK(w.output.find("unknown workload 'W9'") != std::string::npos);
  CliResult n = run_cli("bench --norms batch,bogus");
  CHECK(n.exit_code == 2);
  CHECK(n.output.find("unknown norm 'bogus'") != std::string::npos);
  CHECK(n.output.find("batch-renorm") != std::string::npos);  // the list of what it takes
  // A norm the model cannot take is refused before any child runs.
  CliResult mlp = run_cli("bench --workloads W3,W1 --norms instance --threads 1");
  CHECK(mlp.exit_code == 2);
  CHECK(mlp.output.find("W1 (paper-mlp) with --norms instance") != std::string::npos);
  CHECK(mlp.output.find("train img/s") == std::string::npos);  // no table was started
  // An output nowhere to be written is refused before anything is measured.
  for (const char* bad : {"/nonexistent-dir/b.json", "/tmp"}) {
    CAPTURE(bad);
    CliResult j = run_cli(std::string("bench --workloads W1 --threads 1 --json ") + bad);
    CHECK(j.exit_code == 2);
    CHECK(j.output.find("not a file in an existing directory") != std::string::npos);
    CHECK(j.output.find("train img/s") == std::string::npos);
  }
  for (const char* bad : {"0", "1,0", "2,x", "99999999999999999999"}) {
    CAPTURE(bad);
    CliResult t = run_cli(std::string("bench --threads ") + bad);
    CHECK(t.exit_code == 2);
    CHECK(t.output.find("--threads") != std::string::npos);
  }
}

// An empty list measured nothing and exited 1; an empty --json measured everything and wrote
// nothing. Both are refused as flag errors, before anything is measured.
TEST_CASE("apps.bench: an empty --workloads, --norms or --json is a flag error (exit 2)") {
  struct Case {
    std::string flags, flag;
  };
  for (const Case& c : std::vector<Case>{{"--workloads ''", "--workloads"},
                                         {"--workloads ,", "--workloads"},
                                         {"--norms ''", "--norms"},
                                         {"--norms ,,", "--norms"},
                                         {"--json ''", "--json"}}) {
    CAPTURE(c.flags);
    CliResult r = run_cli("bench --threads 1 --workloads W1 --norms none " + c.flags);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, "error: "));
    CHECK(contains(r.output, c.flag));
    CHECK(contains(r.output, "--help"));
    CHECK_FALSE(contains(r.output, "train img/s"));  // no table was started
  }
}

// --child is the parent's (and bench/compare_pytorch.py's, bench/omp_regions.sh's) way to run one
// measurement; a bad one was "error: stoi" with exit 1, or ran with 0 threads.
TEST_CASE("apps.bench: a bad --child is a flag error (exit 2) that names it") {
  for (const char* bad :
       {"W3:batch:x", "W3:batch:0", "W3:batch", "W3:batch:1:pairs", "W9:batch:1", "W3:bogus:1",
        "W1:instance:1", "W3:batch:2:scale", "W3:batch:2:scale:0", "W3:batch:2:pair:1"}) {
    CAPTURE(bad);
    CliResult r = run_cli(std::string("bench --child ") + bad);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find(std::string("--child '") + bad + "'") != std::string::npos);
    CHECK(r.output.find("BNLAB_BENCH") == std::string::npos);  // nothing was measured
  }
  CliResult w = run_cli("bench --child W9:batch:1");
  CHECK(w.output.find("unknown workload 'W9'") != std::string::npos);
  CliResult t = run_cli("bench --child W1:none:0");
  CHECK(t.output.find("from 1 to 1024, got '0'") != std::string::npos);
  CliResult m = run_cli("bench --child W1:instance:1");  // instance norm needs images
  CHECK(m.output.find("W1 (paper-mlp) with --norms instance") != std::string::npos);
}

// The benchmark script's helpers (lscpu parsing, the quiet verdict, statistics, the Markdown table)
// are tested in Python with fixed inputs (tests/bench/test_compare_pytorch.py); standard library
// only, so no torch. -B: no __pycache__ in the source tree.
TEST_CASE("apps.bench: compare_pytorch.py's helpers pass their tests") {
  std::string script = std::string(BNLAB_SOURCE_DIR) + "/tests/bench/test_compare_pytorch.py";
  CliResult r = run_shell("/usr/bin/python3 -B " + shell_quote(script));
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("OK") != std::string::npos);
}

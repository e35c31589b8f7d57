// Data-parallel training over MPI, end to end through the real CLI: these cases (run in
// bnlab_tests, not under mpirun) launch `mpirun --oversubscribe -np 2 bnlab train ...` and a
// single-process `bnlab train ...` on the same tiny generated MNIST and compares what rank 0 wrote:
// - with --sync-bn, 2 ranks of batch 8 equal one process of batch 16 after several steps:
//   parameters, BN running statistics (hence eval outputs) and the training loss;
// - without it each rank normalizes its own shard: after one step rank 0's running statistics are
//   those of a single process fed only rank 0's shard (batch 8), not the global batch's;
// - a rank that dies mid-run ends the whole job with an error instead of hanging (the ctest
//   mpirun --timeout fails the test if the job hangs), and an error on one rank ends all of them
//   (MPI_Abort);
// - a 2-rank run with dropout resumed from its checkpoint equals the uninterrupted one.
// Compiled into bnlab_tests by tests/mpi/mpi_tests.cmake only when BNLAB_MPI is on; ctest runs
// these cases one at a time (tests/mpi/mpi_serial.cmake).
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <string>

#include "apps/apps_test_util.h"
#include "core/serialize.h"

using namespace apps_test;

namespace {

// `mpirun ... -np <ranks>` with what every launch here needs: Open MPI refuses root without its
// two allow-root variables (CI runs as root); --oversubscribe, since 2 ranks may exceed the cores;
// --timeout ends a hung job (the failure these tests look for) with an error; LeakSanitizer off
// in the ranks, because MPI_Init's allocations live until exit (sanitizer builds); and the job's
// session directory under the test's own `dir` (orte_tmpdir_base): by default every job of a
// user shares /tmp/ompi.<host>.<uid>, and Open MPI 4.1.4 creates and removes it without a lock,
// so two jobs started together under ctest -j2 failed in orte_init ("mkdir ... /tmp/ompi.vm.0:
// File exists", 3 of 51 loaded runs of these tests on 2026-12-05) or, once, both hung.
std::string mpirun(int ranks, const TempDir& dir) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
         "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" " +
         shell_quote(BNLAB_MPIEXEC) + " --oversubscribe --timeout 120 --mca orte_tmpdir_base " +
         shell_quote(dir.path.string()) + " -np " + std::to_string(ranks) +
         " -x OMP_NUM_THREADS=1 -x ASAN_OPTIONS ";
}

// `mpirun ... -np <ranks> bnlab <args>`, one OpenMP thread per rank.
CliResult run_mpi(int ranks, const TempDir& dir, const std::string& args) {
  return run_shell(mpirun(ranks, dir) + shell_quote(BNLAB_CLI_PATH) + " " + args);
}

std::map<std::string, std::vector<float>> load_model(const std::string& dir) {
  std::map<std::string, std::vector<float>> out;
  for (auto& t : bnlab::load_safetensors(dir + "/model.safetensors").tensors)
    out[t.name] = t.tensor.to_vector();
  return out;
}

// Largest |a - b| / (1e-3 + |b|) over every element of every tensor whose name contains `filter`.
double max_rel_diff(const std::map<std::string, std::vector<float>>& a,
                    const std::map<std::string, std::vector<float>>& b, const std::string& filter,
                    std::string* worst) {
  double m = 0;
  REQUIRE(a.size() == b.size());
  for (auto& [name, va] : a) {
    if (name.find(filter) == std::string::npos) continue;
    auto it = b.find(name);
    REQUIRE(it != b.end());
    const std::vector<float>& vb = it->second;
    REQUIRE(va.size() == vb.size());
    for (size_t i = 0; i < va.size(); ++i) {
      double d = std::fabs(static_cast<double>(va[i]) - vb[i]) / (1e-3 + std::fabs(vb[i]));
      if (d > m) {
        m = d;
        *worst = name + "[" + std::to_string(i) + "]";
      }
    }
  }
  return m;
}

// Common flags: lenet with BatchNorm and no dropout (masks differ per rank by design), one thread.
std::string train_flags(const TempDir& dir, int64_t steps, int64_t batch) {
  return "train --model lenet --norm batch --dropout 0 --threads 1 --lr 0.05 --momentum 0.9 "
         "--data-dir " +
         shell_quote(dir.path.string()) + " --steps " + std::to_string(steps) + " --batch-size " +
         std::to_string(batch) + " --eval-every " + std::to_string(steps);
}

}  // namespace

TEST_CASE("mpi: 2 ranks with --sync-bn equal one process on the global batch") {
  TempDir dir("mpi_sync");
  write_tiny_mnist(dir.path.string(), 200, 40);
  CliResult two =
      run_mpi(2, dir, train_flags(dir, 4, 8) + " --sync-bn --out " + shell_quote(dir.file("two")));
  CAPTURE(two.output);
  REQUIRE(two.exit_code == 0);
  CHECK(contains(two.output, "2 ranks, global batch 2 x 8 = 16"));
  CliResult one = run_cli(train_flags(dir, 4, 16) + " --out " + shell_quote(dir.file("one")));
  CAPTURE(one.output);
  REQUIRE(one.exit_code == 0);

  auto m2 = load_model(dir.file("two")), m1 = load_model(dir.file("one"));
  std::string worst;
  // Parameters and BN buffers agree to float rounding (the sums run in another order).
  CHECK_MESSAGE(max_rel_diff(m2, m1, "", &worst) < 1e-3, worst);
  // The training loss (every rank's samples) and the test accuracy rank 0 measured.
  auto r2 = parse_csv(read_text(dir.file("two") + "/metrics.csv"));
  auto r1 = parse_csv(read_text(dir.file("one") + "/metrics.csv"));
  REQUIRE(r2.size() == 3);
  REQUIRE(r1.size() == 3);
  CHECK(std::stod(r2[2][2]) == doctest::Approx(std::stod(r1[2][2])).epsilon(1e-4));
  CHECK(r2[2][5] == r1[2][5]);
  CHECK(r2[0] == r1[0]);
  // Only rank 0 wrote (one progress stream, one summary with ranks = 2).
  CHECK(contains(read_text(dir.file("two") + "/summary.json"), "\"ranks\": 2"));
}

TEST_CASE("mpi: without --sync-bn each rank normalizes with its own shard's statistics") {
  TempDir dir("mpi_local");
  write_tiny_mnist(dir.path.string(), 200, 40);
  // After one step, rank 0's running statistics depend only on the initial weights and the
  // batch it normalized: its own shard (global positions 0..7) = a single process's first batch
  // of 8.
  CliResult two =
      run_mpi(2, dir, train_flags(dir, 1, 8) + " --out " + shell_quote(dir.file("two")));
  CAPTURE(two.output);
  REQUIRE(two.exit_code == 0);
  CliResult shard = run_cli(train_flags(dir, 1, 8) + " --out " + shell_quote(dir.file("shard")));
  REQUIRE(shard.exit_code == 0);
  CliResult global = run_cli(train_flags(dir, 1, 16) + " --out " + shell_quote(dir.file("glob")));
  REQUIRE(global.exit_code == 0);
  auto m2 = load_model(dir.file("two"));
  std::string worst;
  CHECK_MESSAGE(max_rel_diff(m2, load_model(dir.file("shard")), "running_", &worst) < 1e-5, worst);
  CHECK(max_rel_diff(m2, load_model(dir.file("glob")), "running_", &worst) > 1e-3);
}

TEST_CASE("mpi: a rank that dies mid-run ends the job with an error instead of hanging") {
  TempDir dir("mpi_die");
  write_tiny_mnist(dir.path.string(), 200, 40);
  CliResult r = run_shell("BNLAB_TEST_RANK_EXIT=1:2 " + mpirun(2, dir) +
                          "-x BNLAB_TEST_RANK_EXIT " + shell_quote(BNLAB_CLI_PATH) + " " +
                          train_flags(dir, 50, 8) + " --out " + shell_quote(dir.file("run")));
  CAPTURE(r.output);
  // mpirun exits with the dead rank's status (3); a hang would end at --timeout with 110
  // (ETIMEDOUT). Exit codes, not mpirun's explanatory text: Open MPI 4.1.4 sometimes loses that
  // text ("ORTE_ERROR_LOG: Data unpack would read past end of buffer ... show_help.c"), which
  // failed 3 of 50 runs under load.
  CHECK(r.exit_code == 3);
  CHECK(contains(r.output, "rank 1: exiting at step 2"));
  // Rank 0 never reached its step-50 checkpoint.
  CHECK_FALSE(fs::exists(dir.file("run") + "/summary.json"));
}

TEST_CASE(
    "mpi: a 2-rank run with dropout resumed from its checkpoint equals the uninterrupted one") {
  // Ranks > 0 draw dropout masks from a stream reseeded per (rank, step), rank 0 from the saved
  // stream, so the resumed run repeats every rank's masks.
  TempDir dir("mpi_resume");
  write_tiny_mnist(dir.path.string(), 200, 40);
  const std::string flags =
      "train --model lenet --norm batch --dropout 0.5 --threads 1 --data-dir " +
      shell_quote(dir.path.string()) + " --eval-every 2";
  CliResult a = run_mpi(2, dir, flags + " -b 8 --steps 4 --out " + shell_quote(dir.file("a")));
  CAPTURE(a.output);
  REQUIRE(a.exit_code == 0);
  CliResult b = run_mpi(2, dir, flags + " -b 8 --steps 2 --out " + shell_quote(dir.file("b")));
  REQUIRE(b.exit_code == 0);
  CliResult resumed =
      run_mpi(2, dir, "train --resume " + shell_quote(dir.file("b")) + " --steps 4");
  CAPTURE(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK(read_text(dir.file("a") + "/model.safetensors") ==
        read_text(dir.file("b") + "/model.safetensors"));
}

TEST_CASE("mpi: an error on one rank ends every rank with MPI_Abort and the message") {
  // Rank 1 cannot find its data while rank 0 goes on to the weight broadcast, where it would wait
  // forever if rank 1 simply returned.
  TempDir dir("mpi_error");
  write_tiny_mnist(dir.path.string(), 200, 40);
  const std::string common = shell_quote(BNLAB_CLI_PATH) + " train --steps 3 --threads 1 --out " +
                             shell_quote(dir.file("run")) + " --data-dir ";
  const std::string script = "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then exec " + common +
                             shell_quote(dir.file("missing")) + "; else exec " + common +
                             shell_quote(dir.path.string()) + "; fi";
  CliResult r = run_shell(mpirun(2, dir) + "sh -c " + shell_quote(script));
  CAPTURE(r.output);
  // MPI_Abort(1) ends the job with status 1 (a hang would give mpirun's --timeout status 110).
  // mpirun's own "MPI_ABORT was invoked on rank 1" text is not checked: Open MPI sometimes loses it
  // (see the test above). Our error line is one write(2), so it arrives whole.
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "error: mnist: "));
  CHECK_FALSE(fs::exists(dir.file("run") + "/summary.json"));
}

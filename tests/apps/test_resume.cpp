// apps train --resume: a run stopped at a checkpoint and resumed reproduces the uninterrupted run
// bit for bit -- weights, BatchNorm buffers, optimizer state, dropout generator, metrics -- both in
// the middle of an epoch (mlp with dropout 0.3) and at an epoch boundary (lenet, dropout 0.5), and
// with AdamW, a step-dependent schedule and 2 threads, and batch renormalization in the middle of
// its r_max/d_max ramp; a perturbed dropout generator state in the
// checkpoint shows the comparison would notice. Each resume is a new process, so this is the CI
// check that N + M steps straight equal N steps, save, and M more (parameters and optimizer state
// byte for byte). Resuming from a checkpoint taken on SIGINT is in test_interrupt.cpp.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "apps_test_util.h"
#include "core/blas.h"
#include "core/serialize.h"

using namespace apps_test;

namespace {

// A safetensors file split into its JSON header and its data buffer (see core/serialize.h).
// The metrics.csv rows with the elapsed_s column (index 7) blanked: wall-clock time never repeats.
std::vector<std::vector<std::string>> metrics_without_time(const std::string& path) {
  auto rows = parse_csv(read_text(path));
  for (auto& row : rows)
    if (row.size() > 7) row[7] = "";
  return rows;
}

// Trains `flags` for `total` steps into A, and for `split` steps into B then resumes B to `total`;
// checks A and B ended identical. Leaves a copy of B's step-`split` checkpoint in `copy` if given.
void check_resume_equals_uninterrupted(const TempDir& dir, const std::string& flags, int split,
                                       int total, size_t metrics_rows, const std::string& copy = "",
                                       int threads = 1) {
  const std::string a = dir.file("A"), b = dir.file("B");
  const std::string total_flag = " --steps " + std::to_string(total);
  CliResult ra = run_cli("train " + flags + total_flag + " --out " + shell_quote(a));
  CAPTURE(ra.output);
  REQUIRE(ra.exit_code == 0);
  CliResult rb =
      run_cli("train " + flags + " --steps " + std::to_string(split) + " --out " + shell_quote(b));
  CAPTURE(rb.output);
  REQUIRE(rb.exit_code == 0);
  CHECK(read_text(a + "/model.safetensors") != read_text(b + "/model.safetensors"));
  if (!copy.empty()) fs::copy(b, copy, fs::copy_options::recursive);

  CliResult resumed = run_cli("train --resume " + shell_quote(b) + total_flag + " --threads " +
                              std::to_string(threads));
  CAPTURE(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK(contains(resumed.output, "resuming"));
  CHECK(contains(resumed.output, "final: step " + std::to_string(total)));

  // The weights (BatchNorm buffers included) are byte-identical.
  CHECK(read_text(a + "/model.safetensors") == read_text(b + "/model.safetensors"));

  // The training state: identical data buffer (momentum buffers, step counts) and identical header,
  // metadata included (step, optimizer step count, dropout generator state), except elapsed_s.
  SafetensorsParts sa = split_safetensors(a + "/train_state.safetensors");
  SafetensorsParts sb = split_safetensors(b + "/train_state.safetensors");
  CHECK(sa.data.size() == sb.data.size());
  CHECK(sa.data == sb.data);
  CHECK(sa.header["__metadata__"]["step"] == std::to_string(total));
  CHECK(sa.header["__metadata__"].contains("dropout_rng_state"));
  sa.header["__metadata__"].erase("elapsed_s");
  sb.header["__metadata__"].erase("elapsed_s");
  CHECK(sa.header == sb.header);

  // metrics.csv: the same rows, the same numbers but for the elapsed time.
  auto ma = metrics_without_time(a + "/metrics.csv");
  auto mb = metrics_without_time(b + "/metrics.csv");
  REQUIRE(ma.size() == metrics_rows + 1);
  CHECK(ma.back()[0] == std::to_string(total));
  CHECK(ma == mb);
}

}  // namespace

TEST_CASE("apps.resume: an mlp with dropout resumed mid-epoch equals the uninterrupted run") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"));
  // 600 images / batch 32 = 18 batches per epoch: step 20 is in the middle of epoch 1.
  const std::string flags =
      "--model mlp --norm batch --dropout 0.3 --batch-size 32 --eval-every 20 --lr 0.1 "
      "--momentum 0.9 --threads 1 --data-dir " +
      shell_quote(dir.file("data"));
  const std::string c = dir.file("C");
  check_resume_equals_uninterrupted(dir, flags, 20, 40, 3, c);

  // Resuming from the same checkpoint with a different dropout generator state gives different
  // weights: the comparison above really checks that the generator is restored.
  {
    bnlab::SafetensorsFile state = bnlab::load_safetensors(c + "/train_state.safetensors");
    std::string& rng = state.metadata.at("dropout_rng_state");
    rng = std::to_string(std::stoull(rng) ^ 0x5555555555555555ull);
    bnlab::save_safetensors(c + "/train_state.safetensors", state.tensors, state.metadata);
  }
  CliResult rc = run_cli("train --resume " + shell_quote(c) + " --steps 40 --threads 1");
  CAPTURE(rc.output);
  REQUIRE(rc.exit_code == 0);
  CHECK(read_text(dir.file("A") + "/model.safetensors") != read_text(c + "/model.safetensors"));

  // A checkpoint past the requested length is refused, as the bad --steps it is.
  CliResult shorter =
      run_cli("train --resume " + shell_quote(dir.file("B")) + " --steps 10 --threads 1");
  CAPTURE(shorter.output);
  CHECK(shorter.exit_code == 2);
  CHECK(contains(shorter.output, "past the requested"));
}

TEST_CASE("apps.resume: lenet with its default dropout resumed at an epoch boundary") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  // 96 images / batch 16 = 6 batches per epoch: the checkpoint at step 6 closes epoch 0.
  const std::string flags =
      "--model lenet --norm batch --batch-size 16 --eval-every 3 --threads 1 --data-dir " +
      shell_quote(dir.file("data"));
  check_resume_equals_uninterrupted(dir, flags, 6, 9, 4);
}

TEST_CASE("apps.resume: adamw with a warmup-step schedule and group norm on 2 threads") {
  // Adam's two moment buffers and per-parameter step counts, a schedule that depends on the step,
  // weight decay split by parameter kind, and two threads in both processes. (Not cosine: it
  // depends on the total, so a 14-step run extended to 25 is another experiment than 25 steps.)
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  const std::string flags =
      "--model mlp --norm group --groups 4 --optimizer adamw --lr 0.003 --weight-decay 0.01 "
      "--schedule warmup:3+step:4:0.5 --batch-size 16 --eval-every 5 --threads 2 --data-dir " +
      shell_quote(dir.file("data"));
  check_resume_equals_uninterrupted(dir, flags, 10, 13, 4, "", 2);
}

TEST_CASE("apps.resume: batch renormalization resumed in the middle of its ramp") {
  // Warm-up 4 and ramp 20: at the checkpoint (step 10) r_max and d_max are part-way up, so the
  // resumed run must take each layer's schedule step from its num_batches_tracked to match.
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  const std::string flags =
      "--model mlp --norm batch-renorm --renorm-warmup 4 --renorm-ramp 20 --batch-size 16 "
      "--eval-every 5 --lr 0.1 --momentum 0.9 --threads 1 --data-dir " +
      shell_quote(dir.file("data"));
  check_resume_equals_uninterrupted(dir, flags, 10, 20, 5);
}

TEST_CASE("apps.resume: resumed at another --threads, bit-exact where bnlab's own GEMM runs") {
  // Trained at two threads, resumed at one. The own GEMM kernels (AVX-512F or AVX2 + FMA) give the
  // same bits at every thread count, and so do the conv paths and the reductions; OpenBLAS's
  // threaded sgemm does not, so with it (an older CPU, BNLAB_MAX_ISA=portable, BNLAB_GEMM=openblas)
  // the promise does not hold and the case is skipped. Batch 64 through 784 x 512 makes the
  // first layer's products large enough to be split over the two threads.
  if (bnlab::gemm_path() == bnlab::GemmPath::openblas) {
    MESSAGE("GEMM is OpenBLAS here: a resume at another --threads is not bit-exact, not tested");
    return;
  }
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 160, 40);
  const std::string flags =
      "--model mlp --norm batch --batch-size 64 --eval-every 2 --lr 0.05 --momentum 0.9 "
      "--threads 2 --data-dir " +
      shell_quote(dir.file("data"));
  check_resume_equals_uninterrupted(dir, flags, 4, 6, 4, "", 1);
}

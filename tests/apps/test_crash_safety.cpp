// apps crash safety: a run killed with SIGKILL while it writes a checkpoint always leaves one that
// loads and resumes -- the old or the new, never a mix. train_state.safetensors is self-contained
// and written last (train/checkpoint.h), so a kill between model.safetensors and
// train_state.safetensors resumes from the older, complete state and reproduces the
// uninterrupted run; temporary files of killed writes are removed on resume; a corrupt checkpoint
// is refused with the file and the problem named.
#include <doctest/doctest.h>

#include "apps_test_util.h"
#include "core/serialize.h"

using namespace apps_test;

namespace {

std::string common_flags(const TempDir& dir) {
  return "--model mlp --norm batch --batch-size 16 --lr 0.05 --momentum 0.9 --threads 1 "
         "--data-dir " +
         shell_quote(dir.file("data"));
}

std::vector<std::string> temporaries(const std::string& run) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(run))
    if (contains(e.path().filename().string(), ".tmp.")) out.push_back(e.path().string());
  return out;
}

}  // namespace

TEST_CASE("apps.crash: killed between the model and the train-state file, resume is exact") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  const std::string x = dir.file("X"), y = dir.file("Y");
  // X: checkpoints at steps 4 and 8. Y: X's step-4 checkpoint with X's step-8 model.safetensors
  // over it, plus the debris of a killed write -- what SIGKILL between the two renames leaves.
  CliResult r4 =
      run_cli("train " + common_flags(dir) + " --steps 4 --eval-every 4 --out " + shell_quote(x));
  CAPTURE(r4.output);
  REQUIRE(r4.exit_code == 0);
  fs::copy(x, y, fs::copy_options::recursive);
  CliResult r8 = run_cli("train --resume " + shell_quote(x) + " --steps 8");
  CAPTURE(r8.output);
  REQUIRE(r8.exit_code == 0);
  fs::copy_file(x + "/model.safetensors", y + "/model.safetensors",
                fs::copy_options::overwrite_existing);
  write_bytes(y + "/train_state.safetensors.tmp.12345.0", {1, 2, 3});
  CHECK(bnlab::load_safetensors(y + "/model.safetensors").metadata.at("step") == "8");
  CHECK(bnlab::load_safetensors(y + "/train_state.safetensors").metadata.at("step") == "4");

  CliResult ry = run_cli("train --resume " + shell_quote(y) + " --steps 8");
  CAPTURE(ry.output);
  REQUIRE(ry.exit_code == 0);
  CHECK(contains(ry.output, "final: step 8"));
  CHECK(read_text(x + "/model.safetensors") == read_text(y + "/model.safetensors"));
  CHECK(bnlab::load_safetensors(x + "/train_state.safetensors").tensors.size() ==
        bnlab::load_safetensors(y + "/train_state.safetensors").tensors.size());
  CHECK(temporaries(y).empty());
}

TEST_CASE("apps.crash: SIGKILL at varying moments of checkpointing leaves a loadable checkpoint") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 96, 40);
  // A checkpoint after every step, so most of the run's time is spent writing them; each trial
  // kills the run a different time after its first checkpoint appeared.
  const std::vector<int> delays_ms = {0, 9, 31};
  std::string last_run;
  int64_t last_step = 0;
  for (size_t trial = 0; trial < delays_ms.size(); ++trial) {
    CAPTURE(trial);
    const std::string run = dir.file("run" + std::to_string(trial));
    CliProcess child(
        {"train", "--model", "mlp", "--norm", "batch", "--batch-size", "16", "--steps", "100000",
         "--eval-every", "1", "--threads", "1", "--data-dir", dir.file("data"), "--out", run},
        /*block_output=*/false);
    const fs::path state_path = fs::path(run) / "train_state.safetensors";
    for (int i = 0; i < 20000 && !fs::exists(state_path); ++i) ::usleep(1000);
    REQUIRE(fs::exists(state_path));
    ::usleep(static_cast<useconds_t>(delays_ms[trial] * 1000));
    child.signal(SIGKILL);
    CHECK(child.finish().exit_code == 128 + SIGKILL);

    // Both files are complete; the state is the commit point, and the model export is the same
    // step or the one after it (written first).
    bnlab::SafetensorsFile state = bnlab::load_safetensors(state_path.string());
    bnlab::SafetensorsFile model = bnlab::load_safetensors(run + "/model.safetensors");
    int64_t step = std::stoll(state.metadata.at("step"));
    int64_t model_step = std::stoll(model.metadata.at("step"));
    CHECK(step >= 1);
    CHECK((model_step == step || model_step == step + 1));
    size_t weights_in_state = 0;
    for (const auto& t : state.tensors) weights_in_state += t.name.rfind("model/", 0) == 0;
    CHECK(weights_in_state == model.tensors.size());
    last_run = run;
    last_step = step;
  }
  // And the last one resumes.
  CliResult resumed = run_cli("train --resume " + shell_quote(last_run) + " --steps " +
                              std::to_string(last_step + 1));
  CAPTURE(resumed.output);
  CHECK(resumed.exit_code == 0);
  CHECK(contains(resumed.output, "final: step " + std::to_string(last_step + 1)));
  CHECK(temporaries(last_run).empty());
}

TEST_CASE("apps.crash: a corrupt checkpoint is refused naming the file and the problem") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 48, 20);
  const std::string run = dir.file("run");
  CliResult r =
      run_cli("train " + common_flags(dir) + " --steps 2 --eval-every 2 --out " + shell_quote(run));
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string state = run + "/train_state.safetensors";
  const std::string good = read_text(state);

  // Truncated: the header length names more bytes than the file has.
  write_bytes(state, std::vector<uint8_t>(good.begin(), good.begin() + 100));
  CliResult truncated = run_cli("train --resume " + shell_quote(run) + " --steps 4");
  CAPTURE(truncated.output);
  CHECK(truncated.exit_code == 1);
  CHECK(contains(truncated.output, "error: safetensors: " + state + ": header length"));
  CHECK(contains(truncated.output, "truncated?"));

  // Well-formed, but its step is not a number.
  bnlab::SafetensorsFile f = bnlab::decode_safetensors(good, state);
  f.metadata["step"] = "abc";
  bnlab::save_safetensors(state, f.tensors, f.metadata);
  CliResult bad_step = run_cli("train --resume " + shell_quote(run) + " --steps 4");
  CAPTURE(bad_step.output);
  CHECK(bad_step.exit_code == 1);
  CHECK(contains(bad_step.output, state + ": metadata 'step' is 'abc', expected a whole number"));

  // A model.safetensors cut short is refused by eval.
  const std::string model = read_text(run + "/model.safetensors");
  write_bytes(run + "/model.safetensors", std::vector<uint8_t>(model.begin(), model.end() - 9));
  CliResult eval = run_cli("eval --checkpoint " + shell_quote(run) + " --data-dir " +
                           shell_quote(dir.file("data")));
  CAPTURE(eval.output);
  CHECK(eval.exit_code == 1);
  CHECK(contains(eval.output, "error: safetensors: " + run + "/model.safetensors"));
}

// A run directory belongs to one run: a second process is refused while the first holds the lock,
// a new run does not silently replace an old one (--overwrite does, --resume continues it), a
// resume refuses flags that contradict the saved config, a run killed before its first checkpoint
// resumes from step 0, a finished run is left as it is by a resume, and config.json / train_state
// values are checked like flags. Also the error text users see: no source file:line unless asked
// for, files named, diverged weights flagged.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "apps_test_util.h"
#include "core/serialize.h"

using namespace apps_test;

namespace {

std::string flags(const TempDir& dir, const std::string& out, int steps = 2) {
  return "train --threads 1 --model mlp --norm batch --batch-size 8 --eval-every 1 --steps " +
         std::to_string(steps) + " --data-dir " + shell_quote(dir.file("data")) + " --out " +
         shell_quote(dir.file(out));
}

void edit_config(const std::string& path, const std::string& key, const nlohmann::json& value) {
  nlohmann::json j = nlohmann::json::parse(read_text(path));
  j[key] = value;
  std::string text = j.dump(2);
  write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

}  // namespace

TEST_CASE("apps.run_dir: a second run into a directory that holds a run is refused") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  // A name with a space: the --resume the refusal suggests is quoted, ready to paste.
  const std::string run = dir.file("my run");
  CliResult first = run_cli(flags(dir, "my run"));
  REQUIRE(first.exit_code == 0);
  const std::string model_before = read_text(run + "/model.safetensors");

  CliResult second = run_cli(flags(dir, "my run", 3) + " --lr 0.5");
  CAPTURE(second.output);
  CHECK(second.exit_code == 1);
  CHECK(contains(second.output, run + " already holds a run"));
  CHECK(contains(second.output, "continue it with --resume '" + run + "',"));
  CHECK(contains(second.output, "--overwrite"));
  CHECK(read_text(run + "/model.safetensors") == model_before);

  // --overwrite replaces it: the new config, and no summary of the old run left beside it.
  CliResult replaced = run_cli(flags(dir, "my run", 3) + " --lr 0.5 --overwrite");
  CAPTURE(replaced.output);
  REQUIRE(replaced.exit_code == 0);
  CHECK(contains(read_text(run + "/config.json"), "\"steps\": 3"));
  CHECK(contains(read_text(run + "/summary.json"), "\"steps\": 3"));
}

// eval --json writes its report into the run directory; a run replaced by --overwrite must not
// leave the report of the old model beside the new one. Files bnlab did not write stay, also those
// named like reports.
TEST_CASE("apps.run_dir: --overwrite removes the eval reports of the run it replaces") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  const std::string run = dir.file("run");
  REQUIRE(run_cli(flags(dir, "run")).exit_code == 0);
  for (const char* split : {"test", "train"}) {
    CliResult eval = run_cli("eval --json --checkpoint " + shell_quote(run) + " --split " + split +
                             " --data-dir " + shell_quote(dir.file("data")));
    CAPTURE(eval.output);
    REQUIRE(eval.exit_code == 0);
  }
  REQUIRE(fs::exists(run + "/eval_mnist_test.json"));
  REQUIRE(fs::exists(run + "/eval_mnist_train.json"));
  write_bytes(run + "/notes.txt", {'k', 'e', 'e', 'p'});
  write_bytes(run + "/eval_notes.md", {'k', 'e', 'e', 'p'});
  // Named like reports, but not what eval writes: the user's, kept and not listed.
  const std::string mine = "{\"accuracy\": 0.5}", not_json = "keep";
  write_bytes(run + "/eval_notes.json", std::vector<uint8_t>(mine.begin(), mine.end()));
  write_bytes(run + "/eval_mnist_val.json", std::vector<uint8_t>(not_json.begin(), not_json.end()));

  CliResult refused = run_cli(flags(dir, "run", 3));
  CAPTURE(refused.output);
  CHECK(refused.exit_code == 1);
  CHECK(contains(refused.output, ", eval_mnist_test.json, eval_mnist_train.json)"));
  CHECK_FALSE(contains(refused.output, "eval_notes.json"));
  CHECK_FALSE(contains(refused.output, "eval_mnist_val.json"));

  CliResult replaced = run_cli(flags(dir, "run", 3) + " --overwrite");
  CAPTURE(replaced.output);
  REQUIRE(replaced.exit_code == 0);
  CHECK_FALSE(fs::exists(run + "/eval_mnist_test.json"));
  CHECK_FALSE(fs::exists(run + "/eval_mnist_train.json"));
  CHECK(fs::exists(run + "/notes.txt"));
  CHECK(fs::exists(run + "/eval_notes.md"));
  CHECK(fs::exists(run + "/eval_notes.json"));
  CHECK(fs::exists(run + "/eval_mnist_val.json"));
}

// A resumed run's first checkpoint replaces model.safetensors, which the reports measured.
TEST_CASE("apps.run_dir: a resumed run removes the eval reports once it replaces the model") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  const std::string run = dir.file("run");
  REQUIRE(run_cli(flags(dir, "run", 3)).exit_code == 0);
  CliResult eval = run_cli("eval --json --checkpoint " + shell_quote(run) + " --data-dir " +
                           shell_quote(dir.file("data")));
  CAPTURE(eval.output);
  REQUIRE(eval.exit_code == 0);
  REQUIRE(fs::exists(run + "/eval_mnist_test.json"));
  write_bytes(run + "/eval_notes.md", {'k', 'e', 'e', 'p'});
  const std::string mine = "{\"dataset\": \"my notes\"}";
  write_bytes(run + "/eval_mine.json", std::vector<uint8_t>(mine.begin(), mine.end()));

  // Nothing to train: the model, and what was measured of it, stay.
  CliResult again = run_cli("train --resume " + shell_quote(run));
  CAPTURE(again.output);
  REQUIRE(again.exit_code == 0);
  CHECK(fs::exists(run + "/eval_mnist_test.json"));

  CliResult longer = run_cli("train --resume " + shell_quote(run) + " --steps 4");
  CAPTURE(longer.output);
  REQUIRE(longer.exit_code == 0);
  CHECK_FALSE(fs::exists(run + "/eval_mnist_test.json"));
  CHECK(fs::exists(run + "/eval_notes.md"));
  CHECK(fs::exists(run + "/eval_mine.json"));
}

TEST_CASE("apps.run_dir: a directory locked by another process is refused naming that process") {
  // The test holds the lock itself, as a running bnlab would: deterministic, no race to win.
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  fs::create_directories(dir.file("run"));
  const std::string lock_path = dir.file("run") + "/.lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  const std::string pid = std::to_string(::getpid());
  REQUIRE(::pwrite(fd, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size()));

  CliResult r = run_cli(flags(dir, "run"));
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "is in use by another bnlab process (pid " + pid + ")"));
  CHECK_FALSE(fs::exists(dir.file("run") + "/config.json"));

  // Released (as when the holder exits, however it exits), the directory is free again.
  ::close(fd);
  CliResult after = run_cli(flags(dir, "run"));
  CAPTURE(after.output);
  CHECK(after.exit_code == 0);
}

TEST_CASE("apps.run_dir: a lock file that is a symbolic link is refused and its target kept") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  fs::create_directories(dir.file("run"));
  std::ofstream(dir.file("precious.txt")) << "precious\n";
  fs::create_symlink(dir.file("precious.txt"), dir.file("run") + "/.lock");
  CliResult r = run_cli(flags(dir, "run"));
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "/.lock is a symbolic link, which bnlab does not follow; remove it"));
  CHECK(read_text(dir.file("precious.txt")) == "precious\n");  // the pid used to replace it
  CHECK_FALSE(fs::exists(dir.file("run") + "/config.json"));
}

TEST_CASE("apps.run_dir: --resume refuses flags that contradict the saved config") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run")).exit_code == 0);
  const std::string resume = "train --resume " + shell_quote(dir.file("run"));

  struct Case {
    std::string extra, expect;
  };
  for (const Case& c :
       {Case{"--lr 0.1", "--lr 0.1 conflicts"}, Case{"--model lenet", "has model.name = mlp"},
        Case{"--batch-size 16", "has batch_size = 8"},
        Case{"--optimizer adam", "--optimizer adam conflicts"},
        Case{"--dataset cifar10", "has dataset = mnist"},
        Case{"--out " + shell_quote(dir.file("elsewhere")), "stays in its directory"},
        Case{"--overwrite", "contradict"}}) {
    CAPTURE(c.extra);
    CliResult r = run_cli(resume + " " + c.extra);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, c.expect));
  }
  // The saved value itself, the length and the threads are fine.
  CliResult same = run_cli(resume + " --lr 0.01 --model mlp --steps 3 --threads 1");
  CAPTURE(same.output);
  CHECK(same.exit_code == 0);
  CHECK(contains(read_text(dir.file("run") + "/summary.json"), "\"steps\": 3"));
  // --out naming the same directory another way is no conflict.
  CliResult spelled = run_cli("train --resume " + shell_quote(dir.file("run") + "/") + " --out " +
                              shell_quote(dir.file("run")) + " --steps 4");
  CAPTURE(spelled.output);
  CHECK(spelled.exit_code == 0);
  CHECK(contains(read_text(dir.file("run") + "/summary.json"), "\"steps\": 4"));
  // An empty --resume is a mistake, not "no resume" (it started a new run in runs/train).
  CliResult empty = run_cli("train --resume '' --steps 1");
  CAPTURE(empty.output);
  CHECK(empty.exit_code == 2);
  CHECK(contains(empty.output, "--resume must name a run directory, got ''"));
}

TEST_CASE("apps.run_dir: a run killed before its first checkpoint resumes from step 0") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run")).exit_code == 0);
  const std::string complete = read_text(dir.file("run") + "/model.safetensors");
  // What a kill before the first checkpoint leaves: config.json and a temporary of a killed write.
  for (const char* f :
       {"metrics.csv", "model.safetensors", "train_state.safetensors", "summary.json"})
    fs::remove(dir.file("run") + "/" + f);
  write_bytes(dir.file("run") + "/config.json.tmp.12345.0", {'{'});

  CliResult r = run_cli("train --resume " + shell_quote(dir.file("run")));
  CAPTURE(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "has no checkpoint yet; starting the run from step 0"));
  CHECK_FALSE(fs::exists(dir.file("run") + "/config.json.tmp.12345.0"));
  CHECK(read_text(dir.file("run") + "/model.safetensors") == complete);  // the same run
}

// A resume that is refused must not unfinish the run: summary.json (what ablate reuses a run by)
// was removed before the checkpoint was checked. A resume with nothing left to train rewrote
// summary.json with 0 img/s and the metrics at metrics.csv's precision.
TEST_CASE("apps.run_dir: resuming a finished run changes nothing in it") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run", 3)).exit_code == 0);
  const std::string run = dir.file("run");
  auto snapshot = [&] {
    std::string all;
    for (const char* f : {"summary.json", "metrics.csv", "model.safetensors",
                          "train_state.safetensors", "config.json"})
      all += std::string(f) + ":" + read_text(run + "/" + f) + "\n";
    return all;
  };
  const std::string before = snapshot();

  // A bad --steps, refused from the checkpoint's step before any data is read.
  CliResult shorter = run_cli("train --resume " + shell_quote(run) + " --steps 2");
  CAPTURE(shorter.output);
  CHECK(shorter.exit_code == 2);
  CHECK(contains(shorter.output, "error: --steps 2: the checkpoint in " + run +
                                     " is at step 3, past the requested 2 steps"));
  CHECK_FALSE(contains(shorter.output, "data:"));
  CHECK(snapshot() == before);

  CliResult again = run_cli("train --resume " + shell_quote(run));
  CAPTURE(again.output);
  CHECK(again.exit_code == 0);
  CHECK(contains(again.output, "finished its 3 steps already; nothing to train"));
  CHECK(snapshot() == before);
  // The result printed is the run's own, with its measured speed.
  const auto summary = nlohmann::json::parse(read_text(run + "/summary.json"));
  CHECK(summary["images_per_second"].get<double>() > 0.0);
  CHECK(contains(again.output, "final: step 3 |"));
  CHECK_FALSE(contains(again.output, "| 0 img/s training"));
  CHECK(contains(again.output, "unchanged: " + run));
  CHECK_FALSE(contains(again.output, "wrote:"));
  // It evaluated on test: summary.json's final_test_acc is that, not a held-out split.
  CHECK_FALSE(contains(again.output, "measured once"));

  // A longer run continues from the checkpoint as before.
  CliResult longer = run_cli("train --resume " + shell_quote(run) + " --steps 4");
  CAPTURE(longer.output);
  CHECK(longer.exit_code == 0);
  CHECK(contains(read_text(run + "/summary.json"), "\"steps\": 4"));
}

// A run of --steps resumed with --epochs kept its saved steps (they override --epochs): the flag
// was ignored, exit 0, "unchanged".
TEST_CASE("apps.run_dir: --epochs on a resumed run measured in steps is refused") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run", 3)).exit_code == 0);
  const std::string run = dir.file("run");
  const std::string summary = read_text(run + "/summary.json");
  CliResult epochs = run_cli("train --resume " + shell_quote(run) + " --epochs 5");
  CAPTURE(epochs.output);
  CHECK(epochs.exit_code == 2);
  CHECK(contains(epochs.output, "error: --epochs 5: " + run +
                                    "/config.json has steps = 3, a run measured in steps; give "
                                    "its new length with --steps"));
  CHECK_FALSE(contains(epochs.output, "data:"));
  CHECK(read_text(run + "/summary.json") == summary);
  // With --steps as well, --steps gives the length, as in a new run.
  CliResult both = run_cli("train --resume " + shell_quote(run) + " --epochs 5 --steps 4");
  CAPTURE(both.output);
  CHECK(both.exit_code == 0);
  CHECK(contains(read_text(run + "/summary.json"), "\"steps\": 4"));
}

// An extension kept the old length in config.json, so a plain resume afterwards asked for it.
TEST_CASE("apps.run_dir: an extended run records its new length, so a plain resume finds it done") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run", 2)).exit_code == 0);
  const std::string resume = "train --resume " + shell_quote(dir.file("run"));
  CliResult longer = run_cli(resume + " --steps 4");
  CAPTURE(longer.output);
  REQUIRE(longer.exit_code == 0);
  const auto cfg = nlohmann::json::parse(read_text(dir.file("run") + "/config.json"));
  CHECK(cfg["steps"] == 4);
  CHECK(cfg.contains("provenance"));  // the rest of the file kept
  // It was refused: "checkpoint is at step 4, past the requested 2 steps", exit 1.
  CliResult again = run_cli(resume);
  CAPTURE(again.output);
  CHECK(again.exit_code == 0);
  CHECK(contains(again.output, "unchanged: "));
}

// A resume shorter than its checkpoint was refused only after the data had loaded, with exit 1.
TEST_CASE("apps.run_dir: a resume shorter than its checkpoint is a usage error") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  // A run of epochs (64 images in batches of 8: 8 steps each) may be extended by either.
  const std::string by_epochs = dir.file("by-epochs");
  const std::string train_epochs = "train --threads 1 --model mlp --batch-size 8 --data-dir " +
                                   shell_quote(dir.file("data")) + " --out " +
                                   shell_quote(by_epochs) + " --epochs 1";
  REQUIRE(run_cli(train_epochs).exit_code == 0);
  CliResult two = run_cli("train --resume " + shell_quote(by_epochs) + " --epochs 2");
  CAPTURE(two.output);
  CHECK(two.exit_code == 0);
  CHECK(contains(read_text(by_epochs + "/summary.json"), "\"steps\": 16"));
  CliResult one = run_cli("train --resume " + shell_quote(by_epochs) + " --epochs 1");
  CAPTURE(one.output);
  CHECK(one.exit_code == 2);
  CHECK(contains(one.output, "error: --epochs 1: the checkpoint in " + by_epochs +
                                 " is at step 16, past the requested 8 steps"));
  CliResult steps = run_cli("train --resume " + shell_quote(by_epochs) + " --steps 20");
  CAPTURE(steps.output);
  CHECK(steps.exit_code == 0);
  CHECK(contains(read_text(by_epochs + "/summary.json"), "\"steps\": 20"));
  CliResult fewer = run_cli("train --resume " + shell_quote(by_epochs) + " --steps 10");
  CAPTURE(fewer.output);
  CHECK(fewer.exit_code == 2);
  CHECK(contains(fewer.output, "past the requested 10 steps"));
  CHECK_FALSE(contains(fewer.output, "data:"));
}

TEST_CASE("apps.run_dir: config.json and train_state values are checked like flags") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run")).exit_code == 0);
  const std::string config = dir.file("run") + "/config.json";
  const std::string original = read_text(config);
  struct Case {
    std::string key;
    nlohmann::json value;
    std::string expect;
  };
  for (const Case& c :
       {Case{"threads", 100000, "key 'threads': must be a whole number from 0 to 1024"},
        Case{"momentum", 7, "key 'momentum': must be a number in [0, 1]"},
        Case{"lr", "fast", "key 'lr': expected a number"},
        Case{"seed", -1, "key 'seed': must be a whole number from 0"},
        Case{"batch_size", 2.5, "key 'batch_size': expected a whole number"},
        Case{"schedule", "bogus", "key 'schedule': bad schedule 'bogus'"}}) {
    CAPTURE(c.key);
    edit_config(config, c.key, c.value);
    CliResult r = run_cli("train --resume " + shell_quote(dir.file("run")));
    CAPTURE(r.output);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, config + ": " + c.expect));
    CliResult ev = run_cli("eval --checkpoint " + shell_quote(dir.file("run")) + " --data-dir " +
                           shell_quote(dir.file("data")));
    CHECK(ev.exit_code == 1);
    CHECK(contains(ev.output, config + ": " + c.expect));
    write_bytes(config, std::vector<uint8_t>(original.begin(), original.end()));
  }

  // train_state metadata: a number with trailing garbage, a flag that is not 0/1.
  const std::string state = dir.file("run") + "/train_state.safetensors";
  bnlab::SafetensorsFile saved = bnlab::load_safetensors(state);
  for (auto [key, value] : {std::pair<std::string, std::string>{"elapsed_s", "12abc"},
                            {"dropout_rng_has_spare", "7"},
                            {"step", "-3"}}) {
    CAPTURE(key);
    bnlab::Metadata meta = saved.metadata;
    meta[key] = value;
    bnlab::save_safetensors(state, saved.tensors, meta);
    CliResult r = run_cli("train --resume " + shell_quote(dir.file("run")) + " --steps 3");
    CAPTURE(r.output);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, state + ": metadata '" + key + "' is '" + value + "'"));
  }
}

TEST_CASE("apps.errors: a checkpoint's load errors name the file, and NaN weights are flagged") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run")).exit_code == 0);
  const std::string model = dir.file("run") + "/model.safetensors";
  const std::string eval = "eval --checkpoint " + shell_quote(dir.file("run")) + " --data-dir " +
                           shell_quote(dir.file("data"));
  bnlab::SafetensorsFile saved = bnlab::load_safetensors(model);

  // A weight of the wrong shape: load_state_dict's message, prefixed with the file.
  std::vector<bnlab::NamedTensor> wrong = saved.tensors;
  wrong[0].tensor = bnlab::Tensor::zeros({3});
  bnlab::save_safetensors(model, wrong, saved.metadata);
  CliResult bad = run_cli(eval);
  CAPTURE(bad.output);
  CHECK(bad.exit_code == 1);
  CHECK(contains(bad.output, "error: " + model + ": "));

  // NaN weights: evaluated, but flagged, and exit 3 (diverged) instead of 0.
  std::vector<bnlab::NamedTensor> nan = saved.tensors;
  nan[0].tensor = nan[0].tensor.clone();
  nan[0].tensor.data()[0] = NAN;
  bnlab::save_safetensors(model, nan, saved.metadata);
  CliResult r = run_cli(eval);
  CAPTURE(r.output);
  CHECK(r.exit_code == 3);
  CHECK(contains(r.output, "warning: " + dir.file("run") + "/model.safetensors holds NaN or Inf"));
  CHECK(contains(r.output, "'" + saved.tensors[0].name + "'"));
}

// A checkpoint whose BatchNorm running_var held a negative value evaluated to "loss -nan" with
// exit 0 and no warning, and a resume trained on from it the same way.
TEST_CASE(
    "apps.errors: a negative running_var is refused by eval and resume naming key and index") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run")).exit_code == 0);
  for (const std::string file : {"model.safetensors", "train_state.safetensors"}) {
    CAPTURE(file);
    const std::string path = dir.file("run") + "/" + file;
    const std::string original = read_text(path);
    bnlab::SafetensorsFile saved = bnlab::load_safetensors(path);
    std::vector<bnlab::NamedTensor> bad = saved.tensors;
    std::string key;
    for (bnlab::NamedTensor& t : bad) {
      if (t.name.size() < 11 || t.name.substr(t.name.size() - 11) != "running_var") continue;
      t.tensor = t.tensor.clone();
      t.tensor.data()[1] = -0.5f;
      key = t.name.substr(t.name.find_first_of("0123456789"));  // without train_state's prefix
      break;
    }
    REQUIRE(!key.empty());
    bnlab::save_safetensors(path, bad, saved.metadata);
    CliResult r = file == "model.safetensors"
                      ? run_cli("eval --checkpoint " + shell_quote(dir.file("run")) +
                                " --data-dir " + shell_quote(dir.file("data")))
                      : run_cli("train --resume " + shell_quote(dir.file("run")) + " --steps 3");
    CAPTURE(r.output);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, "error: " + path + ": load_state_dict: " + key +
                                 " must not be negative or NaN; checkpoint has -0.5 at index 1"));
    bnlab::testing::write_bytes(path, std::vector<uint8_t>(original.begin(), original.end()));
  }
}

// Finite weights whose logits overflow evaluated to "loss nan" with exit 0: as meaningless as a
// diverged run's figures, and now flagged the same way.
TEST_CASE("apps.errors: eval whose loss comes out non-finite warns and exits 3") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run")).exit_code == 0);
  const std::string model = dir.file("run") + "/model.safetensors";
  bnlab::SafetensorsFile saved = bnlab::load_safetensors(model);
  for (bnlab::NamedTensor& t : saved.tensors) {
    if (t.name.size() < 6 || t.name.substr(t.name.size() - 6) != "weight") continue;
    t.tensor = bnlab::Tensor::full(t.tensor.shape(), 1e30f);
  }
  bnlab::save_safetensors(model, saved.tensors, saved.metadata);
  CliResult r = run_cli("eval --checkpoint " + shell_quote(dir.file("run")) + " --data-dir " +
                        shell_quote(dir.file("data")));
  CAPTURE(r.output);
  CHECK(r.exit_code == 3);
  CHECK(contains(r.output, "warning: " + dir.file("run") + " evaluates to loss "));
  CHECK(contains(r.output, "its outputs are not finite although its weights are"));
  CHECK_FALSE(contains(r.output, "holds NaN or Inf values"));  // the weights are finite
}

// eval (and resume) on images of another size only said "load_state_dict: size mismatch for
// 1.weight ...", naming a tensor rather than the data that differs.
TEST_CASE("apps.errors: data shaped unlike the run's is refused naming both shapes") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 64, 16);
  REQUIRE(run_cli(flags(dir, "run")).exit_code == 0);
  // MNIST is 28x28 (the loader refuses other sizes), so the run says it was built for 14x14.
  const std::string config = dir.file("run") + "/config.json";
  const std::string original = read_text(config);
  edit_config(config, "input",
              {{"channels", 1}, {"height", 14}, {"width", 14}, {"num_classes", 10}});
  const std::string expected = dir.file("run") +
                               ": the run was trained on 1x14x14 images with 10 classes; this "
                               "dataset (mnist/test) has 1x28x28 images, 10 classes";
  CliResult eval = run_cli("eval --checkpoint " + shell_quote(dir.file("run")) + " --data-dir " +
                           shell_quote(dir.file("data")));
  CAPTURE(eval.output);
  CHECK(eval.exit_code == 1);
  CHECK(contains(eval.output, "error: " + expected));
  CHECK_FALSE(contains(eval.output, "size mismatch"));

  CliResult resume = run_cli("train --resume " + shell_quote(dir.file("run")) + " --steps 3");
  CAPTURE(resume.output);
  CHECK(resume.exit_code == 1);
  CHECK(contains(resume.output,
                 "the run was trained on 1x14x14 images with 10 classes; this "
                 "dataset (mnist/train) has 1x28x28 images, 10 classes"));
  write_bytes(config, std::vector<uint8_t>(original.begin(), original.end()));

  // MNIST files of 10x10 images: refused as they load, naming the file.
  const fs::path small = fs::path(dir.file("small")) / "mnist";
  fs::create_directories(small);
  for (const auto& [prefix, count] :
       {std::pair<std::string, uint32_t>{"train", 32}, {"t10k", 16}}) {
    std::vector<uint8_t> images = idx_header({count, 10, 10});
    images.resize(images.size() + count * 100, 7);
    std::vector<uint8_t> labels = idx_header({count});
    for (uint32_t i = 0; i < count; ++i) labels.push_back(static_cast<uint8_t>(i % 10));
    write_bytes((small / (prefix + "-images-idx3-ubyte")).string(), images);
    write_bytes((small / (prefix + "-labels-idx1-ubyte")).string(), labels);
  }
  CliResult small_eval = run_cli("eval --checkpoint " + shell_quote(dir.file("run")) +
                                 " --data-dir " + shell_quote(dir.file("small")));
  CAPTURE(small_eval.output);
  CHECK(small_eval.exit_code == 1);
  CHECK(
      contains(small_eval.output, "error: " + (small / "t10k-images-idx3-ubyte").string() +
                                      ": header says 16 images of 10x10; mnist images are 28x28"));
  CliResult small_train =
      run_cli("train --threads 1 --model mlp --steps 2 --data-dir " +
              shell_quote(dir.file("small")) + " --out " + shell_quote(dir.file("small-run")));
  CAPTURE(small_train.output);
  CHECK(small_train.exit_code == 1);
  CHECK(contains(small_train.output, (small / "train-images-idx3-ubyte").string() +
                                         ": header says 32 images of 10x10"));

  // The run's own data still evaluates.
  CHECK(run_cli("eval --checkpoint " + shell_quote(dir.file("run")) + " --data-dir " +
                shell_quote(dir.file("data")))
            .exit_code == 0);
  CHECK(nlohmann::json::parse(read_text(dir.file("run") + "/config.json"))["input"] ==
        nlohmann::json{{"channels", 1}, {"height", 28}, {"width", 28}, {"num_classes", 10}});
}

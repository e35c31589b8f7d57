// apps SIGINT/SIGTERM: a run signalled mid-training finishes its step, saves a checkpoint, prints
// the command that resumes it and exits 128 + signal; running that command finishes the run with
// results byte-identical to an uninterrupted run (train and ablate); a second signal exits at once.
// The CLI runs as a child process that blocks on its full output pipe (CliProcess), so it is
// signalled after it has trained but before it can have finished, on any machine. The run's header
// reaches a log before the data is loaded, so a run stopped that early leaves it there.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "apps_test_util.h"

using namespace apps_test;

namespace {

std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// The command printed after "resume with: ".
std::string resume_command(const std::string& output) {
  const std::string tag = "resume with: ";
  size_t at = output.find(tag);
  if (at == std::string::npos) return "";
  size_t end = output.find('\n', at);
  return output.substr(at + tag.size(), end == std::string::npos ? end : end - at - tag.size());
}

// A CSV with the named column blanked in every row (wall-clock time never repeats).
std::vector<std::vector<std::string>> without_column(const std::string& path,
                                                     const std::string& column) {
  auto rows = parse_csv(read_text(path));
  REQUIRE(!rows.empty());
  size_t c = 0;
  while (c < rows[0].size() && rows[0][c] != column) ++c;
  REQUIRE(c < rows[0].size());
  for (auto& row : rows)
    if (row.size() > c) row[c] = "";
  return rows;
}

// train_state.safetensors with the elapsed_s metadata removed (as text: header + data).
std::string state_without_elapsed(const std::string& path) {
  SafetensorsParts parts = split_safetensors(path);
  parts.header["__metadata__"].erase("elapsed_s");
  return parts.header.dump() + parts.data;
}

// Signals the child, blocked writing, twice: the first only sets the flag (the write resumes), the
// second ends the process there and then. The same signal twice, the second sent once the first is
// taken: two different signals pending at once are delivered lowest number first, whatever order
// they were sent in, and the exit code would tell which.
CliResult signal_twice(CliProcess& child, int sig) {
  REQUIRE(child.wait_until_blocked_in_write());
  child.signal(sig);
  REQUIRE(child.wait_until_taken(sig));
  child.signal(sig);
  return child.finish();
}

}  // namespace

TEST_CASE("apps.interrupt: SIGINT during train checkpoints, prints the resume command, exits 130") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 160, 40);
  // 160 images / batch 16 = 10 batches per epoch; 40 steps log progress every 2 steps, so the
  // child blocks (and is interrupted) at step 2: mid-epoch, between evaluations.
  const std::vector<std::string> flags = {"--model",    "mlp", "--norm",       "batch",
                                          "--dropout",  "0.2", "--batch-size", "16",
                                          "--steps",    "40",  "--eval-every", "20",
                                          "--threads",  "1",   "--lr",         "0.05",
                                          "--momentum", "0.9", "--data-dir",   dir.file("data")};
  auto with_out = [&](const std::string& out) {
    std::vector<std::string> args{"train"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--out", out});
    return args;
  };

  CliProcess child(with_out(dir.file("B")), /*block_output=*/true);
  // The header and the data line through, the child blocks at its first progress line.
  REQUIRE(child.release_writes_until("\ndata:"));
  REQUIRE(child.wait_until_blocked_in_write());
  child.signal(SIGINT);
  CliResult interrupted = child.finish();
  CAPTURE(interrupted.output);
  CHECK(interrupted.exit_code == 130);
  CHECK(contains(interrupted.output, "interrupted by SIGINT at step 2"));
  const std::string command = resume_command(interrupted.output);
  CHECK(words(command) ==
        std::vector<std::string>{BNLAB_CLI_PATH, "train", "--resume", dir.file("B")});
  CHECK(fs::exists(dir.file("B") + "/train_state.safetensors"));
  CHECK_FALSE(fs::exists(dir.file("B") + "/summary.json"));  // not finished

  CliResult resumed = run_shell(command);
  CAPTURE(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK(contains(resumed.output, "final: step 40"));

  CliResult straight = run_cli([&] {
    std::string args;
    for (const std::string& a : with_out(dir.file("A"))) args += shell_quote(a) + " ";
    return args;
  }());
  CAPTURE(straight.output);
  REQUIRE(straight.exit_code == 0);
  const std::string a = dir.file("A"), b = dir.file("B");
  CHECK(read_text(a + "/model.safetensors") == read_text(b + "/model.safetensors"));
  CHECK(state_without_elapsed(a + "/train_state.safetensors") ==
        state_without_elapsed(b + "/train_state.safetensors"));
  // The metrics row at step 20 averages steps 1..20 across the interruption at step 2.
  CHECK(without_column(a + "/metrics.csv", "elapsed_s") ==
        without_column(b + "/metrics.csv", "elapsed_s"));
}

TEST_CASE("apps.interrupt: a second signal exits at once without saving") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 160, 40);
  CliProcess child(
      {"train", "--model", "mlp", "--batch-size", "16", "--steps", "60", "--eval-every", "20",
       "--threads", "1", "--data-dir", dir.file("data"), "--out", dir.file("run")},
      /*block_output=*/true);
  REQUIRE(child.release_writes_until("\ndata:"));
  CliResult r = signal_twice(child, SIGINT);  // while it writes its first progress line
  CAPTURE(r.output);
  CHECK(r.exit_code == 130);
  CHECK_FALSE(contains(r.output, "resume with"));
  CHECK_FALSE(fs::exists(dir.file("run") + "/train_state.safetensors"));  // no checkpoint yet
}

// A log's stdout is fully buffered: the header waited for the first progress line, so a run
// stopped while its data loaded (two quick Ctrl-Cs) left an empty log. The data line is printed
// once the data is loaded: the header must have been written before it, in a write of its own.
TEST_CASE("apps.interrupt: a run's header reaches the log before its data is loaded") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 160, 40);
  CliProcess child({"train", "--model", "mlp", "--batch-size", "16", "--steps", "40", "--threads",
                    "1", "--data-dir", dir.file("data"), "--out", dir.file("run")},
                   /*block_output=*/true);
  REQUIRE(child.release_writes_until("\noutput:"));  // the header's last line
  CAPTURE(child.output_so_far());
  CHECK(contains(child.output_so_far(), "== bnlab train\nmodel:        mlp"));
  CHECK_FALSE(contains(child.output_so_far(), "\ndata:"));
  // Stopped there by a second signal, the log keeps the header.
  CliResult r = signal_twice(child, SIGINT);
  CAPTURE(r.output);
  CHECK(r.exit_code == 130);
  CHECK(r.output.rfind("== bnlab train\nmodel:        mlp", 0) == 0);
}

TEST_CASE(
    "apps.interrupt: SIGTERM during a parallel ablate stops every arm and rerunning completes") {
  TempDir dir;
  write_tiny_mnist(dir.file("data"), 120, 40);
  auto ablate = [&](const std::string& out) {
    return std::vector<std::string>{"ablate",
                                    "--model",
                                    "mlp",
                                    "--steps",
                                    "8",
                                    "--eval-every",
                                    "4",
                                    "--batch-size",
                                    "20",
                                    "--jobs",
                                    "2",
                                    "--threads",
                                    "1",
                                    "--data-dir",
                                    dir.file("data"),
                                    "--out",
                                    out};
  };
  CliProcess child(ablate(dir.file("B")), /*block_output=*/true);
  // Blocked once an arm has logged its first step (every step logs: 8 steps).
  REQUIRE(child.release_writes_until(" step 1/8 "));
  REQUIRE(child.wait_until_blocked_in_write());
  child.signal(SIGTERM);
  CliResult interrupted = child.finish();
  CAPTURE(interrupted.output);
  CHECK(interrupted.exit_code == 143);
  CHECK(contains(interrupted.output, "interrupted by SIGTERM"));
  const std::string command = resume_command(interrupted.output);
  std::vector<std::string> expected{BNLAB_CLI_PATH};
  for (const std::string& w : ablate(dir.file("B"))) expected.push_back(w);
  CHECK(words(command) == expected);
  CHECK_FALSE(fs::exists(dir.file("B") + "/results.csv"));
  // Each arm that had started holds a checkpoint and no summary.
  int checkpoints = 0;
  for (const auto& arm : fs::directory_iterator(dir.file("B") + "/runs")) {
    const fs::path run = arm.path() / "seed-1";
    checkpoints += fs::exists(run / "train_state.safetensors");
    CHECK_FALSE(fs::exists(run / "summary.json"));
  }
  CHECK(checkpoints >= 1);

  CliResult resumed = run_shell(command);
  CAPTURE(resumed.output);
  REQUIRE(resumed.exit_code == 0);

  std::string straight_args;
  for (const std::string& w : ablate(dir.file("A"))) straight_args += shell_quote(w) + " ";
  CliResult straight = run_cli(straight_args);
  CAPTURE(straight.output);
  REQUIRE(straight.exit_code == 0);
  CHECK(without_column(dir.file("A") + "/results.csv", "elapsed_s") ==
        without_column(dir.file("B") + "/results.csv", "elapsed_s"));
  // summary.md equal but for its last column, ms/step: measured time, not results.
  auto without_cost = [](const std::string& markdown) {
    std::istringstream in(markdown);
    std::string line, out;
    while (std::getline(in, line)) {
      if (!line.empty() && line[0] == '|')
        line = line.substr(0, line.rfind('|', line.size() - 2) + 1);
      out += line + "\n";
    }
    return out;
  };
  CHECK(without_cost(read_text(dir.file("A") + "/summary.md")) ==
        without_cost(read_text(dir.file("B") + "/summary.md")));
  for (const std::string arm : {"norm-none", "norm-batch"}) {
    CAPTURE(arm);
    CHECK(read_text(dir.file("A") + "/runs/" + arm + "/seed-1/model.safetensors") ==
          read_text(dir.file("B") + "/runs/" + arm + "/seed-1/model.safetensors"));
  }
}

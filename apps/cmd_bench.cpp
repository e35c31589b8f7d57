// bnlab bench: training and inference throughput and peak memory of the four benchmark workloads of
// issue 6, each with and without BatchNorm, at one or more thread counts.
//
//   W1 paper-mlp  784-100-100-100-10 sigmoid, batch 60, SGD
//   W2 mlp        784-512-256-10 ReLU, batch 128, SGD momentum 0.9
//   W3 lenet      conv5x5(32)-BN-ReLU-pool, conv5x5(64)-BN-ReLU-pool, dense
//   3136-128-BN-ReLU-Dropout(0.5),
//                 dense 128-10; batch 64; Adam
//   W4 cifar-cnn  3 x [conv3x3-BN-ReLU, conv3x3-BN-ReLU, maxpool2] at 32/64/128, dense 2048-10;
//   batch 128;
//                 SGD momentum 0.9; input 3x32x32
// These are the zoo models (train/models.cpp) with their default init, built with norm "none" or
// "batch" (placement "before") by default, or any other zoo norm --norms names. Inputs are
// synthetic: one fixed-seed batch of N(0, 1) images and uniform labels, reused every step
// (bench/compare_pytorch.py does the same in PyTorch).
//
// Each (workload, norm, threads) runs in its own child process (this executable re-executed with
// the hidden --child flag) so that its peak RSS is its own, and the thread count is set before any
// parallel region ran. A measurement: warm-up for --warmup seconds (at least 2 steps), which also
// sizes a repeat to about --seconds; then --repeats timed repeats. images/s is reported as the
// median with the min and max over the repeats. Training = forward + cross-entropy + backward +
// optimizer step + zero_grad; inference = forward in eval mode under NoGradGuard and
// FrozenWeightsGuard (dense weights packed once, at the first batch of the warm-up), BatchNorm
// folded into the layer before it (fold_batch_norm), as bnlab eval runs it.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/commands.h"
#include "core/autograd.h"
#include "core/blas.h"
#include "core/cpu_isa.h"
#include "core/frozen_weights.h"
#include "core/io.h"
#include "core/ops.h"
#include "layers/bn_fold.h"
#include "optim/optim.h"
#include "train/knobs.h"
#include "train/models.h"

namespace bnlab::apps {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

struct Workload {
  const char* id;
  const char* model;
  int64_t batch;
  const char* optimizer;  // sgd | adam
  float momentum;
  int64_t channels, height, width;
};

const std::vector<Workload>& workloads() {
  static const std::vector<Workload> w{
      {"W1", "paper-mlp", 60, "sgd", 0.0f, 1, 28, 28},
      {"W2", "mlp", 128, "sgd", 0.9f, 1, 28, 28},
      {"W3", "lenet", 64, "adam", 0.0f, 1, 28, 28},
      {"W4", "cifar-cnn", 128, "sgd", 0.9f, 3, 32, 32},
  };
  return w;
}

// Accepts "W3", "w3" or "lenet".
const Workload& find_workload(const std::string& name) {
  for (const Workload& w : workloads()) {
    std::string id = w.id;
    if (name == id || name == w.model ||
        (name.size() == 2 && std::toupper(static_cast<unsigned char>(name[0])) == 'W' &&
         name[1] == id[1]))
      return w;
  }
  BNLAB_FAIL("bench: unknown workload '", name, "'; expected W1..W4 or paper-mlp, mlp, lenet, ",
             "cifar-cnn");
}

// The zoo's normalizations (train/models.h), as the flag's help and its error list them.
std::string norm_list() {
  std::string list;
  for (const std::string& n : norm_names()) list += (list.empty() ? "" : ", ") + n;
  return list;
}

void check_norm(const std::string& norm) {
  const auto& names = norm_names();
  BNLAB_CHECK(std::find(names.begin(), names.end(), norm) != names.end(), "bench: unknown norm '",
              norm, "'; expected one of ", norm_list());
}

struct Timing {
  double median = 0, min = 0, max = 0;  // images per second
  int64_t steps_per_repeat = 0;
  int repeats = 0;
};

struct MeasureOptions {
  double warmup = 0.3;   // seconds
  double seconds = 0.3;  // per repeat
  int repeats = 5;
};

// Runs `step` (one batch) through warm-up and the timed repeats.
template <class Step>
Timing measure(Step&& step, int64_t batch, const MeasureOptions& o) {
  auto t0 = clock_type::now();
  int64_t warm_steps = 0;
  double elapsed = 0;
  while (warm_steps < 2 || elapsed < o.warmup) {
    step();
    ++warm_steps;
    elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  }
  const double per_step = elapsed / static_cast<double>(warm_steps);
  Timing t;
  t.steps_per_repeat = std::max<int64_t>(1, static_cast<int64_t>(o.seconds / per_step + 0.5));
  t.repeats = o.repeats;
  std::vector<double> rates;
  for (int r = 0; r < o.repeats; ++r) {
    auto s0 = clock_type::now();
    for (int64_t i = 0; i < t.steps_per_repeat; ++i) step();
    double dt = std::chrono::duration<double>(clock_type::now() - s0).count();
    rates.push_back(static_cast<double>(t.steps_per_repeat * batch) / dt);
  }
  std::sort(rates.begin(), rates.end());
  size_t n = rates.size();
  t.median = n % 2 ? rates[n / 2] : 0.5 * (rates[n / 2 - 1] + rates[n / 2]);
  t.min = rates.front();
  t.max = rates.back();
  return t;
}

json timing_json(const Timing& t) {
  return {{"median", t.median},
          {"min", t.min},
          {"max", t.max},
          {"steps_per_repeat", t.steps_per_repeat},
          {"repeats", t.repeats}};
}

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

ModelSpec workload_spec(const Workload& w, const std::string& norm) {
  ModelSpec spec;
  spec.name = w.model;
  spec.norm = norm;
  spec.channels = w.channels;
  spec.height = w.height;
  spec.width = w.width;
  return spec;
}

// Not every norm fits every model (instance norm needs spatial positions): checked by building
// each pair once before any child runs, so a bad combination is a flag error, not a failure
// halfway through the table.
void check_combinations(const std::vector<std::string>& workloads,
                        const std::vector<std::string>& norms) {
  for (const std::string& name : workloads) {
    for (const std::string& norm : norms) {
      const Workload& w = find_workload(name);
      try {
        Rng rng(42);
        (void)build_model(workload_spec(w, norm), rng);
      } catch (const Error& e) {
        throw UsageError("bench: " + std::string(w.id) + " (" + w.model + ") with --norms " + norm +
                         ": " + e.what());
      }
    }
  }
}

// One arm of a measurement: the workload's model with `norm`, its optimizer, and one batch of
// x ~ N(0, 1) with labels uniform in 0..9 (reused every step).
struct Arm {
  Model model;
  std::unique_ptr<Optimizer> opt;
};

Arm make_arm(const Workload& w, const std::string& norm) {
  Rng rng(42);
  Arm arm{build_model(workload_spec(w, norm), rng), nullptr};
  if (std::string(w.optimizer) == "adam") {
    arm.opt = std::make_unique<Adam>(arm.model.net->parameters(), AdamOptions{.lr = 1e-3f});
  } else {
    arm.opt = std::make_unique<Sgd>(arm.model.net->parameters(),
                                    SgdOptions{.lr = 0.01f, .momentum = w.momentum});
  }
  arm.model.net->train(true);
  return arm;
}

struct Batch {
  Tensor x;
  std::vector<int64_t> labels;
};

Batch make_batch(const Workload& w) {
  Rng data_rng(7);
  Batch b{Tensor::normal({w.batch, w.channels, w.height, w.width}, data_rng),
          std::vector<int64_t>(static_cast<size_t>(w.batch))};
  for (auto& y : b.labels) y = static_cast<int64_t>(data_rng.next_u32() % 10);
  return b;
}

void train_step(Arm& arm, const Batch& b) {
  Tensor loss = cross_entropy((*arm.model.net)(b.x), b.labels);
  loss.backward();
  arm.opt->step();
  arm.opt->zero_grad();
}

// Eval mode with BatchNorm folded into the layer before it, as inference is measured.
void to_inference(Arm& arm) {
  arm.model.net->train(false);
  fold_batch_norm(*arm.model.net);
}

// The child's work: one workload, one norm, one thread count; prints one JSON line.
int run_child(const std::string& workload, const std::string& norm, int threads,
              const MeasureOptions& mo, bool train_only) {
  const Workload& w = find_workload(workload);
  set_num_threads(threads);
  Arm arm = make_arm(w, norm);
  const Batch batch = make_batch(w);
  Timing train = measure([&] { train_step(arm, batch); }, w.batch, mo);
  json out = {{"workload", w.id},           {"model", w.model}, {"norm", norm},
              {"threads", threads},         {"batch", w.batch}, {"optimizer", w.optimizer},
              {"train", timing_json(train)}};
  if (!train_only) {
    to_inference(arm);
    NoGradGuard no_grad;
    FrozenWeightsGuard frozen;
    Timing infer = measure([&] { (void)(*arm.model.net)(batch.x); }, w.batch, mo);
    out["infer"] = timing_json(infer);
  }
  out["peak_rss_mb"] = peak_rss_mb();
  // Which GEMM ran and what this process's OpenBLAS is (build, kernel core, threading), for the
  // record: the GEMM path, the OpenBLAS build that gets loaded and OPENBLAS_CORETYPE change the
  // speed (docs/performance.md).
  out["blas"] = blas_config();
  out["blas_parallel"] = blas_parallel_mode();
  out["gemm"] = gemm_path_name();
  out["isa"] = cpu_isa_name(cpu_isa());
  out["blas_threads"] = blas_num_threads();
  std::cout << "BNLAB_BENCH " << out.dump() << std::endl;
  return 0;
}

// The cost of `norm` against none measured in ONE process: both models built side by side, then
// rounds of a few steps of each in turn, and per round the ratio of their step times (norm / none,
// as "no-BN / BN" in images/s). Separate processes of one binary differ by up to 1.5x here
// (docs/performance.md), which swamps a 10 % cost; within a process, alternating rounds, drift
// cancels. Each round runs about a third of --seconds per arm; 3 x --repeats rounds (at least 7).
// An arm's `enter`, when set, runs untimed before each of its blocks of steps (the thread-scaling
// pair sets the arm's thread count there).
struct PairArm {
  std::function<void()> step, enter;
};

json paired_ratio(const PairArm& a_arm, const PairArm& b_arm, const MeasureOptions& mo) {
  auto seconds_of = [](const PairArm& arm, int64_t steps) {
    if (arm.enter) arm.enter();
    const auto t0 = clock_type::now();
    for (int64_t i = 0; i < steps; ++i) arm.step();
    return std::chrono::duration<double>(clock_type::now() - t0).count();
  };
  // Warm-up, which also sizes the rounds.
  double warm = 0;
  int64_t warm_steps = 0;
  while (warm_steps < 2 || warm < mo.warmup) {
    warm += seconds_of(a_arm, 1) + seconds_of(b_arm, 1);
    ++warm_steps;
  }
  const double per_pair = warm / static_cast<double>(warm_steps);
  const int64_t steps = std::max<int64_t>(1, std::llround(mo.seconds / 3 / (per_pair / 2)));
  const int rounds = std::max(7, 3 * mo.repeats);
  std::vector<double> ratios;
  for (int r = 0; r < rounds; ++r) {
    // Each arm goes first in every other round, so that neither always inherits the other's
    // cache state.
    double a = 0, b = 0;
    if (r % 2 == 0) {
      a = seconds_of(a_arm, steps);
      b = seconds_of(b_arm, steps);
    } else {
      b = seconds_of(b_arm, steps);
      a = seconds_of(a_arm, steps);
    }
    ratios.push_back(a / b);
  }
  std::sort(ratios.begin(), ratios.end());
  auto at = [&](double q) { return ratios[static_cast<size_t>(q * (ratios.size() - 1) + 0.5)]; };
  return {{"median", at(0.5)},
          {"q1", at(0.25)},
          {"q3", at(0.75)},
          {"rounds", rounds},
          {"steps_per_round", steps}};
}

// The paired child: `norm` against none for one workload and thread count; prints one JSON line.
int run_pair_child(const std::string& workload, const std::string& norm, int threads,
                   const MeasureOptions& mo, bool train_only) {
  const Workload& w = find_workload(workload);
  set_num_threads(threads);
  Arm with_norm = make_arm(w, norm), none = make_arm(w, "none");
  const Batch batch = make_batch(w);
  json out = {{"workload", w.id}, {"model", w.model}, {"norm", norm}, {"threads", threads}};
  out["train"] = paired_ratio({[&] { train_step(with_norm, batch); }, {}},
                              {[&] { train_step(none, batch); }, {}}, mo);
  if (!train_only) {
    to_inference(with_norm);
    to_inference(none);
    NoGradGuard no_grad;
    FrozenWeightsGuard frozen;
    out["infer"] = paired_ratio({[&] { (void)(*with_norm.model.net)(batch.x); }, {}},
                                {[&] { (void)(*none.model.net)(batch.x); }, {}}, mo);
  }
  std::cout << "BNLAB_BENCH " << out.dump() << std::endl;
  return 0;
}

// The thread-scaling child: one model of `workload` with `norm`, rounds of steps alternating
// between `base` threads and `threads` threads in this process, and per round the speed-up (step
// time at `base` / at `threads`). Separate processes read this ratio with the spread of two
// processes (docs/performance.md: W3's 2/1 went from 1.66 to 2.08 between runs with nothing
// changed); in one process, alternating rounds, that drift cancels. A vCPU the host slows during a
// round still costs the two-thread arm more, which needs both, so the rounds spread
// (performance.md, "Thread scaling in one process"). The conv path is chosen from the shape alone
// (core/ops/conv_path.cpp), so both arms run the same kernels.
int run_scale_child(const std::string& workload, const std::string& norm, int threads, int base,
                    const MeasureOptions& mo, bool train_only) {
  const Workload& w = find_workload(workload);
  set_num_threads(threads);  // the larger team first, so that its threads exist before timing
  Arm arm = make_arm(w, norm);
  const Batch batch = make_batch(w);
  json out = {{"workload", w.id},
              {"model", w.model},
              {"norm", norm},
              {"threads", threads},
              {"base_threads", base}};
  // Time at base / time at threads: the speed-up.
  const auto at_base = [base] { set_num_threads(base); };
  const auto at_threads = [threads] { set_num_threads(threads); };
  const auto train = [&] { train_step(arm, batch); };
  out["train"] = paired_ratio({train, at_base}, {train, at_threads}, mo);
  if (!train_only) {
    to_inference(arm);
    NoGradGuard no_grad;
    FrozenWeightsGuard frozen;
    const auto infer = [&] { (void)(*arm.model.net)(batch.x); };
    out["infer"] = paired_ratio({infer, at_base}, {infer, at_threads}, mo);
  }
  std::cout << "BNLAB_BENCH " << out.dump() << std::endl;
  return 0;
}

// Re-executes this binary as a child for one measurement and returns its JSON.
json spawn_child(const std::vector<std::string>& args) {
  int fds[2];
  BNLAB_CHECK(pipe(fds) == 0, "bench: pipe failed: ", std::strerror(errno));
  pid_t pid = fork();
  BNLAB_CHECK(pid >= 0, "bench: fork failed: ", std::strerror(errno));
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    std::fprintf(stderr, "bench: cannot re-execute /proc/self/exe: %s\n", std::strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t got;
  while ((got = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(got));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  BNLAB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "bench: the child for '", args.back(),
              "' failed (status ", status, "); output: ", text);
  auto pos = text.rfind("BNLAB_BENCH ");
  BNLAB_CHECK(pos != std::string::npos, "bench: the child printed no result; output: ", text);
  return json::parse(text.substr(pos + 12));
}

std::vector<std::string> split_list(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string fmt_rate(const json& t) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%9.0f  [%.0f-%.0f]", t["median"].get<double>(),
                t["min"].get<double>(), t["max"].get<double>());
  return buf;
}

// A double as text that reads back as the same value (17 significant digits), for a child's flags:
// std::to_string keeps six decimals, so --seconds 1e-7 reached the child as 0.000000 and failed
// its check there.
std::string exact_decimal(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

template <typename T>
void add_once(std::vector<T>& list, const T& value) {
  if (std::find(list.begin(), list.end(), value) == list.end()) list.push_back(value);
}

// A paired measurement's median [interquartile range].
std::string fmt_quartiles(const json& q) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f [%.3f-%.3f]", q["median"].get<double>(),
                q["q1"].get<double>(), q["q3"].get<double>());
  return buf;
}

}  // namespace

Command add_bench_command(CLI::App& parent) {
  struct Options {
    std::string threads = "1,2", workloads = "W1,W2,W3,W4", norms = "none,batch", json_path;
    MeasureOptions measure;
    bool train_only = false, paired = false;
    std::string child;  // hidden: "workload:norm:threads[:pair | :scale:base]"
  };
  auto o = std::make_shared<Options>();
  CLI::App* app = parent.add_subcommand(
      "bench", "Benchmark training and inference images/s and peak RSS of workloads W1-W4");
  app->add_option("--threads", o->threads, "Comma-separated thread counts")
      ->check(whole_number_list_in(1, 1024))
      ->capture_default_str();
  // Lists are checked item by item while parsing, so a bad one is a flag error (exit 2); so is a
  // list of nothing ('' or ','), which would measure nothing.
  auto each_item = [](auto check) {
    return CLI::Validator(
        [check](std::string& s) -> std::string {
          const std::vector<std::string> items = split_list(s);
          if (items.empty()) return "must list at least one, got '" + s + "'";
          try {
            for (const auto& item : items) check(item);
          } catch (const Error& e) {
            return e.what();
          }
          return "";
        },
        "LIST");
  };
  app->add_option("--workloads", o->workloads,
                  "Comma-separated workloads: W1 (paper-mlp), W2 (mlp), W3 (lenet), W4 (cifar-cnn)")
      ->check(each_item([](const std::string& w) { find_workload(w); }))
      ->capture_default_str();
  app->add_option("--norms", o->norms, "Comma-separated normalizations: " + norm_list())
      ->check(each_item(check_norm))
      ->capture_default_str();
  app->add_option("--repeats", o->measure.repeats, "Timed repeats per measurement")
      ->check(whole_number_in(1, 1000))
      ->capture_default_str();
  app->add_option("--seconds", o->measure.seconds, "Target seconds per repeat")
      ->check(kFinitePositive)
      ->capture_default_str();
  app->add_option("--warmup", o->measure.warmup, "Warm-up seconds before timing")
      ->check(kFiniteNonNegative)
      ->capture_default_str();
  app->add_flag("--train-only", o->train_only, "Skip the inference measurement");
  app->add_flag("--paired", o->paired,
                "Also measure each norm's cost against none in one process (both models, "
                "alternating rounds), which cancels the process-to-process spread");
  app->add_option("--json", o->json_path,
                  "Also write all results as JSON to this file (/dev/stdout prints it)");
  // Internal: one measurement in this process, "workload:norm:threads[:pair | :scale:base]" as the
  // parent writes it. Hidden, so CLI11 would print a bad value without the flag's name: checked in
  // the runner instead, as a usage error (exit 2).
  app->add_option("--child", o->child)->group("");

  Runner run = [o, app]() {
    const MeasureOptions& mo = o->measure;
    if (!o->child.empty()) {
      // "workload:norm:threads[:pair | :scale:base]", written by the parent below.
      const auto parts = split_list(o->child, ':');
      int threads = 0, base = 0;
      try {
        if (parts.size() != 3 && !(parts.size() == 4 && parts[3] == "pair") &&
            !(parts.size() == 5 && parts[3] == "scale"))
          BNLAB_FAIL("wants workload:norm:threads[:pair | :scale:base]");
        find_workload(parts[0]);
        check_norm(parts[1]);
        threads = static_cast<int>(parse_whole_number(parts[2], 1, 1024));
        if (parts.size() == 5) base = static_cast<int>(parse_whole_number(parts[4], 1, 1024));
        check_combinations({parts[0]}, {parts[1]});
      } catch (const std::runtime_error& e) {  // Error, or check_combinations' UsageError
        std::string why = e.what();
        if (why.rfind("bench: ", 0) == 0) why.erase(0, 7);  // the checks' own prefix
        throw UsageError("bench: --child '" + o->child + "': " + why);
      }
      if (parts.size() == 5)
        return run_scale_child(parts[0], parts[1], threads, base, mo, o->train_only);
      if (parts.size() == 4) return run_pair_child(parts[0], parts[1], threads, mo, o->train_only);
      return run_child(parts[0], parts[1], threads, mo, o->train_only);
    }
    std::vector<int> threads;
    for (const auto& t : split_list(o->threads)) {
      int n = 0;
      try {
        n = std::stoi(t);
      } catch (const std::exception&) {
      }
      BNLAB_CHECK(n >= 1 && n <= 1024, "bench: --threads wants positive integers; got '", t, "'");
      add_once(threads, n);
    }
    // A value named twice is measured once (W1,w1 and W1,W1 ran the same rows twice).
    std::vector<std::string> names, norms;
    for (const auto& w : split_list(o->workloads))
      add_once(names, std::string(find_workload(w).id));
    for (const auto& n : split_list(o->norms)) {
      check_norm(n);
      add_once(norms, n);
    }
    BNLAB_CHECK(!threads.empty() && !names.empty() && !norms.empty(),
                "bench: --threads, --workloads and --norms must not be empty");
    check_combinations(names, norms);
    // Given at all, not "given and not empty": --json '' measured everything and wrote nothing.
    if (app->count("--json") > 0) {
      // Found before the minutes of measuring, not when the results are written.
      if (o->json_path.empty()) throw UsageError("bench: --json must name a file, got ''");
      const fs::path parent = fs::path(o->json_path).parent_path();
      std::error_code ec;
      if (fs::is_directory(o->json_path, ec) ||
          !fs::is_directory(parent.empty() ? fs::path(".") : parent, ec))
        throw UsageError("bench: --json " + o->json_path + ": not a file in an existing directory");
    }

    std::printf(
        "bnlab bench: SIMD %s; GEMM %s; OpenBLAS %s (%s threading); repeats %d x ~%.2fs after "
        "%.2fs warm-up\n",
        cpu_isa_name(cpu_isa()), gemm_path_name().c_str(), blas_config().c_str(),
        blas_parallel_mode().c_str(), mo.repeats, mo.seconds, mo.warmup);
    std::printf("%-3s %-10s %-5s %3s | %-28s | %-28s | %8s\n", "", "model", "norm", "thr",
                "train img/s  [min-max]", "infer img/s  [min-max]", "RSS MB");
    std::fflush(stdout);
    json results = json::array();
    auto child_args = [&](const std::string& spec) {
      std::vector<std::string> args{"bnlab",     "bench",
                                    "--repeats", std::to_string(mo.repeats),
                                    "--seconds", exact_decimal(mo.seconds),
                                    "--warmup",  exact_decimal(mo.warmup)};
      if (o->train_only) args.push_back("--train-only");
      args.push_back("--child");
      args.push_back(spec);
      return args;
    };
    for (const auto& name : names) {
      for (int t : threads) {
        for (const auto& norm : norms) {
          json r = spawn_child(child_args(name + ":" + norm + ":" + std::to_string(t)));
          std::printf("%-3s %-10s %-5s %3d | %-28s | %-28s | %8.1f\n", name.c_str(),
                      r["model"].get<std::string>().c_str(), norm.c_str(), t,
                      fmt_rate(r["train"]).c_str(),
                      r.contains("infer") ? fmt_rate(r["infer"]).c_str() : "-",
                      r["peak_rss_mb"].get<double>());
          std::fflush(stdout);
          results.push_back(r);
        }
      }
    }
    // Derived ratios: BN's cost (no-BN / BN) and thread scaling (t / first thread count).
    auto find = [&](const std::string& w, const std::string& n, int t) -> const json* {
      for (const auto& r : results)
        if (r["workload"] == w && r["norm"] == n && r["threads"] == t) return &r;
      return nullptr;
    };
    std::printf(
        "\nno-BN / BN and none / each other norm (train, infer), and scaling vs %d thread(s) "
        "(train):\n",
        threads[0]);
    for (const auto& name : names) {
      for (int t : threads) {
        const json* a = find(name, "none", t);
        std::printf("%-3s %d thr:", name.c_str(), t);
        for (const auto& n : norms) {
          const json* b = find(name, n, t);
          if (n == "none" || !a || !b) continue;
          // "no-BN/BN" as the tables in docs/performance.md and the README call BN's cost.
          const std::string label = n == "batch" ? "no-BN/BN" : "none/" + n;
          std::printf(
              "  %s train %.2f", label.c_str(),
              (*a)["train"]["median"].get<double>() / (*b)["train"]["median"].get<double>());
          if (a->contains("infer") && b->contains("infer"))
            std::printf(", infer %.2f", (*a)["infer"]["median"].get<double>() /
                                            (*b)["infer"]["median"].get<double>());
        }
        for (const auto& n : norms) {
          const json* base = find(name, n, threads[0]);
          const json* cur = find(name, n, t);
          if (t != threads[0] && base && cur)
            std::printf(
                "  scaling(%s) %.2f", n.c_str(),
                (*cur)["train"]["median"].get<double>() / (*base)["train"]["median"].get<double>());
        }
        std::printf("\n");
      }
    }
    json paired = json::array(), scaling = json::array();
    if (o->paired) {
      std::printf(
          "\nin one process, alternating rounds: step time with each norm / without (median "
          "[interquartile range] of the rounds):\n");
      for (const auto& name : names) {
        for (int t : threads) {
          for (const auto& norm : norms) {
            if (norm == "none") continue;
            json r = spawn_child(child_args(name + ":" + norm + ":" + std::to_string(t) + ":pair"));
            std::printf("%-3s %d thr: %s/none train %s", name.c_str(), t, norm.c_str(),
                        fmt_quartiles(r["train"]).c_str());
            if (r.contains("infer")) std::printf(", infer %s", fmt_quartiles(r["infer"]).c_str());
            std::printf("\n");
            std::fflush(stdout);
            paired.push_back(r);
          }
        }
      }
      // Thread scaling the same way: one model, rounds alternating between the first thread count
      // and each other one.
      bool header = false;
      for (const auto& name : names) {
        for (int t : threads) {
          if (t == threads[0]) continue;
          if (!header) {
            std::printf(
                "\nin one process, alternating rounds: speed-up at each thread count over %d "
                "(step time at %d / at it; median [interquartile range] of the rounds):\n",
                threads[0], threads[0]);
            header = true;
          }
          for (const auto& norm : norms) {
            json r = spawn_child(child_args(name + ":" + norm + ":" + std::to_string(t) +
                                            ":scale:" + std::to_string(threads[0])));
            std::printf("%-3s %d thr / %d, %s: train %s", name.c_str(), t, threads[0], norm.c_str(),
                        fmt_quartiles(r["train"]).c_str());
            if (r.contains("infer")) std::printf(", infer %s", fmt_quartiles(r["infer"]).c_str());
            std::printf("\n");
            std::fflush(stdout);
            scaling.push_back(r);
          }
        }
      }
    }
    if (!o->json_path.empty()) {
      json doc = {
          {"blas", blas_config()}, {"gemm", gemm_path_name()}, {"isa", cpu_isa_name(cpu_isa())},
          {"repeats", mo.repeats}, {"seconds", mo.seconds},    {"warmup", mo.warmup},
          {"results", results}};
      if (o->paired) {
        doc["paired"] = paired;
        doc["paired_scaling"] = scaling;
      }
      write_file_atomic(o->json_path, doc.dump(2) + "\n");
      std::printf("wrote %s\n", o->json_path.c_str());
    }
    return 0;
  };
  return {app, run};
}

}  // namespace bnlab::apps

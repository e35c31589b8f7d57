#include "train/knobs.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "core/error.h"
#include "data/datasets.h"
#include "layers/init.h"
#include "optim/schedule.h"

namespace bnlab {

namespace {

using Kind = Knob::Kind;

std::string quoted(const std::string& text) { return "'" + text + "'"; }

// The shortest decimal that reads back as the same float (9 digits always do): "0.01", not
// "0.00999999978". It must also survive the double a JSON reader makes of it (decimal -> double ->
// float can round differently from decimal -> float), so config.json can hold it as written.
std::string float_text(float v) {
  char buf[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(v));
    if (std::strtof(buf, nullptr) == v && static_cast<float>(std::strtod(buf, nullptr)) == v) break;
  }
  return buf;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

Knob named(std::string key, std::string flag, std::string help) {
  Knob k;
  k.key = std::move(key);
  k.flag = std::move(flag);
  k.help = std::move(help);
  return k;
}

// Builders: `field` maps a config to the member the knob owns.
// `choices` is a list, or a function giving it when a value is set (the model registry grows).
template <typename Field, typename Choices = std::vector<std::string>>
Knob choice(std::string key, std::string flag, std::string help, Field field, Choices choices_of) {
  Knob k = named(std::move(key), std::move(flag), std::move(help));
  k.set = [field, choices_of](TrainConfig& c, const std::string& text) {
    std::vector<std::string> choices;
    if constexpr (std::is_invocable_v<Choices>) {
      choices = choices_of();
    } else {
      choices = choices_of;
    }
    for (const std::string& ch : choices) {
      if (ch == text) {
        field(c) = text;
        return;
      }
    }
    BNLAB_FAIL("must be ", join(choices), ", got ", quoted(text));
  };
  k.get = [field](const TrainConfig& c) { return field(const_cast<TrainConfig&>(c)); };
  return k;
}

template <typename Field, typename Check>
Knob text(std::string key, std::string flag, std::string help, Field field, Check check) {
  Knob k = named(std::move(key), std::move(flag), std::move(help));
  k.set = [field, check](TrainConfig& c, const std::string& value) {
    check(value);
    field(c) = value;
  };
  k.get = [field](const TrainConfig& c) { return field(const_cast<TrainConfig&>(c)); };
  return k;
}

template <typename Field>
Knob whole(std::string key, std::string flag, std::string help, Field field, int64_t lo,
           int64_t hi) {
  Knob k = named(std::move(key), std::move(flag), std::move(help));
  k.kind = Kind::kInt;
  k.set = [field, lo, hi](TrainConfig& c, const std::string& text) {
    using T = std::remove_reference_t<decltype(field(c))>;
    field(c) = static_cast<T>(parse_whole_number(text, lo, hi));
  };
  k.get = [field](const TrainConfig& c) {
    return std::to_string(field(const_cast<TrainConfig&>(c)));
  };
  return k;
}

// A float in [lo, hi] (ends open where asked); minus_one_means: -1 is accepted too, with that
// meaning ("the model's default", "off"), which the error message spells out.
template <typename Field>
Knob real(std::string key, std::string flag, std::string help, Field field, double lo, double hi,
          bool lo_open, bool hi_open, const char* minus_one_means = nullptr) {
  Knob k = named(std::move(key), std::move(flag), std::move(help));
  k.kind = Kind::kFloat;
  k.set = [field, lo, hi, lo_open, hi_open, minus_one_means](TrainConfig& c,
                                                             const std::string& text) {
    if (minus_one_means != nullptr) {
      try {
        if (parse_real(text, -1, -1, false, false) == -1) {
          field(c) = -1.0f;
          return;
        }
      } catch (const Error&) {
      }
      try {
        field(c) = static_cast<float>(parse_real(text, lo, hi, lo_open, hi_open));
      } catch (const Error& e) {
        BNLAB_FAIL(e.what(), " (or -1: ", minus_one_means, ")");
      }
      return;
    }
    field(c) = static_cast<float>(parse_real(text, lo, hi, lo_open, hi_open));
  };
  k.get = [field](const TrainConfig& c) { return float_text(field(const_cast<TrainConfig&>(c))); };
  return k;
}

template <typename Field>
Knob boolean(std::string key, std::string flag, std::string help, Field field) {
  Knob k = named(std::move(key), std::move(flag), std::move(help));
  k.kind = Kind::kBool;
  k.set = [field](TrainConfig& c, const std::string& text) {
    if (text == "true" || text == "1") {
      field(c) = true;
    } else if (text == "false" || text == "0") {
      field(c) = false;
    } else {
      BNLAB_FAIL("must be true or false, got ", quoted(text));
    }
  };
  k.get = [field](const TrainConfig& c) {
    return std::string(field(const_cast<TrainConfig&>(c)) ? "true" : "false");
  };
  return k;
}

// Limits no real run comes near; they exist so that arithmetic on them cannot overflow
// (steps * batch, epochs * batches per epoch) and so that typos fail at once.
constexpr int64_t kMaxSteps = 1'000'000'000'000;  // 1e12
constexpr int64_t kMaxEpochs = 1'000'000'000;
constexpr int64_t kMaxBatch = int64_t{1} << 24;
constexpr int64_t kMaxThreads = 1024;

// A knob `bnlab ablate --vary` may vary too (the factor's name is the flag without "--").
Knob factor(Knob k) {
  k.factor = true;
  return k;
}

// A knob added after run directories existed: config.json files without it still load (default).
Knob optional_in_json(Knob k) {
  k.optional_in_json = true;
  return k;
}

std::vector<Knob> make_knobs() {
  std::vector<Knob> t;
  t.push_back(factor(choice(
      "model.name", "--model", "Model: " + join(model_names()),
      [](TrainConfig& c) -> std::string& { return c.model.name; }, model_names)));
  t.push_back(factor(text(
      "dataset", "--dataset",
      "Dataset: mnist, fashion-mnist, cifar10, cifar100, folder:PATH (images in "
      "PATH/train/<class>/ and PATH/test/<class>/, or in PATH/<class>/ for every split)",
      [](TrainConfig& c) -> std::string& { return c.dataset; },
      [](const std::string& v) {
        try {
          dataset_splits(v);  // throws for an unknown name
        } catch (const Error&) {
          BNLAB_FAIL("must be mnist, fashion-mnist, cifar10, cifar100 or folder:PATH, got ",
                     quoted(v));
        }
        BNLAB_CHECK(v != "folder:", "folder: needs a path, e.g. folder:/data/pets");
      })));
  Knob data_dir = text(
      "data_dir", "--data-dir",
      "Data directory (default: $BNLAB_DATA, else ./data if it exists, else "
      "$XDG_DATA_HOME/bnlab, ~/.local/share/bnlab if XDG_DATA_HOME is unset)",
      [](TrainConfig& c) -> std::string& { return c.data_dir; }, [](const std::string&) {});
  data_dir.resume_may_change = true;  // the same files, moved
  t.push_back(data_dir);
  t.push_back(factor(choice(
      "model.norm", "--norm", "Normalization: " + join(norm_names()),
      [](TrainConfig& c) -> std::string& { return c.model.norm; }, norm_names())));
  t.push_back(factor(choice(
      "model.placement", "--placement", "Normalization before or after the activation",
      [](TrainConfig& c) -> std::string& { return c.model.placement; }, {"before", "after"})));
  t.push_back(factor(whole(
      "model.groups", "--groups", "GroupNorm: at most this many groups per layer",
      [](TrainConfig& c) -> int64_t& { return c.model.groups; }, 1, 65536)));
  t.push_back(factor(real(
      "model.dropout", "--dropout", "Dropout probability (-1: the model's default)",
      [](TrainConfig& c) -> float& { return c.model.dropout; }, 0, 1, false, true,
      "the model's default")));
  t.push_back(factor(text(
      "model.init", "--init",
      "Weight init: default (PyTorch's), xavier-uniform, xavier-normal, kaiming-uniform, "
      "kaiming-normal, normal:<std> (empty: the model's own)",
      [](TrainConfig& c) -> std::string& { return c.model.init; },
      [](const std::string& v) {
        if (v.empty()) return;
        // The scheme's own parser decides, on a throwaway weight.
        Rng rng(0);
        Tensor w = Tensor::zeros({2, 2});
        Tensor b = Tensor::zeros({2});
        try {
          init::apply_scheme(v, w, b, rng);
        } catch (const Error& e) {
          std::string m = e.what();
          BNLAB_FAIL(m.rfind("init: ", 0) == 0 ? m.substr(6) : m);
        }
      })));
  // BatchNorm's own hyper-parameters, so the lab can vary them (absent in older configs).
  Knob bn_momentum = factor(real(
      "model.bn_momentum", "--bn-momentum",
      "BatchNorm running-statistics momentum: running = (1 - m) running + m batch",
      [](TrainConfig& c) -> float& { return c.model.bn_momentum; }, 0, 1, true, false));
  bn_momentum.optional_in_json = true;
  t.push_back(bn_momentum);
  Knob bn_eps = factor(real(
      "model.bn_eps", "--bn-eps", "BatchNorm epsilon, added to the variance",
      [](TrainConfig& c) -> float& { return c.model.bn_eps; }, 0, 1, true, false));
  bn_eps.optional_in_json = true;
  t.push_back(bn_eps);
  // Batch renormalization's schedule (--norm batch-renorm; absent in older configs).
  t.push_back(optional_in_json(factor(whole(
      "model.renorm_warmup", "--renorm-warmup",
      "batch-renorm: steps of plain batch norm (r_max 1, d_max 0) before the limits grow",
      [](TrainConfig& c) -> int64_t& { return c.model.renorm_warmup; }, 0, kMaxSteps))));
  t.push_back(optional_in_json(factor(whole(
      "model.renorm_ramp", "--renorm-ramp",
      "batch-renorm: steps over which r_max and d_max grow linearly to --renorm-rmax and "
      "--renorm-dmax (0: at once)",
      [](TrainConfig& c) -> int64_t& { return c.model.renorm_ramp; }, 0, kMaxSteps))));
  t.push_back(optional_in_json(factor(real(
      "model.renorm_rmax", "--renorm-rmax",
      "batch-renorm: final r_max; r = sigma_batch / sigma_running is clipped to [1/r_max, r_max]",
      [](TrainConfig& c) -> float& { return c.model.renorm_rmax; }, 1,
      std::numeric_limits<float>::max(), false, false))));
  t.push_back(optional_in_json(factor(real(
      "model.renorm_dmax", "--renorm-dmax",
      "batch-renorm: final d_max; d = (mu_batch - mu_running) / sigma_running is clipped to "
      "[-d_max, d_max]",
      [](TrainConfig& c) -> float& { return c.model.renorm_dmax; }, 0,
      std::numeric_limits<float>::max(), false, false))));
  // Noisy batch norm's noise (--norm noisy-batch; absent in older configs).
  t.push_back(optional_in_json(factor(real(
      "model.bn_noise_mean", "--bn-noise-mean",
      "noisy-batch: the mean injected after each BN, per step and channel, is drawn from "
      "U(-m, m)",
      [](TrainConfig& c) -> float& { return c.model.bn_noise_mean; }, 0,
      std::numeric_limits<float>::max(), false, false))));
  t.push_back(optional_in_json(factor(real(
      "model.bn_noise_var", "--bn-noise-var",
      "noisy-batch: the variance injected after each BN, per step and channel, is drawn from "
      "U(1, v)",
      [](TrainConfig& c) -> float& { return c.model.bn_noise_var; }, 1,
      std::numeric_limits<float>::max(), false, false))));
  Knob epochs = whole(
      "epochs", "--epochs", "Epochs to train (when --steps is 0)",
      [](TrainConfig& c) -> int64_t& { return c.epochs; }, 0, kMaxEpochs);
  epochs.resume_may_change = true;
  t.push_back(epochs);
  Knob steps = whole(
      "steps", "--steps", "Optimizer steps to train (overrides --epochs)",
      [](TrainConfig& c) -> int64_t& { return c.steps; }, 0, kMaxSteps);
  steps.resume_may_change = true;
  t.push_back(steps);
  Knob batch = factor(whole(
      "batch_size", "--batch-size",
      "Mini-batch size per process (under mpirun -np P the global batch is P "
      "times it)",
      [](TrainConfig& c) -> int64_t& { return c.batch_size; }, 1, kMaxBatch));
  batch.alias = "-b";
  t.push_back(batch);
  t.push_back(factor(choice("optimizer", "--optimizer", "sgd, adam, adamw, rmsprop",
                            [](TrainConfig& c) -> std::string& { return c.optimizer; },
                            {"sgd", "adam", "adamw", "rmsprop"})));
  t.push_back(factor(real(
      "lr", "--lr", "Learning rate", [](TrainConfig& c) -> float& { return c.lr; }, 0,
      std::numeric_limits<float>::max(), true, false)));
  t.push_back(factor(real(
      "momentum", "--momentum", "Momentum (sgd, rmsprop)",
      [](TrainConfig& c) -> float& { return c.momentum; }, 0, 1, false, false)));
  t.push_back(boolean("nesterov", "--nesterov", "Nesterov momentum (sgd)",
                      [](TrainConfig& c) -> bool& { return c.nesterov; }));
  t.push_back(factor(real(
      "weight_decay", "--weight-decay", "Weight decay (not applied to biases and norm parameters)",
      [](TrainConfig& c) -> float& { return c.weight_decay; }, 0, std::numeric_limits<float>::max(),
      false, false)));
  t.push_back(boolean("decay_norm_and_bias", "--decay-all",
                      "Apply weight decay to biases and norm parameters too",
                      [](TrainConfig& c) -> bool& { return c.decay_norm_and_bias; }));
  t.push_back(text(
      "schedule", "--schedule",
      "LR schedule: constant, step:<n>[:<gamma>], multistep:<m1>,<m2>[:<gamma>], exp:<gamma>, "
      "cosine[:<eta_min>], warmup:<n>[:<start>][+<schedule>]; its rate for --lr must stay a "
      "finite float over the run",
      [](TrainConfig& c) -> std::string& { return c.schedule; },
      [](const std::string& v) {
        // Syntax only: rules against the run length (a warm-up longer than the run) need the
        // length, which check_config has when --steps gives it.
        try {
          parse_schedule(v, kMaxSteps);
        } catch (const Error& e) {
          std::string m = e.what();
          BNLAB_FAIL(m.rfind("parse_schedule: ", 0) == 0 ? m.substr(16) : m);
        }
      }));
  t.push_back(real(
      "clip_grad_norm", "--clip-grad-norm", "Clip the global gradient norm (0: off)",
      [](TrainConfig& c) -> float& { return c.clip_grad_norm; }, 0,
      std::numeric_limits<float>::max(), false, false));
  Knob on_nan =
      choice("on_nan", "--on-nan",
             "When the loss or a gradient is NaN/Inf: stop (the run is diverged), skip "
             "(drop that step's update) or continue",
             [](TrainConfig& c) -> std::string& { return c.on_nan; }, {"stop", "skip", "continue"});
  on_nan.optional_in_json = true;  // configs written before --on-nan
  t.push_back(on_nan);
  t.push_back(real(
      "label_smoothing", "--label-smoothing", "Cross-entropy label smoothing",
      [](TrainConfig& c) -> float& { return c.label_smoothing; }, 0, 1, false, false));
  t.push_back(boolean("augment", "--augment", "Random crop (padding 4) and horizontal flip",
                      [](TrainConfig& c) -> bool& { return c.augment; }));
  Knob seed = named("seed", "--seed",
                    "Seed for weights, data order, dropout and augmentation (0 to 2^64-1)");
  seed.kind = Kind::kUInt;
  seed.set = [](TrainConfig& c, const std::string& v) { c.seed = parse_unsigned(v); };
  seed.get = [](const TrainConfig& c) { return std::to_string(c.seed); };
  t.push_back(seed);
  Knob threads = whole(
      "threads", "--threads", "Threads (0: all cores)",
      [](TrainConfig& c) -> int& { return c.threads; }, 0, kMaxThreads);
  threads.resume_may_change = true;  // the same arithmetic per step, faster or slower
  t.push_back(threads);
  t.push_back(whole(
      "eval_every", "--eval-every", "Evaluate every N steps (0: every epoch)",
      [](TrainConfig& c) -> int64_t& { return c.eval_every; }, 0, kMaxSteps));
  t.push_back(whole(
      "eval_batch_size", "--eval-batch-size", "Batch size of the evaluation passes",
      [](TrainConfig& c) -> int64_t& { return c.eval_batch_size; }, 1, kMaxBatch));
  t.push_back(whole(
      "probe_unit", "--probe-unit",
      "Unit of the last hidden layer whose input percentiles are recorded (-1: off)",
      [](TrainConfig& c) -> int64_t& { return c.probe_unit; }, -1, 1 << 20));
  Knob log_every = whole(
      "log_every", "--log-every",
      "Steps between progress lines when output is not a terminal (0: about 20 per run)",
      [](TrainConfig& c) -> int64_t& { return c.log_every; }, 0, kMaxSteps);
  log_every.resume_may_change = true;  // output only
  log_every.optional_in_json = true;   // configs written before --log-every
  t.push_back(log_every);
  Knob val_split = whole(
      "val_split", "--val-split",
      "Hold out N training images (the same for every run) as the validation split that "
      "evaluation, best.safetensors and --early-stop use; the test split is then measured once "
      "at the end (0: evaluate on test)",
      [](TrainConfig& c) -> int64_t& { return c.val_split; }, 0, int64_t{1} << 31);
  val_split.optional_in_json = true;  // configs written before --val-split
  t.push_back(val_split);
  Knob train_subset = whole(
      "train_subset", "--train-subset",
      "Train on N training images only (a fixed random subset, the same for every seed; after "
      "--val-split); 0: all. Small and trained long, it overfits",
      [](TrainConfig& c) -> int64_t& { return c.train_subset; }, 0, int64_t{1} << 31);
  train_subset.optional_in_json = true;  // configs written before --train-subset
  t.push_back(train_subset);
  Knob eval_train =
      boolean("eval_train", "--eval-train",
              "At the end, measure the final model on its training images in eval mode (no "
              "dropout, running statistics): the train side of the generalization gap",
              [](TrainConfig& c) -> bool& { return c.eval_train; });
  eval_train.optional_in_json = true;
  t.push_back(eval_train);
  Knob early_stop = whole(
      "early_stop", "--early-stop",
      "Stop when validation accuracy has not improved for N evaluations (0: off; needs a "
      "validation split)",
      [](TrainConfig& c) -> int64_t& { return c.early_stop; }, 0, kMaxSteps);
  early_stop.optional_in_json = true;
  t.push_back(early_stop);
  // Judging a finished run, not training it: a resume may change them, ablate re-applies them.
  Knob collapse_after = real(
      "collapse_after", "--collapse-after",
      "A run is 'collapsed' if every evaluation from this fraction of its steps on is within "
      "--collapse-margin of chance (or its training loss passes 10 ln(classes))",
      [](TrainConfig& c) -> float& { return c.collapse_after; }, 0, 1, false, false);
  collapse_after.optional_in_json = true;
  collapse_after.resume_may_change = true;
  t.push_back(collapse_after);
  Knob collapse_margin = real(
      "collapse_margin", "--collapse-margin", "Accuracy above chance still counted as chance",
      [](TrainConfig& c) -> float& { return c.collapse_margin; }, 0, 1, false, false);
  collapse_margin.optional_in_json = true;
  collapse_margin.resume_may_change = true;
  t.push_back(collapse_margin);
  Knob grad_stats =
      boolean("grad_stats", "--grad-stats",
              "Record each layer's weight-gradient norm at every evaluation (grad_norms.csv, .png)",
              [](TrainConfig& c) -> bool& { return c.grad_stats; });
  grad_stats.optional_in_json = true;
  t.push_back(grad_stats);
  Knob sync_bn = boolean("sync_bn", "--sync-bn",
                         "Under mpirun: BatchNorm statistics over the global batch of all ranks "
                         "(default: each rank's own batch, as PyTorch DDP)",
                         [](TrainConfig& c) -> bool& { return c.sync_bn; });
  sync_bn.optional_in_json = true;  // configs written before --sync-bn
  t.push_back(sync_bn);
  t.push_back(optional_in_json(whole(
      "mechanism_every", "--mechanism-every",
      "Every N steps (and at the last), measure internal covariate shift per layer and the loss "
      "landscape along the gradient without changing the run (ics.csv, smoothness.csv, "
      "mechanism.csv, .png; costs (etas + layers) forward+backward passes each; 0: off)",
      [](TrainConfig& c) -> int64_t& { return c.mechanism_every; }, 0, kMaxSteps)));
  // A list: config.json holds it as the flag's text ("0.5,1,2,4"), each float exactly.
  Knob etas = named("mechanism_etas", "--mechanism-etas",
                    "Step sizes of the landscape measurement, as multiples of the step's learning "
                    "rate, comma-separated (each > 0)");
  etas.set = [](TrainConfig& c, const std::string& v) {
    std::vector<float> mults;
    size_t start = 0;
    while (true) {
      const size_t comma = v.find(',', start);
      const std::string item = v.substr(start, comma == std::string::npos ? comma : comma - start);
      try {
        mults.push_back(static_cast<float>(
            parse_real(item, 0, std::numeric_limits<float>::max(), true, false)));
      } catch (const Error&) {
        BNLAB_FAIL("must be a comma-separated list of numbers > 0 (e.g. 0.5,1,2,4), got ",
                   quoted(v));
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    c.mechanism_etas = std::move(mults);
  };
  etas.get = [](const TrainConfig& c) {
    std::string out;
    for (float m : c.mechanism_etas) out += (out.empty() ? "" : ",") + float_text(m);
    return out;
  };
  t.push_back(optional_in_json(etas));
  return t;
}

}  // namespace

int64_t parse_whole_number(const std::string& text, int64_t lo, int64_t hi) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  const char* begin = text.data() + (!text.empty() && text[0] == '+' ? 1 : 0);
  auto [ptr, ec] = std::from_chars(begin, end, v);
  const bool whole = !text.empty() && ptr == end && ec == std::errc();
  if (whole && v >= lo && v <= hi) return v;
  std::string range = "a whole number from " + std::to_string(lo) + " to " + std::to_string(hi);
  if (hi == std::numeric_limits<int64_t>::max()) range = "a whole number >= " + std::to_string(lo);
  BNLAB_FAIL("must be ", range, ", got ", quoted(text));
}

uint64_t parse_unsigned(const std::string& text) {
  uint64_t v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (!text.empty() && ptr == end && ec == std::errc()) return v;
  BNLAB_FAIL("must be a whole number from 0 to 18446744073709551615, got ", quoted(text));
}

double parse_real(const std::string& text, double lo, double hi, bool lo_open, bool hi_open) {
  char* end = nullptr;
  errno = 0;
  double v = text.empty() || std::isspace(static_cast<unsigned char>(text[0]))
                 ? NAN
                 : std::strtod(text.c_str(), &end);
  const bool number = end == text.c_str() + text.size() && std::isfinite(v) &&
                      std::isfinite(static_cast<float>(v)) && errno != ERANGE;
  // The range holds for the float the caller stores too: 1e-50 is > 0 as a double but 0 as a
  // float, and a config.json holding that 0 was refused when read back.
  const double stored = static_cast<float>(v);
  auto inside = [&](double x) {
    return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  };
  const bool in_range = number && inside(v) && inside(stored);
  if (in_range) return v;
  std::string range;
  if (hi == std::numeric_limits<float>::max() && !hi_open) {
    range = std::string("a finite number ") + (lo_open ? "> " : ">= ") + float_text(float(lo));
  } else {
    range = std::string("a number in ") + (lo_open ? "(" : "[") + float_text(float(lo)) + ", " +
            float_text(float(hi)) + (hi_open ? ")" : "]");
  }
  BNLAB_FAIL("must be ", range, ", got ", quoted(text));
}

const std::vector<Knob>& knobs() {
  static const std::vector<Knob> table = make_knobs();
  return table;
}

const Knob* find_knob_by_flag(const std::string& flag) {
  for (const Knob& k : knobs())
    if (!flag.empty() && (k.flag == flag || k.alias == flag)) return &k;
  return nullptr;
}

void check_schedule_fits(const TrainConfig& c, int64_t steps) {
  const std::string length = c.steps > 0 ? "--steps " + std::to_string(steps)
                                         : "a run of " + std::to_string(steps) +
                                               " steps (--epochs " + std::to_string(c.epochs) + ")";
  std::unique_ptr<LrSchedule> schedule;
  try {
    schedule = parse_schedule(c.schedule, steps);
  } catch (const Error& e) {
    BNLAB_FAIL("--schedule ", c.schedule, " does not fit ", length, ": ", e.what());
  }
  // The optimizers take the rate as a float: one that overflows it would stop the run there.
  const double limit = std::numeric_limits<float>::max();
  const int64_t over = schedule->first_step_above(c.lr, limit, steps);
  if (over >= 0) {
    BNLAB_FAIL("--schedule ", c.schedule, " does not fit ", length, " at --lr ", float_text(c.lr),
               ": the learning rate of step ", over + 1, " is ", schedule->lr(c.lr, over),
               ", past the largest float (", limit,
               "); choose a gamma that keeps it finite over the run, or fewer steps");
  }
}

void check_config(const TrainConfig& c) {
  BNLAB_CHECK(c.steps > 0 || c.epochs > 0, "--steps or --epochs must be > 0 (both are 0)");
  // cifar10's evaluation split is its batch 5, a validation split already (data/datasets.h).
  const bool own_validation = c.dataset == "cifar10";
  BNLAB_CHECK(c.val_split == 0 || !own_validation,
              "--val-split: cifar10 validates on its batch 5 already; leave --val-split out");
  BNLAB_CHECK(c.early_stop == 0 || c.val_split > 0 || own_validation,
              "--early-stop selects on validation data: add --val-split N (e.g. --val-split 5000)");
  if (c.steps > 0) check_schedule_fits(c, c.steps);
  const std::vector<std::string> zoo{"paper-mlp", "mlp",       "deep-mlp",
                                     "lenet",     "cifar-cnn", "row-rnn"};
  // A zoo model is built here once on MNIST's geometry: whether it takes the norm (instance needs
  // convs) and its probe width do not depend on the input, so a bad pair is refused before any data
  // is read. A registered model's may depend on the input, so the Trainer checks those once it has
  // built the model for its data.
  if (std::find(zoo.begin(), zoo.end(), c.model.name) != zoo.end()) {
    ModelSpec spec = c.model;
    spec.channels = 1;
    spec.height = spec.width = 28;
    spec.num_classes = 10;
    Rng rng(0);
    Model m = build_model(spec, rng);
    BNLAB_CHECK(m.probe == nullptr || c.probe_unit < m.probe_width,
                "--probe-unit must be -1 (off) or a unit from 0 to ", m.probe_width - 1, " of ",
                c.model.name, "'s last hidden layer, got ", c.probe_unit);
  }
}

namespace {

using json = nlohmann::json;

// "model.norm" -> j["model"]["norm"]; nullptr when absent.
const json* lookup(const json& j, const std::string& key) {
  const json* at = &j;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    std::string part =
        key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!at->is_object() || !at->contains(part)) return nullptr;
    at = &(*at)[part];
    if (dot == std::string::npos) return at;
    start = dot + 1;
  }
}

json& slot(json& j, const std::string& key) {
  json* at = &j;
  size_t start = 0, dot;
  while ((dot = key.find('.', start)) != std::string::npos) {
    at = &(*at)[key.substr(start, dot - start)];
    start = dot + 1;
  }
  return (*at)[key.substr(start)];
}

// A config.json value as the text Knob::set reads; the JSON type must match the knob's kind.
std::string json_text(const json& v, Kind kind) {
  switch (kind) {
    case Kind::kString:
      BNLAB_CHECK(v.is_string(), "expected a string, got ", v.dump());
      return v.get<std::string>();
    case Kind::kBool:
      BNLAB_CHECK(v.is_boolean(), "expected true or false, got ", v.dump());
      return v.get<bool>() ? "true" : "false";
    case Kind::kInt:
    case Kind::kUInt:
      BNLAB_CHECK(v.is_number_integer(), "expected a whole number, got ", v.dump());
      return v.dump();
    case Kind::kFloat: {
      BNLAB_CHECK(v.is_number(), "expected a number, got ", v.dump());
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", v.get<double>());
      return buf;
    }
  }
  return {};
}

}  // namespace

std::string config_to_json(const TrainConfig& c) {
  json j = json::object();
  for (const Knob& k : knobs()) {
    const std::string v = k.get(c);
    json& s = slot(j, k.key);
    switch (k.kind) {
      case Kind::kString:
        s = v;
        break;
      case Kind::kBool:
        s = v == "true";
        break;
      case Kind::kInt:
        s = std::stoll(v);
        break;
      case Kind::kUInt:
        s = std::stoull(v);
        break;
      case Kind::kFloat:  // the shortest decimal of the float ("lr": 0.01), read back exactly
        s = std::strtod(v.c_str(), nullptr);
        break;
    }
  }
  return j.dump(2) + "\n";
}

TrainConfig config_from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    BNLAB_FAIL(source, ": not a bnlab config (not JSON: ", e.what(), ")");
  }
  BNLAB_CHECK(j.is_object(), source, ": not a bnlab config (not a JSON object)");
  TrainConfig c;
  for (const Knob& k : knobs()) {
    const json* v = lookup(j, k.key);
    if (v == nullptr) {
      BNLAB_CHECK(k.optional_in_json, source, ": not a bnlab config: key '", k.key, "' is missing");
      continue;
    }
    try {
      k.set(c, json_text(*v, k.kind));
    } catch (const Error& e) {
      BNLAB_FAIL(source, ": key '", k.key, "': ", e.what());
    }
  }
  try {
    check_config(c);
  } catch (const Error& e) {
    BNLAB_FAIL(source, ": ", e.what());
  }
  return c;
}

}  // namespace bnlab

#include "apps/config_flags.h"

#include <sstream>

#include "apps/commands.h"
#include "core/error.h"
#include "data/datasets.h"
#include "train/knobs.h"

namespace bnlab::apps {

void add_config_flags(CLI::App& app, TrainConfig& cfg) {
  for (const Knob& knob : knobs()) {
    if (knob.flag.empty()) continue;
    const Knob* k = &knob;  // the table is static: the pointer outlives the app
    std::string names = k->flag + (k->alias.empty() ? "" : "," + k->alias);
    if (k->kind == Knob::Kind::kBool) {
      // A flag that also takes a value (--nesterov=false), built as CLI11 builds its bool flags.
      // add_flag_function set the knob on for any value, and passed one it could not count
      // ("maybe") to std::stoll, whose exception no parse error caught: an abort.
      CLI::Option* opt = app.add_option(
          names,
          [k, &cfg](const CLI::results_t& values) {
            bool on = false;
            if (values.empty() || !CLI::detail::lexical_cast(values.back(), on)) return false;
            k->set(cfg, on ? "true" : "false");
            return true;
          },
          k->help);
      opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)->expected(0)->required(false);
      continue;
    }
    // Converted and checked here, while CLI11 parses: a bad value is a parse error (exit 2)
    // before any data is read.
    app.add_option_function<std::string>(
           names,
           [k, &cfg](const std::string& value) {
             try {
               k->set(cfg, value);
             } catch (const Error& e) {
               throw CLI::ValidationError(k->flag, e.what());
             }
           },
           k->help)
        ->default_str(k->get(cfg))
        ->type_name(k->kind == Knob::Kind::kString ? "TEXT" : "NUMBER");
  }
}

std::string describe_config(const TrainConfig& c) {
  const DataDir data_dir = find_data_dir(c.data_dir);
  std::ostringstream os;
  os << "model:        " << c.model.name << " (norm " << c.model.norm << ", placement "
     << c.model.placement << (c.model.init.empty() ? "" : ", init " + c.model.init)
     << (c.model.dropout >= 0 ? ", dropout " + std::to_string(c.model.dropout) : "")
     << ((c.model.norm == "batch" || c.model.norm == "batch-renorm" ||
          c.model.norm == "noisy-batch") &&
                 (c.model.bn_momentum != 0.1f || c.model.bn_eps != 1e-5f)
             ? ", BN momentum " + find_knob_by_flag("--bn-momentum")->get(c) + " eps " +
                   find_knob_by_flag("--bn-eps")->get(c)
             : "")
     << (c.model.norm == "batch-renorm"
             ? ", renorm r_max " + find_knob_by_flag("--renorm-rmax")->get(c) + " d_max " +
                   find_knob_by_flag("--renorm-dmax")->get(c) + " warm-up " +
                   find_knob_by_flag("--renorm-warmup")->get(c) + " ramp " +
                   find_knob_by_flag("--renorm-ramp")->get(c)
             : "")
     << (c.model.norm == "noisy-batch"
             ? ", noise mean U(-" + find_knob_by_flag("--bn-noise-mean")->get(c) + ", " +
                   find_knob_by_flag("--bn-noise-mean")->get(c) + ") var U(1, " +
                   find_knob_by_flag("--bn-noise-var")->get(c) + ")"
             : "")
     << ")\n"
     << "dataset:      " << c.dataset << " (data dir " << data_dir.path << ", " << data_dir.origin
     << ")\n"
     << "length:       "
     << (c.steps > 0 ? std::to_string(c.steps) + " steps" : std::to_string(c.epochs) + " epochs")
     << ", batch " << c.batch_size << ", eval every "
     << (c.eval_every > 0 ? std::to_string(c.eval_every) + " steps" : std::string("epoch")) << "\n"
     << "optimizer:    " << c.optimizer << " lr " << c.lr;
  if (c.momentum > 0) os << " momentum " << c.momentum << (c.nesterov ? " (nesterov)" : "");
  if (c.weight_decay > 0) os << " weight_decay " << c.weight_decay;
  os << ", schedule " << c.schedule;
  if (c.clip_grad_norm > 0) os << ", clip " << c.clip_grad_norm;
  if (c.label_smoothing > 0) os << ", label smoothing " << c.label_smoothing;
  if (c.on_nan != "stop") os << ", on NaN " << c.on_nan;
  os << "\n"
     << "seed:         " << c.seed << ", threads "
     << (c.threads > 0 ? std::to_string(c.threads) : std::string("all"))
     << (c.augment ? ", augment" : "") << "\n";
  if (!c.out_dir.empty()) os << "output:       " << c.out_dir << "\n";
  return os.str();
}

}  // namespace bnlab::apps

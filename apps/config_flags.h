// The training flags shared by `bnlab train` and `bnlab ablate`, in the idiom of PyTorch's
// examples. Defaults shown in --help are the values `cfg` holds when the flags are registered.
#pragma once

#include <CLI/CLI.hpp>

#include "train/trainer.h"

namespace bnlab::apps {

void add_config_flags(CLI::App& app, TrainConfig& cfg);

// The config block printed before a run starts (llm.c style): one "key: value" line per setting.
std::string describe_config(const TrainConfig& cfg);

}  // namespace bnlab::apps

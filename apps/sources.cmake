# The command-line tool: flag parsing (CLI11) on top of the library's train/ layer. main.cpp is the
# executable; the commands are a library so that they are compiled once.
set(BNLAB_APP_SOURCES
  apps/config_flags.cpp
  apps/cmd_train.cpp
  apps/cmd_eval.cpp
  apps/cmd_ablate.cpp
  apps/cmd_data.cpp
  apps/cmd_bench.cpp
  apps/cmd_study.cpp
)

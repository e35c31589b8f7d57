set(BNLAB_TEST_APPS_SOURCES
  tests/apps/test_cli_errors.cpp
  tests/apps/test_train_eval.cpp
  tests/apps/test_resume.cpp
  tests/apps/test_ablate.cpp
  tests/apps/test_data_cmd.cpp
)

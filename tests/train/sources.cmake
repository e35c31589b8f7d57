set(BNLAB_TEST_TRAIN_SOURCES
  tests/train/test_trainer.cpp
  tests/train/test_collapse.cpp
  tests/train/test_ablation_controls.cpp
  tests/train/test_eval_controls.cpp
  tests/train/test_study.cpp
  tests/train/test_fidelity.cpp
)

set(BNLAB_TEST_OPTIM_SOURCES
  tests/optim/test_optimizer.cpp
  tests/optim/test_sgd.cpp
  tests/optim/test_adam.cpp
  tests/optim/test_rmsprop.cpp
  tests/optim/test_schedule.cpp
  tests/optim/test_clip.cpp
)

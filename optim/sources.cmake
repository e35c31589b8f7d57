set(BNLAB_OPTIM_SOURCES
  optim/optimizer.cpp
  optim/sgd.cpp
  optim/adam.cpp
  optim/rmsprop.cpp
  optim/schedule.cpp
  optim/clip.cpp
)

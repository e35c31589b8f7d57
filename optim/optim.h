// Umbrella include for bnlab's optimizers, learning-rate schedules and gradient clipping.
//
// Reference: https://pytorch.org/docs/stable/optim.html
#pragma once

#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/optimizer.h"
#include "optim/rmsprop.h"
#include "optim/schedule.h"
#include "optim/sgd.h"

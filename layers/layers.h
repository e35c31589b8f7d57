// Umbrella include for bnlab's layers.
#pragma once

#include "layers/activation.h"
#include "layers/avg_pool.h"
#include "layers/batch_norm.h"
#include "layers/bn_fold.h"
#include "layers/conv2d.h"
#include "layers/dense.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/group_norm.h"
#include "layers/init.h"
#include "layers/instance_norm.h"
#include "layers/layer_norm.h"
#include "layers/max_pool.h"
#include "layers/module.h"
#include "layers/rnn.h"

/// @file bnlab.h
/// @brief The umbrella header: everything a program using bnlab needs, in one include.
///
/// Installed as `<prefix>/include/bnlab/bnlab.h`; write `#include <bnlab/bnlab.h>`. Single parts
/// can be included on their own, e.g. `#include <bnlab/layers/module.h>` (see
/// docs/guide/README.md).
#pragma once

#include "core/autograd.h"        // NoGradGuard; attach, grad_buffer, needs_grad for new ops
#include "core/blas.h"            // set_num_threads, gemm
#include "core/cpu_isa.h"         // cpu_isa, BNLAB_MAX_ISA
#include "core/distributed.h"     // Communicator, world(): data-parallel training
#include "core/error.h"           // bnlab::Error, BNLAB_CHECK
#include "core/frozen_weights.h"  // FrozenWeightsGuard: inference with weights packed once
#include "core/gradcheck.h"       // check_gradients: finite-difference checks of your own ops
#include "core/io.h"              // write_file_atomic, read_file
#include "core/ops.h"             // every differentiable op
#include "core/random.h"          // Rng
#include "core/serialize.h"       // save_safetensors, load_safetensors
#include "core/tensor.h"          // Tensor
#include "core/version.h"         // version, git_commit
#include "data/cifar.h"
#include "data/data_loader.h"  // DataLoader, Batch
#include "data/dataset.h"      // ImageDataset
#include "data/datasets.h"     // load_dataset, resolve_data_dir, standard_normalization
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/preview.h"
#include "data/transforms.h"
#include "layers/layers.h"   // Module and every layer
#include "optim/optim.h"     // optimizers, schedules, gradient clipping
#include "train/ablation.h"  // run_ablation: matched runs, results.csv, summary.md, plots
#include "train/models.h"    // the model zoo (registry of model factories)
#include "train/study.h"     // run_study: every claim about BN with a verdict
#include "train/trainer.h"   // train(): metrics, checkpoints, resume, data-parallel

/// @namespace bnlab
/// @brief Everything public in bnlab: Tensor and autodiff (core/), Module and the layers (layers/),
/// optimizers (optim/), data loading (data/), training and experiments (train/). `bnlab::detail`
/// holds internals.

/// @namespace bnlab::init
/// @brief Weight initialization schemes with torch.nn.init's formulas (layers/init.h).

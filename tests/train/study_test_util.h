// A study small enough for a unit test: the quick budget cut to 20 MNIST steps (evaluated every
// 10) on a generated 300-image MNIST, two seeds, one run at a time.
#pragma once

#include "apps/apps_test_util.h"
#include "train/study.h"

namespace bnlab::study_test {

inline StudySpec tiny_study(const apps_test::TempDir& dir) {
  apps_test::write_tiny_mnist(dir.file("data"), 300, 60);
  StudySpec spec;
  spec.budget = study_budget("quick");
  spec.budget.seeds = 2;
  spec.budget.mnist_steps = 20;
  spec.budget.mnist_eval_every = 10;
  spec.data_dir = dir.file("data");
  spec.out_dir = dir.file("study");
  spec.jobs = 1;
  return spec;
}

}  // namespace bnlab::study_test

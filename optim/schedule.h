// Learning-rate schedules: objects that give the learning rate at a step (or epoch) index, in the
// closed forms of torch.optim.lr_scheduler, and a parser for command-line specs.
//
// A schedule is stateless: lr(base_lr, t) depends only on t, the number of steps (or epochs; the
// caller picks the unit) taken so far, so resuming at step t needs nothing but t. Closed forms, t
// >= 0:
//   ConstantSchedule                 base_lr
//   StepLR(step_size, gamma)         base_lr * gamma^floor(t / step_size)
//   MultiStepLR(milestones, gamma)   base_lr * gamma^(number of milestones <= t)   (bisect_right)
//   ExponentialLR(gamma)             base_lr * gamma^t
//   CosineAnnealingLR(T, eta_min)    eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T)) / 2
//                                    (torch's closed form; periodic past T, as torch's)
//   LinearWarmup(W, after, s)        base_lr * (s + (1 - s) * t / W) for t < W, then
//   after.lr(base_lr, t - W)
// LinearWarmup is torch's SequentialLR([LinearLR(start_factor=s, total_iters=W), after],
// milestones=[W]): the inner schedule restarts its count at W, so a cosine after a warm-up of W
// steps over a run of N steps has T = N - W. eta_min is an absolute learning rate, as in torch; the
// others scale base_lr.
//
// Reference: https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bnlab {

class Optimizer;

/// A learning-rate schedule: the rate as a function of the step (see apply()). Subclasses
/// implement compute().
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  /// The learning rate after `step` steps for a base learning rate; throws if step < 0.
  double lr(double base_lr, int64_t step) const;
  /// The first step in [0, steps) whose rate for `base_lr` (finite, >= 0) is above `limit` or NaN;
  /// -1 when there is none. Runs are up to 1e12 steps long, so this never walks them: each
  /// built-in schedule is monotone between the steps where its form changes (the warm-up's end,
  /// the cosine's T_max), and a binary search finds the first step past the limit. No built-in
  /// rate is ever negative for base_lr >= 0 (the constructors' rules), so only overflow can make
  /// one unusable: an optimizer refuses a rate that is not a finite float.
  int64_t first_step_above(double base_lr, double limit, int64_t steps) const;

 protected:
  /// The learning rate after `step` >= 0 steps for `base_lr`.
  virtual double compute(double base_lr, int64_t step) const = 0;
  /// first_step_above for steps >= 1. The default knows nothing of the schedule's form and returns
  /// -1: a schedule of your own is not checked before the run (the optimizer still refuses a
  /// non-finite rate when it is applied).
  virtual int64_t find_step_above(double base_lr, double limit, int64_t steps) const;
  /// find_step_above for a schedule monotone on [from, to): a binary search when the rate does not
  /// decrease there, else a look at `from`, the largest.
  int64_t monotone_step_above(double base_lr, double limit, int64_t from, int64_t to,
                              bool increasing) const;
};

/// The base learning rate at every step.
class ConstantSchedule : public LrSchedule {
 protected:
  double compute(double base_lr, int64_t step) const override;
  int64_t find_step_above(double base_lr, double limit, int64_t steps) const override;
};

/// Multiplies by gamma every step_size steps (step_size >= 1; gamma finite, >= 0).
class StepLR : public LrSchedule {
 public:
  /// Throws unless step_size >= 1.
  explicit StepLR(int64_t step_size, double gamma = 0.1);

 protected:
  double compute(double base_lr, int64_t step) const override;
  int64_t find_step_above(double base_lr, double limit, int64_t steps) const override;

 private:
  int64_t step_size_;
  double gamma_;
};

/// Multiplies by gamma at each milestone (strictly increasing, >= 1).
class MultiStepLR : public LrSchedule {
 public:
  /// Milestones must be increasing and >= 1.
  explicit MultiStepLR(std::vector<int64_t> milestones, double gamma = 0.1);

 protected:
  double compute(double base_lr, int64_t step) const override;
  int64_t find_step_above(double base_lr, double limit, int64_t steps) const override;

 private:
  std::vector<int64_t> milestones_;
  double gamma_;
};

/// Multiplies by gamma every step (torch.optim.lr_scheduler.ExponentialLR).
class ExponentialLR : public LrSchedule {
 public:
  /// Throws unless gamma is finite and >= 0 (0: the rate is 0 from the first step on).
  explicit ExponentialLR(double gamma);

 protected:
  double compute(double base_lr, int64_t step) const override;
  int64_t find_step_above(double base_lr, double limit, int64_t steps) const override;

 private:
  double gamma_;
};

/// Half a cosine from base_lr at step 0 to eta_min (absolute, >= 0) at step t_max (>= 1).
class CosineAnnealingLR : public LrSchedule {
 public:
  /// Throws unless t_max >= 1.
  explicit CosineAnnealingLR(int64_t t_max, double eta_min = 0.0);

 protected:
  double compute(double base_lr, int64_t step) const override;
  int64_t find_step_above(double base_lr, double limit, int64_t steps) const override;

 private:
  int64_t t_max_;
  double eta_min_;
};

/// A linear ramp from start_factor * base_lr at step 0 to base_lr at step warmup_steps (>= 1), then
/// `after` counted from warmup_steps (null: constant). start_factor in [0, 1]; at 0 the first
/// step's learning rate is 0 (torch's LinearLR requires > 0; its default is 1/3).
class LinearWarmup : public LrSchedule {
 public:
  /// `after` counts its steps from the end of the warm-up (null: constant base_lr).
  LinearWarmup(int64_t warmup_steps, std::unique_ptr<LrSchedule> after = nullptr,
               double start_factor = 0.0);

 protected:
  double compute(double base_lr, int64_t step) const override;
  int64_t find_step_above(double base_lr, double limit, int64_t steps) const override;

 private:
  int64_t warmup_steps_;
  std::unique_ptr<LrSchedule> after_;
  double start_factor_;
};

/// Sets every parameter group's learning rate to schedule.lr(base_lr, step). Call it before step()
/// with the number of steps taken so far (optimizer.step_count() for per-step schedules).
void apply(Optimizer& optimizer, const LrSchedule& schedule, float base_lr, int64_t step);
/// Sets parameter group g's learning rate to schedule.lr(base_lrs[g], step): each group scaled from
/// its own starting rate, as PyTorch's schedulers do (their initial_lr). One base per group.
void apply(Optimizer& optimizer, const LrSchedule& schedule, const std::vector<float>& base_lrs,
           int64_t step);

/// A schedule from a command-line spec; total_steps is the run's length in the schedule's unit (it
/// sets the cosine's T_max). Accepted forms (gamma defaults to 0.1, eta_min and start_factor to 0):
///   constant
///   `step:<step_size>[:<gamma>]`              e.g. step:1000:0.1
///   `multistep:<m1>,<m2>,...[:<gamma>]`       e.g. multistep:2000,4000:0.1
///   `exp:<gamma>`                             e.g. exp:0.999
///   `cosine[:<eta_min>]`                      T_max = total_steps (- warm-up steps), eta_min
///   absolute
///   `warmup:<steps>[:<start_factor>][+<one of the above>]`   e.g. warmup:500+cosine (then
///   constant if no +)
/// Throws a bnlab::Error naming the spec, what is wrong, and listing these forms.
std::unique_ptr<LrSchedule> parse_schedule(const std::string& spec, int64_t total_steps);

}  // namespace bnlab

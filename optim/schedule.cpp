// Learning-rate schedules in torch.optim.lr_scheduler's closed forms (_get_closed_form_lr), and the
// command-line spec parser.
//
// Reference: https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate
#include "optim/schedule.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "optim/optimizer.h"

namespace bnlab {

double LrSchedule::lr(double base_lr, int64_t step) const {
  BNLAB_CHECK(step >= 0, "lr schedule: step must be >= 0; got ", step);
  return compute(base_lr, step);
}

int64_t LrSchedule::first_step_above(double base_lr, double limit, int64_t steps) const {
  BNLAB_CHECK(std::isfinite(base_lr) && base_lr >= 0,
              "lr schedule: the base learning rate must be finite and >= 0; got ", base_lr);
  return steps < 1 ? -1 : find_step_above(base_lr, limit, steps);
}

int64_t LrSchedule::find_step_above(double, double, int64_t) const { return -1; }

int64_t LrSchedule::monotone_step_above(double base_lr, double limit, int64_t from, int64_t to,
                                        bool increasing) const {
  // NaN counts as above: 0 * inf, a zero base rate times an overflowed factor, is NaN.
  auto above = [&](int64_t step) { return !(compute(base_lr, step) <= limit); };
  if (from >= to) return -1;
  if (!increasing) return above(from) ? from : -1;
  if (!above(to - 1)) return -1;
  int64_t lo = from, hi = to - 1;  // above(hi); the first step above is in [lo, hi]
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (above(mid)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

double ConstantSchedule::compute(double base_lr, int64_t) const { return base_lr; }

int64_t ConstantSchedule::find_step_above(double base_lr, double limit, int64_t steps) const {
  return monotone_step_above(base_lr, limit, 0, steps, false);
}

StepLR::StepLR(int64_t step_size, double gamma) : step_size_(step_size), gamma_(gamma) {
  BNLAB_CHECK(step_size >= 1, "StepLR: step_size must be >= 1; got ", step_size);
  BNLAB_CHECK(std::isfinite(gamma) && gamma >= 0, "StepLR: gamma must be finite and >= 0; got ",
              gamma);
}

double StepLR::compute(double base_lr, int64_t step) const {
  return base_lr * std::pow(gamma_, static_cast<double>(step / step_size_));
}

int64_t StepLR::find_step_above(double base_lr, double limit, int64_t steps) const {
  return monotone_step_above(base_lr, limit, 0, steps, gamma_ > 1);
}

MultiStepLR::MultiStepLR(std::vector<int64_t> milestones, double gamma)
    : milestones_(std::move(milestones)), gamma_(gamma) {
  for (size_t i = 0; i < milestones_.size(); ++i) {
    BNLAB_CHECK(milestones_[i] >= 1, "MultiStepLR: milestones must be >= 1; got ", milestones_[i]);
    BNLAB_CHECK(i == 0 || milestones_[i] > milestones_[i - 1],
                "MultiStepLR: milestones must be strictly increasing; got ", milestones_[i - 1],
                " then ", milestones_[i]);
  }
  BNLAB_CHECK(std::isfinite(gamma) && gamma >= 0,
              "MultiStepLR: gamma must be finite and >= 0; got ", gamma);
}

double MultiStepLR::compute(double base_lr, int64_t step) const {
  // bisect_right: a milestone m has taken effect once step >= m.
  auto passed =
      std::upper_bound(milestones_.begin(), milestones_.end(), step) - milestones_.begin();
  return base_lr * std::pow(gamma_, static_cast<double>(passed));
}

int64_t MultiStepLR::find_step_above(double base_lr, double limit, int64_t steps) const {
  return monotone_step_above(base_lr, limit, 0, steps, gamma_ > 1);
}

ExponentialLR::ExponentialLR(double gamma) : gamma_(gamma) {
  BNLAB_CHECK(std::isfinite(gamma) && gamma >= 0,
              "ExponentialLR: gamma must be finite and >= 0; got ", gamma);
}

double ExponentialLR::compute(double base_lr, int64_t step) const {
  return base_lr * std::pow(gamma_, static_cast<double>(step));
}

int64_t ExponentialLR::find_step_above(double base_lr, double limit, int64_t steps) const {
  return monotone_step_above(base_lr, limit, 0, steps, gamma_ > 1);
}

CosineAnnealingLR::CosineAnnealingLR(int64_t t_max, double eta_min)
    : t_max_(t_max), eta_min_(eta_min) {
  BNLAB_CHECK(t_max >= 1, "CosineAnnealingLR: T_max must be >= 1; got ", t_max);
  BNLAB_CHECK(std::isfinite(eta_min) && eta_min >= 0,
              "CosineAnnealingLR: eta_min must be finite and >= 0; got ", eta_min);
}

double CosineAnnealingLR::compute(double base_lr, int64_t step) const {
  double phase = std::numbers::pi * static_cast<double>(step) / static_cast<double>(t_max_);
  // The weight in [0, 1] first: (base_lr - eta_min) * (1 + cos) could overflow to -inf for a huge
  // eta_min (found by fuzz/fuzz_schedule with cosine:1e308), where this stays between the two.
  return eta_min_ + (base_lr - eta_min_) * ((1.0 + std::cos(phase)) / 2.0);
}

int64_t CosineAnnealingLR::find_step_above(double base_lr, double limit, int64_t steps) const {
  // Monotone from step 0 to T_max, towards eta_min; past T_max it repeats between the two ends, so
  // no later step goes higher than one of [0, T_max]. (min(steps - 1, T_max) + 1, not
  // min(steps, T_max + 1): T_max is the run's length, which may be int64's largest value.)
  return monotone_step_above(base_lr, limit, 0, std::min(steps - 1, t_max_) + 1,
                             eta_min_ > base_lr);
}

LinearWarmup::LinearWarmup(int64_t warmup_steps, std::unique_ptr<LrSchedule> after,
                           double start_factor)
    : warmup_steps_(warmup_steps), after_(std::move(after)), start_factor_(start_factor) {
  BNLAB_CHECK(warmup_steps >= 1, "LinearWarmup: warmup_steps must be >= 1; got ", warmup_steps);
  BNLAB_CHECK(start_factor >= 0 && start_factor <= 1,
              "LinearWarmup: start_factor must be in [0, 1]; got ", start_factor);
}

double LinearWarmup::compute(double base_lr, int64_t step) const {
  if (step >= warmup_steps_) return after_ ? after_->lr(base_lr, step - warmup_steps_) : base_lr;
  // torch.optim.lr_scheduler.LinearLR's closed form with end_factor 1.
  double t = static_cast<double>(step) / static_cast<double>(warmup_steps_);
  return base_lr * (start_factor_ + (1.0 - start_factor_) * t);
}

int64_t LinearWarmup::find_step_above(double base_lr, double limit, int64_t steps) const {
  int64_t ramp = monotone_step_above(base_lr, limit, 0, std::min(steps, warmup_steps_), true);
  if (ramp >= 0 || steps <= warmup_steps_) return ramp;
  if (!after_) return base_lr > limit ? warmup_steps_ : -1;
  int64_t later = after_->first_step_above(base_lr, limit, steps - warmup_steps_);
  return later < 0 ? -1 : warmup_steps_ + later;
}

void apply(Optimizer& optimizer, const LrSchedule& schedule, float base_lr, int64_t step) {
  optimizer.set_lr(static_cast<float>(schedule.lr(base_lr, step)));
}

void apply(Optimizer& optimizer, const LrSchedule& schedule, const std::vector<float>& base_lrs,
           int64_t step) {
  std::vector<ParamGroup>& groups = optimizer.param_groups();
  BNLAB_CHECK(base_lrs.size() == groups.size(), "schedule: ", base_lrs.size(),
              " base learning rates for ", groups.size(), " parameter groups");
  for (size_t g = 0; g < groups.size(); ++g) {
    const float lr = static_cast<float>(schedule.lr(base_lrs[g], step));
    BNLAB_CHECK(std::isfinite(lr) && lr >= 0.0f, "schedule: learning rate ", lr, " for group ", g,
                " (base ", base_lrs[g], ", step ", step, "); must be finite and >= 0");
    groups[g].lr = lr;
  }
}

namespace {

constexpr const char* kAcceptedForms =
    "accepted forms: constant | step:<step_size>[:<gamma>] | multistep:<m1>,<m2>,...[:<gamma>] | "
    "exp:<gamma> | cosine[:<eta_min>] | warmup:<steps>[:<start_factor>][+<schedule>] "
    "(e.g. warmup:500+cosine)";

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t begin = 0;
  while (true) {
    size_t end = s.find(sep, begin);
    parts.push_back(s.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return parts;
    begin = end + 1;
  }
}

// Parses the schedule part of a spec (no warm-up). `spec` is the full spec, for messages.
class SpecParser {
 public:
  SpecParser(const std::string& spec, int64_t total_steps)
      : spec_(spec), total_steps_(total_steps) {}

  [[noreturn]] void fail(const std::string& why) const {
    BNLAB_FAIL("parse_schedule: bad schedule '", spec_, "': ", why, "; ", kAcceptedForms);
  }

  int64_t integer(const std::string& s, const char* what) const {
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || ptr != s.data() + s.size())
      fail(std::string(what) + " '" + s + "' is not an integer");
    return v;
  }

  double number(const std::string& s, const char* what) const {
    double v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v))
      fail(std::string(what) + " '" + s + "' is not a number");
    return v;
  }

  void arity(const std::vector<std::string>& parts, size_t low, size_t high) const {
    if (parts.size() - 1 < low || parts.size() - 1 > high)
      fail("'" + parts[0] + "' takes " +
           (low == high ? std::to_string(low)
                        : std::to_string(low) + " to " + std::to_string(high)) +
           " argument(s), got " + std::to_string(parts.size() - 1));
  }

  // `warmup`: steps taken by a preceding warm-up (the cosine spans the rest of the run).
  std::unique_ptr<LrSchedule> schedule(const std::string& s, int64_t warmup) const {
    std::vector<std::string> parts = split(s, ':');
    const std::string& kind = parts[0];
    // Constructor checks (step_size >= 1, ...) are rethrown with the spec and the accepted forms.
    try {
      if (kind == "constant") {
        arity(parts, 0, 0);
        return std::make_unique<ConstantSchedule>();
      }
      if (kind == "step") {
        arity(parts, 1, 2);
        double gamma = parts.size() > 2 ? number(parts[2], "gamma") : 0.1;
        return std::make_unique<StepLR>(integer(parts[1], "step_size"), gamma);
      }
      if (kind == "multistep") {
        arity(parts, 1, 2);
        std::vector<int64_t> milestones;
        for (const std::string& m : split(parts[1], ','))
          milestones.push_back(integer(m, "milestone"));
        double gamma = parts.size() > 2 ? number(parts[2], "gamma") : 0.1;
        return std::make_unique<MultiStepLR>(std::move(milestones), gamma);
      }
      if (kind == "exp") {
        arity(parts, 1, 1);
        return std::make_unique<ExponentialLR>(number(parts[1], "gamma"));
      }
      if (kind == "cosine") {
        arity(parts, 0, 1);
        double eta_min = parts.size() > 1 ? number(parts[1], "eta_min") : 0.0;
        if (total_steps_ - warmup < 1)
          fail("cosine needs total_steps (" + std::to_string(total_steps_) +
               ") greater than the warm-up steps (" + std::to_string(warmup) + ")");
        return std::make_unique<CosineAnnealingLR>(total_steps_ - warmup, eta_min);
      }
      if (kind == "warmup") fail("a warm-up can only come first, once");
    } catch (const Error& e) {
      std::string what = e.what();
      if (what.rfind("parse_schedule:", 0) == 0) throw;
      fail(what);
    }
    fail("unknown schedule '" + kind + "'");
  }

  std::unique_ptr<LrSchedule> parse() const {
    if (spec_.rfind("warmup", 0) != 0) return schedule(spec_, 0);
    size_t plus = spec_.find('+');
    std::vector<std::string> parts = split(spec_.substr(0, plus), ':');
    if (parts[0] != "warmup") fail("unknown schedule '" + parts[0] + "'");
    arity(parts, 1, 2);
    int64_t steps = integer(parts[1], "warm-up steps");
    double start_factor = parts.size() > 2 ? number(parts[2], "start_factor") : 0.0;
    if (steps < 1) fail("warm-up steps must be >= 1");
    if (start_factor < 0 || start_factor > 1) fail("start_factor must be in [0, 1]");
    std::unique_ptr<LrSchedule> after;
    if (plus != std::string::npos) after = schedule(spec_.substr(plus + 1), steps);
    return std::make_unique<LinearWarmup>(steps, std::move(after), start_factor);
  }

 private:
  const std::string& spec_;
  int64_t total_steps_;
};

}  // namespace

std::unique_ptr<LrSchedule> parse_schedule(const std::string& spec, int64_t total_steps) {
  return SpecParser(spec, total_steps).parse();
}

}  // namespace bnlab

// Carrying an exception out of an OpenMP region (internal; not installed).
//
// An exception cannot leave a region's body: the runtime ends the process (std::terminate). Most
// regions hoist what could throw (allocations sized by the arguments) to before the region; where a
// body reaches code that may throw and hoisting is unnatural (batch norm's per-thread scratch,
// grown for a new shape deep inside its passes), the body runs through RegionError::run, which
// keeps the first exception, and the calling thread rethrows it once the region has ended. The
// other threads finish their work; its results are discarded with the op. On the path that does not
// throw this costs nothing (table-based unwinding).
#pragma once

#include <exception>

namespace bnlab::detail {

class RegionError {
 public:
  /// f() on this thread; an exception it throws is kept (the first of the team's) instead of
  /// leaving the region.
  template <class F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
      keep(std::current_exception());
    }
  }

  /// After the region: rethrows the kept exception, if any, on the calling thread.
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void keep(std::exception_ptr e) noexcept {
#pragma omp critical(bnlab_region_error)
    {
      if (!error_) error_ = std::move(e);
    }
  }

  std::exception_ptr error_;
};

}  // namespace bnlab::detail

// Running an op in a forked child process under an address-space limit, for tests that an
// allocation too large for memory is an Error and not the end of the process (std::terminate, when
// it was asked for inside an OpenMP region, where an exception cannot leave).
//
// The child runs at one thread (bnlab::set_num_threads(1)): libgomp is not fork-safe, and a region
// of more than one thread started in the child of a parent that already ran a team waits forever
// for threads that were not copied. At one thread every region is a team of one, which libgomp
// runs on the calling thread alone; an exception thrown in it still ends the process.
//
// A body that needs a team of threads (a region that is entered only when there is one) runs in a
// fresh process instead: exec_child_exit_code starts this test binary again for one test case,
// which does its work only there (in_exec_child()) and ends with _exit(code). Such a case is
// declared `* doctest::skip()`, so that neither a plain run nor ctest counts it as a test (it
// checks nothing by itself); the child is started with --no-skip.
//
// AddressSanitizer needs far more address space than these limits leave: skip such tests there
// (BNLAB_TEST_MEMORY_LIMIT is 0).
#pragma once

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "core/blas.h"

#if defined(__SANITIZE_ADDRESS__)
#define BNLAB_TEST_MEMORY_LIMIT 0
#else
#define BNLAB_TEST_MEMORY_LIMIT 1
#endif

namespace bnlab::testing {

/// Limits the calling process's address space to its current size plus `headroom` bytes; false
/// when the size cannot be read or the limit set.
inline bool limit_address_space(size_t headroom) {
  long pages = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  if (pages <= 0) return false;
  const rlim_t limit =
      static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + headroom;
  const rlimit r{limit, limit};
  return ::setrlimit(RLIMIT_AS, &r) == 0;
}

/// The exit code of body() run in a forked child at one thread (an escaping exception is code
/// 5), or minus the signal that ended it. Child codes used by the tests: 0 the expected Error, 2
/// no error, 3 another error, 4 the limit could not be set.
template <class Body>
int child_exit_code(Body body) {
  std::fflush(nullptr);  // nothing buffered is written twice
  const pid_t pid = ::fork();
  if (pid < 0) return -1000;
  if (pid == 0) {
    int code = 5;
    try {
      set_num_threads(1);
      code = body();
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1001;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/// Whether this process is one that exec_child_exit_code started.
inline bool in_exec_child() { return std::getenv("BNLAB_TEST_EXEC_CHILD") != nullptr; }

/// The exit code of this test binary run afresh for test case `name` alone (no comma in it), with
/// in_exec_child() true there, or minus the signal that ended it.
inline int exec_child_exit_code(const std::string& name) {
  // Everything the child needs is built before fork: between fork and exec only
  // async-signal-safe calls.
  const std::string filter = "--test-case=" + name;
  std::vector<char*> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  std::string flag = "BNLAB_TEST_EXEC_CHILD=1";
  env.push_back(flag.data());
  env.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1000;
  if (pid == 0) {
    ::execle("/proc/self/exe", "bnlab_tests", "--no-skip", filter.c_str(),
             static_cast<char*>(nullptr), env.data());
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1001;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/// Child code for the error `e` of a call that should fail: 0 when its message starts with
/// `expected`, else 3 (printed, so that the failure says what came instead).
inline int expect_error_start(const std::exception& e, const std::string& expected) {
  const std::string m = e.what();
  if (m.rfind(expected, 0) == 0) return 0;
  std::fprintf(stderr, "child: unexpected error: %s\n", m.c_str());
  return 3;
}

}  // namespace bnlab::testing

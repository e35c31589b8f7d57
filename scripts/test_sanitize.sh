#!/usr/bin/env bash
# The whole ctest suite under AddressSanitizer + UndefinedBehaviorSanitizer (BNLAB_SANITIZE=ON), warnings
# as errors, in its own build directory (build-asan). Any sanitizer report fails the run: ASan and UBSan
# halt on the first error (UBSan is compiled non-recoverable too), LeakSanitizer reports leaks at exit,
# and every report is also kept as a file and printed at the end. Prints ctest's summary; exits non-zero
# on any failure.
#
# Environment: BNLAB_BUILD_DIR (default build-asan), BNLAB_SANITIZE_BUILD_TYPE (default Release; the
# sanitizers keep their checks at any -O level), BNLAB_SANITIZE_OPT (e.g. -O1: replaces Release's
# -O3, for a faster build), JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${BNLAB_BUILD_DIR:-build-asan}
build_type=${BNLAB_SANITIZE_BUILD_TYPE:-Release}
jobs=${JOBS:-$(nproc)}
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi

opt=()
if [ -n "${BNLAB_SANITIZE_OPT:-}" ]; then opt=(-DCMAKE_CXX_FLAGS_RELEASE="$BNLAB_SANITIZE_OPT -DNDEBUG"); fi
# BNLAB_NATIVE=OFF: with -march=native on an AVX-512 machine GCC 12 keeps 64-byte constants on the
# stack and loads them with aligned 512-bit moves, but ASan's fake stack frames
# (detect_stack_use_after_return) are only 32-byte aligned, so the instrumented binary faults
# (a general-protection SEGV in tests/core/test_ops_conv.cpp). The portable build checks the same code.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type" -DBNLAB_SANITIZE=ON -DBNLAB_WERROR=ON \
  -DBNLAB_NATIVE=OFF -DBNLAB_BUILD_TESTS=ON "${launcher[@]}" "${opt[@]}" >/dev/null
cmake --build "$build_dir" -j "$jobs" --target bnlab_tests

# halt_on_error: the first report ends the process with a non-zero exit, so the test fails.
# detect_stack_use_after_return and check_initialization_order catch two bug classes ASan skips by
# default; print_stacktrace makes UBSan's reports locatable. Reports also go to files under
# $build_dir/sanitizer-reports (log_path): a test that runs the CLI as a child and expects it to fail
# would otherwise take a sanitizer's exit status for the expected error.
reports="$PWD/$build_dir/sanitizer-reports"
rm -rf "$reports" && mkdir -p "$reports"
common="halt_on_error=1:exitcode=1:log_path=$reports/report"
export ASAN_OPTIONS="$common:abort_on_error=0:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="$common:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export LSAN_OPTIONS="exitcode=1${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

set +e
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 600
status=$?
set -e
if [ -n "$(ls -A "$reports")" ]; then
  echo "test_sanitize.sh: sanitizer report(s) in $reports:" >&2
  for f in "$reports"/*; do
    echo "== $f" >&2
    head -60 "$f" >&2
  done
  status=1
fi
if [ "$status" -ne 0 ]; then echo "test_sanitize.sh: FAILED" >&2; else echo "test_sanitize.sh: OK"; fi
exit "$status"

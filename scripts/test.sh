#!/usr/bin/env bash
# The README's test command: install what is missing, build, and run the whole test suite with ctest.
# Exits non-zero on any failure. In CI (CI=true) warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

build_dir=${BNLAB_BUILD_DIR:-build}
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBNLAB_WERROR=$werror -DBNLAB_BUILD_TESTS=ON >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
# Every doctest case must be one ctest entry: a ';' in a test name splits it into fragments that match
# nothing and pass vacuously.
cases=$("$build_dir/bnlab_tests" --count 2>/dev/null | sed -n 's/.*unskipped test cases passing the current filters: \([0-9]*\).*/\1/p')
# (The entries prefixed [BNLAB_MAX_ISA=...] run a subset again under an instruction-set cap;
# CMakeLists.txt.)
registered=$(ctest --test-dir "$build_dir" -N | grep -E '^ *Test +#[0-9]+: ' | grep -vc ': \[BNLAB_MAX_ISA=')
if [ "$cases" != "$registered" ]; then
  echo "test.sh: bnlab_tests has $cases test cases but ctest registered $registered (a ';' in a test name?)" >&2
  exit 1
fi
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 300

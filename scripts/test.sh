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
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 300

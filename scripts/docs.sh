#!/usr/bin/env bash
# Builds the API reference (Doxygen over the public headers and docs/guide/) with warnings as errors,
# as CI does: an undocumented public class, function, member, enum or macro, a broken reference or
# a documented-but-incomplete parameter list fails it. Prints where the HTML is.
# Usage: bash scripts/docs.sh   (build dir: BNLAB_DOCS_BUILD_DIR, default build-docs; needs doxygen)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
build_dir=${BNLAB_DOCS_BUILD_DIR:-build-docs}
if ! command -v doxygen >/dev/null; then
  echo "docs.sh: doxygen not found (apt-get install doxygen; scripts/setup.sh installs it)" >&2
  exit 1
fi
# Configuring is all the docs need: the target runs Doxygen only, nothing is compiled.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBNLAB_BUILD_TESTS=OFF -DBNLAB_DOCS_WERROR=ON \
  >/dev/null
# Always regenerate, so that warnings are reported even when nothing changed since the last run.
rm -rf "$build_dir/docs/html"
cmake --build "$build_dir" --target docs
echo "docs.sh: API reference in $(pwd)/$build_dir/docs/html/index.html ($((SECONDS - start)) s)"

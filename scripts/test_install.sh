#!/usr/bin/env bash
# Checks bnlab as an installed library, as a user's own project sees it (CI runs this):
#   1. configure + build bnlab (build dir build-install, Release, tests off) and `cmake --install` it
#      into a temporary prefix;
#   2. compile every installed header on its own against that prefix (each public header must be
#      self-contained and include only public headers: internal ones are not installed);
#   3. build examples/custom-model, examples/custom-ablation and examples/resnet-cifar out of tree with
#      find_package(bnlab CONFIG REQUIRED), and compile custom-model's minimal.cpp (the README's
#      program, checked to be identical) with pkg-config alone;
#   4. check both binaries load OpenBLAS's OpenMP build (the run path), then run them on a tiny
#      synthetic MNIST-format set generated here (no network): the example trains, saves, reloads
#      and must reach --min-accuracy and reproduce its accuracy after the reload; the ablation
#      example trains its own model with and without BN through Experiment, and must write
#      results.csv, summary.md and accuracy.png with both arms learning; the ResNet example trains
#      200 steps on CIFAR-10 if bnlab finds it (else on generated CIFAR-format data) and must beat
#      chance (10%) clearly.
# Exits non-zero on any failure. Usage: bash scripts/test_install.sh   (BNLAB_INSTALL_BUILD_DIR,
# default build-install; the temporary prefix is removed at exit unless KEEP_PREFIX=1).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
start=$SECONDS
build_dir=${BNLAB_INSTALL_BUILD_DIR:-build-install}
jobs=$(nproc)
work=$(mktemp -d /tmp/bnlab-install.XXXXXX)
if [ "${KEEP_PREFIX:-0}" = 1 ]; then trap 'echo "kept $work"' EXIT; else trap 'rm -rf "$work"' EXIT; fi
prefix="$work/prefix"
step() { echo "== test_install: $* ($((SECONDS - start)) s)"; }

cmake_args=(-DCMAKE_BUILD_TYPE=Release -DBNLAB_BUILD_TESTS=OFF)
if [ "${CI:-}" = "true" ]; then cmake_args+=(-DBNLAB_WERROR=ON); fi
if command -v ccache >/dev/null; then cmake_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi

step "build bnlab in $build_dir"
cmake -S . -B "$build_dir" "${cmake_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$jobs" --target bnlab bnlab_cli >/dev/null
step "install into $prefix"
cmake --install "$build_dir" --prefix "$prefix" >/dev/null
test -f "$prefix/include/bnlab/bnlab.h"
pc_file=$(find "$prefix" -name bnlab.pc)
config=$(find "$prefix" -name bnlabConfig.cmake)
test -n "$pc_file" && test -n "$config"
if [ -e "$prefix/include/bnlab/data/byte_reader.h" ]; then
  echo "test_install: an internal header (data/byte_reader.h) was installed" >&2
  exit 1
fi

step "compile each installed header on its own"
headers=$(cd "$prefix/include" && find bnlab -name '*.h' | sort)
echo "$headers" | xargs -P "$jobs" -I{} sh -c \
  'printf "#include <%s>\n" "$1" | g++ -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror \
     -I"$2/include" -I"$2/include/bnlab" -x c++ - || { echo "test_install: $1 does not compile on its own" >&2; exit 255; }' \
  _ {} "$prefix"
echo "$(echo "$headers" | wc -l) headers compile on their own"

step "README's minimal program is examples/custom-model/minimal.cpp"
awk '/<!-- examples\/custom-model\/minimal.cpp -->/{f=1; next} f && /^```cpp/{g=1; next} g && /^```/{exit} g' \
  README.md >"$work/readme_minimal.cpp"
diff -u examples/custom-model/minimal.cpp "$work/readme_minimal.cpp"

step "build examples/custom-model against the install (find_package)"
cmake -S examples/custom-model -B "$work/example-build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/example-build" -j "$jobs" >/dev/null

step "build examples/custom-ablation against the install (find_package)"
cmake -S examples/custom-ablation -B "$work/ablation-build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/ablation-build" -j "$jobs" >/dev/null

step "build examples/resnet-cifar against the install (find_package)"
cmake -S examples/resnet-cifar -B "$work/resnet-build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/resnet-build" -j "$jobs" >/dev/null

step "compile minimal.cpp with pkg-config"
pc_flags=$(PKG_CONFIG_PATH="$(dirname "$pc_file")" pkg-config --cflags --libs bnlab)
g++ -O2 examples/custom-model/minimal.cpp $pc_flags -o "$work/minimal_pkgconfig"

step "run path: OpenBLAS's OpenMP build"
for exe in "$work/example-build/custom_model" "$work/ablation-build/custom_ablation" \
  "$work/resnet-build/resnet_cifar" "$work/minimal_pkgconfig"; do
  blas=$(ldd "$exe" | awk '/libopenblas/ {print $3}')
  case "$blas" in
    */openblas-openmp/*) echo "$(basename "$exe"): $blas" ;;
    *) echo "test_install: $exe loads '$blas', not OpenBLAS's OpenMP build" >&2; exit 1 ;;
  esac
done

step "run the example on a tiny synthetic MNIST"
python3 scripts/make_tiny_mnist.py "$work/data" --train 512 --test 200
"$work/example-build/custom_model" "$work/data" --steps 60 --batch-size 32 \
  --checkpoint "$work/custom_model.safetensors" --min-accuracy 0.5 | tail -n 4
(cd "$work" && OMP_NUM_THREADS=1 ./minimal_pkgconfig "$work/data" && test -s net.safetensors)
(cd "$work" && OMP_NUM_THREADS=1 ./example-build/minimal "$work/data" >/dev/null)

step "run the ablation example on the same data"
OMP_NUM_THREADS=1 "$work/ablation-build/custom_ablation" "$work/data" "$work/ablation" --steps 120 \
  --min-accuracy 0.5 | tail -n 6
for f in results.csv summary.md accuracy.png runs/norm-none/seed-1/summary.json \
  runs/norm-batch/seed-1/summary.json; do
  test -s "$work/ablation/$f" || { echo "test_install: custom_ablation wrote no $f" >&2; exit 1; }
done
grep -q '^| norm=batch |' "$work/ablation/summary.md"

step "run the ResNet example (real CIFAR-10 if found, else generated CIFAR-format data)"
# Real CIFAR-10 when the project's data script can provide it (a shared copy next to the checkout,
# nothing downloaded); the example generates CIFAR-format data otherwise and says so.
bash scripts/fetch_data.sh --data-dir "$work/data" cifar10 >/dev/null 2>&1 || true
(cd "$work" && ./resnet-build/resnet_cifar "$work/data" --steps 200 --min-accuracy 0.3 |
  grep -E '^(data|no CIFAR|step|accuracy)')

step "ok"
echo "test_install: passed in $((SECONDS - start)) s"

#!/usr/bin/env bash
# bnlab vs PyTorch on the benchmark workloads W1-W4 (issue 6), one command: builds bnlab (Release,
# -march=native) and runs bench/compare_pytorch.py with Debian's /usr/bin/python3 (python3-torch),
# PyTorch in its best CPU configuration (the OpenMP OpenBLAS, verified in each torch process).
#
#   bash bench/compare_pytorch.sh [--quick] [--repeats 3] [--threads 1,2] [--workloads W1,W3]
#                                 [--inner-repeats 3] [--seconds 0.3] [--warmup 0.3] [--settle 60]
#                                 [--retries 2] [--out-dir DIR] [--require-quiet] [--keep-coretype]
#                                 [--no-pin] [--max-isa avx2]
#
# Writes bench/results/compare_pytorch-<UTC time>[-NOT-QUIET].{json,md} and prints the tables. A run
# on a busy machine is marked "NOT QUIET -- not for publication"; --require-quiet writes no table
# then (exit 3), and stops before measuring if the start is not quiet. Method and how to publish
# the table: docs/performance.md.
# Build directory: $BNLAB_BENCH_BUILD, else build-bench at the repository root (build-bench-avx2
# with --max-isa avx2: bnlab built for x86-64-v3, AVX2 + FMA, instead of -march=native, so that
# its compiler-vectorized loops are those of an AVX2-only CPU too).
# Exit status: 0 done, 1 cannot run (no torch under /usr/bin/python3, build or measurement failed),
# 2 bad flag, 3 not quiet with --require-quiet.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
max_isa=
prev=
for arg in "$@"; do
  if [ "$prev" = "--max-isa" ]; then max_isa=$arg; fi
  case $arg in --max-isa=*) max_isa=${arg#--max-isa=} ;; esac
  prev=$arg
done
case $max_isa in
  "") build=${BNLAB_BENCH_BUILD:-$repo/build-bench} ;;
  avx2) build=${BNLAB_BENCH_BUILD:-$repo/build-bench-avx2} ;;
  *) echo "compare_pytorch: --max-isa takes avx2; got '$max_isa'" >&2; exit 2 ;;
esac
# PyTorch itself (python3-torch, and the OpenMP OpenBLAS it should load) when missing.
bash "$repo/scripts/setup.sh" --pytorch
# Debian's interpreter: the one python3-torch installs into. (A `python3` earlier on PATH, e.g.
# pyenv's, has no torch.)
python=/usr/bin/python3
openmp_blas=/usr/lib/x86_64-linux-gnu/openblas-openmp

if [ ! -x "$python" ]; then
  echo "compare_pytorch: $python not found; on Debian 12, as root:" \
       "apt-get install -y python3-torch" >&2
  exit 1
fi
if ! LD_LIBRARY_PATH="$openmp_blas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
     "$python" -c "import torch" 2>/dev/null; then
  echo "compare_pytorch: $python cannot import torch: nothing to compare against." >&2
  echo "  On Debian 12, as root: apt-get install -y python3-torch libopenblas0-openmp" >&2
  exit 1
fi
if [ ! -d "$openmp_blas" ]; then
  echo "compare_pytorch: $openmp_blas is missing (PyTorch's best configuration uses it)." >&2
  echo "  On Debian 12, as root: apt-get install -y libopenblas0-openmp" >&2
  exit 1
fi

# Configure once (an existing build directory keeps its options; Release is enforced).
configure=(-DCMAKE_BUILD_TYPE=Release)
if [ "$max_isa" = avx2 ]; then
  configure+=(-DBNLAB_NATIVE=OFF "-DCMAKE_CXX_FLAGS=-march=x86-64-v3 -mprefer-vector-width=256")
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
  configure+=(-DBNLAB_BUILD_TESTS=OFF)
  if command -v ccache >/dev/null; then configure+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
fi
if ! cmake -S "$repo" -B "$build" "${configure[@]}" >/dev/null ||
   ! cmake --build "$build" -j"$(nproc)" --target bnlab_cli >/dev/null; then
  echo "compare_pytorch: building bnlab in $build failed" >&2
  exit 1
fi
exec "$python" "$repo/bench/compare_pytorch.py" --bnlab "$build/bnlab" "$@"

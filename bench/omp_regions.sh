#!/usr/bin/env bash
# Times each OpenMP region of a `bnlab bench` workload's training step at one and at two threads
# (bench/omp_regions.cpp, preloaded) and prints them side by side: microseconds per step inside each
# region and before it (serial work), and the region's speed-up. A region well under 2x on two
# threads is where a two-thread step waits.
#   bash bench/omp_regions.sh [W3:batch] [build-bench]
# One thread runs pinned to CPU 0. Timings are wall time on this machine at this moment: compare
# builds by alternating runs, never across sessions.
set -euo pipefail
spec=${1:-W3:batch}
build=${2:-build-bench}
bin="$build/bnlab"
lib="$build/bench/libomp_regions.so"
[ -x "$bin" ] && [ -f "$lib" ] || {
  echo "omp_regions.sh: build $bin and $lib first (cmake --build $build)" >&2
  exit 2
}
# A step starts at the first conv's region (every zoo conv net's first layer is a thin direct conv).
reset=$(nm -C "$bin" | sed -n 's/^0*\([0-9a-f]*\) t bnlab::detail::conv2d_direct_forward(.*_omp_fn\.0\]$/\1/p' | head -1)
[ -n "$reset" ] || { echo "omp_regions.sh: no conv2d_direct_forward region in $bin" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for threads in 1 2; do
  cpus=0
  [ "$threads" = 2 ] && cpus=0-1
  OMP_REGIONS_RESET=$reset OMP_REGIONS_OUT="$tmp/t$threads" LD_PRELOAD="$lib" \
    taskset -c "$cpus" "$bin" bench --train-only --repeats 5 --seconds 1 --child "$spec:$threads" |
    sed -n 's/.*"median":\([0-9.]*\).*/\1/p' >"$tmp/rate$threads"
done
python3 - "$bin" "$tmp" "$spec" <<'PY'
import subprocess, sys
binary, tmp, spec = sys.argv[1:]
def load(t):
    return [l.split() for l in open(f"{tmp}/t{t}")]
def name(offset):
    s = subprocess.run(["addr2line", "-f", "-C", "-e", binary, offset], capture_output=True,
                       text=True).stdout.split("\n")[0]
    for junk in ("bnlab::", "detail::", "(anonymous namespace)::"):
        s = s.replace(junk, "")
    return s[:90]
one, two = load(1), load(2)
if not one or not two:
    # No step began: the anchor region (the first conv's) never ran. The MLPs have no conv, and at
    # one thread their GEMMs enter no region at all.
    print(f"omp_regions.sh: no training step of {spec} began at the first conv's region "
          "(conv2d_direct_forward); the tool times the conv nets (W3, W4), not the MLPs",
          file=sys.stderr)
    sys.exit(2)
rates = [open(f"{tmp}/rate{t}").read().strip() for t in (1, 2)]
print(f"{spec}: training img/s {rates[0]} (1 thread), {rates[1]} (2 threads)")
print(f"{'1 thr':>8} {'before':>7} | {'2 thr':>8} {'before':>7} | {'x':>5}  region (us per step)")
totals = [0.0, 0.0, 0.0, 0.0]
j = 0
def row(a, b):
    cells = []
    for r in (a, b):
        cells += [f"{float(r[2]):8.0f}", f"{float(r[3]):7.0f}"] if r else [" " * 8, " " * 7]
    speed = f"{float(a[2]) / float(b[2]):5.2f}" if a and b and float(b[2]) > 0 else " " * 5
    print(f"{cells[0]} {cells[1]} | {cells[2]} {cells[3]} | {speed}  {name((a or b)[1])}")
for a in one:
    # Regions that run only at two threads (a GEMM big enough to split) have no one-thread row.
    while j < len(two) and two[j][1] != a[1]:
        row(None, two[j]); totals[2] += float(two[j][2]); totals[3] += float(two[j][3]); j += 1
    b = two[j] if j < len(two) else None
    j += 1
    row(a, b)
    totals[0] += float(a[2]); totals[1] += float(a[3])
    if b:
        totals[2] += float(b[2]); totals[3] += float(b[3])
print(f"step: {totals[0] + totals[1]:.0f} us at 1 thread, {totals[2] + totals[3]:.0f} us at 2 "
      f"({(totals[0] + totals[1]) / (totals[2] + totals[3]):.2f}x)")
PY

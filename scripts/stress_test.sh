#!/usr/bin/env bash
# Runs one doctest case (or a pattern of them) N times while busy loops occupy every core, and
# counts the failures: the check the developers' brief asks of every test that involves several
# processes or threads before it is trusted in CI.
#   scripts/stress_test.sh 'mpi: an error on one rank*' 50
#   BNLAB_BUILD_DIR=build-x scripts/stress_test.sh 'apps.interrupt*' 20
# The pattern is a doctest -tc filter (wildcards *, ?). Keeps the output of the first failure in
# <build>/stress-failure.log. Exits non-zero if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

pattern=${1:?usage: scripts/stress_test.sh TEST_PATTERN [RUNS]}
runs=${2:-20}
build_dir=${BNLAB_BUILD_DIR:-build}
tests="$build_dir/bnlab_tests"
[ -x "$tests" ] || { echo "stress_test.sh: $tests not built (bash scripts/test.sh)" >&2; exit 2; }
count=$("$tests" -tc="$pattern" --count 2>/dev/null |
  sed -n 's/.*unskipped test cases passing the current filters: \([0-9]*\).*/\1/p')
[ "${count:-0}" -gt 0 ] || { echo "stress_test.sh: no test case matches '$pattern'" >&2; exit 2; }

busy=()
for _ in $(seq "$(nproc)"); do
  (while :; do :; done) &
  busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT

failures=0
start=$SECONDS
for i in $(seq "$runs"); do
  if ! out=$("$tests" -tc="$pattern" 2>&1); then
    failures=$((failures + 1))
    if [ "$failures" -eq 1 ]; then printf '%s\n' "$out" >"$build_dir/stress-failure.log"; fi
    echo "run $i: FAILED"
  fi
done
load=$(cut -d' ' -f1 /proc/loadavg)
echo "stress_test.sh: '$pattern' ($count case(s)) x $runs runs with $(nproc) busy loops:" \
  "$failures failed, $((SECONDS - start)) s, load average $load"
[ "$failures" -eq 0 ] || { echo "first failure's output: $build_dir/stress-failure.log" >&2; exit 1; }

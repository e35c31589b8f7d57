#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang-14) into build-fuzz and runs each for a bounded time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   default 30 s, all targets
#   scripts/fuzz.sh --make-corpus                      rewrite tests/fuzz/corpus from make_corpus.cpp
# Targets: idx cifar safetensors image grid schedule (fuzz/drivers.h). Each run starts from the
# committed seeds (tests/fuzz/corpus/<t>) and the kept findings (tests/fuzz/regressions/<t>); new
# coverage goes to build-fuzz/corpus/<t>, never into tests/. A finding (crash, sanitizer report,
# contract violation, leak, timeout over 10 s per input, a single allocation over 1 GiB or RSS over
# 2.5 GiB) is saved as build-fuzz/findings/<t>/<kind>-<sha1>; the script prints executions per
# target and exits non-zero if any target had a finding. Replay one input: build-fuzz/fuzz_<t> FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${BNLAB_FUZZ_BUILD_DIR:-build-fuzz}
all_targets=(idx cifar safetensors image grid schedule)

if [ "${1:-}" = "--make-corpus" ]; then
  tmp=$(mktemp -d)
  g++ -std=c++20 -O1 -I/usr/include/stb tests/fuzz/make_corpus.cpp -lstb -lz -o "$tmp/make_corpus"
  rm -rf tests/fuzz/corpus
  "$tmp/make_corpus" tests/fuzz/corpus
  rm -rf "$tmp"
  echo "fuzz.sh: wrote tests/fuzz/corpus ($(find tests/fuzz/corpus -type f | wc -l) seeds)"
  exit 0
fi

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=("${all_targets[@]}"); fi
case "$seconds" in '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac

cxx=${CXX_FUZZ:-clang++-14}
command -v "$cxx" >/dev/null || { echo "fuzz.sh: $cxx not found (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 2; }
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S fuzz -B "$build_dir" -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}" >/dev/null
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" --target "${targets[@]/#/fuzz_}"

# Sanitizer reports end the run as a finding; leaks are checked after every input that allocates.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

failed=()
summary=()
for t in "${targets[@]}"; do
  work="$build_dir/corpus/$t"
  findings="$build_dir/findings/$t"
  mkdir -p "$work" "$findings" "tests/fuzz/regressions/$t"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=1024
        -use_value_profile=1 -print_final_stats=1 -artifact_prefix="$findings/")
  if [ -f "fuzz/dicts/$t.dict" ]; then args+=(-dict="fuzz/dicts/$t.dict"); fi
  if [ "$t" = cifar ]; then args+=(-max_len=12400); fi  # room for a few 3074-byte records
  log="$build_dir/fuzz-$t.log"
  echo "== fuzz_$t for ${seconds}s (log: $log)"
  set +e
  "$build_dir/fuzz_$t" "${args[@]}" "$work" "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t" \
    >"$log" 2>&1
  status=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  new=$(find "$findings" -type f | wc -l)
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    echo "fuzz.sh: fuzz_$t FAILED (exit $status); finding(s) in $findings:" >&2
    grep -E "ERROR: |runtime error:|bnlab fuzz:|Test unit written" "$log" | head -10 >&2 || true
  fi
  summary+=("$(printf '%-12s %12s execs %6ss  exit %-3s files in findings dir: %s' "$t" "${execs:-?}" "$seconds" "$status" "$new")")
done

echo "== fuzz.sh summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs under $build_dir/findings/; fix, then keep each in tests/fuzz/regressions/<target>/)" >&2
  exit 1
fi
echo "fuzz.sh: no findings"

#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang-14) into build-fuzz and runs them. Two modes:
#   scripts/fuzz.sh --ci [TARGET...]                  CI (.ci/run): deterministic, the same commit
#                                                     always gives the same result
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]  exploratory: open-ended, time-bounded, random
#                                                     seed; default 30 s, all targets
#   scripts/fuzz.sh --make-corpus                     rewrite tests/fuzz/corpus from make_corpus.cpp
# Targets: idx cifar safetensors image grid schedule (fuzz/drivers.h).
#
# --ci, per target: (1) replay: every file of tests/fuzz/corpus/<t> and tests/fuzz/regressions/<t>
# is executed once (libFuzzer's individual-input mode, -runs=0); the script checks that libFuzzer
# reports each file as executed. (2) fuzz: a fixed number of executions (-runs=N below, counting the
# seeds' initial run) from a fixed seed (-seed=1), starting from the committed files only (passed as
# a sorted -seed_inputs list, so not even the file system's directory order matters) with a fresh,
# empty working corpus (mktemp, removed afterwards), and nothing driven by the clock: no
# -max_total_time, no corpus reload (-reload=0), no allocator purge (-purge_allocator_interval=-1);
# -timeout (60 s: only a hang guard), -malloc_limit_mb and -rss_limit_mb stay. Nothing driven by
# addresses either, since ASLR moves them every run: no -use_value_profile and no -use_cmp (both
# learn from compared values, pointers included), ASan fills all of each allocation, and the build
# leaves out UBSan's vptr check and the stack-depth feature (fuzz/CMakeLists.txt). The summary
# prints cov/ft/corp and a digest of the final corpus: the same for the same commit, every run.
#
# Exploratory mode: each target for SECONDS from the committed seeds, the kept findings and what
# earlier runs found (build-fuzz/corpus/<t>, which keeps growing; never written to tests/), with
# libFuzzer's random seed (printed in the summary: rerun one with BNLAB_FUZZ_SEED=N), -timeout=10,
# and the value-profile and comparison guidance that --ci leaves out. Results vary from run to run.
#
# In both modes a finding (crash, sanitizer report, contract violation, leak, timeout, a single
# allocation over 1 GiB or RSS over 2.5 GiB) is saved as build-fuzz/findings/<t>/<kind>-<sha1> (a
# committed file that fails the replay is copied there as replay-<name>); the script prints a
# summary table and exits non-zero if any target had a finding. Replay one input:
# build-fuzz/fuzz_<t> FILE.
# Environment: BNLAB_FUZZ_BUILD_DIR (default build-fuzz), JOBS (build parallelism, default nproc),
# FUZZ_JOBS (targets run at once, default nproc), CXX_FUZZ (default clang++-14), BNLAB_FUZZ_SEED
# (exploratory mode only).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${BNLAB_FUZZ_BUILD_DIR:-build-fuzz}
all_targets=(idx cifar safetensors image grid schedule)

# --ci: executions per target (libFuzzer -runs, which counts the initial run of the seeds too) and
# the seed. Targets differ a lot in speed, so each has its own count, chosen for about 20 s per
# target (replay included), 2.5 minutes for all six one after another, on the CI machine: 2 cores
# (AMD EPYC) shared with other builds; they now run side by side, one per core (see run_target).
# Measured 2026-12-01 at commit 415283d in this configuration (-seed=1, one thread each), two runs
# at a load average of 1.5-3; exec/s is libFuzzer's average over the run:
#   target          runs   exec/s        time
#   idx           400000   25000         17 s
#   cifar           7000   333-350       21-22 s
#   safetensors   350000   15909-17500   22-23 s
#   image          30000   1111-1250     25-28 s
#   grid          100000   6666-7142     15-17 s
#   schedule      500000   21739-22727   23-25 s
# Speeds depend on where the fixed run goes, which changes with the seeds, the regressions and the
# parsers: at f6b1178 image ran 4000-5000 exec/s (90000 runs in 20 s); at 415283d its run reaches
# large JPEGs that it resizes, and 30000 runs take as long. At a load of 4-5 from other builds the
# rates were about half. The counts only change when someone changes them here: raise them (more
# runs find more, but the same commit must still pass) in a commit of their own, after a clean run.
declare -A ci_runs=([idx]=400000 [cifar]=7000 [safetensors]=350000 [image]=30000 [grid]=100000
                    [schedule]=500000)
ci_seed=1
ci_timeout=60

mode=explore
if [ "${1:-}" = "--make-corpus" ]; then
  tmp=$(mktemp -d)
  g++ -std=c++20 -O1 -I/usr/include/stb tests/fuzz/make_corpus.cpp -lstb -lz -o "$tmp/make_corpus"
  rm -rf tests/fuzz/corpus
  "$tmp/make_corpus" tests/fuzz/corpus
  rm -rf "$tmp"
  echo "fuzz.sh: wrote tests/fuzz/corpus ($(find tests/fuzz/corpus -type f | wc -l) seeds)"
  exit 0
elif [ "${1:-}" = "--ci" ]; then
  mode=ci
  shift
else
  seconds=${1:-30}
  shift || true
  case "$seconds" in '' | *[!0-9]* | 0)
    echo "fuzz.sh: SECONDS must be a positive whole number (or --ci), got '$seconds'" >&2
    exit 2 ;;
  esac
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=("${all_targets[@]}"); fi
# Targets run at once. (Taken before OMP_NUM_THREADS=1 is exported below: GNU nproc follows it.)
fuzz_jobs=${FUZZ_JOBS:-$(nproc)}
case "$fuzz_jobs" in *[!0-9]*) fuzz_jobs_ok=0 ;; *) fuzz_jobs_ok=$((10#$fuzz_jobs > 0)) ;; esac
if [ "$fuzz_jobs_ok" -ne 1 ]; then
  echo "fuzz.sh: FUZZ_JOBS must be a positive whole number, got '${FUZZ_JOBS}'" >&2
  exit 2
fi
for t in "${targets[@]}"; do
  case " ${all_targets[*]} " in *" $t "*) ;; *)
    echo "fuzz.sh: unknown target '$t' (targets: ${all_targets[*]})" >&2; exit 2 ;;
  esac
done

cxx=${CXX_FUZZ:-clang++-14}
command -v "$cxx" >/dev/null || { echo "fuzz.sh: $cxx not found (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 2; }
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S fuzz -B "$build_dir" -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}" >/dev/null
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" --target "${targets[@]/#/fuzz_}"

# Sanitizer reports end the run as a finding; leaks are checked after every input that allocates.
# ASan fills only the first 4 KiB of each allocation (with 0xbe); max_malloc_fill_size makes it the
# first MiB, so a parser that reads memory it never wrote (stb_image did, docs/fuzzing.md) sees the
# same bytes every run instead of whatever an earlier input (or a pointer ASLR placed) left there.
# (All of it would cost the image target 2.3x: whole decoded images, which stb writes anyway.)
asan_options=halt_on_error=1:detect_leaks=1:max_malloc_fill_size=1048576
export ASAN_OPTIONS="$asan_options${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
# The parsers are single-threaded; keep any OpenMP region in the library so too, since coverage
# counters bumped from several threads at once would make the feature counts vary between runs.
export OMP_NUM_THREADS=1

# The committed inputs of target $1, sorted (bytewise) so the order is the same on every machine.
committed_inputs() {
  local d
  for d in "tests/fuzz/corpus/$1" "tests/fuzz/regressions/$1"; do
    if [ -d "$d" ]; then find "$d" -type f; fi
  done | LC_ALL=C sort
}

# "cov ft corp" of the last libFuzzer status line ("#N DONE cov: 1 ft: 2 corp: 3/45B ...") in $1.
final_coverage() {
  grep -E '^#[0-9]+' "$1" | tail -1 |
    sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/.*/\1 \2 \3/p'
}

tmp_root=$(mktemp -d "${TMPDIR:-/tmp}/bnlab-fuzz.XXXXXX")
trap 'rm -rf "$tmp_root"' EXIT

# One target, both modes: its messages go to stdout/stderr, its summary row to
# $tmp_root/$t.summary, and $tmp_root/$t.failed exists if it had a finding.
run_target() {
  local t=$1
  local findings found_before target_failed bin inputs dict max_len t0 replay_log status executed
  local last replay replay_status runs work seeds log args execs cov ft corp digest loaded nonempty
  local f new seed_dirs d seed used_seed
  findings="$build_dir/findings/$t"
  mkdir -p "$findings"
  found_before=$(find "$findings" -type f | wc -l)
  target_failed=0
  bin="$build_dir/fuzz_$t"
  mapfile -t inputs < <(committed_inputs "$t")
  dict=()
  if [ -f "fuzz/dicts/$t.dict" ]; then dict=(-dict="fuzz/dicts/$t.dict"); fi
  max_len=()
  if [ "$t" = cifar ]; then max_len=(-max_len=12400); fi  # room for a few 3074-byte records

  if [ "$mode" = ci ]; then
    t0=$SECONDS
    # (1) Replay the committed inputs, each once.
    replay_log="$build_dir/fuzz-$t-replay.log"
    echo "== fuzz_$t: replay ${#inputs[@]} committed inputs (log: $replay_log)"
    status=0
    if [ ${#inputs[@]} -gt 0 ]; then
      set +e
      "$bin" -runs=0 -seed="$ci_seed" -timeout="$ci_timeout" -rss_limit_mb=2560 \
        -malloc_limit_mb=1024 "${inputs[@]}" >"$replay_log" 2>&1
      status=$?
      set -e
    fi
    executed=$(grep -c '^Executed ' "$replay_log" 2>/dev/null || true)
    executed=${executed:-0}
    if [ "$status" -ne 0 ] || [ "${executed:-0}" -ne ${#inputs[@]} ]; then
      target_failed=1
      last=$(sed -n 's/^Running: //p' "$replay_log" | tail -1)
      echo "fuzz.sh: fuzz_$t replay FAILED (exit $status," \
        "$executed of ${#inputs[@]} inputs executed)" >&2
      if [ "$status" -ne 0 ] && [ -n "$last" ] && [ -f "$last" ]; then
        cp "$last" "$findings/replay-$(basename "$last")"
        echo "fuzz.sh: failing input: $last (copied to $findings/)" >&2
      fi
      grep -E "ERROR: |runtime error:|bnlab fuzz:" "$replay_log" | head -10 >&2 || true
    fi
    replay="$executed/${#inputs[@]}"
    replay_status=$status

    # (2) Fixed runs from a fixed seed, from the committed inputs and an empty working corpus.
    runs=${ci_runs[$t]}
    work="$tmp_root/$t"
    mkdir -p "$work/corpus"
    seeds=()
    if [ ${#inputs[@]} -gt 0 ]; then
      (IFS=,; printf '%s' "${inputs[*]}") >"$work/seeds"  # no newline: it would end the last name
      seeds=(-seed_inputs=@"$work/seeds")
    fi
    log="$build_dir/fuzz-$t.log"
    args=(-runs="$runs" -seed="$ci_seed" -timeout="$ci_timeout" -report_slow_units="$ci_timeout"
          -rss_limit_mb=2560 -malloc_limit_mb=1024 -reload=0 -purge_allocator_interval=-1
          -use_value_profile=0 -use_cmp=0 "${dict[@]}" "${max_len[@]}" -print_final_stats=1
          -artifact_prefix="$findings/" "${seeds[@]}")
    echo "== fuzz_$t: $runs runs, seed $ci_seed (log: $log)"
    echo "   $bin ${args[*]} $work/corpus"
    set +e
    "$bin" "${args[@]}" "$work/corpus" >"$log" 2>&1
    status=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    read -r cov ft corp < <(final_coverage "$log"; echo) || true
    # A digest of the final corpus (its files are named by their SHA-1): equal digests, equal runs.
    digest=$(find "$work/corpus" -type f -printf '%f\n' | LC_ALL=C sort | sha1sum | cut -c1-12)
    rm -rf "$work"
    # libFuzzer skips empty files and, silently, names it cannot read: check it loaded every seed.
    loaded=$(sed -n 's/^INFO: seed corpus: files: \([0-9]*\).*/\1/p' "$log" | head -1)
    nonempty=0
    for f in "${inputs[@]}"; do if [ -s "$f" ]; then nonempty=$((nonempty + 1)); fi; done
    if [ "$status" -eq 0 ] && [ "${loaded:-0}" -ne "$nonempty" ]; then
      target_failed=1
      echo "fuzz.sh: fuzz_$t loaded ${loaded:-no} seed files, expected $nonempty (see $log)" >&2
    fi
    if [ "$status" -ne 0 ]; then
      target_failed=1
      echo "fuzz.sh: fuzz_$t FAILED (exit $status); finding(s) in $findings:" >&2
      grep -E "ERROR: |runtime error:|bnlab fuzz:|Test unit written" "$log" | head -10 >&2 || true
    fi
    new=$(($(find "$findings" -type f | wc -l) - found_before))
    printf '%-12s %7s %5s  %9s %9s %6s %6s %5s  %-12s %5s %4s  %3ss\n' "$t" "$replay" \
      "$replay_status" "$runs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$digest" \
      "$status" "$new" "$((SECONDS - t0))" >"$tmp_root/$t.summary"
  else
    work="$build_dir/corpus/$t"
    mkdir -p "$work"
    seed_dirs=()
    for d in "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t"; do
      if [ -d "$d" ]; then seed_dirs+=("$d"); fi
    done
    seed=()
    if [ -n "${BNLAB_FUZZ_SEED:-}" ]; then seed=(-seed="$BNLAB_FUZZ_SEED"); fi
    args=(-max_total_time="$seconds" "${seed[@]}" -timeout=10 -rss_limit_mb=2560
          -malloc_limit_mb=1024 -use_value_profile=1 "${dict[@]}" "${max_len[@]}"
          -print_final_stats=1 -artifact_prefix="$findings/")
    log="$build_dir/fuzz-$t.log"
    echo "== fuzz_$t for ${seconds}s (log: $log)"
    set +e
    "$bin" "${args[@]}" "$work" "${seed_dirs[@]}" >"$log" 2>&1
    status=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    used_seed=$(sed -n 's/^INFO: Seed: *//p' "$log" | head -1)
    read -r cov ft corp < <(final_coverage "$log"; echo) || true
    if [ "$status" -ne 0 ]; then
      target_failed=1
      echo "fuzz.sh: fuzz_$t FAILED (exit $status); finding(s) in $findings:" >&2
      grep -E "ERROR: |runtime error:|bnlab fuzz:|Test unit written" "$log" | head -10 >&2 || true
    fi
    new=$(($(find "$findings" -type f | wc -l) - found_before))
    printf '%-12s %12s %6s %6s %5s  %10s  %5s %4s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
      "${corp:-?}" "${used_seed:-?}" "$status" "$new" >"$tmp_root/$t.summary"
  fi
  if [ "$target_failed" -ne 0 ]; then touch "$tmp_root/$t.failed"; fi
}

# The targets run side by side, one per core (FUZZ_JOBS, default nproc): each is one
# single-threaded process whose result depends only on its own inputs, -runs and -seed, never on
# what runs next to it, so --ci gives the same table either way, in a fraction of the time. Each
# target's messages are kept in a file and printed in target order when all are done.
# `wait -n` returns at once for a target that finished before it was called.
active=0
for t in "${targets[@]}"; do
  if [ "$active" -ge "$fuzz_jobs" ]; then
    wait -n || true
    active=$((active - 1))
  fi
  run_target "$t" >"$tmp_root/$t.out" 2>&1 &
  active=$((active + 1))
done
wait
failed=()
summary=()
for t in "${targets[@]}"; do
  cat "$tmp_root/$t.out"
  if [ -f "$tmp_root/$t.summary" ]; then
    summary+=("$(cat "$tmp_root/$t.summary")")
  else
    summary+=("$t: no summary (the script itself failed for this target; see above)")
    touch "$tmp_root/$t.failed"
  fi
  if [ -f "$tmp_root/$t.failed" ]; then failed+=("$t"); fi
done

if [ "$mode" = ci ]; then
  echo "== fuzz.sh --ci summary (replay: inputs executed/committed; then -runs=N -seed=$ci_seed)"
  printf '%-12s %7s %5s  %9s %9s %6s %6s %5s  %-12s %5s %4s  %4s\n' target replay exit runs \
    execs cov ft corp corpus-sha1 exit find time
else
  echo "== fuzz.sh summary (${seconds}s per target; rerun a target with BNLAB_FUZZ_SEED=<seed>)"
  printf '%-12s %12s %6s %6s %5s  %10s  %5s %4s\n' target execs cov ft corp seed exit find
fi
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs under $build_dir/findings/; fix, then keep each in tests/fuzz/regressions/<target>/)" >&2
  exit 1
fi
echo "fuzz.sh: no findings"

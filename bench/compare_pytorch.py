#!/usr/bin/python3
"""bnlab vs PyTorch on the benchmark workloads W1-W4 of issue 6, measured so it can be trusted.

Run through bench/compare_pytorch.sh (builds bnlab, checks that /usr/bin/python3 has torch):

    bash bench/compare_pytorch.sh [--quick] [--repeats 3] [--threads 1,2] [--workloads W1,W3]
                                  [--inner-repeats 3] [--seconds 0.3] [--warmup 0.3] [--settle 60]
                                  [--retries 2] [--out-dir bench/results] [--require-quiet]
                                  [--keep-coretype] [--no-pin] [--max-isa avx2]

Method (docs/performance.md, "How the PyTorch comparison is measured"):

- PyTorch runs in its best CPU configuration: Debian's /usr/bin/python3 with python3-torch,
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp (OpenBLAS on the same OpenMP runtime
  as torch; the pthread build under torch's OpenMP threads oversubscribes the cores),
  OMP_NUM_THREADS=n and torch.set_num_threads(n), and glibc's malloc told not to return memory to
  the kernel (MALLOC_MMAP_THRESHOLD_ = MALLOC_TRIM_THRESHOLD_ = 4e9) so large tensors are not
  re-faulted on every step. Each torch process reads /proc/self/maps and refuses to measure unless
  every mapped libopenblas is the OpenMP build; the path, build string, core and thread count are
  recorded. bnlab's process gets the same environment, so only the framework differs.
  A forced OPENBLAS_CORETYPE is removed from both sides (OpenBLAS then picks the CPU's own kernels:
  with OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU, torch's dense layers ran at 60 % of their best
  speed), unless --keep-coretype; what was found is recorded either way. Any other OPENBLAS_*,
  ATEN_CPU_CAPABILITY, ... is inherited unchanged and recorded.
- For each row (workload, norm, threads), --repeats rounds alternate the sides, bnlab then torch,
  bnlab, torch, ... each a fresh process (warm-up, --inner-repeats timed repeats of ~--seconds, its
  median): slow drift hits both sides alike. A row reports each side's median over the rounds with
  min..max, and the ratio bnlab / torch as the median (min..max) of the per-round ratios of
  neighbouring processes.
- Quiet: the 1-minute load average before the first measurement must be at most 0.3 x the CPUs,
  and during every measurement the tasks of *other* programs that were runnable (sampled every
  0.1 s: /proc/loadavg's running count minus this script and the measured process's own running
  threads) must average at most the same 0.3 x CPUs. The load average itself is recorded before
  and after every measurement, but once the benchmark runs it counts the benchmark's own threads
  (one busy thread alone takes it past 0.6 within a minute on 2 CPUs), so it cannot judge
  the others. A round during which they averaged more is measured again, both sides, up to
  --retries times (the discarded measurements stay in the JSON). A run that is not quiet is
  written with "NOT QUIET -- not for publication" on its table; with --require-quiet no table is
  written at all (exit 3).
- --max-isa avx2: what an AVX2-only CPU would see, emulated on a wider one. Both sides get the
  caps of ISA_CAPS (bnlab's BNLAB_MAX_ISA, ATEN_CPU_CAPABILITY, oneDNN's ISA cap, OpenBLAS's
  Haswell core); compare_pytorch.sh builds bnlab for x86-64-v3 instead of -march=native. The
  report says so in its title.
- Pinning: a row with fewer threads than CPUs runs both sides on the same lowest-numbered CPUs
  (--no-pin: wherever the scheduler puts them); virtual CPUs need not be equally fast.
- CPU speed: right before and after each measurement, the CPUs it runs on are probed (a fixed
  Python loop, ~20 ms each, CpuSpeed); full speed is the fastest reading of the run. A round
  next to which a CPU read below FULL_SPEED_SHARE (0.9) of full speed is measured again like a
  busy one, after waiting up to 30 s for full speed. The host can slow one vCPU by 20-40 % for
  minutes, which neither the load average nor the steal time shows. Measurements kept slowed
  (retries used up) are named in the report; they do not make the run not quiet.
- Retries used up: the round keeps its quietest attempt (round_noise: others within the limit
  first, then no CPU slowed, then the highest reading of the slowest CPU, then the fewest other
  tasks), judged by the conditions alone, never by the rates.

Output: bench/results/compare_pytorch-<UTC time>.json (everything: machine, environment, each
measurement with its load readings) and .md (the tables), and the tables on stdout.

The pure helpers (parse_lscpu, parse_loadavg, quiet_verdict, summarize, format_markdown, ...) take
text and numbers and return values; tests/bench/test_compare_pytorch.py checks them without torch.
"""

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

TORCH_PYTHON = "/usr/bin/python3"
OPENMP_BLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
QUIET_LOAD_PER_CPU = 0.3
# A measurement is taken at full speed when every CPU it ran on did at least this share of the
# probe's best rate right before and right after it (cpu_speed_probe; the probe repeats to ~1 %).
FULL_SPEED_SHARE = 0.9
NOT_QUIET = "NOT QUIET -- not for publication"
SAMPLE_INTERVAL = 0.1  # seconds between samples of the runnable tasks during a measurement
# Environment variables that change either side's speed: recorded as found, never changed (except
# FORCED_CORE, removed by child_env unless --keep-coretype).
FORCED_CORE = "OPENBLAS_CORETYPE"
RECORDED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OPENBLAS_L2_SIZE", "GOTO_NUM_THREADS",
                "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                "ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "LD_PRELOAD")

WORKLOADS = {
    "W1": dict(model="paper-mlp", batch=60, opt="sgd", momentum=0.0, shape=(1, 28, 28)),
    "W2": dict(model="mlp", batch=128, opt="sgd", momentum=0.9, shape=(1, 28, 28)),
    "W3": dict(model="lenet", batch=64, opt="adam", momentum=0.0, shape=(1, 28, 28)),
    "W4": dict(model="cifar-cnn", batch=128, opt="sgd", momentum=0.9, shape=(3, 32, 32)),
}

# ---- Pure helpers: text and numbers in, values out (tests/bench/test_compare_pytorch.py) ----


def parse_lscpu(text):
    """`LC_ALL=C lscpu` output -> model name, CPU/core counts, AVX2/AVX-512 presence."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    flags = fields.get("Flags", "").split()

    def num(key):
        try:
            return int(fields[key])
        except (KeyError, ValueError):
            return None

    per_core, per_socket, sockets = (num("Thread(s) per core"), num("Core(s) per socket"),
                                     num("Socket(s)"))
    return dict(model_name=fields.get("Model name", "unknown"), cpus=num("CPU(s)"),
                threads_per_core=per_core,
                physical_cores=per_socket * sockets if per_socket and sockets else None,
                avx2="avx2" in flags, avx512=sorted(f for f in flags if f.startswith("avx512")),
                fma="fma" in flags)


def parse_loadavg(text):
    """/proc/loadavg ("1.34 2.53 3.11 3/94 13624") -> load averages and runnable/total tasks."""
    parts = text.split()
    running, total = parts[3].split("/")
    return dict(load1=float(parts[0]), load5=float(parts[1]), load15=float(parts[2]),
                running=int(running), total=int(total))


def parse_cpu_times(text):
    """/proc/stat -> (total, steal) jiffies of the aggregate "cpu" line."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            ticks = [int(v) for v in line.split()[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
            return sum(ticks[:8]), ticks[7] if len(ticks) > 7 else 0
    return None


def steal_percent(before, after):
    """Share of CPU time the hypervisor gave to others between two parse_cpu_times readings."""
    if not before or not after or after[0] <= before[0]:
        return None
    return 100.0 * (after[1] - before[1]) / (after[0] - before[0])


def running_threads(stat_texts):
    """How many of a process's threads are runnable, from their /proc/PID/task/TID/stat texts."""
    # "TID (comm) S ...": the state follows the command name, which may itself contain ") ".
    return sum(1 for t in stat_texts if t[t.rfind(")") + 1:].split()[:1] == ["R"])


def foreign_runnable(running, own_running):
    """Runnable tasks that are neither the sampler (1) nor the measured process's threads."""
    return max(0, running - 1 - own_running)


def blas_mappings(maps_text):
    """Distinct libopenblas / libblas / liblapack files mapped in a /proc/PID/maps text."""
    paths = set()
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6:
            name = os.path.basename(parts[5].strip())
            if name.startswith(("libopenblas", "libblas", "liblapack")):
                paths.add(parts[5].strip())
    return sorted(paths)


def openmp_openblas(paths):
    """True when a libopenblas is mapped and every BLAS/LAPACK library mapped (blas_mappings) is
    the OpenMP build's: torch links the generic libblas.so.3, which may resolve to the reference
    BLAS or the pthread OpenBLAS."""
    ob = [p for p in paths if os.path.basename(p).startswith("libopenblas")]
    return bool(ob) and all(p.startswith(OPENMP_BLAS_DIR + "/") for p in paths)


# --max-isa: the variables that make each side's run-time dispatch behave as on a CPU without
# the wider instruction sets (bnlab's BNLAB_MAX_ISA, ATen's CPU capability, oneDNN's ISA cap under
# both of its names, OpenBLAS's kernel core), the same on both sides.
ISA_CAPS = {
    "avx2": {"BNLAB_MAX_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "DNNL_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell"},
}


def child_env(base, threads, keep_coretype=False, max_isa=None):
    """The environment of every measured process, bnlab's and torch's alike.

    A forced OPENBLAS_CORETYPE is dropped unless keep_coretype: PyTorch's best configuration is
    OpenBLAS's own choice of kernels for the CPU (a machine that pins an older core, e.g. Haswell
    on an AVX-512 CPU, would otherwise slow torch's dense layers, not bnlab's own GEMM). max_isa
    (a key of ISA_CAPS) sets its caps on top, OpenBLAS's core included."""
    env = dict(base)
    if not keep_coretype:
        env.pop(FORCED_CORE, None)
    env.update(ISA_CAPS.get(max_isa, {}))
    lib = env.get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = OPENMP_BLAS_DIR + (":" + lib if lib else "")
    env["OMP_NUM_THREADS"] = str(threads)
    env["MALLOC_MMAP_THRESHOLD_"] = "4000000000"
    env["MALLOC_TRIM_THRESHOLD_"] = "4000000000"
    return env


def summarize(values):
    """median, min, max, quartiles (Python's default 'exclusive' method, n >= 2) and n."""
    v = sorted(values)
    out = dict(median=statistics.median(v), min=v[0], max=v[-1], n=len(v))
    if len(v) >= 2:
        q = statistics.quantiles(v, n=4)
        out.update(q1=q[0], q3=q[2])
    return out


def paired_ratios(ours, theirs):
    """Per-round ratios ours[i] / theirs[i] of the processes that ran next to each other."""
    return [a / b if b else float("nan") for a, b in zip(ours, theirs)]


def pinned_cpus(allowed, threads):
    """The CPUs both sides of a row with `threads` threads are pinned to: the lowest `threads` of
    the allowed ones, or None (no pinning) when the row uses them all. Virtual CPUs need not be
    equally fast (on this project's 2-vCPU machines one ran conv nets up to 25 % slower than the
    other at times, which no load reading inside the machine shows), so a one-thread row whose
    two sides landed on different CPUs compared the CPUs, not the frameworks."""
    cpus = sorted(allowed)
    return cpus[:threads] if threads < len(cpus) else None


def speed_share(speeds, reference):
    """The slowest of a measurement's CPU probe readings ({cpu: iterations/s}, before and after
    it) as a share of the run's reference (its fastest reading so far, CpuSpeed.full); None when
    nothing was probed."""
    readings = [v for probe in speeds for v in probe.values()]
    if not readings or not reference:
        return None
    return min(readings) / reference


def slowed(m, share=FULL_SPEED_SHARE):
    """True when a CPU the measurement ran on was below `share` of full speed next to it.
    Virtual CPUs slow down when the host's other tenants load them: on this project's 2-vCPU
    machines one CPU ran 20-40 % slow for minutes at a time, with no sign in the load average
    or the steal time, and it hit whichever side ran then."""
    got = m.get("speed_share")
    return got is not None and got < share


def others_ran(m, limit):
    """True when other programs' runnable tasks averaged above limit during the measurement, or
    could not be sampled."""
    return m["foreign_mean"] is None or m["foreign_mean"] > limit


def busy_round(pair, limit, share=FULL_SPEED_SHARE):
    """True when other programs ran (others_ran) during either measurement of a round, or a CPU
    was slowed next to one (slowed): the round is measured again, if retries are left."""
    return any(others_ran(m, limit) or slowed(m, share) for m in pair)


def round_noise(pair, limit, share=FULL_SPEED_SHARE):
    """How disturbed a round's conditions were, as a sort key (smaller is quieter): whether other
    programs ran above limit (or could not be sampled), whether a CPU was slowed, the slowest
    CPU's share of full speed (higher first: between a CPU at 0.37 and one at 0.84, the
    difference in other tasks within the limit, e.g. 0.06 against 0.08, says nothing), and then
    the most other programs' runnable tasks. Conditions only, never the rates, so choosing the
    quietest of several attempts does not choose a result."""
    foreign = [m["foreign_mean"] for m in pair]
    shares = [m["speed_share"] for m in pair if m.get("speed_share") is not None]
    return (any(others_ran(m, limit) for m in pair), any(slowed(m, share) for m in pair),
            -min(shares, default=0.0),
            max(float("inf") if f is None else f for f in foreign))


def measure_round(run, sides, key, rnd, limit, retries, log=sys.stderr, before_retry=None):
    """One round of a row: each side once, in order (bnlab, torch), each a fresh process through
    run(side, cmd, label). A round during which other programs ran or a CPU was slowed
    (busy_round) is measured again, up to `retries` times, after before_retry() (which waits for
    full speed). When every attempt was busy, the quietest (round_noise) is kept: the last one is
    no better than the others, and keeping it would publish a busy round that had a quiet
    attempt. Returns (the kept pair, the discarded measurements)."""
    attempts = []
    for attempt in range(retries + 1):
        pair = []
        for side, cmd in sides:
            m = run(side, cmd, f"{key} {side} round {rnd}")
            m.update(side=side, round=rnd, attempt=attempt + 1)
            pair.append(m)
        again = busy_round(pair, limit) and attempt < retries
        rates = " / ".join(f"{m['side']} {m['result']['train']['median']:.0f}" for m in pair)
        shares = [m["speed_share"] for m in pair if m.get("speed_share") is not None]
        print(f"# {key} round {rnd}: train {rates} img/s; others runnable "
              f"{max(m['foreign_mean'] or 0.0 for m in pair):.2f}"
              + (f"; slowest CPU {min(shares):.2f} of full speed" if shares else "")
              + ("; " + ("a CPU was slowed" if any(slowed(m) for m in pair)
                         else "other programs ran") + ", measuring again" if again else ""),
              file=log, flush=True)
        attempts.append(pair)
        if not again:
            break
        if before_retry:
            before_retry()
    kept = attempts[-1]
    if busy_round(kept, limit) and len(attempts) > 1:
        kept = min(attempts, key=lambda pair: round_noise(pair, limit))
        print(f"# {key} round {rnd}: every attempt was busy; kept the quietest, attempt "
              f"{kept[0]['attempt']}", file=log, flush=True)
    return kept, [m for pair in attempts if pair is not kept for m in pair]


def start_refusal(require_quiet, cpus, start_load1):
    """With --require-quiet, the reasons (a list) to stop before measuring, else None: a start
    over the load limit makes the verdict "not quiet" whatever the measurements show, so measuring
    for the next half hour could only end in exit 3 with no table."""
    if not require_quiet:
        return None
    quiet, _, reasons = quiet_verdict(cpus, start_load1, [])
    return None if quiet else reasons


def quiet_verdict(cpus, start_load1, measurements, per_cpu=QUIET_LOAD_PER_CPU):
    """(quiet, limit, reasons): the run is quiet when the load average before it and the other
    programs' runnable tasks during every measurement (mean of the samples) stay <= per_cpu x cpus.
    measurements: dicts with "label" and "foreign_mean" (None when nothing was sampled)."""
    limit = per_cpu * cpus
    reasons = []
    if start_load1 is None:
        reasons.append("the load average could not be read")
    elif start_load1 > limit:
        reasons.append(f"1-minute load average {start_load1:.2f} before the first measurement "
                       f"> {limit:.2f} ({per_cpu} x {cpus} CPUs)")
    unsampled = [m for m in measurements if m["foreign_mean"] is None]
    if unsampled:
        reasons.append(f"{len(unsampled)} measurement(s) too short to sample the load "
                       f"(first: {unsampled[0]['label']})")
    busy = [m for m in measurements if m["foreign_mean"] is not None and m["foreign_mean"] > limit]
    if busy:
        worst = max(busy, key=lambda m: m["foreign_mean"])
        reasons.append(f"other programs' runnable tasks averaged > {limit:.2f} during "
                       f"{len(busy)} of {len(measurements)} measurements "
                       f"(worst {worst['foreign_mean']:.2f}, {worst['label']})")
    return not reasons, limit, reasons


def fmt_rate(s):
    """'median (min..max)' of a summarize() dict of images/s."""
    return f"{s['median']:.0f} ({s['min']:.0f}..{s['max']:.0f})"


def fmt_ratio(s):
    return f"{s['median']:.2f} ({s['min']:.2f}..{s['max']:.2f})"


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def retried(doc):
    """The Method line's account of rounds measured again (empty for documents without retries)."""
    retries = doc["settings"].get("retries", 0)
    if not retries:
        return ""
    rounds = len(doc.get("discarded", [])) // 2  # measure_round discards both sides of a round
    slow = (f" or a CPU probed below {doc['speed']['full_speed_share']} of full speed next to it"
            if "speed" in doc else "")
    return (f"; a round during which other programs' runnable tasks averaged above the limit{slow} "
            f"was measured again, up to {retries} times, keeping the quietest attempt when all "
            f"were busy: {rounds} round(s) discarded (in the JSON's \"discarded\")")


def cpu_speed_line(doc):
    """The report's account of the CPU probe (None for documents without one)."""
    sp = doc.get("speed")
    if not sp or sp.get("min_share") is None:
        return None
    slowed_kept = sp["slowed"]
    return (f"- CPU speed: each measurement's CPUs were probed right before and after it (a fixed "
            f"Python loop, best of 3); the slowest reading next to a kept measurement was "
            f"{sp['min_share']:.2f} of the run's fastest; "
            + (f"{len(slowed_kept)} kept measurement(s) below {sp['full_speed_share']} "
               f"(first: {slowed_kept[0]})" if slowed_kept
               else f"none below {sp['full_speed_share']}"))


def pinning(doc):
    """The Method line's account of pinned rows (empty when none was pinned)."""
    pins = sorted({(r["threads"], tuple(r["pinned"])) for r in doc["rows"] if r.get("pinned")})
    if not pins:
        return ""
    where = ", ".join(f"{t} thr on CPU{'s' if len(c) > 1 else ''} {','.join(map(str, c))}"
                      for t, c in pins)
    return (f"; rows with fewer threads than CPUs ran both sides pinned to the same CPUs ({where}): "
            f"virtual CPUs can differ in speed")


def format_markdown(doc):
    """The Markdown report of a result document (the JSON this script writes)."""
    quiet = doc["quiet"]
    mark = "" if quiet else f" -- {NOT_QUIET}"
    m, s, bl, tc, ld = doc["machine"], doc["settings"], doc["bnlab"], doc["torch"], doc["load"]
    removed = doc["env"].get("removed", {})
    env_found = ", ".join(f"{k}={v}" for k, v in doc["env"]["inherited"].items()
                          if k not in removed) or "none"
    env_removed = "".join(f" Removed from both sides: {k}={v} (OpenBLAS picks the CPU's own "
                          f"kernels; --keep-coretype keeps it)." for k, v in removed.items())
    speed_line = cpu_speed_line(doc)
    isa = s.get("max_isa")
    out = [f"# bnlab vs PyTorch{' as on an ' + isa.upper() + '-only CPU' if isa else ''}{mark}",
           ""]
    if isa:
        out += [f"**Emulated: both sides capped at {isa.upper()}** on this CPU ("
                + ", ".join(f"{k}={v}" for k, v in ISA_CAPS[isa].items())
                + "; bnlab built without -march=native by compare_pytorch.sh). Not a measurement "
                "of the CPU itself.", ""]
    if not quiet:
        out += [f"**{NOT_QUIET}.** The machine was not quiet:", ""]
        out += [f"- {r}" for r in doc["reasons"]] + [""]
    out += [
        f"- Run: {doc['started_utc']} to {doc['finished_utc']} (UTC), bnlab {bl['version']}",
        f"- CPU: {m['model_name']}, {m['cpus']} CPUs ({m['physical_cores']} cores, "
        f"{m['threads_per_core']} thread(s) per core), AVX2 {'yes' if m['avx2'] else 'no'}, "
        f"AVX-512 {'yes (' + ' '.join(m['avx512']) + ')' if m['avx512'] else 'no'}; "
        f"kernel {m['kernel']}",
        f"- bnlab GEMM: {bl.get('gemm', 'openblas')}; OpenBLAS: {bl['blas']} "
        f"({bl['blas_parallel']}); mapped "
        f"{', '.join(bl['blas_paths'])}",
        f"- PyTorch {tc['version']} ({tc['python']}): {tc['blas_config']}, core "
        f"{tc['blas_core']}, {tc['blas_parallel']}; mapped {tc['blas_path']} (verified OpenMP "
        f"build in every torch process); ATen CPU capability {tc['cpu_capability']}",
        f"- Both sides: {doc['env']['set']}; OMP_NUM_THREADS = torch.set_num_threads = bnlab "
        f"--threads = the row's thr (OpenBLAS threads seen: bnlab "
        f"{'/'.join(str(t) for t in bl['blas_threads'])}, torch "
        f"{'/'.join(str(t) for t in tc['blas_threads'])}). Inherited unchanged: {env_found}."
        f"{env_removed}",
        f"- Method: {s['repeats']} alternating rounds per row (bnlab, torch, bnlab, torch, ...), "
        f"each a fresh process: warm-up {s['warmup']} s, {s['inner_repeats']} timed repeats of "
        f"~{s['seconds']} s, the process's median; img/s = median (min..max) over the rounds; "
        f"ratio = bnlab / torch, median (min..max) of the rounds' ratios" + retried(doc)
        + pinning(doc),
        f"- Load: 1-minute load average {ld['start_load1']:.2f} at the start (limit "
        f"{ld['limit']:.2f} = {QUIET_LOAD_PER_CPU} x {m['cpus']} CPUs), {ld['min_load1']:.2f}.."
        f"{ld['max_load1']:.2f} over the readings before/after each measurement (these include the "
        f"benchmark's own threads); other programs' runnable tasks during a measurement averaged "
        f"up to {ld['max_foreign_mean']:.2f}; hypervisor steal up to {ld['max_steal_pct']:.1f}%",
        "- Columns: load 1m = the 1-minute load averages read before and after the row's "
        "measurements (min..max); others = the highest mean number of other programs' runnable "
        "tasks during one of them"
        + ("; CPU speed = the slowest probe reading next to one of them, as a share of full speed"
           if speed_line else ""),
    ]
    out += ([speed_line] if speed_line else []) + [""]
    header = ["workload", "BN", "thr", "bnlab train img/s", "torch train img/s", "train ratio",
              "bnlab infer img/s", "torch infer img/s", "infer ratio", "bnlab RSS MB",
              "torch RSS MB", "load 1m", "others"]
    with_speed = speed_line is not None
    if with_speed:
        header.append("CPU speed")
    rows = []
    for r in doc["rows"]:
        b, t = r["bnlab"], r["torch"]
        rows.append([f"{r['workload']} {r['model']}", "yes" if r["norm"] == "batch" else "no",
                     str(r["threads"]), fmt_rate(b["train"]), fmt_rate(t["train"]),
                     fmt_ratio(r["train_ratio"]), fmt_rate(b["infer"]), fmt_rate(t["infer"]),
                     fmt_ratio(r["infer_ratio"]), f"{b['peak_rss_mb']:.0f}",
                     f"{t['peak_rss_mb']:.0f}", f"{r['load1_min']:.2f}..{r['load1_max']:.2f}",
                     f"{r['foreign_max']:.2f}"])
        if with_speed:
            share = r.get("speed_share_min")
            rows[-1].append("" if share is None else f"{share:.2f}")
    if not quiet:
        out += [f"{NOT_QUIET}:", ""]
    out += [md_table(header, rows), ""]

    # BN's cost and thread scaling, from the medians.
    by_key = {(r["workload"], r["norm"], r["threads"]): r for r in doc["rows"]}
    threads = s["threads"]

    def med(w, norm, t, side, phase):
        r = by_key.get((w, norm, t))
        return r[side][phase]["median"] if r else None

    def ratio_cell(a, b):
        return f"{a / b:.2f}" if a and b else ""

    header2 = ["workload", "thr", "no-BN/BN train bnlab", "torch", "no-BN/BN infer bnlab", "torch"]
    if len(threads) > 1:
        header2 += [f"{threads[-1]}/{threads[0]} thr train bnlab (BN)", "torch (BN)",
                    "bnlab (no BN)", "torch (no BN)"]
    rows2 = []
    for w in s["workloads"]:
        for t in threads:
            cells = [f"{w} {WORKLOADS[w]['model']}", str(t)]
            for phase in ("train", "infer"):
                for side in ("bnlab", "torch"):
                    cells.append(ratio_cell(med(w, "none", t, side, phase),
                                            med(w, "batch", t, side, phase)))
            if len(threads) > 1:
                for norm in ("batch", "none"):
                    for side in ("bnlab", "torch"):
                        cells.append(ratio_cell(med(w, norm, t, side, "train"),
                                                med(w, norm, threads[0], side, "train"))
                                     if t == threads[-1] else "")
            rows2.append(cells)
    if not quiet:
        out += [f"{NOT_QUIET}:", ""]
    out += [md_table(header2, rows2), ""]
    return "\n".join(out)


# ---- The PyTorch side (runs in the child process) ----


def build_model(nn, name, bn, shape):
    """The torch.nn.Sequential twin of build_model(name, norm = bn ? batch : none)."""
    C, H, W = shape
    layers = []

    def block(channels, spatial, act):
        if bn:
            layers.append(nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels))
        layers.append(act)

    if name == "paper-mlp":
        layers.append(nn.Flatten())
        d = C * H * W
        for _ in range(3):
            layers.append(nn.Linear(d, 100))
            block(100, False, nn.Sigmoid())
            d = 100
        layers.append(nn.Linear(100, 10))
        for m in layers:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
    elif name == "mlp":
        layers += [nn.Flatten(), nn.Linear(C * H * W, 512)]
        block(512, False, nn.ReLU())
        layers.append(nn.Linear(512, 256))
        block(256, False, nn.ReLU())
        layers.append(nn.Linear(256, 10))
    elif name == "lenet":
        layers.append(nn.Conv2d(C, 32, 5, padding=2))
        block(32, True, nn.ReLU())
        layers.append(nn.MaxPool2d(2))
        layers.append(nn.Conv2d(32, 64, 5, padding=2))
        block(64, True, nn.ReLU())
        layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * (H // 4) * (W // 4), 128)]
        block(128, False, nn.ReLU())
        layers += [nn.Dropout(0.5), nn.Linear(128, 10)]
    elif name == "cifar-cnn":
        c, h, w = C, H, W
        for width in (32, 64, 128):
            layers.append(nn.Conv2d(c, width, 3, padding=1))
            block(width, True, nn.ReLU())
            layers.append(nn.Conv2d(width, width, 3, padding=1))
            block(width, True, nn.ReLU())
            layers.append(nn.MaxPool2d(2))
            c, h, w = width, h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(128 * h * w, 10)]
    else:
        raise ValueError(f"unknown model {name}")
    return nn.Sequential(*layers)


def measure(step, batch, warmup, seconds, repeats):
    """Warm-up (>= 2 steps, >= warmup s) sizes a repeat to ~seconds; returns images/s stats
    (the same scheme as apps/cmd_bench.cpp)."""
    t0 = time.perf_counter()
    warm = 0
    elapsed = 0.0
    while warm < 2 or elapsed < warmup:
        step()
        warm += 1
        elapsed = time.perf_counter() - t0
    steps = max(1, int(seconds / (elapsed / warm) + 0.5))
    rates = []
    for _ in range(repeats):
        s0 = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch / (time.perf_counter() - s0))
    return dict(median=statistics.median(rates), min=min(rates), max=max(rates),
                steps_per_repeat=steps, repeats=repeats)


def torch_blas_info(torch, threads):
    """Which OpenBLAS this process really loaded (from /proc/self/maps) and what it says."""
    import ctypes

    with open("/proc/self/maps") as f:
        paths = blas_mappings(f.read())
    if not openmp_openblas(paths):
        sys.exit(f"compare_pytorch: torch's BLAS is not (only) the OpenMP OpenBLAS of "
                 f"{OPENMP_BLAS_DIR}; mapped BLAS libraries: {paths or 'none'}. Is "
                 f"libopenblas0-openmp installed?")
    path = next(p for p in paths if os.path.basename(p).startswith("libopenblas"))
    lib = ctypes.CDLL(path)  # already loaded: the same handle torch uses
    lib.openblas_get_config.restype = ctypes.c_char_p
    lib.openblas_get_corename.restype = ctypes.c_char_p
    parallel = {0: "sequential", 1: "pthreads", 2: "OpenMP"}.get(lib.openblas_get_parallel(),
                                                                  "unknown")
    capability = "unknown"
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            capability = line.split(":", 1)[1].strip()
    return dict(blas_paths=paths, blas_path=path,
                blas_config=lib.openblas_get_config().decode(),
                blas_core=lib.openblas_get_corename().decode(), blas_parallel=parallel,
                blas_threads=lib.openblas_get_num_threads(), torch_threads=torch.get_num_threads(),
                torch_interop_threads=torch.get_num_interop_threads(), requested_threads=threads,
                cpu_capability=capability, mkldnn=torch.backends.mkldnn.is_available())


def run_torch_child(workload, norm, threads, args):
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        sys.exit(f"compare_pytorch: {sys.executable} cannot import torch ({e}); on Debian 12, as "
                 f"root: apt-get install -y python3-torch")

    torch.set_num_threads(threads)
    info = torch_blas_info(torch, threads)
    w = WORKLOADS[workload]
    torch.manual_seed(42)
    model = build_model(nn, w["model"], norm == "batch", w["shape"])
    if w["opt"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=w["momentum"])
    g = torch.Generator().manual_seed(7)
    x = torch.randn((w["batch"],) + w["shape"], generator=g)
    y = torch.randint(0, 10, (w["batch"],), generator=g)

    model.train()

    def train_step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        # set_to_none: bnlab's zero_grad also drops the buffers (PyTorch 2.x's default).
        opt.zero_grad(set_to_none=True)

    out = dict(workload=workload, model=w["model"], norm=norm, threads=threads, batch=w["batch"],
               optimizer=w["opt"], torch=torch.__version__, **info)
    out["train"] = measure(train_step, w["batch"], args.warmup, args.seconds, args.inner_repeats)
    model.eval()
    with torch.no_grad():
        out["infer"] = measure(lambda: model(x), w["batch"], args.warmup, args.seconds,
                               args.inner_repeats)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("BNLAB_BENCH " + json.dumps(out), flush=True)


# ---- The parent: system probes, one measured process, the whole run ----


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def loadavg():
    text = read_text("/proc/loadavg")
    return parse_loadavg(text) if text else None


def cpu_times():
    text = read_text("/proc/stat")
    return parse_cpu_times(text) if text else None


def own_running(pid):
    """Runnable threads of process pid (None once it is gone)."""
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return None
    texts = [t for t in (read_text(f"{base}/{tid}/stat") for tid in tids) if t]
    return running_threads(texts)


def cpu_speed_probe(cpu, iterations=300_000, repeats=3):
    """Iterations/s of a fixed pure-Python loop on `cpu` (this process moves there for it and
    back), the best of `repeats`: how fast that CPU runs right now, in about 20 ms. Any steady
    loop would do; the readings are only compared with each other."""
    home = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    best = None
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            x = 0
            for i in range(iterations):
                x += i
            t = time.perf_counter() - t0
            best = t if best is None or t < best else best
    finally:
        os.sched_setaffinity(0, home)
    return iterations / best


class CpuSpeed:
    """Probe readings of the CPUs and the run's full speed: the fastest reading seen so far (all
    CPUs of a machine are taken to be alike when nothing slows them)."""

    def __init__(self, cpus):
        self.cpus = sorted(cpus)
        self.full = 0.0

    def read(self, cpus=None):
        got = {c: cpu_speed_probe(c) for c in (cpus or self.cpus)}
        self.full = max([self.full] + list(got.values()))
        return got

    def calibrate(self, readings=5):
        for _ in range(readings):
            self.read()
            time.sleep(0.2)

    def wait_for_full_speed(self, cpus=None, seconds=30.0):
        """Before a round is measured again: waits up to `seconds` until every CPU of the row
        probes at FULL_SPEED_SHARE of full speed or more."""
        t0 = time.monotonic()
        while True:
            got = self.read(cpus)
            share = min(got.values()) / self.full
            if share >= FULL_SPEED_SHARE or time.monotonic() - t0 >= seconds:
                return
            print(f"# waiting for full CPU speed (slowest CPU {share:.2f}), "
                  f"{seconds - (time.monotonic() - t0):.0f} s left", file=sys.stderr, flush=True)
            time.sleep(2.0)


def run_measured(cmd, env, label, cpus=None, speed=None):
    """Runs one measurement process (pinned to `cpus` when given); returns its BNLAB_BENCH JSON and
    the conditions around it: load average before/after, other programs' runnable tasks while it
    ran, hypervisor steal, and (with a CpuSpeed) its CPUs' probe readings right before and after
    and the slowest of them as a share of full speed."""
    speed_before = speed.read(cpus) if speed else {}
    before, stat0 = loadavg(), cpu_times()
    t0 = time.monotonic()
    samples, maps = [], []
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True, preexec_fn=pin)
        # sleep + poll, not wait(timeout): Popen.wait polls every few ms; this wakes 10 times/s.
        while True:
            time.sleep(SAMPLE_INTERVAL)
            if p.poll() is not None:
                break
            la, own = loadavg(), own_running(p.pid)
            if la and own is not None:
                samples.append(foreign_runnable(la["running"], own))
            if not maps:
                maps = blas_mappings(read_text(f"/proc/{p.pid}/maps") or "")
        wall = time.monotonic() - t0
        after, stat1 = loadavg(), cpu_times()
        speed_after = speed.read(cpus) if speed else {}
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        sys.exit(f"compare_pytorch: {label} failed (exit {p.returncode}): {' '.join(cmd)}\n"
                 f"{stdout[-2000:]}{stderr[-4000:]}")
    result = None
    for line in reversed(stdout.splitlines()):
        if line.startswith("BNLAB_BENCH "):
            result = json.loads(line[len("BNLAB_BENCH "):])
            break
    if result is None:
        sys.exit(f"compare_pytorch: {label} printed no result:\n{stdout}\n{stderr}")
    return dict(label=label, result=result, load_before=before, load_after=after,
                foreign_mean=statistics.mean(samples) if samples else None,
                foreign_max=max(samples) if samples else None, samples=len(samples),
                steal_pct=steal_percent(stat0, stat1), wall_s=wall, blas_paths=maps,
                cpu_speed=dict(before=speed_before, after=speed_after),
                speed_share=speed_share([speed_before, speed_after], speed.full if speed else 0))


def lscpu_summary():
    try:
        text = subprocess.run(["lscpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=dict(os.environ, LC_ALL="C")).stdout
    except OSError:
        text = ""
    info = parse_lscpu(text)
    if info["cpus"] is None:
        info["cpus"] = os.cpu_count()
    info["kernel"] = os.uname().release
    return info


def bnlab_version(exe, env):
    p = subprocess.run([exe, "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=env)
    first = p.stdout.splitlines()[0] if p.stdout else ""
    return first.removeprefix("bnlab ").strip() or "unknown"


def settle(limit, seconds, read_load=None, sleep=time.sleep, clock=time.monotonic):
    """Waits up to `seconds` for the 1-minute load average to fall to the limit (e.g. after the
    build); returns how long it waited. read_load, sleep and clock are for tests."""
    read_load = read_load or loadavg
    t0 = clock()
    while seconds > 0 and clock() - t0 < seconds:
        la = read_load()
        if la is None or la["load1"] <= limit:
            break
        print(f"# waiting for the load average ({la['load1']:.2f} > {limit:.2f}), "
              f"{seconds - (clock() - t0):.0f} s left", file=sys.stderr, flush=True)
        sleep(5)
    return clock() - t0


def settle_around_calibration(limit, seconds, calibrate, wait=settle):
    """Waits for the load average (wait: settle), runs calibrate (the CPU speed probes), and waits
    again with what is left of `seconds`: the probes' own work raises the load average a little,
    and a run whose first wait ended just under the limit was then refused at once (0.67 against
    0.60 on 2026-12-07). Returns the seconds waited in all."""
    waited = wait(limit, seconds)
    calibrate()
    return waited + wait(limit, max(0.0, seconds - waited))


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # readers see the old file or the whole new one


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bnlab", help="path to the bnlab executable")
    ap.add_argument("--quick", action="store_true",
                    help="a short run to check the setup: threads 1, 2 rounds, 0.1 s repeats, "
                         "no settling (explicit flags still win)")
    ap.add_argument("--threads", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--workloads", default="W1,W2,W3,W4")
    ap.add_argument("--repeats", type=int, help="alternating rounds per row (default 3)")
    ap.add_argument("--inner-repeats", type=int, default=3,
                    help="timed repeats inside each process (its median is the round's value)")
    ap.add_argument("--seconds", type=float, help="target seconds per timed repeat (default 0.3)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per process (default 0.3)")
    ap.add_argument("--settle", type=float,
                    help="wait up to this many seconds for a quiet load average first (default 60)")
    ap.add_argument("--out-dir", help="where the .json and .md go (default bench/results)")
    ap.add_argument("--keep-coretype", action="store_true",
                    help="keep an inherited OPENBLAS_CORETYPE on both sides (by default it is "
                         "removed, so OpenBLAS uses the CPU's own kernels)")
    ap.add_argument("--max-isa", choices=sorted(ISA_CAPS),
                    help="emulate a CPU without the wider instruction sets: caps both sides' "
                         "run-time dispatch (bnlab, ATen, oneDNN, OpenBLAS); compare_pytorch.sh "
                         "then also builds bnlab for that CPU instead of -march=native")
    ap.add_argument("--retries", type=int,
                    help="measure a round again, up to this many times, when other programs ran "
                         "during it (default 2; 0 keeps every round)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin rows with fewer threads than CPUs (by default both sides of "
                         "such a row run on the same, lowest-numbered CPUs)")
    ap.add_argument("--require-quiet", action="store_true",
                    help="write no table (exit 3) unless the machine was quiet throughout; "
                         "stop before measuring if it is not quiet at the start")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quick = dict(threads="1", repeats=2, seconds=0.1, warmup=0.1, settle=0.0, retries=0)
    full = dict(threads="1,2", repeats=3, seconds=0.3, warmup=0.3, settle=60.0, retries=2)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if (args.repeats < 1 or args.inner_repeats < 1 or args.seconds <= 0 or args.warmup < 0 or
            args.settle < 0 or args.retries < 0):
        ap.error("--repeats and --inner-repeats >= 1, --seconds > 0, --warmup, --settle and "
                 "--retries >= 0")
    return ap, args


def main(argv=None):
    ap, args = parse_args(argv)
    if args.child:
        wl, norm, threads = args.child.split(":")
        run_torch_child(wl, norm, int(threads), args)
        return 0
    if not args.bnlab or not os.access(args.bnlab, os.X_OK):
        ap.error("--bnlab must name the bnlab executable")
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--threads wants comma-separated integers; got '{args.threads}'")
    if not threads or min(threads) < 1:
        ap.error(f"--threads wants positive integers; got '{args.threads}'")
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w}; expected W1..W4")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = args.out_dir or os.path.join(repo, "bench", "results")

    try:
        probe = subprocess.run([TORCH_PYTHON, "-c", "import torch"],
                               env=child_env(os.environ, 1, args.keep_coretype, args.max_isa),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        probe = subprocess.CompletedProcess([], 1, stderr=str(e))
    if probe.returncode != 0:
        sys.exit(f"compare_pytorch: {TORCH_PYTHON} cannot import torch, so there is nothing to "
                 f"compare against; on Debian 12, as root: apt-get install -y python3-torch\n"
                 f"{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ''}")
    machine = lscpu_summary()
    cpus = machine["cpus"]
    limit = QUIET_LOAD_PER_CPU * cpus
    started = utc_now()
    speed = CpuSpeed(os.sched_getaffinity(0))
    waited = settle_around_calibration(limit, args.settle, speed.calibrate)
    start_load = loadavg()
    refusal = start_refusal(args.require_quiet, cpus, start_load["load1"] if start_load else None)
    if refusal:
        print(f"compare_pytorch: {NOT_QUIET} at the start, after waiting {waited:.0f} s; nothing "
              f"measured (--require-quiet; without it the run is measured and marked):",
              file=sys.stderr)
        for r in refusal:
            print(f"  - {r}", file=sys.stderr)
        return 3
    inner = ["--repeats", str(args.inner_repeats), "--seconds", str(args.seconds), "--warmup",
             str(args.warmup)]
    me = [TORCH_PYTHON, os.path.abspath(__file__), "--inner-repeats", str(args.inner_repeats),
          "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    # measurements: the ones the tables use; discarded: rounds measured again because other
    # programs ran during them (kept in the JSON, counted in the report).
    rows, measurements, discarded = [], [], []
    for w in workloads:
        for t in threads:
            env = child_env(os.environ, t, args.keep_coretype, args.max_isa)
            pin = None if args.no_pin else pinned_cpus(os.sched_getaffinity(0), t)
            for norm in ("none", "batch"):
                key = f"{w}:{norm}:{t}"
                got = {"bnlab": [], "torch": []}
                for rnd in range(1, args.repeats + 1):
                    pair, gone = measure_round(
                        lambda side, cmd, label: run_measured(cmd, env, label, pin, speed),
                        (("bnlab", [args.bnlab, "bench"] + inner + ["--child", key]),
                         ("torch", me + ["--child", key])),
                        key, rnd, limit, args.retries,
                        before_retry=lambda: speed.wait_for_full_speed(pin))
                    discarded.extend(gone)
                    for m in pair:
                        got[m["side"]].append(m)
                        measurements.append(m)
                row = dict(workload=w, model=WORKLOADS[w]["model"], norm=norm, threads=t,
                           pinned=pin)
                for side in ("bnlab", "torch"):
                    res = [m["result"] for m in got[side]]
                    row[side] = dict(train=summarize([r["train"]["median"] for r in res]),
                                     infer=summarize([r["infer"]["median"] for r in res]),
                                     peak_rss_mb=max(r["peak_rss_mb"] for r in res))
                for phase in ("train", "infer"):
                    row[f"{phase}_ratio"] = summarize(paired_ratios(
                        [m["result"][phase]["median"] for m in got["bnlab"]],
                        [m["result"][phase]["median"] for m in got["torch"]]))
                mine = got["bnlab"] + got["torch"]
                loads = [m[k]["load1"] for m in mine for k in ("load_before", "load_after") if m[k]]
                row["load1_min"], row["load1_max"] = min(loads), max(loads)
                row["foreign_max"] = max(m["foreign_mean"] or 0.0 for m in mine)
                shares = [m["speed_share"] for m in mine if m["speed_share"] is not None]
                row["speed_share_min"] = min(shares) if shares else None
                row["measurements"] = mine
                rows.append(row)

    quiet, limit, reasons = quiet_verdict(cpus, start_load["load1"] if start_load else None,
                                          measurements)
    all_loads = [m[k]["load1"] for m in measurements for k in ("load_before", "load_after")
                 if m[k]]
    first_b = next(m for m in measurements if m["side"] == "bnlab")
    first_t = next(m for m in measurements if m["side"] == "torch")
    tr = first_t["result"]
    doc = dict(
        schema="bnlab-compare-pytorch/2", quiet=quiet,
        verdict="quiet" if quiet else NOT_QUIET, reasons=reasons,
        started_utc=started, finished_utc=utc_now(), command=sys.argv,
        machine=machine,
        settings=dict(repeats=args.repeats, retries=args.retries, pin=not args.no_pin,
                      inner_repeats=args.inner_repeats,
                      seconds=args.seconds, warmup=args.warmup, threads=threads,
                      workloads=workloads, quick=args.quick, max_isa=args.max_isa,
                      order="per row: bnlab, torch alternating for `repeats` rounds"),
        env=dict(set=", ".join(f"{k}={v}"
                               for k, v in child_env(os.environ, 1, args.keep_coretype, args.max_isa).items()
                               if k in ("LD_LIBRARY_PATH", "MALLOC_MMAP_THRESHOLD_",
                                        "MALLOC_TRIM_THRESHOLD_")
                               or k in ISA_CAPS.get(args.max_isa, {})),
                 inherited={k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
                 removed={FORCED_CORE: os.environ[FORCED_CORE]}
                 if FORCED_CORE in os.environ and not args.keep_coretype and not args.max_isa
                 else {}),
        bnlab=dict(exe=os.path.abspath(args.bnlab),
                   version=bnlab_version(args.bnlab,
                                         child_env(os.environ, threads[0], args.keep_coretype, args.max_isa)),
                   blas=first_b["result"].get("blas", "unknown"),
                   gemm=first_b["result"].get("gemm", "openblas"),
                   blas_parallel=first_b["result"].get("blas_parallel", "unknown"),
                   blas_paths=first_b["blas_paths"],
                   blas_threads=sorted({m["result"].get("blas_threads", -1)
                                        for m in measurements if m["side"] == "bnlab"})),
        torch=dict(python=TORCH_PYTHON, version=tr["torch"], blas_path=tr["blas_path"],
                   blas_config=tr["blas_config"], blas_core=tr["blas_core"],
                   blas_parallel=tr["blas_parallel"], cpu_capability=tr["cpu_capability"],
                   mkldnn=tr["mkldnn"],
                   blas_threads=sorted({m["result"]["blas_threads"]
                                        for m in measurements if m["side"] == "torch"})),
        load=dict(limit=limit, per_cpu=QUIET_LOAD_PER_CPU, settle_waited_s=round(waited, 1),
                  start=start_load, start_load1=start_load["load1"] if start_load else float("nan"),
                  min_load1=min(all_loads), max_load1=max(all_loads),
                  max_foreign_mean=max(m["foreign_mean"] or 0.0 for m in measurements),
                  max_steal_pct=max((m["steal_pct"] or 0.0) for m in measurements)),
        speed=dict(full_iterations_per_s=speed.full, full_speed_share=FULL_SPEED_SHARE,
                   min_share=min((m["speed_share"] for m in measurements
                                  if m["speed_share"] is not None), default=None),
                   slowed=[m["label"] for m in measurements if slowed(m)]),
        rows=rows,
        discarded=[dict(label=m["label"], attempt=m["attempt"], foreign_mean=m["foreign_mean"],
                        speed_share=m["speed_share"], train=m["result"]["train"]["median"])
                   for m in discarded])

    os.makedirs(out_dir, exist_ok=True)
    stamp = started.replace("-", "").replace(":", "")
    base = os.path.join(out_dir, f"compare_pytorch-{stamp}" + ("" if quiet else "-NOT-QUIET"))
    write_atomic(base + ".json", json.dumps(doc, indent=2) + "\n")
    print(f"# wrote {base}.json", file=sys.stderr)
    if not quiet and args.require_quiet:
        print(f"compare_pytorch: {NOT_QUIET}; no table written (--require-quiet):", file=sys.stderr)
        for r in reasons:
            print(f"  - {r}", file=sys.stderr)
        return 3
    md = format_markdown(doc)
    write_atomic(base + ".md", md)
    print(md)
    print(f"# wrote {base}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

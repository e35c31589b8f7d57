#!/usr/bin/python3
"""Training fidelity: do bnlab's learning curves fall inside PyTorch's seed spread?

Runs `bnlab ablate` for a preset (or --vary grid), then trains the PyTorch twin of every arm it ran
(the same architecture, init distribution, learning rate, batch size, data, normalization of the
inputs and evaluation schedule, read from each run's config.json; its own random streams) for as
many seeds, and compares per arm and evaluation step:

    bnlab's mean over its seeds  vs  PyTorch's mean +/- t(0.975, n-1) * s * sqrt(1/n + 1/m)

(n PyTorch seeds with sample std s, m bnlab seeds): where the mean of m draws from PyTorch's seed
distribution falls with 95 % probability, a two-sample t interval that uses PyTorch's spread only.
With 3 seeds a min..max range would be far too narrow (3 points) and is shown for information.
The half-width has a floor (--floor-acc, --floor-loss) so that points where every seed of both
sides sits on one value (a plateau at the commonest class) do not demand bit equality.
Accuracy and loss of the evaluation split are both checked. Verdict: faithful when the number of
points outside is at most the 99th percentile of Binomial(points, 0.05), what a faithful bnlab
would give by chance; else outside. Exit status: 0 faithful, 1 outside, 2 cannot run.

    bash tools/fidelity.sh --preset fig1 --steps 2000 --eval-every 100 --seeds 3
    bash tools/fidelity.sh --vary norm=batch,batch-renorm --renorm-warmup 100 --renorm-ramp 400 \
        --steps 2000 --eval-every 100 --seeds 3
    /usr/bin/python3 tools/fidelity.py --exe build/bnlab --preset fig1 --steps 300 --seeds 2

Any other option is passed to `bnlab ablate` (e.g. --model lenet --vary norm=none,batch). The twin
supports the zoo (paper-mlp, deep-mlp, mlp, lenet, cifar-cnn; norms none, batch, batch-renorm
(tools/torch_batch_renorm.py, with the run's schedule), layer, group, instance; placement; dropout;
init default or normal:S), plain or momentum SGD with a constant rate, label smoothing, on mnist, fashion-mnist and cifar10 without augmentation or a validation
split; an arm it cannot mirror stops the tool with status 2 rather than being compared wrongly.
"""

import argparse
import csv
import gzip
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# t(0.975, df) for df = 1..30; beyond, the normal quantile is close enough (2.04 at 30).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


class CannotRun(Exception):
    """The comparison cannot be made (exit status 2)."""


# ---- statistics (pure; tests/tools/test_fidelity.py) ----


def t975(df):
    if df < 1:
        raise ValueError("need at least two seeds for a spread")
    return T975[df - 1] if df <= len(T975) else 1.96


def mean_std(values):
    n = len(values)
    m = sum(values) / n
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, s


def interval(torch_values, bnlab_count, floor):
    """(low, high) for the mean of bnlab_count runs drawn from torch_values' distribution."""
    m, s = mean_std(torch_values)
    n = len(torch_values)
    half = max(t975(n - 1) * s * math.sqrt(1.0 / n + 1.0 / bnlab_count), floor)
    return m - half, m + half


def binomial_quantile(n, p, q):
    """The smallest k with P(X <= k) >= q for X ~ Binomial(n, p)."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k
    return n


def compare(bnlab_runs, torch_runs, floors):
    """bnlab_runs, torch_runs: {arm: {seed: {step: {"acc": a, "loss": l}}}}. Returns rows
    [{arm, step, metric, bnlab, torch_mean, low, high, tmin, tmax, inside}], one per arm, step
    and metric (acc, loss), at the steps both sides evaluated in every seed."""
    rows = []
    for arm, b_seeds in bnlab_runs.items():
        t_seeds = torch_runs[arm]
        steps = set.intersection(*(set(r) for r in list(b_seeds.values()) + list(t_seeds.values())))
        for step in sorted(steps):
            for metric in ("acc", "loss"):
                b = [r[step][metric] for r in b_seeds.values()]
                t = [r[step][metric] for r in t_seeds.values()]
                low, high = interval(t, len(b), floors[metric])
                bm = sum(b) / len(b)
                rows.append({"arm": arm, "step": step, "metric": metric, "bnlab": bm,
                             "torch_mean": sum(t) / len(t), "low": low, "high": high,
                             "tmin": min(t), "tmax": max(t), "inside": low <= bm <= high})
    return rows


def verdict(rows):
    """(faithful, outside count, allowed)."""
    outside = sum(not r["inside"] for r in rows)
    allowed = binomial_quantile(len(rows), 0.05, 0.99)
    return outside <= allowed, outside, allowed


def markdown(rows, b_seeds, t_seeds):
    out = [f"| arm | step | bnlab acc (mean of {b_seeds}) | PyTorch acc: mean [min, max] | "
           f"95 % interval | | bnlab loss | PyTorch loss: mean [min, max] | 95 % interval | |",
           "|---|---:|---:|---|---|---|---:|---|---|---|"]
    by_key = {(r["arm"], r["step"], r["metric"]): r for r in rows}
    for arm, step in dict.fromkeys((r["arm"], r["step"]) for r in rows):
        cells = [arm, str(step)]
        for metric, fmt in (("acc", "{:.4f}"), ("loss", "{:.4f}")):
            r = by_key[(arm, step, metric)]
            f = fmt.format
            cells += [f(r["bnlab"]), f"{f(r['torch_mean'])} [{f(r['tmin'])}, {f(r['tmax'])}]",
                      f"{f(r['low'])}..{f(r['high'])}", "in" if r["inside"] else "**out**"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---- data, as bnlab's data/ reads and normalizes it ----

MEAN_STD = {"mnist": ([0.1307], [0.3081]), "fashion-mnist": ([0.2860], [0.3530]),
            "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])}


def _read_idx(path):
    import numpy as np
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            raw = (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise CannotRun(f"fidelity: {path} not found (bash scripts/fetch_data.sh)")


def load_split(dataset, data_dir, split):
    """(uint8 images [N, C, H, W], int64 labels): the train split and the evaluation split bnlab
    evaluates on without --val-split (test; cifar10: its batch 5, "val")."""
    import numpy as np
    if dataset in ("mnist", "fashion-mnist"):
        stem = "train" if split == "train" else "t10k"
        d = os.path.join(data_dir, dataset)
        x = _read_idx(os.path.join(d, f"{stem}-images-idx3-ubyte"))
        y = _read_idx(os.path.join(d, f"{stem}-labels-idx1-ubyte"))
        return x[:, None, :, :], y.astype(np.int64)
    if dataset == "cifar10":
        batches = range(1, 5) if split == "train" else [5]
        xs, ys = [], []
        for b in batches:
            p = os.path.join(data_dir, "cifar-10", f"data_batch_{b}.bin")
            if not os.path.exists(p):
                raise CannotRun(f"fidelity: {p} not found")
            raw = np.fromfile(p, dtype=np.uint8).reshape(-1, 3073)
            ys.append(raw[:, 0].astype(np.int64))
            xs.append(raw[:, 1:].reshape(-1, 3, 32, 32))
        return np.concatenate(xs), np.concatenate(ys)
    raise CannotRun(f"fidelity: the twin does not read dataset {dataset}")


def normalized(torch, x, dataset):
    mean, std = MEAN_STD[dataset]
    t = torch.from_numpy(x.astype("float32")) / 255.0
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (t - m) / s


# ---- the twin ----


def check_supported(cfg):
    """Raises CannotRun for a setting the twin does not mirror."""
    model = cfg["model"]
    problems = []
    if model not in ("paper-mlp", "deep-mlp", "mlp", "lenet", "cifar-cnn"):
        problems.append(f"model {model}")
    if cfg["norm"] not in ("none", "batch", "batch-renorm", "layer", "group", "instance"):
        problems.append(f"norm {cfg['norm']}")
    init = cfg.get("init") or ""
    if not (init in ("", "default") or init.startswith("normal:")):
        problems.append(f"init {init}")
    if cfg.get("optimizer", "sgd") != "sgd":
        problems.append(f"optimizer {cfg['optimizer']}")
    for key, ok in (("schedule", "constant"), ("augment", False), ("val_split", 0),
                    ("weight_decay", 0), ("clip_grad_norm", 0), ("nesterov", False)):
        if key in cfg and cfg[key] != ok:
            problems.append(f"{key} {cfg[key]}")
    if cfg.get("dataset") not in MEAN_STD:
        problems.append(f"dataset {cfg.get('dataset')}")
    if problems:
        raise CannotRun("fidelity: the PyTorch twin does not mirror " + ", ".join(problems))


def default_init(model):
    return "normal:0.01" if model == "paper-mlp" else "default"


def build_twin(cfg, geometry, classes):
    import torch.nn as nn
    from compare_pytorch import build_torch_model
    dropout = cfg.get("dropout", -1.0)
    if dropout < 0:
        dropout = 0.5 if cfg["model"] == "lenet" else 0.0
    # batch-renorm's schedule (config.json's model.renorm_*; absent before it existed).
    renorm = {key: cfg[f"renorm_{name}"]
              for key, name in (("r_max", "rmax"), ("d_max", "dmax"), ("warmup", "warmup"),
                                ("ramp", "ramp")) if f"renorm_{name}" in cfg}
    net = build_torch_model(cfg["model"], cfg["norm"], cfg.get("placement", "before"),
                            cfg.get("groups", 8), classes, dropout, cfg.get("bn_eps", 1e-5),
                            cfg.get("bn_momentum", 0.1), geometry, renorm)
    init = cfg.get("init") or default_init(cfg["model"])
    if init.startswith("normal:"):
        std = float(init[len("normal:"):])
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, std)
                nn.init.zeros_(m.bias)
    return net  # "default": torch's own reset_parameters, which bnlab's default mirrors


def train_twin(job):
    """One PyTorch run: {step: {"acc", "loss"}} on the evaluation split, step 0 included."""
    _, cfg, seed, data_dir, threads = job
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dataset = cfg["dataset"]
    xtr, ytr = load_split(dataset, data_dir, "train")
    xev, yev = load_split(dataset, data_dir, "eval")
    xtr, xev = normalized(torch, xtr, dataset), normalized(torch, xev, dataset)
    ytr, yev = torch.from_numpy(ytr), torch.from_numpy(yev)
    classes = int(max(ytr.max().item(), yev.max().item())) + 1
    net = build_twin(cfg, tuple(xtr.shape[1:]), max(classes, 2))
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg.get("momentum", 0.0))
    batch, steps = cfg["batch_size"], cfg["steps"]
    per_epoch = len(ytr) // batch  # drop_last, as bnlab's trainer
    every = cfg.get("eval_every") or per_epoch
    smoothing = cfg.get("label_smoothing", 0.0)
    curve = {}

    def evaluate(step):
        net.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(yev), 1000):
                logits = net(xev[i:i + 1000])
                y = yev[i:i + 1000]
                loss_sum += F.cross_entropy(logits, y, label_smoothing=smoothing).item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
        curve[step] = {"acc": correct / len(yev), "loss": loss_sum / len(yev)}
        net.train()

    net.train()
    evaluate(0)
    gen = torch.Generator().manual_seed(seed)
    order = None
    for step in range(1, steps + 1):
        b = (step - 1) % per_epoch
        if b == 0:
            order = torch.randperm(len(ytr), generator=gen)
        idx = order[b * batch:(b + 1) * batch]
        loss = F.cross_entropy(net(xtr[idx]), ytr[idx], label_smoothing=smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            evaluate(step)
    return curve


# ---- bnlab's side ----


def slug(arm):
    """An arm's run directory name under OUT/runs, as train/ablation.cpp's slug()."""
    out = []
    for c in arm:
        if c.isascii() and (c.isalnum() or c in ".-_"):
            out.append(c)
        else:
            out.append({"=": "-", ",": "__"}.get(c, "_"))
    return "".join(out)


def read_bnlab(out_dir):
    """({arm: config}, {arm: {seed: {step: {"acc", "loss"}}}}) from an ablation directory."""
    path = os.path.join(out_dir, "results.csv")
    runs = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            acc = row.get("test_acc") or row.get("val_acc")
            loss = row.get("test_loss") or row.get("val_loss")
            if row.get("diverged", "0") not in ("0", ""):
                raise CannotRun(f"fidelity: bnlab run {row['arm']} seed {row['seed']} diverged")
            runs.setdefault(row["arm"], {}).setdefault(int(row["seed"]), {})[int(row["step"])] = {
                "acc": float(acc), "loss": float(loss)}
    configs = {}
    runs_dir = os.path.join(out_dir, "runs")
    for arm, seeds in runs.items():
        path = os.path.join(runs_dir, slug(arm), f"seed-{min(seeds)}", "config.json")
        try:
            with open(path) as f:
                cfg = json.load(f)
        except OSError as e:
            raise CannotRun(f"fidelity: cannot read arm {arm}'s config: {e}")
        flat = {k: v for k, v in cfg.items() if k != "model"}
        flat.update(cfg["model"])
        flat["model"] = cfg["model"]["name"]
        flat["data_dir"] = cfg.get("provenance", {}).get("data_dir") or cfg["data_dir"]
        configs[arm] = flat
    return configs, runs


def lscpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exe", required=True, help="the bnlab binary")
    p.add_argument("--work", default="runs/fidelity", help="ablation output and the report")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm, on each side (>= 2)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="PyTorch runs at once, one thread each")
    p.add_argument("--floor-acc", type=float, default=0.002,
                   help="smallest half-width of the accuracy interval")
    p.add_argument("--floor-loss", type=float, default=0.002,
                   help="smallest half-width of the loss interval (nats)")
    args, ablate_args = p.parse_known_args(argv)
    if args.seeds < 2:
        p.error("--seeds must be at least 2 (a spread needs two runs)")
    return args, ablate_args


def main(argv=None):
    args, ablate_args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import torch
    except ImportError:
        print(f"fidelity: {sys.executable} cannot import torch; as root: apt-get install -y "
              "python3-torch", file=sys.stderr)
        return 2
    out_dir = os.path.join(args.work, "bnlab")
    cmd = [args.exe, "ablate", "--out", out_dir, "--seeds", str(args.seeds)] + ablate_args
    print("bnlab:", " ".join(cmd), file=sys.stderr)
    t0 = time.time()
    if subprocess.run(cmd, stdout=sys.stderr).returncode != 0:
        print("fidelity: bnlab ablate failed", file=sys.stderr)
        return 2
    t_bnlab = time.time() - t0
    try:
        configs, bnlab_runs = read_bnlab(out_dir)
        for cfg in configs.values():
            check_supported(cfg)
        jobs = [(arm, configs[arm], seed, configs[arm]["data_dir"], 1)
                for arm in bnlab_runs for seed in sorted(bnlab_runs[arm])]
        t0 = time.time()
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            curves = list(pool.map(train_twin, jobs))
        t_torch = time.time() - t0
    except CannotRun as e:
        print(e, file=sys.stderr)
        return 2
    torch_runs = {}
    for (arm, _, seed, _, _), curve in zip(jobs, curves):
        torch_runs.setdefault(arm, {})[seed] = curve
    rows = compare(bnlab_runs, torch_runs, {"acc": args.floor_acc, "loss": args.floor_loss})
    ok, outside, allowed = verdict(rows)
    cfg0 = next(iter(configs.values()))
    text = [
        f"bnlab `{' '.join(['ablate'] + ablate_args)}` vs its PyTorch twin, {args.seeds} seeds "
        f"each, on {cfg0['dataset']} ({lscpu_model()}, torch {torch.__version__}; bnlab "
        f"{t_bnlab:.0f} s, PyTorch {t_torch:.0f} s).",
        "",
        markdown(rows, args.seeds, args.seeds),
        "",
        f"**{'faithful' if ok else 'outside'}**: {outside} of {len(rows)} points outside "
        f"PyTorch's 95 % interval (a faithful bnlab leaves at most {allowed} outside, the 99th "
        f"percentile of Binomial({len(rows)}, 0.05)).",
    ]
    report = "\n".join(text) + "\n"
    with open(os.path.join(args.work, "fidelity.md"), "w") as f:
        f.write(report)
    print(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

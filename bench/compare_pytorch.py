#!/usr/bin/python3
"""bnlab vs PyTorch on the benchmark workloads W1-W4 of issue 6, side by side.

Run with Debian's interpreter, which has python3-torch (bench/compare_pytorch.sh builds bnlab and
runs this):

    /usr/bin/python3 bench/compare_pytorch.py --bnlab BUILD/bnlab [--threads 1,2] [--markdown]

For every workload, thread count and norm (none, batch) it runs bnlab's measurement
(`bnlab bench --child W:norm:threads`) and then the same measurement in PyTorch, each in a fresh
child process (so peak RSS is per workload and the thread count is set before any work), one after
the other: slow drifts of a loaded machine hit both sides alike.

The PyTorch side mirrors apps/cmd_bench.cpp exactly: the same architectures (train/models.cpp with
norm none or batch before the activation; LeNet keeps its Dropout(0.5)), PyTorch's default init
(which bnlab's zoo reproduces; paper-mlp: weights N(0, 0.01), biases 0), one fixed-seed batch of
N(0, 1) images with uniform labels, cross-entropy, the same optimizers (SGD lr 0.01, momentum 0.9 on
W2/W4; Adam lr 1e-3 on W3), the same warm-up/repeat scheme (median, min, max images/s), inference
in eval mode under torch.no_grad(), torch.set_num_threads(n), and peak RSS from getrusage.

Output: per row, images/s of both sides and the ratio bnlab / PyTorch (training and inference), and
peak RSS; then BN's cost (no-BN / BN) and 2-thread scaling for both sides.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

WORKLOADS = {
    "W1": dict(model="paper-mlp", batch=60, opt="sgd", momentum=0.0, shape=(1, 28, 28)),
    "W2": dict(model="mlp", batch=128, opt="sgd", momentum=0.9, shape=(1, 28, 28)),
    "W3": dict(model="lenet", batch=64, opt="adam", momentum=0.0, shape=(1, 28, 28)),
    "W4": dict(model="cifar-cnn", batch=128, opt="sgd", momentum=0.9, shape=(3, 32, 32)),
}


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
    """Warm-up (>= 2 steps, >= warmup s) sizes a repeat to ~seconds; returns images/s stats."""
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


def run_torch_child(workload, norm, threads, args):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
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
               optimizer=w["opt"], torch=torch.__version__)
    out["train"] = measure(train_step, w["batch"], args.warmup, args.seconds, args.repeats)
    model.eval()
    with torch.no_grad():
        out["infer"] = measure(lambda: model(x), w["batch"], args.warmup, args.seconds,
                               args.repeats)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("BNLAB_BENCH " + json.dumps(out), flush=True)


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"compare_pytorch: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("BNLAB_BENCH "):
            return json.loads(line[len("BNLAB_BENCH "):])
    sys.exit(f"compare_pytorch: {' '.join(cmd)} printed no result:\n{p.stdout}\n{p.stderr}")


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bnlab", help="path to the bnlab executable")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--workloads", default="W1,W2,W3,W4")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.3, help="target seconds per repeat")
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeats < 1 or args.seconds <= 0 or args.warmup < 0:
        sys.exit("compare_pytorch: --repeats >= 1, --seconds > 0, --warmup >= 0")

    if args.child:
        wl, norm, threads = args.child.split(":")
        run_torch_child(wl, norm, int(threads), args)
        return
    if not args.bnlab or not os.access(args.bnlab, os.X_OK):
        sys.exit("compare_pytorch: --bnlab must name the bnlab executable")
    threads = [int(t) for t in args.threads.split(",") if t]
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"compare_pytorch: unknown workload {w}; expected W1..W4")
    common = ["--repeats", str(args.repeats), "--seconds", str(args.seconds), "--warmup",
              str(args.warmup)]
    rows = {}
    for w in workloads:
        for t in threads:
            for norm in ("none", "batch"):
                key = f"{w}:{norm}:{t}"
                ours = run([args.bnlab, "bench"] + common + ["--child", key])
                theirs = run([sys.executable, os.path.abspath(__file__)] + common +
                             ["--child", key])
                rows[(w, norm, t)] = (ours, theirs)
                print(f"# {key}: bnlab train {ours['train']['median']:.0f} img/s, "
                      f"torch {theirs['train']['median']:.0f}", file=sys.stderr, flush=True)

    md = args.markdown
    sep = " | " if md else "  "

    def line(cells):
        print(("| " + " | ".join(cells) + " |") if md else sep.join(cells))

    header = ["workload", "BN", "thr", "bnlab train img/s", "torch train img/s", "train ratio",
              "bnlab infer img/s", "torch infer img/s", "infer ratio", "bnlab RSS MB",
              "torch RSS MB"]
    line(header)
    if md:
        line(["---"] * len(header))
    for (w, norm, t), (a, b) in rows.items():
        line([f"{w} {WORKLOADS[w]['model']}", "yes" if norm == "batch" else "no", str(t),
              f"{a['train']['median']:.0f} ({a['train']['min']:.0f}-{a['train']['max']:.0f})",
              f"{b['train']['median']:.0f} ({b['train']['min']:.0f}-{b['train']['max']:.0f})",
              f"{ratio(a['train']['median'], b['train']['median']):.2f}",
              f"{a['infer']['median']:.0f}", f"{b['infer']['median']:.0f}",
              f"{ratio(a['infer']['median'], b['infer']['median']):.2f}",
              f"{a['peak_rss_mb']:.0f}", f"{b['peak_rss_mb']:.0f}"])
    print()
    header2 = ["workload", "thr", "no-BN/BN train bnlab", "torch", "no-BN/BN infer bnlab",
               "torch"]
    if len(threads) > 1:
        header2 += [f"{threads[-1]}/{threads[0]} thr train bnlab (BN)", "torch (BN)",
                    "bnlab (no BN)", "torch (no BN)"]
    line(header2)
    if md:
        line(["---"] * len(header2))
    for w in workloads:
        for t in threads:
            a0, b0 = rows[(w, "none", t)]
            a1, b1 = rows[(w, "batch", t)]
            cells = [f"{w} {WORKLOADS[w]['model']}", str(t),
                     f"{ratio(a0['train']['median'], a1['train']['median']):.2f}",
                     f"{ratio(b0['train']['median'], b1['train']['median']):.2f}",
                     f"{ratio(a0['infer']['median'], a1['infer']['median']):.2f}",
                     f"{ratio(b0['infer']['median'], b1['infer']['median']):.2f}"]
            if len(threads) > 1:
                if t == threads[-1]:
                    s = []
                    for norm in ("batch", "none"):
                        hi, lo = rows[(w, norm, threads[-1])], rows[(w, norm, threads[0])]
                        s += [ratio(hi[0]["train"]["median"], lo[0]["train"]["median"]),
                              ratio(hi[1]["train"]["median"], lo[1]["train"]["median"])]
                    cells += [f"{v:.2f}" for v in s]
                else:
                    cells += [""] * 4
            line(cells)
    if args.json:
        doc = dict(results=[dict(key=list(k), bnlab=v[0], torch=v[1]) for k, v in rows.items()],
                   repeats=args.repeats, seconds=args.seconds, warmup=args.warmup)
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, args.json)  # atomic: readers see the old file or the whole new one


if __name__ == "__main__":
    main()

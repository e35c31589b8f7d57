#!/usr/bin/python3
"""Generates tests/train/fidelity/fig1_reference.csv: PyTorch's training trajectory of the BN
paper's Figure 1 arms on a synthetic problem both sides compute from a formula.

The doctest case "train.fidelity: ..." (tests/train/test_fidelity.cpp) trains bnlab the same way
and compares, so a numerical regression in any op on this path (linear, sigmoid, batch norm in
train and eval mode with running statistics, cross entropy, their gradients, SGD) fails CI without
PyTorch, MNIST or the network. Regenerate (needs Debian's python3-torch) with

    /usr/bin/python3 tests/train/fidelity/make_reference.py > tests/train/fidelity/fig1_reference.csv
    /usr/bin/python3 tests/train/fidelity/make_reference.py --renorm \
        > tests/train/fidelity/renorm_reference.csv

--renorm writes the batch-renorm arm instead (RENORM_STEPS steps): BatchRenorm1d in place of
BatchNorm1d, from tools/torch_batch_renorm.py (PyTorch has none), with a schedule short enough
(RENORM) that r and d are clipped during the ramp and active after it.

Everything random comes from one counter-based hash, so the data, the initial weights and the data
order are the same numbers on both sides (the C++ side in test_fidelity.cpp mirrors the functions
below line for line):

  hash32(x)      lowbias32 (Chris Wellons): x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15;
                 x *= 0x846ca68b; x ^= x >> 16 (uint32 arithmetic)
  uniform(s, i)  (hash32(i ^ hash32(s)) >> 8) * 2^-24, in [0, 1), exact in float32
  label(i)       hash32(i ^ hash32(STREAM_LABEL)) % 10, i = example index (train 0.., eval after)
  image(i)[j]    SIGNAL * proto[label(i)][j] + NOISE * (2 uniform(STREAM_NOISE, i * 784 + j) - 1)
                 with proto[k][j] = 2 uniform(STREAM_PROTO, k * 784 + j) - 1; in float64, then
                 rounded to float32
  weight[o][i]   0.01 * z, z = (u0 + u1 + u2 + u3 - 2) * sqrt(3) (Irwin-Hall: mean 0, std 1) with
                 u_k = uniform(STREAM_WEIGHT + layer, 4 * (o * in + i) + k); biases 0; BN gamma 1,
                 beta 0. (The paper-mlp's N(0, 0.01), from a formula instead of a generator.)
  order(epoch)   the training indices sorted by hash32(i ^ hash32(STREAM_ORDER + epoch)) (hash32
                 is a bijection, so the keys are distinct and the sort is unique)

Training: paper-mlp (784-100-100-100-10, sigmoid; "batch": BatchNorm1d before each sigmoid,
eps 1e-5, momentum 0.1), plain SGD lr 0.5, batch 60 (drop_last), cross entropy; float32, one
thread, deterministic algorithms. Rows: one per step with each arm's training loss of that step
(before the update), and every EVAL_EVERY steps (and at step 0) the eval-mode loss and accuracy on
the evaluation examples.
"""

import math
import sys

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tools"))
from torch_batch_renorm import BatchRenorm1d  # noqa: E402

D = 784
CLASSES = 10
TRAIN = 1200
EVAL = 500
BATCH = 60
LR = 0.5
STEPS = 300
EVAL_EVERY = 25
SIGNAL = 0.15
NOISE = 1.0
STREAM_LABEL, STREAM_PROTO, STREAM_NOISE, STREAM_ORDER, STREAM_WEIGHT = 1, 2, 3, 1000, 100
ARMS = ("none", "batch")
RENORM_STEPS = 100
RENORM = {"r_max": 3.0, "d_max": 1.0, "warmup": 10, "ramp": 20}


def hash32(x):
    x = np.asarray(x, dtype=np.uint32).copy()
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def uniform(stream, index):
    """float64 in [0, 1) with 24 random bits, for uint32 indices."""
    keys = hash32(np.asarray(index, dtype=np.uint32) ^ hash32(stream))
    return (keys >> np.uint32(8)).astype(np.float64) * 2.0**-24


def labels(first, count):
    i = np.arange(first, first + count, dtype=np.uint32)
    return (hash32(i ^ hash32(STREAM_LABEL)) % np.uint32(CLASSES)).astype(np.int64)


def images(first, count):
    proto = 2.0 * uniform(STREAM_PROTO, np.arange(CLASSES * D, dtype=np.uint32)) - 1.0
    proto = proto.reshape(CLASSES, D)
    y = labels(first, count)
    j = np.arange(count * D, dtype=np.uint64) + np.uint64(first * D)
    noise = (2.0 * uniform(STREAM_NOISE, j.astype(np.uint32)) - 1.0).reshape(count, D)
    return (SIGNAL * proto[y] + NOISE * noise).astype(np.float32), y


def weight(layer, out_features, in_features):
    idx = np.arange(out_features * in_features * 4, dtype=np.uint32)
    u = uniform(STREAM_WEIGHT + layer, idx).reshape(-1, 4)
    z = (u[:, 0] + u[:, 1] + u[:, 2] + u[:, 3] - 2.0) * math.sqrt(3.0)
    return (0.01 * z).astype(np.float32).reshape(out_features, in_features)


def order(epoch):
    i = np.arange(TRAIN, dtype=np.uint32)
    return np.argsort(hash32(i ^ hash32(STREAM_ORDER + epoch)), kind="stable")


def build(norm):
    layers, d = [], D
    for _ in range(3):
        layers.append(nn.Linear(d, 100))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(100))
        elif norm == "batch-renorm":
            layers.append(BatchRenorm1d(100, **RENORM))
        layers.append(nn.Sigmoid())
        d = 100
    layers.append(nn.Linear(100, CLASSES))
    net = nn.Sequential(*layers)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, m in enumerate(linears):
            m.weight.copy_(torch.from_numpy(weight(layer, m.out_features, m.in_features)))
            m.bias.zero_()
    return net


def run(norm, xtr, ytr, xev, yev, steps):
    net = build(norm)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    per_epoch = TRAIN // BATCH
    losses, evals = [], {}

    def evaluate(step):
        net.eval()
        with torch.no_grad():
            logits = net(xev)
            evals[step] = (F.cross_entropy(logits, yev).item(),
                           (logits.argmax(1) == yev).double().mean().item())
        net.train()

    evaluate(0)
    for step in range(1, steps + 1):
        epoch, b = divmod(step - 1, per_epoch)
        idx = torch.from_numpy(order(epoch)[b * BATCH:(b + 1) * BATCH])
        loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % EVAL_EVERY == 0:
            evaluate(step)
    return losses, evals


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    xtr, ytr = images(0, TRAIN)
    xev, yev = images(TRAIN, EVAL)
    xtr, ytr, xev, yev = map(torch.from_numpy, (xtr, ytr, xev, yev))
    renorm = sys.argv[1:] == ["--renorm"]
    if sys.argv[1:] and not renorm:
        sys.exit("usage: make_reference.py [--renorm]")
    arms, steps = (("batch-renorm",), RENORM_STEPS) if renorm else (ARMS, STEPS)
    results = {arm: run(arm, xtr, ytr, xev, yev, steps) for arm in arms}
    out = sys.stdout
    out.write(f"# bnlab fidelity reference: tests/train/fidelity/make_reference.py, torch "
              f"{torch.__version__}, float32\n")
    cols = ["step"]
    for arm in arms:
        cols += [f"{arm}_train_loss", f"{arm}_eval_loss", f"{arm}_eval_acc"]
    out.write(",".join(cols) + "\n")
    for step in range(0, steps + 1):
        cells = [str(step)]
        for arm in arms:
            losses, evals = results[arm]
            cells.append("" if step == 0 else f"{losses[step - 1]:.9g}")
            if step in evals:
                cells += [f"{evals[step][0]:.9g}", f"{evals[step][1]:.4f}"]
            else:
                cells += ["", ""]
        out.write(",".join(cells) + "\n")


if __name__ == "__main__":
    main()

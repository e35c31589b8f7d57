#!/usr/bin/python3
"""PyTorch parity check for bnlab's model zoo (optional; docs/pytorch-parity.md).

Run with Debian's interpreter, which has python3-torch:

    /usr/bin/python3 tools/compare_pytorch.py --exe BUILD/tools/export_for_pytorch

(tools/compare_pytorch.sh builds the tool and runs this.) For each case (model, norm):

  bnlab -> torch: export_for_pytorch writes a bnlab-initialized checkpoint, a fixed batch and
    bnlab's outputs. The same architecture is built as a torch.nn.Sequential (mirroring
    train/models.cpp), the checkpoint is loaded with load_state_dict(strict=True), and torch redoes
    the computation:
    eval-mode logits of the initial state, one train-mode forward (logits, cross-entropy loss),
    the BatchNorm running stats and num_batches_tracked after it, eval-mode logits after it, the
    gradients of the loss, and the state after one SGD step (lr 0.1).
  torch -> bnlab: torch builds the model with its own init (torch.manual_seed), gives its norm
    layers non-trivial state (three train-mode forwards of random batches update the running stats
    and num_batches_tracked; affine weights and biases are perturbed), saves the state_dict with
    the writer below (num_batches_tracked as I64), and export_for_pytorch --load reads it. Compared:
    the state bnlab writes back (must be bit-identical, dtypes included), bnlab's eval-mode logits
    against torch's on the same input, and then the same train/eval/grad/SGD sequence as above.

Differences are reported per item as the max absolute difference and the "relative" difference,
max|bnlab - torch| / max|torch| over the tensor (a scale-relative error; an elementwise relative
error is meaningless for entries near zero). An item PASSes when that is <= --tol (1e-4);
num_batches_tracked and the round trip must match exactly. One exception: the bias of a Linear or
Conv2d that feeds a train-mode BatchNorm has gradient exactly 0 in exact arithmetic (BN subtracts
the batch mean), so both frameworks return rounding noise (~1e-8) there; those biases form their
own item, "grads = 0", measured against the model's largest gradient (and, after the SGD step,
against the largest update).

Needs only torch (and numpy, a dependency of Debian's python3-torch); safetensors is read and
written here with struct + json, since the `safetensors` package is not in Debian.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- safetensors (https://github.com/huggingface/safetensors, "Format") ----

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def read_safetensors(path):
    """Returns ({name: tensor} in header order, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    data = blob[8 + n :]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, entry in header.items():
        dtype = _DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        shape = list(entry["shape"])
        if begin == end:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            flat = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype)
            tensors[name] = flat.reshape(shape)
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor}; 8-byte dtypes first in the data buffer so every tensor is aligned."""
    items = [(k, v.detach().cpu().contiguous()) for k, v in tensors.items()]
    order = sorted(range(len(items)), key=lambda i: -items[i][1].element_size())
    chunks, offsets, pos = [], {}, 0
    for i in order:
        name, t = items[i]
        raw = t.numpy().tobytes()  # little-endian on the machines this runs on
        offsets[name] = (pos, pos + len(raw))
        chunks.append(raw)
        pos += len(raw)
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in items:
        header[name] = {
            "dtype": _NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": list(offsets[name]),
        }
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


# ---- the zoo, mirroring train/models.cpp ----


def input_geometry(name):
    return (3, 32, 32) if name == "cifar-cnn" else (1, 28, 28)


def _group_count(channels, limit):
    for g in range(min(limit, channels), 1, -1):
        if channels % g == 0:
            return g
    return 1


def _make_norm(norm, channels, spatial, groups, bn_eps=1e-5, bn_momentum=0.1, renorm=None):
    if norm == "batch":
        bn = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        return bn(channels, eps=bn_eps, momentum=bn_momentum)
    if norm == "batch-renorm":
        # PyTorch has none: tools/torch_batch_renorm.py mirrors bnlab's (BatchNorm's state_dict).
        from torch_batch_renorm import BatchRenorm1d, BatchRenorm2d
        brn = BatchRenorm2d if spatial else BatchRenorm1d
        return brn(channels, eps=bn_eps, momentum=bn_momentum, **(renorm or {}))
    if norm == "layer":
        # Conv: GroupNorm with one group (over C, H, W, per-channel affine), as models.cpp.
        return nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels)
    if norm == "group":
        return nn.GroupNorm(_group_count(channels, groups), channels)
    if norm == "instance":
        # Conv: with affine, without running stats, as models.cpp; lenet's dense layer stays bare.
        return nn.InstanceNorm2d(channels, affine=True) if spatial else None
    if norm == "none":
        return None
    raise ValueError(f"unknown norm {norm}")


def build_torch_model(name, norm, placement="before", groups=8, num_classes=10, dropout=0.0,
                      bn_eps=1e-5, bn_momentum=0.1, geometry=None, renorm=None):
    """The torch.nn.Sequential equivalent of build_model: Dropout(p) where the zoo puts its dropout
    layer, none for p = 0 (the parity check's setting). geometry: (C, H, W) of the inputs, default
    input_geometry(name). renorm: batch-renorm's schedule, {r_max, d_max, warmup, ramp} (default
    BatchRenormOptions')."""
    C, H, W = geometry or input_geometry(name)
    K = num_classes
    layers = []

    def drop():
        if dropout > 0:
            layers.append(nn.Dropout(dropout))

    def norm_act(channels, spatial, act):
        n = _make_norm(norm, channels, spatial, groups, bn_eps, bn_momentum, renorm)
        if n is not None and placement == "before":
            layers.append(n)
        layers.append(act)
        if n is not None and placement == "after":
            layers.append(n)

    if name in ("paper-mlp", "deep-mlp"):
        layers.append(nn.Flatten())
        d = C * H * W
        for _ in range(3 if name == "paper-mlp" else 12):
            layers.append(nn.Linear(d, 100))
            norm_act(100, False, nn.Sigmoid())
            d = 100
        drop()
        layers.append(nn.Linear(100, K))
    elif name == "mlp":
        layers.append(nn.Flatten())
        layers.append(nn.Linear(C * H * W, 512))
        norm_act(512, False, nn.ReLU())
        drop()
        layers.append(nn.Linear(512, 256))
        norm_act(256, False, nn.ReLU())
        drop()
        layers.append(nn.Linear(256, K))
    elif name == "lenet":
        layers.append(nn.Conv2d(C, 32, 5, padding=2))
        norm_act(32, True, nn.ReLU())
        layers.append(nn.MaxPool2d(2))
        layers.append(nn.Conv2d(32, 64, 5, padding=2))
        norm_act(64, True, nn.ReLU())
        layers.append(nn.MaxPool2d(2))
        layers.append(nn.Flatten())
        layers.append(nn.Linear(64 * (H // 4) * (W // 4), 128))
        norm_act(128, False, nn.ReLU())
        drop()
        layers.append(nn.Linear(128, K))
    elif name == "cifar-cnn":
        c, h, w = C, H, W
        for width in (32, 64, 128):
            layers.append(nn.Conv2d(c, width, 3, padding=1))
            norm_act(width, True, nn.ReLU())
            layers.append(nn.Conv2d(width, width, 3, padding=1))
            norm_act(width, True, nn.ReLU())
            layers.append(nn.MaxPool2d(2))
            c, h, w = width, h // 2, w // 2
        layers.append(nn.Flatten())
        drop()
        layers.append(nn.Linear(128 * h * w, K))
    else:
        raise ValueError(f"unknown model {name}")
    return nn.Sequential(*layers)


# ---- comparison ----


class Report:
    def __init__(self, tol):
        self.tol = tol
        self.rows = []  # (case, direction, item, max_abs, rel, ok, note)

    def close(self, case, direction, item, ours, ref, scale=None):
        """ours: bnlab's tensor(s), ref: torch's; lists are compared pairwise and aggregated. The
        relative difference divides by `scale` if given (one number, or one per pair; None: that
        reference's own max|value|)."""
        if not isinstance(ours, (list, tuple)):
            ours, ref = [ours], [ref]
        scales = scale if isinstance(scale, (list, tuple)) else [scale] * len(ours)
        max_abs, rel = 0.0, 0.0
        for a, b, scale in zip(ours, ref, scales):
            a = a.detach().double()
            b = b.detach().double()
            if a.shape != b.shape:
                raise AssertionError(f"{case} {item}: shape {list(a.shape)} vs {list(b.shape)}")
            d = (a - b).abs().max().item() if a.numel() else 0.0
            s = scale if scale is not None else (b.abs().max().item() if b.numel() else 0.0)
            max_abs = max(max_abs, d)
            rel = max(rel, d / s if s > 0 else (0.0 if d == 0 else float("inf")))
        self.rows.append((case, direction, item, max_abs, rel, rel <= self.tol, ""))

    def exact(self, case, direction, item, ok, max_abs=0.0, note=""):
        self.rows.append((case, direction, item, max_abs, None, bool(ok), note))

    def failed(self):
        return [r for r in self.rows if not r[5]]

    # Wide-table columns: item -> header, in order. "grad names" is folded into "grads".
    WIDE = {
        "state keys+dtypes": "keys, dtypes",
        "round trip (bitwise)": "round trip",
        "eval logits (loaded)": "eval, loaded",
        "eval logits (initial)": "eval, initial",
        "train logits": "train logits",
        "loss": "loss",
        "running mean/var": "running stats",
        "num_batches_tracked": "batches tracked",
        "eval logits (after)": "eval, after",
        "grads": "grads",
        "grads = 0 (bias->BN)": "grads = 0",
        "state after SGD step": "SGD step",
    }

    def print_wide(self):
        """Markdown, one row per case and direction, one column per item: "rel (abs)" or "exact"."""
        keys, cells = [], {}
        for case, direction, item, a, r, ok, note in self.rows:
            if (case, direction) not in keys:
                keys.append((case, direction))
            if item == "grad names":
                if not ok:
                    cells[(case, direction, "grads")] = "grad names **FAIL**"
                continue
            text = "exact" if r is None else f"{r:.1e} ({a:.1e})"
            if r is None and note.startswith("="):
                text = f"exact ({note})"
            cells.setdefault((case, direction, item), text + ("" if ok else " **FAIL**"))
        print("| case | direction | " + " | ".join(self.WIDE.values()) + " |")
        print("|---|---|" + "---|" * len(self.WIDE))
        for case, direction in keys:
            row = [cells.get((case, direction, item), "-") for item in self.WIDE]
            print(f"| {case} | {direction} | " + " | ".join(row) + " |")

    def print_table(self, markdown):
        if markdown:
            print("| case | direction | item | max abs diff | max rel diff | result |")
            print("|---|---|---|---|---|---|")
            for case, direction, item, a, r, ok, note in self.rows:
                rel = "exact" if r is None else f"{r:.2e}"
                res = ("PASS" if ok else "FAIL") + (f" ({note})" if note else "")
                print(f"| {case} | {direction} | {item} | {a:.2e} | {rel} | {res} |")
            return
        print(f"{'case':<18} {'dir':<13} {'item':<22} {'max abs':>10} {'max rel':>10}  result")
        for case, direction, item, a, r, ok, note in self.rows:
            rel = "exact" if r is None else f"{r:.2e}"
            res = ("PASS" if ok else "FAIL") + (f" ({note})" if note else "")
            print(f"{case:<18} {direction:<13} {item:<22} {a:>10.2e} {rel:>10}  {res}")


def _split_state(state):
    """(float params and running stats, num_batches_tracked entries) of a state dict."""
    floats = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    counts = {k: v for k, v in state.items() if k.endswith("num_batches_tracked")}
    return floats, counts


def cancelled_biases(model):
    """Names of the biases whose gradient the next layer cancels: a Linear/Conv2d directly followed
    by BatchNorm1d/2d or InstanceNorm2d (placement "before"), which subtract a mean over positions
    that share the bias."""
    layers = list(model.named_children())
    out = []
    for (name, m), (_, nxt) in zip(layers, layers[1:]):
        feeds_bn = isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d))
        if isinstance(m, (nn.Linear, nn.Conv2d)) and feeds_bn:
            out.append(f"{name}.bias")
    return out


def compare_run(report, case, direction, name, norm, placement, out_dir):
    """Loads out_dir/initial_state into a fresh torch model; redoes export_for_pytorch's steps."""
    def path(f):
        return os.path.join(out_dir, f)

    model = build_torch_model(name, norm, placement)
    initial, _ = read_safetensors(path("initial_state.safetensors"))
    expected_keys = list(model.state_dict().keys())
    dtypes_ok = all(
        initial[k].dtype == (torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
        for k in initial
    )
    # Names and dtypes must match; the order may differ (bnlab lists all parameters, then all
    # buffers; torch goes module by module), which neither load_state_dict nor safetensors minds.
    same_order = list(initial.keys()) == expected_keys
    report.exact(
        case,
        direction,
        "state keys+dtypes",
        sorted(initial.keys()) == sorted(expected_keys) and dtypes_ok,
        note=f"{len(initial)} tensors" + ("" if same_order else ", other order"),
    )
    model.load_state_dict(initial, strict=True)

    inputs, _ = read_safetensors(path("input.safetensors"))
    x, labels = inputs["input"].float(), inputs["labels"].long()

    model.eval()
    with torch.no_grad():
        initial_eval = model(x)
    ours, _ = read_safetensors(path("initial_eval_out.safetensors"))
    report.close(case, direction, "eval logits (initial)", ours["logits"], initial_eval)

    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    ours, _ = read_safetensors(path("train_out.safetensors"))
    report.close(case, direction, "train logits", ours["logits"], logits)
    report.close(case, direction, "loss", ours["loss"], loss.reshape(ours["loss"].shape))

    after, _ = read_safetensors(path("after_train_state.safetensors"))
    ref_floats, ref_counts = _split_state(model.state_dict())
    our_floats, our_counts = _split_state(after)
    stats = [k for k in ref_floats if k.endswith("running_mean") or k.endswith("running_var")]
    if stats:
        report.close(
            case,
            direction,
            "running mean/var",
            [our_floats[k] for k in stats],
            [ref_floats[k] for k in stats],
        )
        same = all(int(our_counts[k].item()) == int(ref_counts[k].item()) for k in ref_counts)
        values = sorted({int(v.item()) for v in ref_counts.values()})
        report.exact(
            case, direction, "num_batches_tracked", same, note="= " + ", ".join(map(str, values))
        )

    model.eval()
    with torch.no_grad():
        eval_logits = model(x)
    ours, _ = read_safetensors(path("eval_out.safetensors"))
    report.close(case, direction, "eval logits (after)", ours["logits"], eval_logits)

    loss.backward()
    grads, _ = read_safetensors(path("grads.safetensors"))
    named = dict(model.named_parameters())
    report.exact(case, direction, "grad names", list(grads.keys()) == list(named.keys()))
    # The bias of a Linear/Conv2d feeding a train-mode BatchNorm has gradient exactly 0 in exact
    # arithmetic (BN subtracts the batch mean), so both sides hold rounding noise there: those are
    # compared on the scale of the model's largest gradient instead of their own.
    zero = cancelled_biases(model)
    live = [k for k in named if k not in zero]
    report.close(case, direction, "grads", [grads[k] for k in live], [named[k].grad for k in live])
    if zero:
        scale = max(named[k].grad.abs().max().item() for k in named)
        report.close(
            case,
            direction,
            "grads = 0 (bias->BN)",
            [grads[k] for k in zero],
            [named[k].grad for k in zero],
            scale=scale,
        )

    lr = 0.1
    max_update = lr * max(p.grad.abs().max().item() for p in named.values())
    torch.optim.SGD(model.parameters(), lr=lr).step()
    stepped, _ = read_safetensors(path("after_step_state.safetensors"))
    ref_floats, _ = _split_state(model.state_dict())
    # A cancelled bias that starts at 0 (init "normal:0.01" zeroes biases) is rounding noise after
    # the step too: measured against the largest update of the step.
    report.close(
        case,
        direction,
        "state after SGD step",
        [stepped[k] for k in ref_floats],
        list(ref_floats.values()),
        scale=[max_update if k in zero else None for k in ref_floats],
    )


def torch_initialized_state(name, norm, placement, seed):
    """A torch-initialized model whose norm layers carry non-trivial state, and its state dict."""
    torch.manual_seed(seed)
    model = build_torch_model(name, norm, placement)
    C, H, W = input_geometry(name)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running stats and num_batches_tracked away from their initial values
            model(torch.randn(16, C, H, W) * 1.5 + 0.3)
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm,
                              nn.InstanceNorm2d)):
                m.weight.add_(0.2 * torch.randn_like(m.weight))
                m.bias.add_(0.2 * torch.randn_like(m.bias))
    return model


def export(exe, name, norm, placement, seed, out, load=None):
    """Runs export_for_pytorch into `out`."""
    cmd = [exe, "--model", name, "--norm", norm, "--placement", placement, "--seed", str(seed)]
    cmd += ["--out", out] + (["--load", load] if load else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def run_case(report, exe, work, name, norm, placement, seed):
    case = f"{name}/{norm}"
    # bnlab -> torch
    out = os.path.join(work, f"{name}-{norm}", "bnlab_init")
    export(exe, name, norm, placement, seed, out)
    compare_run(report, case, "bnlab->torch", name, norm, placement, out)

    # torch -> bnlab
    model = torch_initialized_state(name, norm, placement, seed)
    state = model.state_dict()
    src = os.path.join(work, f"{name}-{norm}", "torch_state.safetensors")
    write_safetensors(src, state, {"format": "pt"})
    out = os.path.join(work, f"{name}-{norm}", "torch_init")
    export(exe, name, norm, placement, seed, out, load=src)
    back, _ = read_safetensors(os.path.join(out, "initial_state.safetensors"))
    same = sorted(back.keys()) == sorted(state.keys()) and all(
        back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]) for k in state
    )
    report.exact(case, "torch->bnlab", "round trip (bitwise)", same)
    inputs, _ = read_safetensors(os.path.join(out, "input.safetensors"))
    model.eval()
    with torch.no_grad():
        ref = model(inputs["input"].float())
    ours, _ = read_safetensors(os.path.join(out, "initial_eval_out.safetensors"))
    report.close(case, "torch->bnlab", "eval logits (loaded)", ours["logits"], ref)
    compare_run(report, case, "torch->bnlab", name, norm, placement, out)


DEFAULT_CASES = [
    "paper-mlp/none",
    "paper-mlp/batch",
    "mlp/batch",
    "mlp/layer",
    "lenet/batch",
    "lenet/group",
    "cifar-cnn/batch",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exe", required=True, help="path to the export_for_pytorch executable")
    ap.add_argument("--work", help="directory for the exchanged files (default: a temporary one)")
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="MODEL/NORM pairs")
    ap.add_argument("--placement", default="before", choices=["before", "after"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative difference")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--wide", action="store_true", help="Markdown, a row per case and direction")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    print(f"PyTorch {torch.__version__}, tolerance {args.tol:g} relative "
          f"(max|bnlab - torch| / max|torch| per item)")
    report = Report(args.tol)
    with tempfile.TemporaryDirectory(prefix="bnlab-parity-") as tmp:
        work = args.work or tmp
        for case in args.cases:
            name, norm = case.split("/")
            run_case(report, os.path.abspath(args.exe), work, name, norm, args.placement, args.seed)
    if args.wide:
        report.print_wide()
    else:
        report.print_table(args.markdown)
    failed = report.failed()
    passed = len(report.rows) - len(failed)
    verdict = "FAIL" if failed else "PASS"
    print(f"\n{verdict}: {passed}/{len(report.rows)} items within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Batch renormalization (Ioffe 2017) for PyTorch, exactly as bnlab's BatchRenorm1d/2d compute it
(layers/batch_norm.{h,cpp}, core/ops/norm.cpp "batch renormalization", docs/derivations.md
"batch_renorm"). PyTorch has none, so the fidelity twin (tools/fidelity.py) and the committed
reference (tests/train/fidelity/make_reference.py) use this one.

Subclasses of torch.nn.BatchNorm1d/2d: the same parameters, buffers and state_dict keys (weight,
bias, running_mean, running_var, num_batches_tracked), the same running-statistics update (from the
unbiased batch variance) and the same eval (running statistics), so a bnlab batch-renorm checkpoint
loads unchanged. Training, per channel, with the running statistics from before this batch's
update:

    sigma_B = sqrt(var_B + eps)            var_B the biased batch variance (batch norm's)
    sigma   = sqrt(running_var + eps)      running_var the unbiased running estimate
    r = clip(sigma_B / sigma, 1/r_max, r_max)        (r = 1 exactly when r_max = 1)
    d = clip((mu_B - mu) / sigma, -d_max, d_max)     (d = 0 exactly when d_max = 0)
    y = gamma * (xhat * r + d) + beta                r, d constants to the gradient

with (r_max, d_max) = limits(options, num_batches_tracked before the batch): (1, 0) for `warmup`
batches, then linear to the final values over `ramp` batches (batch_renorm_limits).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _f32(v):
    """v rounded to float32 (as a Python float)."""
    return torch.tensor(v, dtype=torch.float32).item()


def batch_renorm_limits(r_max, d_max, warmup, ramp, step):
    """(r_max, d_max) for the batch after `step` training batches, as bnlab's
    batch_renorm_limits: computed in double, rounded to float32 as bnlab's float fields."""
    if step <= warmup:
        return 1.0, 0.0
    done = 1.0 if ramp == 0 else min(1.0, (step - warmup) / ramp)
    return _f32(1.0 + (_f32(r_max) - 1.0) * done), _f32(_f32(d_max) * done)


class _BatchRenorm:
    """The training forward shared by BatchRenorm1d/2d (mixed into nn.BatchNorm1d/2d)."""

    def _init_renorm(self, r_max, d_max, warmup, ramp):
        if not (r_max >= 1.0 and d_max >= 0.0 and warmup >= 0 and ramp >= 0):
            raise ValueError(f"batch renorm: bad schedule r_max {r_max}, d_max {d_max}, "
                             f"warmup {warmup}, ramp {ramp}")
        if not self.track_running_stats:
            raise ValueError("batch renorm: track_running_stats must be true")
        self.r_max, self.d_max, self.warmup, self.ramp = r_max, d_max, warmup, ramp

    def extra_repr(self):
        return (super().extra_repr() + f", r_max={self.r_max}, d_max={self.d_max}, "
                f"warmup={self.warmup}, ramp={self.ramp}")

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        r_max, d_max = batch_renorm_limits(self.r_max, self.d_max, self.warmup, self.ramp,
                                           int(self.num_batches_tracked))
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        with torch.no_grad():
            # In double, as bnlab computes the statistics, r and d; then float32 constants.
            xd = x.detach().double()
            mu_b = xd.mean(dims)
            var_b = xd.var(dims, unbiased=False)
            eps = _f32(self.eps)  # bnlab's eps is a float, widened to double
            sigma = (self.running_var.double() + eps).sqrt()
            ones = torch.ones_like(mu_b)
            r = ((var_b + eps).sqrt() / sigma).clamp(1.0 / r_max, r_max) \
                if r_max > 1.0 else ones
            d = ((mu_b - self.running_mean.double()) / sigma).clamp(-d_max, d_max) \
                if d_max > 0.0 else ones * 0.0
            r, d = r.float().view(shape), d.float().view(shape)
        # The running-statistics update and num_batches_tracked as nn.BatchNorm's training forward.
        self.num_batches_tracked.add_(1)
        factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                  else self.momentum)
        xhat = F.batch_norm(x, self.running_mean, self.running_var, None, None, True, factor,
                            self.eps)
        y = xhat * r + d
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class BatchRenorm1d(_BatchRenorm, nn.BatchNorm1d):
    """bnlab's BatchRenorm1d: [N, C] or [N, C, L]."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, r_max=3.0, d_max=5.0,
                 warmup=1000, ramp=5000):
        nn.BatchNorm1d.__init__(self, num_features, eps=eps, momentum=momentum)
        self._init_renorm(r_max, d_max, warmup, ramp)


class BatchRenorm2d(_BatchRenorm, nn.BatchNorm2d):
    """bnlab's BatchRenorm2d: [N, C, H, W], per channel."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, r_max=3.0, d_max=5.0,
                 warmup=1000, ramp=5000):
        nn.BatchNorm2d.__init__(self, num_features, eps=eps, momentum=momentum)
        self._init_renorm(r_max, d_max, warmup, ramp)

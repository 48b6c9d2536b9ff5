"""What the boundary attacks (DeepFool, FAB) share: logits and their input gradients for chosen
classes, and the final search that shrinks an adversarial perturbation along its ray."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import ModelProbe
from .losses import is_successful


def class_gradients(probe: ModelProbe, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """All logits [n, C], the logits of `classes` [n, K] and their input gradients [n, K, *x.shape[1:]]
    (one forward pass, K backward passes through it; no parameter gradients)."""
    x_req = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = probe.forward(x_req)
        picked = out.gather(1, classes)
        grads = [torch.autograd.grad(picked[:, k].sum(), x_req, retain_graph=k + 1 < classes.shape[1])[0]
                 for k in range(classes.shape[1])]
    probe.n_forward += x.shape[0]
    probe.n_backward += x.shape[0] * classes.shape[1]
    return out.detach(), picked.detach(), torch.stack(grads, dim=1)


def margin_gradient(probe: ModelProbe, x: Tensor, y: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, f_target - f_y, its input gradient): one forward and one backward pass."""
    x_req = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = probe.forward(x_req)
        diff = out.gather(1, target[:, None]).squeeze(1) - out.gather(1, y[:, None]).squeeze(1)
        grad, = torch.autograd.grad(diff.sum(), x_req)
    probe.n_forward += x.shape[0]
    probe.n_backward += x.shape[0]
    return out.detach(), diff.detach(), grad.detach()


def shrink_along_ray(probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None, x_found: Tensor,
                     found: Tensor, steps: int) -> Tensor:
    """Bisection on x + s (x_found - x), s in [0, 1], for each found point: the smallest s that stays
    adversarial after `steps` halvings (the point never stops being adversarial)."""
    ids = found.nonzero().squeeze(1)
    if ids.numel() == 0 or steps == 0:
        return x_found
    xs, delta = x[ids], x_found[ids] - x[ids]
    t = targets[ids] if targets is not None else None
    lo = torch.zeros(ids.numel(), device=x.device, dtype=x.dtype)
    hi = torch.ones_like(lo)
    shape = (-1,) + (1,) * (x.ndim - 1)
    for _ in range(steps):
        mid = (lo + hi) / 2
        succ = is_successful(probe.logits(xs + mid.view(shape) * delta), y[ids], t)
        hi = torch.where(succ, mid, hi)
        lo = torch.where(succ, lo, mid)
    out = x_found.clone()
    out[ids] = xs + hi.view(shape) * delta
    return out

"""Accuracy-type metrics on tensors: clean and robust accuracy, accuracy versus eps, confidence."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..attacks.base import ModelProbe
from ..models.guard import attack_mode


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Logits for x in batches, in eval mode (the model's flags are restored afterwards)."""
    with attack_mode(model):
        probe = ModelProbe(model)
        return torch.cat([probe.logits(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    return float((predict(model, x, batch_size).argmax(1) == y).float().mean())


def accuracy_vs_eps(min_norms: Tensor, eps_grid: Sequence[float]) -> list[tuple[float, float]]:
    """Robust accuracy at each eps from per-sample minimal adversarial norms (0 = clean error,
    inf = never broken): a sample is robust at eps iff its minimal norm is > eps."""
    norms = min_norms.detach().float().cpu()
    n = max(norms.numel(), 1)
    return [(float(e), int((norms > e).sum()) / n) for e in eps_grid]


def mean_confidence(logits: Tensor, mask: Tensor | None = None) -> float:
    """Mean max-softmax probability (over the samples in mask)."""
    conf = logits.float().softmax(dim=1).amax(dim=1)
    if mask is not None:
        conf = conf[mask]
    return float(conf.mean()) if conf.numel() else float("nan")

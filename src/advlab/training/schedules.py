"""Stateless learning-rate and momentum schedules: a value as a function of training progress,
so a resumed run recomputes exactly what the uninterrupted run used."""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import AdvlabError

SCHEDULES = ("constant", "step", "cosine", "onecycle")


def lr_at(base: float, progress: float, schedule: str = "constant", *, milestones: Sequence[float] = (0.5, 0.75),
          gamma: float = 0.1, warmup: float = 0.0) -> float:
    """Learning rate at `progress` in [0, 1] (fraction of all training steps done).

    step: multiply by gamma at each milestone (fractions of training); cosine: half-cosine to 0;
    onecycle: linear up to base at 40% (or `warmup`) and linear down to 0 (Wong et al.'s cyclic rate).
    """
    p = min(max(progress, 0.0), 1.0)
    if warmup > 0 and p < warmup and schedule != "onecycle":
        return base * p / warmup
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * gamma ** sum(p >= m for m in milestones)
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "onecycle":
        peak = warmup or 0.4
        return base * (p / peak if p < peak else max(0.0, (1 - p) / (1 - peak)))
    raise AdvlabError(f"unknown learning-rate schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")


def momentum_at(start: float, final: float | None, epoch: float, ramp_epochs: float) -> float:
    """Momentum ramped linearly from `start` to `final` over `ramp_epochs` (the maxout recipe's 0.5 -> 0.7)."""
    if final is None or ramp_epochs <= 0:
        return start
    return start + (final - start) * min(epoch / ramp_epochs, 1.0)

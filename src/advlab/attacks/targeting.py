"""Target selection for targeted attacks: random other class, (y + k) mod C, least likely, given."""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from ..errors import AttackConfigError

TargetSpec = Union[None, str, int]
"""None: untargeted. 'random': uniform over the other classes. 'least_likely': lowest clean logit.
An int k: (y + k) mod C. Explicit per-sample targets are passed to the attack call instead."""


def check_target_spec(spec: TargetSpec) -> TargetSpec:
    if spec is None or spec in ("random", "least_likely"):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec == 0:
            raise AttackConfigError("target shift k=0 would target the true class")
        return spec
    raise AttackConfigError(
        f"unknown target spec {spec!r}; use None, 'random', 'least_likely' or an int shift k")


def resolve_targets(spec: TargetSpec, y: Tensor, clean_logits: Tensor,
                    generator: torch.Generator | None) -> Tensor | None:
    """Per-sample target classes for `spec`, never equal to y (or None when untargeted)."""
    num_classes = clean_logits.shape[1]
    if spec is None:
        return None
    if spec == "random":
        offset = torch.randint(1, num_classes, y.shape, device=y.device, generator=generator)
        return (y + offset) % num_classes
    if spec == "least_likely":
        masked = clean_logits.detach().scatter(1, y.unsqueeze(1), float("inf"))
        return masked.argmin(dim=1)
    k = int(spec)
    if k % num_classes == 0:
        raise AttackConfigError(f"target shift {k} is a multiple of the {num_classes} classes")
    return (y + k) % num_classes

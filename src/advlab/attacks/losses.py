"""Per-sample attack losses (to be maximized) and the success criterion, untargeted and targeted."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AttackConfigError

LossName = Literal["ce", "margin", "dlr"]
LOSSES: tuple[str, ...] = ("ce", "margin", "dlr")
_TINY = 1e-12


def _other_max(logits: Tensor, cls: Tensor) -> Tensor:
    """max_{j != cls} logits_j per sample."""
    masked = logits.scatter(1, cls.unsqueeze(1), float("-inf"))
    return masked.amax(dim=1)


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """z_y - max_{j != y} z_j: positive when y is predicted, negative when not."""
    return logits.gather(1, y.unsqueeze(1)).squeeze(1) - _other_max(logits, y)


def attack_loss(name: str, logits: Tensor, y: Tensor, targets: Tensor | None = None) -> Tensor:
    """Loss per sample that the attack ascends.

    ce:     CE(z, y) untargeted, -CE(z, t) targeted.
    margin: Carlini-Wagner margin, max_{j!=y} z_j - z_y untargeted, z_t - max_{j!=t} z_j targeted.
    dlr:    Croce & Hein's difference of logits ratio (scale invariant); targeted form divides by
            z_pi1 - (z_pi3 + z_pi4)/2 and needs at least 4 classes (3 untargeted).
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if name == "ce":
        if targets is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, targets, reduction="none")
    if name == "margin":
        if targets is None:
            return -logit_margin(logits, y)
        return logit_margin(logits, targets)
    if name == "dlr":
        c = logits.shape[1]
        srt = logits.sort(dim=1, descending=True).values
        z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1)
        if targets is None:
            if c < 3:
                raise AttackConfigError("the DLR loss needs at least 3 classes")
            return -(z_y - _other_max(logits, y)) / (srt[:, 0] - srt[:, 2] + _TINY)
        if c < 4:
            raise AttackConfigError("the targeted DLR loss needs at least 4 classes")
        z_t = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
        return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + _TINY)
    raise AttackConfigError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")


def is_successful(logits: Tensor, y: Tensor, targets: Tensor | None = None) -> Tensor:
    """Untargeted: prediction != y. Targeted: prediction == target."""
    pred = logits.argmax(dim=1)
    return pred != y if targets is None else pred == targets


def check_loss_name(name: str) -> str:
    if name not in LOSSES:
        raise AttackConfigError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    return name

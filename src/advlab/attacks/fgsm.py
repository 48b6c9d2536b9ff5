"""FGSM (linf) and FGM (l2): one steepest-ascent step of size eps (Goodfellow et al. 2015)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..threat import ThreatModel
from .base import Attack, ModelProbe
from .losses import check_loss_name
from .targeting import TargetSpec


class FGSM(Attack):
    """x' = proj(x + eps * sign(grad_x J)) for linf, x + eps * g/||g|| for l2.

    Targeted: descends the cross-entropy of the target class. With linf this is exactly the
    fast gradient sign method of the paper (clipped to the input bounds).
    """

    name = "fgsm"
    norms = ("linf", "l2")
    skip_adversarial = False

    def __init__(self, threat: ThreatModel, *, loss: str = "ce", target: TargetSpec = None,
                 seed: int | None = 0) -> None:
        super().__init__(threat, target=target, seed=seed)
        self.loss = check_loss_name(loss)

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, Tensor]:
        loss, grad, _ = probe.loss_and_grad(x, y, targets, self.loss)
        x_adv = self.threat.project(x, x + self.threat.step(grad, self.threat.eps))
        return x_adv, loss


FGM = FGSM
"""The l2 fast gradient method is FGSM with an l2 threat model."""

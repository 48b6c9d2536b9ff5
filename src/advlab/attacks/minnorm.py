"""Minimum-norm attacks: a kind of attack that searches each point's smallest adversarial
perturbation, whatever eps. One run answers any list of eps (as foolbox's `epsilons=`):
`AttackResult.min_norm` is that distance (0 where the clean point is already wrong, inf where none
was found), `AttackResult.x_min` the point that attains it, and `x_adv` / `success` are that point
projected into the attack's eps-ball and judged there, as for every other attack."""
from __future__ import annotations

import torch
from torch import Tensor

from ..threat import flat_norm
from .base import Attack, ModelProbe
from .losses import attack_loss


class MinNormAttack(Attack):
    """Base of DeepFool and FAB: subclasses find (x_min, found) in `_run` and return
    `self._min_norm_output(...)`."""

    min_norm_attack = True

    def _min_norm_output(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
                         x_min: Tensor, found: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        th = self.threat
        inf = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        min_norm = torch.where(found, flat_norm(x_min - x, th.norm), inf)
        x_min = torch.where(found.view(-1, *([1] * (x.ndim - 1))), x_min, x)
        x_adv = th.project(x, x_min)
        logits = probe.logits(x_adv)
        return x_adv, attack_loss("ce", logits, y, targets), {"min_norm": min_norm, "x_min": x_min,
                                                               "_logits": logits}


def accuracy_at(min_norm: Tensor, eps: float) -> float:
    """Robust accuracy at eps implied by minimal adversarial norms (robust: no adversarial point
    within eps was found)."""
    return float((min_norm > eps).float().mean())

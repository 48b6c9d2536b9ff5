"""Greedy few-pixel L0 attack: the construction used for learning-from-perturbation datasets.

Each step adds the not-yet-changed input entry with the largest gradient magnitude (among those
that can still move in the ascent direction), until `eps` entries are chosen, and then takes a
sign-gradient step of `step_size` on all chosen entries, clipped to the bounds (step_rule="scaled":
the chosen entries' gradient divided by its largest magnitude instead, as in Kumano et al.'s code).
The best iterate (adversarial first, then highest loss) is kept. Targeted mode descends the
target's cross-entropy.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import AttackConfigError
from ..threat import ThreatModel
from .base import Attack, ModelProbe, positive_float, positive_int
from .losses import check_loss_name
from .pgd import BestIterate, select_rows
from .targeting import TargetSpec


class SparseL0(Attack):
    """Greedy L0 attack; `threat.eps` is the number of input entries it may change."""

    name = "sparse-l0"
    norms = ("l0",)

    def __init__(self, threat: ThreatModel, *, steps: int = 100, step_size: float | None = None,
                 pixels_per_step: int = 1, loss: str = "ce", target: TargetSpec = None,
                 early_stop: bool = True, step_rule: str = "sign", seed: int | None = 0) -> None:
        super().__init__(threat, target=target, seed=seed)
        self.steps = positive_int("steps", steps)
        lo, hi = threat.bounds
        self.step_size = (hi - lo) / 4 if step_size is None else positive_float("step_size", step_size)
        self.pixels_per_step = positive_int("pixels_per_step", pixels_per_step)
        self.loss = check_loss_name(loss)
        self.early_stop = bool(early_stop)
        if step_rule not in ("sign", "scaled"):
            raise AttackConfigError(f"unknown step_rule {step_rule!r}; use 'sign' or 'scaled'")
        self.step_rule = step_rule

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        lo, hi = self.threat.bounds
        budget = int(self.threat.eps)
        best = BestIterate(x)
        ids = torch.arange(x.shape[0], device=x.device)
        xs, ys, ts, cur = x, y, targets, x.clone()
        chosen = torch.zeros(x.shape[0], x[0].numel(), dtype=torch.bool, device=x.device)
        for k in range(self.steps + 1):
            success, grad = best.observe(probe, ids, cur, ys, ts, self.loss, need_grad=k < self.steps)
            if k == self.steps or budget == 0:
                break
            if self.early_stop and bool(success.any()):
                if bool(success.all()):
                    break
                ids, xs, ys, ts, cur, grad, chosen = select_rows(~success, ids, xs, ys, ts, cur, grad, chosen)
            g = grad.reshape(grad.shape[0], -1)
            c = cur.reshape(cur.shape[0], -1)
            room = chosen.sum(dim=1) < budget
            if bool(room.any()):
                movable = ((g > 0) & (c < hi)) | ((g < 0) & (c > lo))
                score = torch.where(movable & ~chosen, g.abs(), torch.zeros_like(g))
                n_new = min(self.pixels_per_step, g.shape[1])
                top = score.topk(n_new, dim=1)
                left = (budget - chosen.sum(dim=1)).clamp_min(0)
                take = (top.values > 0) & (torch.arange(n_new, device=g.device) < left.unsqueeze(1))
                take &= room.unsqueeze(1)
                chosen = chosen.scatter(1, top.indices, take | chosen.gather(1, top.indices))
            if self.step_rule == "sign":
                step = self.step_size * g.sign() * chosen
            else:
                masked = g * chosen
                step = self.step_size * masked / masked.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
            cur = (c + step).clamp(lo, hi).reshape(cur.shape)
        return best.result()

"""DeepFool (Moosavi-Dezfooli et al. 2016) with a line-search refinement: a minimal-norm attack.

Each step linearizes the logit differences f_k - f_y of the candidate classes and steps to the
nearest linearized boundary (l2: dual l2 norm, linf: dual l1 norm). Once a sample is adversarial,
a bisection on x + s (x_adv - x), s in [0, 1], removes the overshoot. A minimum-norm attack
(attacks/minnorm.py): the result's min_norm is each sample's smallest adversarial norm found
(0 where the clean point is already wrong, inf where none was found) and x_min the point that
attains it; x_adv is that point projected into the threat model's eps-ball.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..threat import ThreatModel
from .base import ModelProbe, positive_float, positive_int
from .linearize import class_gradients, shrink_along_ray
from .losses import is_successful
from .minnorm import MinNormAttack
from .targeting import TargetSpec


class DeepFool(MinNormAttack):
    """Minimal-norm DeepFool for l2 / linf, untargeted over the top `candidates` classes or targeted."""

    name = "deepfool"
    norms = ("linf", "l2")

    def __init__(self, threat: ThreatModel, *, steps: int = 50, overshoot: float = 0.02,
                 candidates: int = 10, search_steps: int = 12, target: TargetSpec = None,
                 seed: int | None = 0) -> None:
        super().__init__(threat, target=target, seed=seed)
        self.steps = positive_int("steps", steps)
        self.overshoot = positive_float("overshoot", overshoot, allow_zero=True)
        self.candidates = positive_int("candidates", candidates, minimum=2)
        self.search_steps = positive_int("search_steps", search_steps, minimum=0)

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        th = self.threat
        n = x.shape[0]
        clean = probe.logits(x)
        if targets is None:
            k = min(self.candidates, clean.shape[1])
            others = clean.scatter(1, y.unsqueeze(1), float("-inf")).topk(k - 1, dim=1).indices
        else:
            others = targets.unsqueeze(1)
        classes = torch.cat([y.unsqueeze(1), others], dim=1)
        r_total = torch.zeros_like(x)
        x_found = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        ids = torch.arange(n, device=x.device)
        cur = x.clone()
        for _ in range(self.steps):
            act = ids[~found]
            if act.numel() == 0:
                break
            logits, z, g = class_gradients(probe, cur[act], classes[act])
            succ = is_successful(logits, y[act], None if targets is None else targets[act])
            if bool(succ.any()):
                done = act[succ]
                found[done] = True
                x_found[done] = cur[done]
            keep = ~succ
            act, z, g = act[keep], z[keep], g[keep]
            if act.numel() == 0:
                break
            f = z[:, 1:] - z[:, :1]                      # [m, K-1], negative while y wins
            w = (g[:, 1:] - g[:, :1]).flatten(2)           # [m, K-1, D]
            dual = w.norm(p=2, dim=2) if th.norm == "l2" else w.abs().sum(dim=2)
            dist = f.abs() / (dual + 1e-12)
            best = dist.argmin(dim=1)
            w_l = w[torch.arange(act.numel()), best]
            f_l = f.abs()[torch.arange(act.numel()), best] + 1e-6
            dual_l = dual[torch.arange(act.numel()), best] + 1e-12
            if th.norm == "l2":
                r = (f_l / dual_l ** 2).unsqueeze(1) * w_l
            else:
                r = (f_l / dual_l).unsqueeze(1) * w_l.sign()
            r_total[act] = r_total[act] + r.view_as(r_total[act])
            cur[act] = th.clip(x[act] + (1 + self.overshoot) * r_total[act])
        # points that became adversarial at the last update
        act = ids[~found]
        if act.numel():
            lg = probe.logits(cur[act])
            succ = is_successful(lg, y[act], None if targets is None else targets[act])
            found[act[succ]] = True
            x_found[act[succ]] = cur[act[succ]]
        x_min = shrink_along_ray(probe, x, y, targets, x_found, found, self.search_steps)
        return self._min_norm_output(probe, x, y, targets, x_min, found)

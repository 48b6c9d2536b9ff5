"""DeepFool (Moosavi-Dezfooli et al. 2016) with a line-search refinement: a minimal-norm attack.

Each step linearizes the logit differences f_k - f_y of the candidate classes and steps to the
nearest linearized boundary (l2: dual l2 norm, linf: dual l1 norm). Once a sample is adversarial,
a bisection on x + s (x_adv - x), s in [0, 1], removes the overshoot. The result's
extra['min_norm'] is each sample's smallest adversarial norm found (0 where the clean point is
already wrong, inf where none was found) and extra['x_min'] the point that attains it;
x_adv is that point projected into the threat model's eps-ball.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..threat import ThreatModel, flat_norm
from .base import Attack, ModelProbe, positive_float, positive_int
from .losses import attack_loss, is_successful
from .targeting import TargetSpec


class DeepFool(Attack):
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

    def _class_gradients(self, probe: ModelProbe, x: Tensor,
                         classes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """All logits, the logits of `classes` [n, K] and their input gradients [n, K, *x.shape[1:]]."""
        x_req = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = probe.forward(x_req)
            picked = out.gather(1, classes)
            grads = [torch.autograd.grad(picked[:, k].sum(), x_req, retain_graph=k + 1 < classes.shape[1])[0]
                     for k in range(classes.shape[1])]
        probe.n_forward += x.shape[0]
        probe.n_backward += x.shape[0] * classes.shape[1]
        return out.detach(), picked.detach(), torch.stack(grads, dim=1)

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
            logits, z, g = self._class_gradients(probe, cur[act], classes[act])
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
        x_min = self._bisect(probe, x, y, targets, x_found, found)
        min_norm = torch.where(found, flat_norm(x_min - x, th.norm),
                               torch.full((n,), float("inf"), device=x.device, dtype=x.dtype))
        x_adv = th.project(x, x_min)
        logits = probe.logits(x_adv)
        return x_adv, attack_loss("ce", logits, y, targets), {"min_norm": min_norm, "x_min": x_min,
                                                               "_logits": logits}

    def _bisect(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
                x_found: Tensor, found: Tensor) -> Tensor:
        """Shrink each adversarial perturbation along its ray to the boundary (keeps adversariality)."""
        ids = found.nonzero().squeeze(1)
        if ids.numel() == 0 or self.search_steps == 0:
            return x_found
        xs, delta = x[ids], x_found[ids] - x[ids]
        t = targets[ids] if targets is not None else None
        lo = torch.zeros(ids.numel(), device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        shape = (-1,) + (1,) * (x.ndim - 1)
        for _ in range(self.search_steps):
            mid = (lo + hi) / 2
            succ = is_successful(probe.logits(xs + mid.view(shape) * delta), y[ids], t)
            hi = torch.where(succ, mid, hi)
            lo = torch.where(succ, lo, mid)
        out = x_found.clone()
        out[ids] = xs + hi.view(shape) * delta
        return out

"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020), untargeted and FAB-T, for linf, l2, l1.

Each step linearizes the classifier at the current iterate x1, takes the linearized decision
boundary closest to x1 in the dual norm (untargeted: over all classes; FAB-T: the target's), and
projects onto it, inside the input box, both x1 (d1) and the original point x0 (d2). The next
iterate is the overshot (eta) convex combination
    x1 <- clip((x1 + eta d1) (1 - a) + (x0 + eta d2) a),   a = min(|d1| / (|d1| + |d2|), alpha_max),
a bias toward x0 that keeps the search near the smallest perturbation. Once x1 is misclassified
it is recorded if closer than the best so far and pulled back toward x0 (x0 + beta (x1 - x0)).
Restarts after the first start from a random point at distance eps/2. The reference's defaults:
100 steps, alpha_max 0.1, eta 1.05, beta 0.9. advlab adds a final search (a bisection along the
ray from x0 to the best point) which only ever shrinks the perturbation.

A minimum-norm attack: `result.min_norm` answers every eps at once; at the threat model's eps a
point counts as broken when its perturbation is no larger than eps (the reference's rule).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..threat import ThreatModel, flat_norm
from .base import ModelProbe, fraction, positive_float, positive_int
from .hyperplane import project_to_hyperplane
from .linearize import class_gradients, margin_gradient, shrink_along_ray
from .minnorm import MinNormAttack

DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}


class FAB(MinNormAttack):
    """Untargeted FAB: the closest linearized boundary over all classes."""

    name = "fab"
    norms = ("linf", "l2", "l1")

    def __init__(self, threat: ThreatModel, *, steps: int = 100, restarts: int = 1, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, search_steps: int = 10, early_stop: bool = False,
                 seed: int | None = 0) -> None:
        super().__init__(threat, target=None, seed=seed)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        self.alpha_max = fraction("alpha_max", alpha_max, include_one=True)
        self.eta = positive_float("eta", eta)
        self.beta = fraction("beta", beta, include_one=True)
        self.search_steps = positive_int("search_steps", search_steps, minimum=0)
        self.early_stop = bool(early_stop)  # stop a point once it is broken at eps (evaluation at one eps)

    # --------------------------------------------------------------- geometry
    def _boundary_step(self, t: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """The least-norm step from rows of t onto w . z = b inside the threat model's box."""
        lo, hi = self.threat.bounds
        scale = hi - lo
        # the projections work in [0, 1]^D: z = lo + scale * u
        d = project_to_hyperplane((t - lo) / scale, w * scale, b - lo * w.sum(1), self.threat.norm)
        return d * scale

    def _random_start(self, x0: Tensor, gen: torch.Generator) -> Tensor:
        """A point at distance eps/2 from x0 in a random direction, clipped to the box."""
        if self.threat.norm == "linf":
            u = torch.rand(x0.shape, device=x0.device, dtype=x0.dtype, generator=gen) * 2 - 1
        else:
            u = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=gen)
        n = flat_norm(u, self.threat.norm).clamp_min(1e-12).view(-1, *([1] * (x0.ndim - 1)))
        return self.threat.clip(x0 + 0.5 * self.threat.eps * u / n)

    def _linearization(self, probe: ModelProbe, x1: Tensor, y: Tensor,
                       target: Tensor | None) -> tuple[Tensor, Tensor]:
        """(f, w): the value and gradient of the margin f_k - f_y whose boundary is closest to x1
        in the dual norm (k over all other classes, or the given target)."""
        if target is not None:
            _, f, w = margin_gradient(probe, x1, y, target)
            return f, w.flatten(1)
        n = x1.shape[0]
        _, z, g = class_gradients(probe, x1, self._all_classes(probe, n, x1.device))
        rows = torch.arange(n, device=x1.device)
        df = z - z[rows, y][:, None]
        dg = (g - g[rows, y][:, None]).flatten(2)
        dist = df.abs() / (flat_norm(dg.reshape(-1, dg.shape[2]), DUAL[self.threat.norm]).view(n, -1) + 1e-12)
        dist[rows, y] = float("inf")
        k = dist.argmin(dim=1)
        return df[rows, k], dg[rows, k]

    @staticmethod
    def _all_classes(probe: ModelProbe, n: int, device: torch.device) -> Tensor:
        if probe.num_classes is None:
            raise RuntimeError("the number of classes is known after the first forward pass")
        return torch.arange(probe.num_classes, device=device).expand(n, -1)

    # ------------------------------------------------------------------- runs
    def _single_run(self, probe: ModelProbe, x0: Tensor, y: Tensor, target: Tensor | None, random_start: bool,
                    gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """One FAB run from x0 (or a random start): (best norm per point, inf if none; best point)."""
        n, view = x0.shape[0], (-1,) + (1,) * (x0.ndim - 1)
        x1 = self._random_start(x0, gen) if random_start else x0.clone()
        best_norm = torch.full((n,), float("inf"), device=x0.device, dtype=x0.dtype)
        best_x = x0.clone()
        active = torch.arange(n, device=x0.device)
        norm = self.threat.norm
        for _ in range(self.steps):
            xa, x0a, ya = x1[active], x0[active], y[active]
            f, w = self._linearization(probe, xa, ya, None if target is None else target[active])
            b = (w * xa.flatten(1)).sum(1) - f
            d = self._boundary_step(torch.cat([xa.flatten(1), x0a.flatten(1)]), torch.cat([w, w]), torch.cat([b, b]))
            d1, d2 = d[:xa.shape[0]].view_as(xa), d[xa.shape[0]:].view_as(xa)
            a1 = flat_norm(d1, norm).clamp_min(1e-8)
            a2 = flat_norm(d2, norm).clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0, self.alpha_max).view(view)
            new = self.threat.clip((xa + self.eta * d1) * (1 - alpha) + (x0a + self.eta * d2) * alpha)
            adv = probe.logits(new).argmax(1) != ya
            dist = flat_norm(new - x0a, norm)
            better = adv & (dist < best_norm[active])   # masked writes: no host sync for the update
            best_norm[active] = torch.where(better, dist, best_norm[active])
            best_x[active] = torch.where(better.view(view), new, best_x[active])
            x1[active] = torch.where(adv.view(view), x0a + self.beta * (new - x0a), new)
            if self.early_stop:
                active = active[best_norm[active] > self.threat.eps]
                if active.numel() == 0:
                    break
        return best_norm, best_x

    def _targets_for(self, probe: ModelProbe, x: Tensor, y: Tensor) -> list[Tensor | None]:
        return [None]

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, ...]:
        n = x.shape[0]
        eps = self.threat.eps
        best_norm = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        best_x = x.clone()
        ids = torch.arange(n, device=x.device)
        if probe.num_classes is None:
            probe.logits(x[:1])  # learn the number of classes (and check the labels) first
        for target in self._targets_for(probe, x, y):
            for restart in range(self.restarts):
                todo = ids[best_norm > eps]   # as the reference: only points not yet broken at eps
                if todo.numel() == 0:
                    break
                norms, points = self._single_run(probe, x[todo], y[todo], None if target is None else target[todo],
                                                 restart > 0, gen)
                better = norms < best_norm[todo]
                best_norm[todo[better]] = norms[better]
                best_x[todo[better]] = points[better]
        found = torch.isfinite(best_norm)
        best_x = shrink_along_ray(probe, x, y, None, best_x, found, self.search_steps)
        return self._min_norm_output(probe, x, y, None, best_x, found)


class FABT(FAB):
    """FAB-T: FAB toward each of the `n_target_classes` most likely wrong classes in turn (the
    reference's targeted version inside AutoAttack); success is any misclassification."""

    name = "fab-t"

    def __init__(self, threat: ThreatModel, *, steps: int = 100, n_target_classes: int = 9, restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, search_steps: int = 10,
                 early_stop: bool = False, seed: int | None = 0) -> None:
        super().__init__(threat, steps=steps, restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta,
                         search_steps=search_steps, early_stop=early_stop, seed=seed)
        self.n_target_classes = positive_int("n_target_classes", n_target_classes)

    def _targets_for(self, probe: ModelProbe, x: Tensor, y: Tensor) -> list[Tensor | None]:
        order = probe.logits(x).argsort(dim=1, descending=True)
        out = []
        for rank in range(1, min(self.n_target_classes, order.shape[1] - 1) + 1):
            t = order[:, rank]
            out.append(torch.where(t == y, order[:, 0], t))   # the rank-th most likely class other than y
        return out

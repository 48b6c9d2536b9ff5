"""Auto-PGD (Croce & Hein 2020): APGD-CE, APGD-DLR, and APGD-T (targeted DLR over the top classes).

Step size starts at 2*eps (linf, l2) or eps (l1) per sample and is halved at checkpoints
w_j (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)) when the loss rose in
fewer than rho = 75% of the steps since the last checkpoint, or when the step was not halved at the
last checkpoint and the best loss did not improve; the iterate then restarts from the best point.
Updates use momentum 0.75. A sample stops once it is adversarial; every other sample follows
exactly the trajectory it would follow in a full-batch run, since all state is per sample.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..threat import ThreatModel, flat_norm
from .base import Attack, ModelProbe, fraction, positive_int
from .losses import check_loss_name, is_successful
from .pgd import BestIterate
from .targeting import TargetSpec


def _unit_ball_start(threat: ThreatModel, x: Tensor, gen: torch.Generator) -> Tensor:
    """The reference's start: a random point on the eps-sphere (linf, l2), clipped to the bounds."""
    if threat.norm == "linf":
        t = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=gen) * 2 - 1
    elif threat.norm == "l2":
        t = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen)
    else:
        return threat.random_start(x, gen)
    n = flat_norm(t, threat.norm).view(-1, *([1] * (x.ndim - 1)))
    return threat.clip(x + threat.eps * t / (n + 1e-12))


class APGD(Attack):
    """APGD with CE or DLR loss; untargeted, or targeted towards given/derived target classes."""

    name = "apgd"
    norms = ("linf", "l2", "l1")

    def __init__(self, threat: ThreatModel, *, steps: int = 100, restarts: int = 1, loss: str = "ce",
                 target: TargetSpec = None, rho: float = 0.75, l1_topk: float = 0.05,
                 early_stop: bool = True, seed: int | None = 0) -> None:
        super().__init__(threat, target=target, seed=seed)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        self.loss = check_loss_name(loss)
        self.rho = fraction("rho", rho)
        self.l1_topk = fraction("l1_topk", l1_topk, include_one=True)
        self.early_stop = bool(early_stop)

    def _checkpoint_lengths(self) -> tuple[int, int, int]:
        n = self.steps
        return max(int(0.22 * n), 1), max(int(0.03 * n), 1), max(int(0.06 * n), 1)

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, ...]:
        best = BestIterate(x)
        ids = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.restarts):
            todo = ids[~best.success]
            if todo.numel() == 0:
                break
            t = targets[todo] if targets is not None else None
            self._single_run(probe, x, y, todo, t, t, best, gen)
        return best.result()

    def _single_run(self, probe: ModelProbe, x: Tensor, y: Tensor, ids: Tensor,
                    loss_targets: Tensor | None, success_targets: Tensor | None,
                    best: BestIterate, gen: torch.Generator) -> None:
        """One APGD run on samples `ids`; `best` collects the best point per sample."""
        th = self.threat
        s: dict[str, Tensor | None] = {"ids": ids, "x": x[ids], "y": y[ids],
                                        "lt": loss_targets, "st": success_targets}
        xs = s["x"]
        x_adv = _unit_ball_start(th, xs, gen)
        loss, grad, logits = probe.loss_and_grad(x_adv, s["y"], s["lt"], self.loss)
        best.update(ids, x_adv, loss, is_successful(logits, s["y"], s["st"]), logits)
        alpha = 1.0 if th.norm == "l1" else 2.0
        s.update(x_adv=x_adv, x_old=x_adv.clone(), grad=grad, x_best=x_adv.clone(), grad_best=grad.clone(),
                 loss_best=loss.clone(), loss_prev=loss.clone(), increases=torch.zeros_like(loss),
                 step=torch.full_like(loss, alpha * th.eps), loss_best_last=loss.clone(),
                 reduced_last=torch.ones_like(loss, dtype=torch.bool))
        k, size_decr, k_min = self._checkpoint_lengths()
        since_check = 0
        for i in range(self.steps):
            x_adv, grad, xs, step = s["x_adv"], s["grad"], s["x"], s["step"]
            momentum = 0.75 if i > 0 else 1.0
            z = th.project(xs, x_adv + th.step(grad, step, l1_topk=self.l1_topk))
            new = th.project(xs, x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - s["x_old"]))
            s["x_old"] = x_adv
            loss, grad, logits = probe.loss_and_grad(new, s["y"], s["lt"], self.loss)
            s["x_adv"], s["grad"] = new, grad
            success = is_successful(logits, s["y"], s["st"])
            best.update(s["ids"], new, loss, success, logits)
            s["increases"] = s["increases"] + (loss > s["loss_prev"]).to(loss.dtype)
            s["loss_prev"] = loss
            improved = loss > s["loss_best"]
            s["x_best"] = torch.where(_bcast(improved, new), new, s["x_best"])
            s["grad_best"] = torch.where(_bcast(improved, new), grad, s["grad_best"])
            s["loss_best"] = torch.where(improved, loss, s["loss_best"])
            since_check += 1
            if since_check == k:
                oscillating = s["increases"] <= k * self.rho
                stalled = ~s["reduced_last"] & (s["loss_best_last"] >= s["loss_best"])
                reduce = oscillating | stalled
                s["reduced_last"] = reduce
                s["loss_best_last"] = s["loss_best"].clone()
                s["step"] = torch.where(reduce, s["step"] / 2, s["step"])
                s["x_adv"] = torch.where(_bcast(reduce, new), s["x_best"], s["x_adv"])
                s["grad"] = torch.where(_bcast(reduce, new), s["grad_best"], s["grad"])
                s["increases"] = torch.zeros_like(s["increases"])
                since_check = 0
                k = max(k - size_decr, k_min)
            if self.early_stop and bool(success.any()):
                keep = ~success
                if not bool(keep.any()):
                    return
                s = {name: (v[keep] if isinstance(v, Tensor) else v) for name, v in s.items()}


def _bcast(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


class APGDT(APGD):
    """APGD-T: untargeted robustness test that runs targeted-DLR APGD against each of the
    `n_target_classes` most likely wrong classes in turn, on the points still not broken."""

    name = "apgd-t"

    def __init__(self, threat: ThreatModel, *, steps: int = 100, n_target_classes: int = 9,
                 restarts: int = 1, loss: str = "dlr", rho: float = 0.75, l1_topk: float = 0.05,
                 seed: int | None = 0) -> None:
        super().__init__(threat, steps=steps, restarts=restarts, loss=loss, target=None, rho=rho,
                         l1_topk=l1_topk, seed=seed)
        self.n_target_classes = positive_int("n_target_classes", n_target_classes)

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, ...]:
        best = BestIterate(x)
        clean = probe.logits(x)
        order = clean.argsort(dim=1, descending=True)
        n_targets = min(self.n_target_classes, clean.shape[1] - 1)
        ids = torch.arange(x.shape[0], device=x.device)
        for rank in range(1, n_targets + 1):
            for _ in range(self.restarts):
                todo = ids[~best.success]
                if todo.numel() == 0:
                    return best.result()
                # rank-th most likely class other than the top one (the reference's choice)
                t = order[todo, rank]
                t = torch.where(t == y[todo], order[todo, 0], t)
                self._single_run(probe, x, y, todo, t, targets, best, gen)
        return best.result()

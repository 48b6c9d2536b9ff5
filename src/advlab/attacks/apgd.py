"""Auto-PGD (Croce & Hein 2020): APGD-CE, APGD-DLR, and APGD-T (targeted DLR over the top classes).

Step size starts at 2*eps (linf, l2) or eps (l1) per sample and is halved at checkpoints
w_j (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)) when the loss rose in
fewer than rho = 75% of the steps since the last checkpoint, or when the step was not halved at the
last checkpoint and the best loss did not improve; the iterate then restarts from the best point.
Updates use momentum 0.75. A sample stops once it is adversarial; every other sample follows
exactly the trajectory it would follow in a full-batch run, since all state is per sample.

l1 follows the reference's own scheme: the step moves the coordinates whose gradient is in the top
`topk` share by step/k each (k of them), then the exact projection onto the l1 ball intersected
with the box; every 4% of the steps the sparsity adapts (topk = l0 of the best point / D / 1.5) and
the step resets to eps where that l0 fell by 5%, else shrinks by 1.5 (to no less than eps / 10);
no momentum. `large_reps=True` (the standard suite's l1 setting) spends 30% / 30% / 40% of the
steps at 3, 2 and 1 x eps, each stage starting from the last one's best point.
"""
from __future__ import annotations

import torch
from torch import Tensor

import math

from ..accel import FastPath
from ..threat import ThreatModel, flat_norm
from .base import Attack, ModelProbe, fraction, positive_int
from .losses import check_loss_name, is_successful
from .pgd import BestIterate
from .static_loop import StepLoop
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
                 target: TargetSpec = None, rho: float = 0.75,
                 early_stop: bool = True, eot_iter: int = 1, large_reps: bool = False,
                 seed: int | None = 0) -> None:
        super().__init__(threat, target=target, seed=seed)
        self.large_reps = bool(large_reps)   # l1: 3x, 2x, 1x eps stages (the reference's use_largereps)
        self.eot_iter = positive_int("eot_iter", eot_iter)   # gradients averaged over draws (randomized models)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        self.loss = check_loss_name(loss)
        self.rho = fraction("rho", rho)
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
        if self.threat.norm == "l1":
            self._l1_run(probe, x, y, ids, loss_targets, success_targets, best, gen)
            return
        th = self.threat
        s: dict[str, Tensor | None] = {"ids": ids, "x": x[ids], "y": y[ids],
                                        "lt": loss_targets, "st": success_targets}
        xs = s["x"]
        x_adv = _unit_ball_start(th, xs, gen)
        loss, grad, logits = probe.loss_and_grad(x_adv, s["y"], s["lt"], self.loss, self.eot_iter)
        best.update(ids, x_adv, loss, is_successful(logits, s["y"], s["st"]), logits)
        alpha = 1.0 if th.norm == "l1" else 2.0
        s.update(x_adv=x_adv, x_old=x_adv.clone(), grad=grad, x_best=x_adv.clone(), grad_best=grad.clone(),
                 loss_best=loss.clone(), loss_prev=loss.clone(), increases=torch.zeros_like(loss),
                 step=torch.full_like(loss, alpha * th.eps), loss_best_last=loss.clone(),
                 reduced_last=torch.ones_like(loss, dtype=torch.bool))
        path = getattr(probe.model, "path", None)
        if isinstance(path, FastPath) and path.cuda_graphs:
            self._fixed_shape_run(probe, s, best)
            return
        k, size_decr, k_min = self._checkpoint_lengths()
        since_check = 0
        for i in range(self.steps):
            s["momentum"] = 0.75 if i > 0 else 1.0
            s.update(self._iterate(probe, s, best))
            since_check += 1
            if since_check == k:
                s.update(self._checkpoint(s, k))
                since_check = 0
                k = max(k - size_decr, k_min)
            if self.early_stop and bool(s["success"].any()):
                keep = ~s["success"]
                if not bool(keep.any()):
                    return
                s = {name: (v[keep] if isinstance(v, Tensor) else v) for name, v in s.items()}

    def _iterate(self, probe: ModelProbe, s: dict, best: BestIterate) -> dict[str, Tensor]:
        """One APGD iteration (momentum step, evaluation, best-point bookkeeping): the new values of the
        state that changes. The eager loop and the fixed-shape (CUDA-graph) loop both run it."""
        th, xs, x_adv, m = self.threat, s["x"], s["x_adv"], s["momentum"]
        z = th.project(xs, x_adv + th.step(s["grad"], s["step"]))
        new = th.project(xs, x_adv + m * (z - x_adv) + (1 - m) * (x_adv - s["x_old"]))
        loss, grad, logits = probe.loss_and_grad(new, s["y"], s.get("lt"), self.loss, self.eot_iter)
        success = is_successful(logits, s["y"], s.get("st"))
        best.update(s["ids"], new, loss, success, logits)
        improved = loss > s["loss_best"]
        return {"x_old": x_adv, "x_adv": new, "grad": grad, "success": success, "loss_prev": loss,
                "increases": s["increases"] + (loss > s["loss_prev"]).to(loss.dtype),
                "x_best": torch.where(_bcast(improved, new), new, s["x_best"]),
                "grad_best": torch.where(_bcast(improved, new), grad, s["grad_best"]),
                "loss_best": torch.where(improved, loss, s["loss_best"])}

    def _checkpoint(self, s: dict, k: int) -> dict[str, Tensor]:
        """Halve the step where the loss rose in too few of the last k steps or the best loss stalled
        after an unhalved step; those samples restart from their best point."""
        oscillating = s["increases"] <= k * self.rho
        stalled = ~s["reduced_last"] & (s["loss_best_last"] >= s["loss_best"])
        reduce = oscillating | stalled
        return {"reduced_last": reduce, "loss_best_last": s["loss_best"].clone(),
                "step": torch.where(reduce, s["step"] / 2, s["step"]),
                "x_adv": torch.where(_bcast(reduce, s["x_adv"]), s["x_best"], s["x_adv"]),
                "grad": torch.where(_bcast(reduce, s["x_adv"]), s["grad_best"], s["grad"]),
                "increases": torch.zeros_like(s["increases"])}

    def _fixed_shape_run(self, probe: ModelProbe, s: dict, best: BestIterate) -> None:
        """The iterations on the fixed working set, replayed as a CUDA graph where the device allows
        (eager elsewhere): broken points keep iterating, their best iterate keeps the success, and the
        loop ends early only once every point is broken (checked every 8 iterations)."""
        ids = s["ids"]
        state = {k: v for k, v in s.items() if isinstance(v, Tensor)}
        state["momentum"] = torch.ones((), device=ids.device, dtype=s["x"].dtype)
        state["success"] = torch.zeros_like(ids, dtype=torch.bool)
        loop = StepLoop(lambda st: self._iterate(probe, {**s, **st}, best), state, graph=True)
        k, size_decr, k_min = self._checkpoint_lengths()
        after, since = {}, 0    # iteration -> checkpoint length k, applied after that iteration
        for i in range(self.steps):
            since += 1
            if since == k:
                after[i], since, k = k, 0, max(k - size_decr, k_min)

        def before(i: int) -> None:
            if i == 1:
                loop.state["momentum"].fill_(0.75)
            if i - 1 in after:
                for name, v in self._checkpoint(loop.state, after[i - 1]).items():
                    loop.state[name].copy_(v)

        loop.run(self.steps, before=before, stop=lambda: bool(best.success[ids].all()) if self.early_stop else False,
                 check_every=8)
        probe.n_forward += loop.uncounted * ids.numel() * self.eot_iter
        probe.n_backward += loop.uncounted * ids.numel() * self.eot_iter


    # ------------------------------------------------------------------ l1
    def _l1_stages(self) -> list[tuple[float, int]]:
        if not self.large_reps:
            return [(1.0, self.steps)]
        first = math.ceil(0.3 * self.steps)
        return [(3.0, first), (2.0, first), (1.0, max(self.steps - 2 * first, 1))]

    def _l1_run(self, probe: ModelProbe, x: Tensor, y: Tensor, ids: Tensor, loss_targets: Tensor | None,
                success_targets: Tensor | None, best: BestIterate, gen: torch.Generator) -> None:
        th, xs = self.threat, x[ids]
        noise = torch.randn(xs.shape, device=xs.device, dtype=xs.dtype, generator=gen)
        stages = self._l1_stages()
        start, from_point = xs + noise, False
        for i, (scale, steps) in enumerate(stages):
            stage = th.with_eps(min(scale * th.eps, th.max_distance(xs[0].numel())))
            final = i == len(stages) - 1
            start = self._l1_stage(probe, stage, xs, y[ids], ids, loss_targets, success_targets,
                                   best if final else None, stage.project(xs, start), steps, from_point)
            from_point = True

    def _l1_stage(self, probe: ModelProbe, th: ThreatModel, xs: Tensor, ys: Tensor, ids: Tensor,
                  lt: Tensor | None, st: Tensor | None, best: BestIterate | None, x_adv: Tensor, steps: int,
                  from_point: bool) -> Tensor:
        """One l1 stage at th.eps from x_adv; records into `best` (the final stage only, with early stop)
        and returns the best-loss point per sample (where the next stage starts)."""
        n_fts = xs[0].numel()
        loss, grad, logits = probe.loss_and_grad(x_adv, ys, lt, self.loss, self.eot_iter)
        if best is not None:
            best.update(ids, x_adv, loss, is_successful(logits, ys, st), logits)
        if from_point:
            sp_old = flat_norm(x_adv - xs, "l0").clamp_min(1)
            topk = sp_old / n_fts / 1.5
        else:
            topk = torch.full_like(loss, 0.2)
            sp_old = torch.full_like(loss, float(n_fts))
        s: dict[str, Tensor | None] = {"ids": ids, "x": xs, "y": ys, "lt": lt, "st": st, "x_adv": x_adv,
                                        "grad": grad, "x_best": x_adv.clone(), "grad_best": grad.clone(),
                                        "loss_best": loss.clone(), "step": torch.full_like(loss, th.eps),
                                        "topk": topk, "sp_old": sp_old, "pos": torch.arange(ids.numel(),
                                                                                            device=ids.device)}
        x_best_all = x_adv.clone()
        every, since = max(int(0.04 * steps), 1), 0
        for _ in range(steps):
            g = s["grad"].flatten(1)
            rank = ((1 - s["topk"]) * n_fts).clamp(0, n_fts - 1).long()
            thresh = g.abs().sort(dim=1).values.gather(1, rank[:, None])
            sparse = (g.sign() * (g.abs() >= thresh)).view_as(s["x_adv"])
            count = sparse.abs().flatten(1).sum(1).clamp_min(1e-10)
            new = th.project(s["x"], s["x_adv"] + _bcast(s["step"] / count, sparse) * sparse)
            loss, grad, logits = probe.loss_and_grad(new, s["y"], s["lt"], self.loss, self.eot_iter)
            success = is_successful(logits, s["y"], s["st"])
            if best is not None:
                best.update(s["ids"], new, loss, success, logits)
            improved = loss > s["loss_best"]
            s["x_best"] = torch.where(_bcast(improved, new), new, s["x_best"])
            s["grad_best"] = torch.where(_bcast(improved, new), grad, s["grad_best"])
            s["loss_best"] = torch.where(improved, loss, s["loss_best"])
            s["x_adv"], s["grad"] = new, grad
            since += 1
            if since == every:
                sp = flat_norm(s["x_best"] - s["x"], "l0")
                sparser = sp / s["sp_old"] < 0.95
                s["topk"] = sp / n_fts / 1.5
                s["step"] = torch.where(sparser, torch.full_like(s["step"], th.eps), s["step"] / 1.5).clamp(
                    th.eps / 10, th.eps)
                s["sp_old"] = sp.clamp_min(1)
                s["x_adv"] = torch.where(_bcast(sparser, new), s["x_best"], s["x_adv"])
                s["grad"] = torch.where(_bcast(sparser, new), s["grad_best"], s["grad"])
                since = 0
            if best is not None and self.early_stop and bool(success.any()):
                keep = ~success
                x_best_all[s["pos"]] = s["x_best"]
                if not bool(keep.any()):
                    return x_best_all
                s = {k: (v[keep] if isinstance(v, Tensor) else v) for k, v in s.items()}
        x_best_all[s["pos"]] = s["x_best"]
        return x_best_all


def _bcast(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


class APGDT(APGD):
    """APGD-T: untargeted robustness test that runs targeted-DLR APGD against each of the
    `n_target_classes` most likely wrong classes in turn, on the points still not broken."""

    name = "apgd-t"

    def __init__(self, threat: ThreatModel, *, steps: int = 100, n_target_classes: int = 9,
                 restarts: int = 1, loss: str = "dlr", rho: float = 0.75,
                 eot_iter: int = 1, large_reps: bool = False, seed: int | None = 0) -> None:
        super().__init__(threat, steps=steps, restarts=restarts, loss=loss, target=None, rho=rho,
                         eot_iter=eot_iter, large_reps=large_reps, seed=seed)
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

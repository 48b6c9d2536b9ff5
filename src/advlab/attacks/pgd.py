"""Projected gradient descent (Madry et al. 2018) and BIM, for linf / l2 / l1 threat models."""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ..accel import FastPath
from ..errors import AttackConfigError
from ..threat import ThreatModel
from .base import Attack, ModelProbe, fraction, positive_float, positive_int
from .losses import attack_loss, check_loss_name, is_successful
from .static_loop import StepLoop
from .targeting import TargetSpec

Schedule = Literal["constant", "cosine", "step"]


def step_size_at(base: float, step: int, total: int, schedule: str) -> float:
    """Step size of iteration `step` out of `total` under a schedule."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * step / total))
    if schedule == "step":
        return base * (0.1 if step >= 0.75 * total else 0.5 if step >= 0.5 * total else 1.0)
    raise AttackConfigError(f"unknown step-size schedule {schedule!r}; use constant, cosine or step")


class BestIterate:
    """Per-sample best point seen so far: a successful point beats any unsuccessful one; ties on
    success are broken by the higher loss. It also keeps the logits of each kept point, so the
    attack can report success without another forward pass."""

    def __init__(self, x: Tensor) -> None:
        self.x = x.clone()
        self.loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=torch.float32)
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.logits: Tensor | None = None
        self.seen = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, ids: Tensor, x: Tensor, loss: Tensor, success: Tensor, logits: Tensor) -> None:
        """Keep the better of the stored and the new point per sample, with masked writes only (no
        boolean indexing), so recording an iterate never waits for the device."""
        if self.logits is None:
            self.logits = logits.new_zeros((self.x.shape[0], logits.shape[1]))
        old_s, old_l = self.success[ids], self.loss[ids]
        better = (success & ~old_s) | ((success == old_s) & (loss.float() > old_l)) | ~self.seen[ids]
        rows = better.view(-1, *([1] * (x.ndim - 1)))
        self.x[ids] = torch.where(rows, x.to(self.x.dtype), self.x[ids])
        self.loss[ids] = torch.where(better, loss.float(), old_l)
        self.success[ids] = torch.where(better, success, old_s)
        self.logits[ids] = torch.where(better[:, None], logits.to(self.logits.dtype), self.logits[ids])
        self.seen[ids] = True

    def take(self, ids: Tensor, x: Tensor) -> None:
        """Keep x for samples `ids` unevaluated (its success unknown, so no logits are handed over)."""
        self.x[ids] = x.to(self.x.dtype)
        self.seen[ids] = False

    def observe(self, probe: ModelProbe, ids: Tensor, x: Tensor, y: Tensor, t: Tensor | None,
                loss: str, need_grad: bool, eot: int = 1) -> tuple[Tensor, Tensor | None]:
        """Evaluate the iterate x of samples `ids` (with its input gradient if needed), record it,
        and return (success per sample, gradient or None)."""
        if need_grad:
            values, grad, logits = probe.loss_and_grad(x, y, t, loss, eot)
        else:
            logits, grad = probe.logits(x), None
            values = attack_loss(loss, logits, y, t)
        success = is_successful(logits, y, t)
        self.update(ids, x, values, success, logits)
        return success, grad

    def result(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(x, loss, extras) for Attack._run; the logits are handed over only if every point has them."""
        extra = {"_logits": self.logits} if self.logits is not None and bool(self.seen.all()) else {}
        return self.x, self.loss, extra


def select_rows(mask: Tensor, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """The rows in mask of each tensor (None stays None): shrinking the working set on early stop."""
    return tuple(t[mask] if t is not None else None for t in tensors)


class PGD(Attack):
    """Iterated steepest ascent with projection, random start, restarts and best iterate.

    steps: iterations per restart; step_size: absolute (default 2.5 * eps / steps);
    early_stop: stop iterating on a sample once it is adversarial (its point is then kept), and skip
    points that are misclassified to begin with; early_stop=False runs every step on every point
    (Madry et al.'s training attack) and needs no clean forward pass;
    restarts: further random starts run only on samples not yet broken;
    step_rule (linf): "steepest" moves every entry by step_size * sign(g) and clips to the ball;
    "scaled" moves along g / max|g| and rescales the whole perturbation back into the ball (the rule
    of Kumano et al.'s public code: a perturbation shaped like the gradient, not its sign);
    check_every: with early stopping, drop broken samples from the working set only every k steps;
    between checks the loop never waits for the device (no host synchronization), which is what
    keeps a GPU busy. Broken samples that keep stepping cannot lose their success (the best iterate
    keeps it), so with one restart k > 1 finds a superset of k = 1's breaks. None: 1 on CPU, 4 on CUDA.
    """

    name = "pgd"
    norms = ("linf", "l2", "l1")

    def __init__(self, threat: ThreatModel, *, steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, loss: str = "ce",
                 target: TargetSpec = None, schedule: Schedule = "constant", early_stop: bool = True,
                 l1_topk: float = 0.05, check_every: int | None = None, eot_iter: int = 1,
                 step_rule: str = "steepest", seed: int | None = 0) -> None:
        super().__init__(threat, target=target, seed=seed)
        if step_rule not in ("steepest", "scaled"):
            raise AttackConfigError(f"unknown step_rule {step_rule!r}; use 'steepest' or 'scaled'")
        if step_rule == "scaled" and threat.norm != "linf":
            raise AttackConfigError(f"step_rule='scaled' is a linf rule (for {threat.norm} the steepest step "
                                    "is already the scaled gradient)")
        self.step_rule = step_rule
        self.eot_iter = positive_int("eot_iter", eot_iter)   # gradients averaged over draws (randomized models)
        self.steps = positive_int("steps", steps)
        self.check_every = None if check_every is None else positive_int("check_every", check_every)
        self.restarts = positive_int("restarts", restarts)
        self.step_size = (2.5 * threat.eps / self.steps if step_size is None
                          else positive_float("step_size", step_size, allow_zero=True))
        self.random_start = bool(random_start)
        self.loss = check_loss_name(loss)
        step_size_at(1.0, 0, 1, schedule)
        self.schedule = schedule
        self.early_stop = bool(early_stop)
        self.skip_adversarial = self.early_stop
        self.l1_topk = fraction("l1_topk", l1_topk, include_one=True)

    def _step(self, grad: Tensor, size: Tensor | float) -> Tensor:
        """The threat model's steepest-ascent step; l1 moves PGD's own share `l1_topk` of coordinates."""
        if self.threat.norm == "l1":
            return self.threat.geometry.step(grad, size, topk=self.l1_topk)
        return self.threat.step(grad, size)

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        best = BestIterate(x)
        all_ids = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.restarts):
            ids = all_ids[~best.success] if self.early_stop else all_ids
            if ids.numel() == 0:
                break
            self._one_run(probe, x, y, targets, ids, best, gen)
        return best.result()

    def _one_run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
                 ids: Tensor, best: BestIterate, gen: torch.Generator) -> None:
        xs, ys = x[ids], y[ids]
        ts = targets[ids] if targets is not None else None
        cur = self.threat.random_start(xs, gen, radius="uniform") if self.random_start else xs.clone()
        path = getattr(probe.model, "path", None)
        if isinstance(path, FastPath) and path.cuda_graphs and self.threat.norm in ("linf", "l2"):
            self._fixed_shape_run(probe, xs, ys, ts, ids, best, cur, graph=True)
            return
        every = self.check_every or (4 if x.is_cuda else 1)
        # linf: the feasible set is a box, so step + projection fuse into add + one clamp
        lo, hi = self.threat.linf_box(xs) if self.threat.norm == "linf" else (None, None)
        for k in range(self.steps + 1):
            if k == self.steps and not (self.early_stop or probe.verify):
                best.take(ids, cur)  # perturb(): Madry's last iterate, without the forward pass that checks it
                break
            success, grad = best.observe(probe, ids, cur, ys, ts, self.loss, need_grad=k < self.steps,
                                         eot=self.eot_iter)
            if k == self.steps:
                break
            if self.early_stop and k % every == 0 and bool(success.any()):
                if bool(success.all()):
                    break
                ids, xs, ys, ts, cur, grad, lo, hi = select_rows(~success, ids, xs, ys, ts, cur, grad, lo, hi)
            cur = self._advance(xs, cur, grad, step_size_at(self.step_size, k, self.steps, self.schedule), lo, hi)

    def _advance(self, xs: Tensor, cur: Tensor, grad: Tensor, size: Tensor | float, lo: Tensor | None,
                 hi: Tensor | None) -> Tensor:
        """One step from cur along grad and back into the feasible set (both loops use it)."""
        if self.step_rule == "scaled":
            return self._scaled_linf_step(xs, cur, grad, size)
        if lo is not None:   # linf: step + projection fuse into add + one clamp (size * sign is exact)
            return torch.clamp(cur + size * grad.sign(), lo, hi)
        return self.threat.project(xs, cur + self._step(grad, size))

    def _fixed_shape_run(self, probe: ModelProbe, xs: Tensor, ys: Tensor, ts: Tensor | None, ids: Tensor,
                         best: BestIterate, cur: Tensor, graph: bool) -> None:
        """The iterations on a fixed working set, as a CUDA graph where `graph` and the device allow.
        Broken points keep stepping (their best iterate keeps the success), so early stopping only
        ends the loop once every point is broken, checked every 8 iterations."""
        lo, hi = self.threat.linf_box(xs) if self.threat.norm == "linf" else (None, None)
        state = {"cur": cur, "size": torch.zeros((), device=cur.device, dtype=cur.dtype)}

        def body(s: dict[str, Tensor]) -> dict[str, Tensor]:
            values, grad, logits = probe.loss_and_grad(s["cur"], ys, ts, self.loss, self.eot_iter)
            best.update(ids, s["cur"], values, is_successful(logits, ys, ts), logits)
            return {"cur": self._advance(xs, s["cur"], grad, s["size"], lo, hi)}

        loop = StepLoop(body, state, graph=graph)

        def before(k: int) -> None:
            loop.state["size"].fill_(step_size_at(self.step_size, k, self.steps, self.schedule))

        stop = (lambda: bool(best.success[ids].all())) if self.early_stop else None
        loop.run(self.steps, before=before, stop=stop, check_every=8)
        probe.n_forward += loop.uncounted * ids.numel() * self.eot_iter
        probe.n_backward += loop.uncounted * ids.numel() * self.eot_iter
        if self.early_stop or probe.verify:
            best.observe(probe, ids, loop.state["cur"], ys, ts, self.loss, need_grad=False)
        else:
            best.take(ids, loop.state["cur"])  # perturb(): Madry's last iterate


    def _scaled_linf_step(self, x: Tensor, cur: Tensor, grad: Tensor, size: Tensor | float) -> Tensor:
        """cur + size * g / max|g|, the perturbation rescaled (not clipped) to linf norm <= eps, then
        clipped to the bounds: inside the ball and the box."""
        dims = tuple(range(1, x.ndim))
        g = grad / grad.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)
        delta = cur + size * g - x
        scale = (self.threat.eps / delta.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        return (x + delta * scale).clamp(*self.threat.bounds)


class BIM(PGD):
    """Basic iterative method (Kurakin et al.): PGD without random start."""

    name = "bim"

    def __init__(self, threat: ThreatModel, *, steps: int = 10, step_size: float | None = None,
                 loss: str = "ce", target: TargetSpec = None, seed: int | None = 0) -> None:
        super().__init__(threat, steps=steps, step_size=step_size, random_start=False, restarts=1,
                         loss=loss, target=target, seed=seed)

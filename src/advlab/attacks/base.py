"""The attack interface: a configured object called as attack(model, x, y) -> AttackResult.

The base class owns everything attacks share: input validation, the attack-mode guard, counting
forward/backward passes, target resolution, skipping points that are already adversarial, and the
final bookkeeping (success, norms). Subclasses implement `_run` on the points still to attack.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..accel import FastModel
from ..errors import AttackConfigError, InputError, ModelOutputError
from ..models.guard import attack_mode
from ..threat import ThreatModel
from .losses import attack_loss, is_successful
from .targeting import TargetSpec, check_target_spec, resolve_targets


@dataclass
class AttackResult:
    """What an attack returns. All tensors are per sample, on the inputs' device."""

    x_adv: Tensor
    success: Tensor            # bool [N]: misclassified (untargeted) or classified as target
    norms: Tensor              # [N] distance ||x_adv - x|| under the attack's norm
    loss: Tensor               # [N] attack loss at x_adv (the best iterate's loss)
    n_forward: int             # forward passes, counted in samples
    n_backward: int            # input-gradient passes, counted in samples
    targets: Tensor | None = None
    seed: int | None = None
    attack: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    min_norm: Tensor | None = None   # minimum-norm attacks: [N] smallest adversarial distance found
    #                                  (0 where x is already misclassified, inf where none was found)
    x_min: Tensor | None = None      # minimum-norm attacks: the point at that distance (x where none)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())

    def robust_accuracy_at(self, eps: float | list[float]) -> float | list[float]:
        """A minimum-norm attack's robust accuracy at any eps (one run answers every eps): the share
        of points with no adversarial point found within eps."""
        if self.min_norm is None:
            raise AttackConfigError(f"{self.attack or 'this attack'} is not a minimum-norm attack: its result "
                                    "holds one eps only; use a MinNormAttack (DeepFool, FAB) for many eps")
        if isinstance(eps, (list, tuple)):
            return [float((self.min_norm > e).float().mean()) for e in eps]
        return float((self.min_norm > eps).float().mean())

    def robust_accuracy(self, y: Tensor) -> float:
        """Fraction still correct after the attack (for untargeted results)."""
        return float((~self.success).float().mean())


class ModelProbe:
    """Calls the model on behalf of an attack and counts forward/backward passes (in samples)."""

    def __init__(self, model: nn.Module, num_classes: int | None = None,
                 labels: tuple[Tensor | None, ...] = (), verify: bool = True,
                 input_dtype: torch.dtype | None = None) -> None:
        self.model = model
        self.input_dtype = input_dtype  # a low-precision model: attacks work in fp32, the model sees its dtype
        self.num_classes = num_classes
        self.n_forward = 0
        self.n_backward = 0
        self._labels_to_check = labels
        self.verify = verify  # False under Attack.perturb: the caller needs x_adv only, not verified success

    def _check(self, out: object, n: int) -> Tensor:
        if not isinstance(out, Tensor):
            raise ModelOutputError(f"the model returned {type(out).__name__}, expected a logits tensor")
        if out.ndim != 2 or out.shape[0] != n:
            raise ModelOutputError(
                f"the model returned shape {tuple(out.shape)} for a batch of {n}; expected (N, num_classes)")
        if out.shape[1] < 2:
            raise ModelOutputError(f"the model returned {out.shape[1]} class(es); need at least 2")
        if self.num_classes is None:
            self.num_classes = out.shape[1]
            for name, lab in zip(("y", "targets"), self._labels_to_check):
                if lab is not None:
                    check_label_range(lab, self.num_classes, name=name)
        elif out.shape[1] != self.num_classes:
            raise ModelOutputError(f"the model returned {out.shape[1]} classes, expected {self.num_classes}")
        return out

    def forward(self, x: Tensor) -> Tensor:
        """The model's checked output at x (autograd as the caller sets it; not counted)."""
        if self.input_dtype is None:
            return self._check(self.model(x), x.shape[0])
        out = self._check(self.model(x.to(self.input_dtype)), x.shape[0])
        return out.float()

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Logits without autograd, checked to be finite (a model that returns NaN or inf gives no
        answer an attack could be judged by)."""
        self.n_forward += x.shape[0]
        return check_finite_logits(self.forward(x))

    def loss_and_grad(self, x: Tensor, y: Tensor, targets: Tensor | None, loss: str,
                      eot: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """(per-sample loss, gradient w.r.t. x, logits) at x; no parameter gradients are built.

        eot > 1 (expectation over transformation, for randomized models): the gradient is averaged
        over `eot` passes; loss and logits are the last pass's (as the reference APGD)."""
        grad_sum = None
        for _ in range(eot):
            x_req = x.detach().requires_grad_(True)
            with torch.enable_grad():
                out = self.forward(x_req)
                values = attack_loss(loss, out, y, targets)
                grad, = torch.autograd.grad(values.sum(), x_req)
            grad_sum = grad if grad_sum is None else grad_sum + grad
            self.n_forward += x.shape[0]
            self.n_backward += x.shape[0]
        grad = grad_sum if eot == 1 else grad_sum / eot
        return values.detach(), grad.detach(), out.detach()


def check_finite_logits(logits: Tensor) -> Tensor:
    """Raise ModelOutputError when logits hold NaN or inf (success judged from them would be made up)."""
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ModelOutputError(f"the model returned NaN or inf logits for {bad} of {logits.shape[0]} inputs; "
                               "no prediction (and no robustness) can be read from them")
    return logits


LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_model_dtype(model: nn.Module, x: Tensor) -> None:
    """x must have the dtype of the model's floating weights (torch would fail with 'mat1 and mat2')."""
    weights = (t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
    w = next(weights, None)
    if w is not None and w.dtype != x.dtype and not isinstance(model, FastModel):  # autocast casts for it
        raise InputError(f"x has dtype {x.dtype} but the model's weights are {w.dtype}; "
                         f"pass x.to({w.dtype}) or convert the model with model.to({x.dtype})")


def round_toward(x: Tensor, x_adv: Tensor, dtype: torch.dtype) -> Tensor:
    """x_adv (fp32) cast to `dtype` with every entry rounded toward x (x is representable in dtype), so
    no coordinate of the perturbation grows: the point stays in the eps-ball and the input box."""
    cast = x_adv.to(dtype)
    x_low = x.to(dtype)
    over = (cast.float() - x).abs() > (x_adv - x).abs()
    return torch.where(over, torch.nextafter(cast, x_low), cast)


def check_labels(y: object, n: int, device: torch.device, name: str = "y") -> Tensor:
    """Labels must be an integer tensor of shape (N,) on the inputs' device."""
    if not isinstance(y, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise InputError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise InputError(f"{name} must have shape (N,), got {tuple(y.shape)}")
    if y.shape[0] != n:
        raise InputError(f"batch size mismatch: x has {n} samples, {name} has {y.shape[0]}")
    if y.device != device:
        raise InputError(f"{name} is on {y.device} but x is on {device}; put them on the same device")
    return y.long()


def check_label_range(y: Tensor, num_classes: int, name: str = "y") -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise InputError(
            f"{name} has values in [{int(y.min())}, {int(y.max())}] but the model has {num_classes} classes")


def make_generator(seed: int | None, device: torch.device) -> tuple[torch.Generator, int]:
    """A generator on the inputs' device; a fresh seed is drawn (and recorded) when seed is None."""
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen, int(seed)


class Attack(ABC):
    """Base class: subclasses set `name`, `norms` and implement `_run`."""

    name: ClassVar[str] = "attack"
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1", "l0")
    uses_gradients: ClassVar[bool] = True
    min_norm_attack: ClassVar[bool] = False   # MinNormAttack: the result carries min_norm and x_min

    skip_adversarial: bool = True
    """Leave points that are already adversarial at x untouched (saves work in evaluation). Fixed
    maps such as FGSM and noise perturb every point instead; an instance may turn skipping off
    (e.g. dataset builders that want the lowest-loss point for every sample)."""

    def __init__(self, threat: ThreatModel, *, target: TargetSpec = None, seed: int | None = 0) -> None:
        if not isinstance(threat, ThreatModel):
            raise AttackConfigError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        if threat.norm not in self.norms:
            raise AttackConfigError(
                f"{type(self).__name__} supports norms {', '.join(self.norms)}, not {threat.norm!r}")
        self.threat = threat
        self.target = check_target_spec(target)
        self.seed = seed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.threat}, target={self.target!r})"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *,
                 targets: Tensor | None = None, eval_mode: bool = True) -> AttackResult:
        """Attack the batch (x, y). Pass `targets` for a targeted attack with explicit classes.

        eval_mode=False keeps the model's own train/eval flags while attacking (e.g. to craft
        training examples with BatchNorm in train mode); parameter gradients are off either way.
        """
        return self._execute(model, x, y, targets, eval_mode, verify=True)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, targets: Tensor | None = None,
                eval_mode: bool = True) -> Tensor:
        """Only the adversarial inputs, without the verifying forward pass that per-sample success
        costs where the attack did not evaluate its output (FGSM, fixed maps): what training
        objectives need. The same points as `__call__(...).x_adv`, except fixed-step PGD, which
        returns its last iterate (Madry et al.'s training attack) instead of the best one."""
        return self._execute(model, x, y, targets, eval_mode, verify=False).x_adv

    def _execute(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None, eval_mode: bool,
                 verify: bool) -> AttackResult:
        start = time.perf_counter()
        self.threat.check_inputs(x)
        y = check_labels(y, x.shape[0], x.device)
        if targets is not None:
            targets = check_labels(targets, x.shape[0], x.device, name="targets")
        check_model_dtype(model, x)
        # a half-precision model is attacked in fp32 (projections, steps and losses stay exact); the
        # model sees its own dtype, and the result is rounded toward x and verified in that dtype
        low = x.dtype if x.dtype in LOW_PRECISION else None
        x = x.detach().float() if low else x.detach()
        gen, seed = make_generator(self.seed, x.device)
        with attack_mode(model, eval_mode=eval_mode):
            probe = ModelProbe(model, labels=(y, targets), verify=verify, input_dtype=low)
            # a clean forward pass is needed to skip points that are already adversarial and to
            # derive targets from the clean prediction; otherwise labels are checked on first output
            clean = probe.logits(x) if (self.skip_adversarial or (targets is None and self.target)) else None
            if targets is not None and bool((targets == y).any()):
                raise InputError("targets equal the true labels for some samples")
            if targets is None and self.target is not None:
                targets = resolve_targets(self.target, y, clean, gen)
            x_adv = x.clone()
            extra: dict[str, Tensor] = {}
            if clean is not None and self.skip_adversarial:
                todo = ~is_successful(clean, y, targets)
                loss = attack_loss("ce", clean, y, targets)
                final = clean.clone()
            else:
                todo = torch.ones_like(y, dtype=torch.bool)
                loss = torch.zeros(x.shape[0], device=x.device)
                final = None
            idx = todo.nonzero().squeeze(1)
            verified = True
            if idx.numel():
                t_sub = targets[idx] if targets is not None else None
                out = self._run(probe, x[idx], y[idx], t_sub, gen)
                x_adv[idx] = out[0].to(x.dtype)
                loss[idx] = out[1].to(loss.dtype)
                extras = dict(out[2]) if len(out) > 2 else {}
                sub_logits = extras.pop("_logits", None)
                for key, sub in extras.items():
                    full = x.clone() if sub.shape == x[idx].shape else sub.new_zeros((x.shape[0], *sub.shape[1:]))
                    full[idx] = sub
                    extra[key] = full
                if sub_logits is not None and final is not None:
                    final[idx] = sub_logits.to(final.dtype)
                elif sub_logits is not None and idx.numel() == x.shape[0]:
                    final = sub_logits
                else:
                    verified = False
            if low is not None:
                x_adv = round_toward(x, self._finalize(x, x_adv), low).float()
                final = probe.logits(x_adv) if verify else None
            elif not verified or final is None:
                # the attack did not evaluate its output points: make them feasible and look
                x_adv = self._finalize(x, x_adv)
                final = probe.logits(x_adv) if verify else None
            # unverified (perturb): success is unknown and reported as False; only x_adv is handed out
            if final is not None:
                check_finite_logits(final)
            success = is_successful(final, y, targets) if final is not None else torch.zeros_like(todo)
        norms = self.threat.distance(x, x_adv)
        if low is not None:
            x_adv = x_adv.to(low)
        min_norm, x_min = extra.pop("min_norm", None), extra.pop("x_min", None)
        if self.min_norm_attack and min_norm is None:   # every point was adversarial already: distance 0
            min_norm, x_min = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype), x.clone()
        return AttackResult(
            x_adv=x_adv, success=success, norms=norms, loss=loss,
            n_forward=probe.n_forward, n_backward=probe.n_backward, targets=targets, seed=seed,
            attack=type(self).__name__, seconds=time.perf_counter() - start, extra=extra,
            min_norm=min_norm, x_min=x_min)

    def _finalize(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Last guarantee that the output is feasible; minimal-norm attacks override this."""
        return self.threat.project(x, x_adv)

    @abstractmethod
    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, ...]:
        """Attack points that are not yet adversarial; return (x_adv, loss per sample) and
        optionally a dict of further per-sample tensors, which lands in AttackResult.extra."""


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AttackConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def positive_float(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool):
        raise AttackConfigError(f"{name} must be a number, got the boolean {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AttackConfigError(f"{name} must be a number, got {value!r}") from None
    if not (v > 0 or (allow_zero and v == 0)) or v != v or v == float("inf"):
        raise AttackConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def fraction(name: str, value: float, *, include_one: bool = False) -> float:
    """A number in (0, 1) (or (0, 1] with include_one), e.g. APGD's rho or a share of coordinates."""
    v = positive_float(name, value)
    if v > 1 or (v == 1 and not include_one):
        raise AttackConfigError(f"{name} must be in (0, {'1]' if include_one else '1)'}, got {value!r}")
    return v

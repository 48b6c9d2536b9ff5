"""Training objectives: what loss a minibatch contributes, and how training examples are crafted.

Every objective crafts its examples against the current model with parameter gradients off, with
BatchNorm/dropout in eval mode by default (`craft_in_eval=False` keeps the training mode), and
returns the scalar loss to back-propagate plus a few statistics. Free AT owns its whole step.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import FGSM, PGD, RandomNoise
from ..attacks.base import make_generator
from ..errors import AdvlabError
from ..models.guard import attack_mode
from ..threat import ThreatModel


@dataclass
class StepContext:
    """What an objective may need besides the batch: the optimizer (free AT), the step's seed,
    a hook that applies weight constraints after an optimizer step, and the autocast context."""

    optimizer: torch.optim.Optimizer
    seed: int
    after_step: Any = None
    autocast: Any = None
    penalty: Any = None  # () -> scalar tensor added to every loss (L1 regularization), or None
    stats: dict[str, float] = field(default_factory=dict)


class Objective:
    """A training objective. Override `loss`, or `train_step` for objectives with their own loop."""

    name = "objective"
    craft_in_eval = True

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def train_step(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
        """One optimizer step on the batch; returns the (detached) loss."""
        with ctx.autocast():
            loss = self.loss(model, x, y, ctx)
        if ctx.penalty is not None:
            loss = loss + ctx.penalty()
        ctx.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx.optimizer.step()
        if ctx.after_step is not None:
            ctx.after_step()
        return loss.detach()

    def _craft(self, attack: Any, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor:
        attack.seed = seed
        return attack.perturb(model, x, y, eval_mode=self.craft_in_eval).detach()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def set_eps_scale(self, scale: float) -> None:
        """Shrink the training threat to `scale` x its configured eps, with every absolute step size
        scaled alike: the trainer's eps ramp (large-eps PGD-AT from step 0 can collapse to a constant
        prediction). scale=1 restores the configured objective exactly. No-op without a threat."""
        if not 0.0 < scale <= 1.0:
            raise AdvlabError(f"eps scale must be in (0, 1], got {scale}")
        for part in (self, getattr(self, "attack", None)):
            threat = getattr(part, "threat", None)
            if threat is None or threat.norm == "l0":
                continue
            base = part.__dict__.setdefault("_eps_base", (threat, getattr(part, "step_size", None)))
            part.threat = replace(base[0], eps=base[0].eps * scale)
            if base[1] is not None:
                part.step_size = base[1] * scale


def _ce(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The model's training loss: cross-entropy, unless the model defines its own `training_loss`
    (e.g. the RBF network's per-unit likelihood)."""
    inner = getattr(model, "module", model)  # DDP / compiled wrappers
    custom = getattr(inner, "training_loss", None) or getattr(getattr(inner, "_orig_mod", None), "training_loss", None)
    logits = model(x)
    return custom(logits, y) if custom is not None else F.cross_entropy(logits.float(), y)


class Standard(Objective):
    """Cross-entropy on clean examples."""

    name = "standard"

    def loss(self, model, x, y, ctx):
        return _ce(model, x, y)


class FGSMMixture(Objective):
    """Goodfellow et al. 2015: alpha * J(x) + (1 - alpha) * J(x + eps sign(grad_x J)), examples
    regenerated against the current model every step, no gradient through sign()."""

    name = "fgsm_mixture"

    def __init__(self, threat: ThreatModel, alpha: float = 0.5, craft_in_eval: bool = True) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise AdvlabError(f"alpha must be in [0, 1], got {alpha}")
        self.threat, self.alpha, self.craft_in_eval = threat, alpha, craft_in_eval
        self.attack = FGSM(threat)

    def loss(self, model, x, y, ctx):
        clean = _ce(model, x, y)
        if self.alpha == 1.0:
            return clean  # exactly standard training (no extra forward pass, no extra dropout draws)
        x_adv = self._craft(self.attack, model, x, y, ctx.seed)
        return self.alpha * clean + (1 - self.alpha) * _ce(model, x_adv, y)

    def describe(self):
        return {"name": self.name, "alpha": self.alpha, "eps": self.threat.eps, "norm": self.threat.norm}


class NoiseMixture(Objective):
    """The random-noise baselines of Goodfellow et al. (G9): alpha * J(x) + (1 - alpha) * J(x + noise)
    with sign (+-eps), uniform U(-eps, eps) or gaussian noise; alpha = 0 trains on noisy inputs only."""

    name = "noise_mixture"

    def __init__(self, threat: ThreatModel, kind: str = "sign", alpha: float = 0.5) -> None:
        self.threat, self.kind, self.alpha = threat, kind, alpha
        self.attack = RandomNoise(threat, kind)

    def loss(self, model, x, y, ctx):
        clean = _ce(model, x, y) if self.alpha > 0 else 0.0
        self.threat.check_inputs(x)
        # the noise needs no model pass: the attack's draws, from a generator seeded as the attack seeds it
        x_noise = self.attack.sample(x.detach(), make_generator(ctx.seed, x.device)[0])
        return self.alpha * clean + (1 - self.alpha) * _ce(model, x_noise, y)

    def describe(self):
        return {"name": self.name, "kind": self.kind, "alpha": self.alpha, "eps": self.threat.eps}


class PGDAT(Objective):
    """Madry et al. 2018: cross-entropy on PGD examples (random start, every point perturbed)."""

    name = "pgd_at"

    def __init__(self, threat: ThreatModel, steps: int = 10, step_size: float | None = None,
                 craft_in_eval: bool = True) -> None:
        self.threat, self.steps, self.craft_in_eval = threat, steps, craft_in_eval
        self.attack = PGD(threat, steps=steps, step_size=step_size, early_stop=False)
        self.attack.skip_adversarial = False  # training maximizes the loss of every point

    def loss(self, model, x, y, ctx):
        return _ce(model, self._craft(self.attack, model, x, y, ctx.seed), y)

    def describe(self):
        return {"name": self.name, "eps": self.threat.eps, "norm": self.threat.norm, "steps": self.steps,
                "step_size": self.attack.step_size}


class TRADES(Objective):
    """Zhang et al. 2019: CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximizing the KL term by PGD
    from x + 0.001 N(0, I)."""

    name = "trades"

    def __init__(self, threat: ThreatModel, beta: float = 6.0, steps: int = 10,
                 step_size: float | None = None, craft_in_eval: bool = True) -> None:
        if beta < 0:
            raise AdvlabError(f"beta must be >= 0, got {beta}")
        self.threat, self.beta, self.steps, self.craft_in_eval = threat, beta, steps, craft_in_eval
        self.step_size = step_size if step_size is not None else 2.5 * threat.eps / steps

    def _kl_attack(self, model: nn.Module, x: Tensor, seed: int) -> Tensor:
        gen = torch.Generator(device=x.device).manual_seed(seed)
        with attack_mode(model, eval_mode=self.craft_in_eval):
            with torch.no_grad():
                p_nat = F.softmax(model(x).float(), dim=1)
            x_adv = self.threat.project(x, x + 0.001 * torch.randn(x.shape, generator=gen, device=x.device,
                                                                    dtype=x.dtype))
            for _ in range(self.steps):
                x_req = x_adv.detach().requires_grad_(True)
                with torch.enable_grad():
                    kl = F.kl_div(F.log_softmax(model(x_req).float(), dim=1), p_nat, reduction="sum")
                    grad, = torch.autograd.grad(kl, x_req)
                x_adv = self.threat.project(x, x_adv + self.threat.step(grad, self.step_size))
        return x_adv.detach()

    def loss(self, model, x, y, ctx):
        if self.beta == 0:
            return _ce(model, x, y)  # exactly standard training
        x_adv = self._kl_attack(model, x, ctx.seed)
        logits = model(x).float()
        robust = F.kl_div(F.log_softmax(model(x_adv).float(), dim=1), F.softmax(logits, dim=1),
                          reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * robust

    def describe(self):
        return {"name": self.name, "beta": self.beta, "eps": self.threat.eps, "steps": self.steps}


class FGSMRS(Objective):
    """Fast adversarial training (Wong, Rice, Kolter 2020): FGSM from a uniform random start with
    step alpha (default 1.25 eps), the perturbation clipped to the eps-ball."""

    name = "fgsm_rs"

    def __init__(self, threat: ThreatModel, step_size: float | None = None, craft_in_eval: bool = False) -> None:
        if threat.norm != "linf":
            raise AdvlabError("FGSM-RS is defined for linf threat models")
        self.threat, self.craft_in_eval = threat, craft_in_eval
        self.step_size = 1.25 * threat.eps if step_size is None else step_size

    def craft(self, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor:
        gen = torch.Generator(device=x.device).manual_seed(seed)
        eps = self.threat.eps
        delta = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
        with attack_mode(model, eval_mode=self.craft_in_eval):
            x0 = self.threat.clip(x + delta).requires_grad_(True)
            with torch.enable_grad():
                grad, = torch.autograd.grad(F.cross_entropy(model(x0).float(), y), x0)
        delta = (delta + self.step_size * grad.sign()).clamp(-eps, eps)
        return self.threat.clip(x + delta).detach()

    def loss(self, model, x, y, ctx):
        return _ce(model, self.craft(model, x, y, ctx.seed), y)

    def describe(self):
        return {"name": self.name, "eps": self.threat.eps, "step_size": self.step_size}


class FreeAT(Objective):
    """Free adversarial training (Shafahi et al. 2019): each minibatch is replayed m times; every
    replay's backward pass yields both the weight gradient (one optimizer step) and the input
    gradient that updates the perturbation, which carries over to the next minibatch."""

    name = "free_at"

    def __init__(self, threat: ThreatModel, replays: int = 8) -> None:
        if threat.norm != "linf":
            raise AdvlabError("free AT is implemented for linf threat models")
        if replays < 1:
            raise AdvlabError(f"replays must be >= 1, got {replays}")
        self.threat, self.replays = threat, replays
        self.delta: Tensor | None = None

    def train_step(self, model, x, y, ctx):
        eps = self.threat.eps
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = torch.zeros_like(x)
        for _ in range(self.replays):
            x_adv = self.threat.clip(x + self.delta).requires_grad_(True)
            with ctx.autocast():
                loss = _ce(model, x_adv, y)
            if ctx.penalty is not None:
                loss = loss + ctx.penalty()
            ctx.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.delta = (self.delta + eps * x_adv.grad.sign()).clamp(-eps, eps).detach()
            ctx.optimizer.step()
            if ctx.after_step is not None:
                ctx.after_step()
        return loss.detach()

    def describe(self):
        return {"name": self.name, "eps": self.threat.eps, "replays": self.replays}


OBJECTIVES = {c.name: c for c in (Standard, FGSMMixture, NoiseMixture, PGDAT, TRADES, FGSMRS, FreeAT)}


def objective_arguments(name: str) -> list[str]:
    """The keyword arguments objective `name` takes besides its threat model."""
    import inspect
    if name not in OBJECTIVES:
        raise AdvlabError(f"unknown objective {name!r}; available: {', '.join(OBJECTIVES)}")
    params = inspect.signature(OBJECTIVES[name].__init__).parameters
    return [p for p in params if p not in ("self", "threat")]


def build_objective(name: str, threat: ThreatModel | None = None, **kwargs: Any) -> Objective:
    """Objective `name` with its arguments; arguments it does not take are refused, naming the valid ones."""
    valid = objective_arguments(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise AdvlabError(f"objective {name!r} takes no argument {', '.join(map(repr, unknown))}; "
                          f"its arguments are {', '.join(valid) or '(none)'}")
    cls = OBJECTIVES[name]
    if cls is Standard:
        return Standard()
    if threat is None:
        raise AdvlabError(f"objective {name!r} needs a threat model")
    try:
        return cls(threat, **kwargs)
    except TypeError as e:
        raise AdvlabError(f"bad arguments for objective {name!r}: {e}") from e

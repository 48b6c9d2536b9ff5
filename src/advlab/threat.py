"""Threat models: the set of allowed perturbations (an Lp ball intersected with the input box).

One object answers every geometric question an attack or a training objective asks:
projection, steepest-ascent step, uniform random start inside the ball, and distance; the answers
per norm live in advlab.geometry (one class per norm), which ThreatModel delegates to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from .errors import InputError, ThreatModelError
from .geometry import (NormGeometry, geometry, keep_topk_magnitude, project_l1_ball,  # noqa: F401 - re-exported
                       project_l1_ball_in_box)

Norm = Literal["linf", "l2", "l1", "l0"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")
_ALIASES = {"inf": "linf", "linf": "linf", "l_inf": "linf", "l2": "l2", "l1": "l1", "l0": "l0"}
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def canonical_norm(norm: str) -> Norm:
    """Map spellings such as 'Linf', 'inf', 'L2' to advlab's canonical names."""
    key = str(norm).strip().lower()
    if key not in _ALIASES:
        raise ThreatModelError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    return _ALIASES[key]  # type: ignore[return-value]


def flat_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-sample Lp norm of a batch of perturbations, shape [N]."""
    return geometry(norm).distance(delta)


@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius eps around each input, intersected with the box `bounds`.

    norm: 'linf', 'l2', 'l1' or 'l0' (eps then counts changed input entries).
    bounds: the natural range of the inputs, e.g. (0, 1) for images; normalization lives in the model.
    """

    norm: str
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        if isinstance(self.eps, bool):
            raise ThreatModelError(f"eps must be a number, got the boolean {self.eps!r}")
        try:
            eps = float(self.eps)
        except (TypeError, ValueError):
            raise ThreatModelError(f"eps must be a number, got {self.eps!r}") from None
        if not math.isfinite(eps) or eps > _FLOAT32_MAX:
            raise ThreatModelError(f"eps must be finite (in float32 too), got {self.eps!r}")
        if eps < 0:
            raise ThreatModelError(f"eps must be >= 0, got {eps}")
        if self.norm == "l0" and eps != int(eps):
            raise ThreatModelError(f"an l0 budget counts entries and must be an integer, got {eps}")
        object.__setattr__(self, "eps", eps)
        try:
            lo, hi = (float(b) for b in self.bounds)
        except (TypeError, ValueError):
            raise ThreatModelError(f"bounds must be a pair (low, high), got {self.bounds!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ThreatModelError(f"bounds must be finite with low < high, got {self.bounds!r}")
        object.__setattr__(self, "bounds", (lo, hi))
        if self.norm == "linf" and eps > hi - lo:
            raise ThreatModelError(f"linf eps {eps:g} is larger than the input range [{lo:g}, {hi:g}] (width "
                                   f"{hi - lo:g}): every input would be reachable; eps is in input units")

    @property
    def geometry(self) -> NormGeometry:
        """The ball's geometry (advlab.geometry): distance, projection, step, random start."""
        return geometry(self.norm)

    def max_distance(self, dim: int) -> float:
        """The largest distance between two points of the input box in `dim` entries (the diameter)."""
        return self.geometry.diameter(dim, self.bounds[1] - self.bounds[0])

    # ------------------------------------------------------------------ basics
    def with_eps(self, eps: float) -> "ThreatModel":
        """The same threat model with another radius."""
        return replace(self, eps=eps)

    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Per-sample distance ||x_adv - x|| under this norm, shape [N]."""
        return self.geometry.distance(x_adv - x)

    def clip(self, x_adv: Tensor) -> Tensor:
        """Clip into the input box only."""
        return x_adv.clamp(self.bounds[0], self.bounds[1])

    def linf_box(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The linf feasible set as per-entry (low, high) tensors: the eps-ball intersected with the
        bounds. Computed once per attack, it makes each projection a single clamp."""
        if self.norm != "linf":
            raise ThreatModelError(f"linf_box is defined for linf threat models, not {self.norm!r}")
        lo, hi = self.bounds
        return (x - self.eps).clamp_min(lo), (x + self.eps).clamp_max(hi)

    def contains(self, x: Tensor, x_adv: Tensor, atol: float = 1e-6) -> Tensor:
        """Per-sample bool: x_adv lies in the eps-ball around x and inside the bounds."""
        lo, hi = self.bounds
        flat = x_adv.reshape(x_adv.shape[0], -1)
        in_box = ((flat >= lo - atol) & (flat <= hi + atol)).all(dim=1)
        return in_box & (self.distance(x, x_adv) <= self.eps + (0.5 if self.norm == "l0" else atol))

    def check_inputs(self, x: Tensor, name: str = "x") -> None:
        """Raise InputError unless x is a finite floating batch inside the bounds."""
        if not isinstance(x, Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise InputError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if x.ndim < 2:
            raise InputError(f"{name} must be a batch shaped (N, ...), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InputError(f"{name} is an empty batch")
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{name} contains NaN or inf")
        lo, hi = self.bounds
        if self.eps > self.max_distance(x[0].numel()):
            raise InputError(f"{self.norm} eps {self.eps:g} is larger than the diameter of the input box "
                             f"({self.max_distance(x[0].numel()):g} for {x[0].numel()} entries in [{lo:g}, {hi:g}])")
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo - 1e-6 or xmax > hi + 1e-6:
            raise InputError(
                f"{name} has values in [{xmin:.4g}, {xmax:.4g}], outside the declared bounds "
                f"[{lo:g}, {hi:g}]; keep inputs in their natural range and put normalization in the model"
            )

    # -------------------------------------------------------------- geometry
    def project(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Map x_adv into the eps-ball around x and into the bounds: exact for linf and l1 (the joint
        projection onto the l1 ball and the box); for l2 and l0 the ball projection is exact and the
        box clip that follows only shrinks each coordinate, so the result stays inside both sets."""
        return self.geometry.project(x, x_adv, self.eps, self.bounds)

    def step(self, grad: Tensor, step_size: Tensor | float) -> Tensor:
        """Steepest-ascent step of the given size under this norm (to be added to x_adv): linf
        sign(g); l2 g/||g||; l1 sign(g) on the top 5% of coordinates at unit l1 norm (attacks that
        want another share call `geometry.step(grad, size, topk=...)`); l0 g/||g||_2."""
        return self.geometry.step(grad, step_size)

    def random_start(self, x: Tensor, generator: torch.Generator | None = None, *,
                     radius: Literal["volume", "uniform"] = "volume") -> Tensor:
        """A random point of the eps-ball around x, clipped to the bounds.

        radius='volume': uniform over the ball's volume (in high dimension almost surely next to
        the sphere). radius='uniform' (l2/l1): a uniform direction at a radius drawn from U(0, eps),
        the start torchattacks and advertorch use, which PGD prefers: a start on the sphere in a
        random direction wastes the budget that the first steps spend undoing it.
        """
        if radius not in ("volume", "uniform"):
            raise ThreatModelError(f"radius must be 'volume' or 'uniform', got {radius!r}")
        kw = dict(device=x.device, dtype=x.dtype, generator=generator)
        return self.project(x, x + self.geometry.random_delta(x, self.eps, self.bounds, kw, radius))

    def __str__(self) -> str:
        return f"{self.norm}(eps={self.eps:g}, bounds=[{self.bounds[0]:g}, {self.bounds[1]:g}])"

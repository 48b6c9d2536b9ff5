"""Threat models: the set of allowed perturbations (an Lp ball intersected with the input box).

One object answers every geometric question an attack or a training objective asks:
projection, steepest-ascent step, uniform random start inside the ball, and distance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from .errors import InputError, ThreatModelError

Norm = Literal["linf", "l2", "l1", "l0"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")
_ALIASES = {"inf": "linf", "linf": "linf", "l_inf": "linf", "l2": "l2", "l1": "l1", "l0": "l0"}
_TINY = 1e-12
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def canonical_norm(norm: str) -> Norm:
    """Map spellings such as 'Linf', 'inf', 'L2' to advlab's canonical names."""
    key = str(norm).strip().lower()
    if key not in _ALIASES:
        raise ThreatModelError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    return _ALIASES[key]  # type: ignore[return-value]


def _per_sample(v: Tensor | float, ref: Tensor) -> Tensor | float:
    """Broadcast a per-sample vector [N] against a batch shaped like ref."""
    if isinstance(v, Tensor) and v.ndim == 1:
        return v.view(-1, *([1] * (ref.ndim - 1)))
    return v


def flat_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-sample Lp norm of a batch of perturbations, shape [N]."""
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise ThreatModelError(f"unknown norm {norm!r}")


def project_l1_ball(delta: Tensor, eps: float) -> Tensor:
    """Euclidean projection of each row of delta onto the L1 ball of radius eps (Duchi et al. 2008)."""
    shape = delta.shape
    flat = delta.reshape(shape[0], -1)
    absd = flat.abs()
    inside = absd.sum(dim=1) <= eps
    if bool(inside.all()):
        return delta
    sorted_abs, _ = absd.sort(dim=1, descending=True)
    cumsum = sorted_abs.cumsum(dim=1)
    ks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    cond = sorted_abs - (cumsum - eps) / ks > 0
    rho = cond.to(torch.int64).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last index where cond holds
    theta = ((cumsum.gather(1, rho) - eps) / (rho + 1).to(flat.dtype)).clamp_min(0)
    projected = flat.sign() * (absd - theta).clamp_min(0)
    out = torch.where(inside.unsqueeze(1), flat, projected)
    return out.reshape(shape)


def project_l1_ball_in_box(delta: Tensor, eps: float, low: Tensor, high: Tensor) -> Tensor:
    """Exact Euclidean projection of each row of delta onto {d : ||d||_1 <= eps, low <= d <= high}
    (low <= 0 <= high per entry: the input box seen from x). The solution soft-thresholds with caps,
    d_i = sign(delta_i) clip(|delta_i| - lam, 0, cap_i), cap_i the box's room on that side; lam >= 0 is
    the root of the decreasing piecewise-linear g(lam) = sum_i clip(|delta_i| - lam, 0, cap_i) = eps,
    found by sorting the points where a coordinate starts (|delta_i| - cap_i) and stops (|delta_i|)
    shrinking. A ball projection followed by a clip is not this point and may leave l1 budget unused."""
    shape = delta.shape
    flat, lo, hi = delta.reshape(shape[0], -1), low.reshape(shape[0], -1), high.reshape(shape[0], -1)
    a = flat.abs()
    cap = torch.where(flat >= 0, hi, -lo).clamp_min(0)
    clipped = torch.minimum(a, cap)
    over = clipped.sum(dim=1) > eps
    start = (a - cap).clamp_min(0)                     # the coordinate begins to shrink at lam = start
    points = torch.cat([start, a], dim=1)
    slope = torch.cat([-(a > start).to(a.dtype), (a > start).to(a.dtype)], dim=1)
    order = points.argsort(dim=1)
    p, e = points.gather(1, order), slope.gather(1, order)
    running = torch.cumsum(e, dim=1)                   # slope of g right after each point
    g0 = clipped.sum(dim=1, keepdim=True)
    g = torch.cat([g0, g0 + torch.cumsum(running[:, :-1] * (p[:, 1:] - p[:, :-1]), dim=1)], dim=1)  # g at p
    j = (g > eps).sum(dim=1, keepdim=True).clamp(1, p.shape[1] - 1)   # g(p_j) <= eps < g(p_{j-1})
    g_prev, p_prev, s_prev = g.gather(1, j - 1), p.gather(1, j - 1), running.gather(1, j - 1)
    lam = (p_prev + (g_prev - eps) / (-s_prev).clamp_min(1e-30)).clamp_min(0)
    lam = torch.where(over[:, None], lam, torch.zeros_like(lam))
    out = flat.sign() * (a - lam).clamp(min=0).clamp(max=cap)
    return torch.minimum(torch.maximum(out, lo), hi).reshape(shape)


def keep_topk_magnitude(delta: Tensor, k: int) -> Tensor:
    """Projection onto the L0 ball: keep the k entries of largest magnitude per sample."""
    flat = delta.reshape(delta.shape[0], -1)
    if k >= flat.shape[1]:
        return delta
    if k <= 0:
        return torch.zeros_like(delta)
    idx = flat.abs().topk(k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return (flat * mask).reshape(delta.shape)


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

    def max_distance(self, dim: int) -> float:
        """The largest distance between two points of the input box in `dim` entries (the diameter)."""
        width = self.bounds[1] - self.bounds[0]
        return {"linf": width, "l2": width * math.sqrt(dim), "l1": width * dim, "l0": float(dim)}[self.norm]

    # ------------------------------------------------------------------ basics
    def with_eps(self, eps: float) -> "ThreatModel":
        """The same threat model with another radius."""
        return replace(self, eps=eps)

    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Per-sample distance ||x_adv - x|| under this norm, shape [N]."""
        return flat_norm(x_adv - x, self.norm)

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
        """Map x_adv into the eps-ball around x and into the bounds.

        Exact for linf; for l2/l1/l0 the ball projection is exact and the box clip that follows
        only shrinks each coordinate of the perturbation, so the result stays inside both sets.
        """
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        elif self.norm == "l2":
            n = flat_norm(delta, "l2")
            factor = torch.where(n > self.eps, self.eps / (n + _TINY), torch.ones_like(n))
            delta = delta * _per_sample(factor, delta)
        elif self.norm == "l1":
            lo, hi = self.bounds
            delta = project_l1_ball_in_box(delta, self.eps, lo - x, hi - x)
        else:
            delta = keep_topk_magnitude(delta, int(self.eps))
        out = self.clip(x + delta)
        if self.norm in ("l2", "l1"):  # guard against rounding pushing the norm a hair over eps
            # unconditional (a where, not an `if any`): projecting never waits for the device
            n = flat_norm(out - x, self.norm)
            shrink = 1 - 8 * torch.finfo(out.dtype).eps
            scale = torch.where(n > self.eps, self.eps / (n + _TINY) * shrink, torch.ones_like(n))
            out = x + (out - x) * _per_sample(scale, out)
        return out

    def step(self, grad: Tensor, step_size: Tensor | float, *, l1_topk: float = 0.05) -> Tensor:
        """Steepest-ascent step of the given size under this norm (to be added to x_adv).

        linf: sign(g); l2: g/||g||; l1: sign(g) on the top `l1_topk` fraction of coordinates,
        scaled to unit l1 norm; l0: g/||g||_2 (the l0 projection then picks coordinates).
        """
        size = _per_sample(step_size, grad)
        if self.norm == "linf":
            return size * grad.sign()
        flat = grad.reshape(grad.shape[0], -1)
        if self.norm == "l1":
            k = max(1, int(math.ceil(l1_topk * flat.shape[1])))
            thresh = flat.abs().topk(k, dim=1).values[:, -1:]
            sparse = flat.sign() * (flat.abs() >= thresh)
            direction = sparse / (sparse.abs().sum(dim=1, keepdim=True) + _TINY)
            return size * direction.reshape(grad.shape)
        direction = flat / (flat.norm(dim=1, keepdim=True) + _TINY)
        return size * direction.reshape(grad.shape)

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
        n = x.shape[0]
        flat_dim = x[0].numel()
        kw = dict(device=x.device, dtype=x.dtype, generator=generator)
        if self.norm == "linf":
            delta = (torch.rand(x.shape, **kw) * 2 - 1) * self.eps
        elif self.norm == "l2":
            direction = torch.randn(n, flat_dim, **kw)
            direction = direction / (direction.norm(dim=1, keepdim=True) + _TINY)
            u = torch.rand(n, 1, **kw)
            radius = (u ** (1.0 / flat_dim) if radius == "volume" else u) * self.eps
            delta = (direction * radius).reshape(x.shape)
        elif self.norm == "l1":
            # Uniform in the l1 ball: normalized exponentials with one slack coordinate, random signs.
            e = -torch.log(torch.rand(n, flat_dim + 1, **kw).clamp_min(1e-30))
            mags = (e / e.sum(dim=1, keepdim=True))[:, :flat_dim]
            signs = torch.rand(n, flat_dim, **kw).lt(0.5).to(x.dtype) * 2 - 1
            scale = self.eps if radius == "volume" else self.eps * torch.rand(n, 1, **kw)
            delta = (mags / (mags.sum(dim=1, keepdim=True) + _TINY) * scale * signs
                     if radius == "uniform" else mags * signs * self.eps).reshape(x.shape)
        else:
            k = min(int(self.eps), flat_dim)
            scores = torch.rand(n, flat_dim, **kw)
            idx = scores.topk(k, dim=1).indices if k > 0 else scores[:, :0].long()
            lo, hi = self.bounds
            values = lo + (hi - lo) * torch.rand(n, flat_dim, **kw)
            mask = torch.zeros(n, flat_dim, dtype=torch.bool, device=x.device).scatter_(1, idx, True)
            delta = torch.where(mask, values - x.reshape(n, -1), torch.zeros_like(values)).reshape(x.shape)
        return self.project(x, x + delta)

    def __str__(self) -> str:
        return f"{self.norm}(eps={self.eps:g}, bounds=[{self.bounds[0]:g}, {self.bounds[1]:g}])"

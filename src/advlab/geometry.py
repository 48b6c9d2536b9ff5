"""Norm geometry: one small class per norm with the four questions an attack asks of a ball (as
MadryLab's attack steps or foolbox's per-norm bases): distance, projection onto the ball
intersected with the input box, steepest-ascent step, random start. ThreatModel picks the class of
its norm and delegates, so no other module branches on the norm for these."""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor

from .errors import ThreatModelError

TINY = 1e-12
Radius = Literal["volume", "uniform"]


def per_sample(v: Tensor | float, ref: Tensor) -> Tensor | float:
    """Broadcast a per-sample vector [N] against a batch shaped like ref."""
    if isinstance(v, Tensor) and v.ndim == 1:
        return v.view(-1, *([1] * (ref.ndim - 1)))
    return v


def _flat(delta: Tensor) -> Tensor:
    return delta.reshape(delta.shape[0], -1)


def project_l1_ball(delta: Tensor, eps: float) -> Tensor:
    """Euclidean projection of each row of delta onto the L1 ball of radius eps (Duchi et al. 2008)."""
    shape = delta.shape
    flat = _flat(delta)
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
    return torch.where(inside.unsqueeze(1), flat, projected).reshape(shape)


def project_l1_ball_in_box(delta: Tensor, eps: float, low: Tensor, high: Tensor) -> Tensor:
    """Exact Euclidean projection of each row of delta onto {d : ||d||_1 <= eps, low <= d <= high}
    (low <= 0 <= high per entry: the input box seen from x). The solution soft-thresholds with caps,
    d_i = sign(delta_i) clip(|delta_i| - lam, 0, cap_i), cap_i the box's room on that side; lam >= 0 is
    the root of the decreasing piecewise-linear g(lam) = sum_i clip(|delta_i| - lam, 0, cap_i) = eps,
    found by sorting the points where a coordinate starts (|delta_i| - cap_i) and stops (|delta_i|)
    shrinking. A ball projection followed by a clip is not this point and may leave l1 budget unused."""
    shape = delta.shape
    flat, lo, hi = _flat(delta), _flat(low), _flat(high)
    a = flat.abs()
    cap = torch.where(flat >= 0, hi, -lo).clamp_min(0)
    clipped = torch.minimum(a, cap)
    over = clipped.sum(dim=1) > eps
    start = (a - cap).clamp_min(0)                     # the coordinate begins to shrink at lam = start
    points = torch.cat([start, a], dim=1)
    moving = (a > start).to(a.dtype)
    slope = torch.cat([-moving, moving], dim=1)
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
    flat = _flat(delta)
    if k >= flat.shape[1]:
        return delta
    if k <= 0:
        return torch.zeros_like(delta)
    idx = flat.abs().topk(k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return (flat * mask).reshape(delta.shape)


def _shrink_into(x: Tensor, out: Tensor, eps: float, norm: "NormGeometry") -> Tensor:
    """Guard against rounding pushing the norm a hair over eps (unconditional: never waits for the device)."""
    n = norm.distance(out - x)
    shrink = 1 - 8 * torch.finfo(out.dtype).eps
    scale = torch.where(n > eps, eps / (n + TINY) * shrink, torch.ones_like(n))
    return x + (out - x) * per_sample(scale, out)


class NormGeometry:
    """The ball of one norm: subclasses answer distance, project, step and random_start."""

    name: ClassVar[str]

    def distance(self, delta: Tensor) -> Tensor:
        raise NotImplementedError

    def diameter(self, dim: int, width: float) -> float:
        """The largest distance between two points of a box of side `width` in `dim` entries."""
        raise NotImplementedError

    def project(self, x: Tensor, x_adv: Tensor, eps: float, bounds: tuple[float, float]) -> Tensor:
        """x_adv mapped into the eps-ball around x and into the box `bounds`."""
        raise NotImplementedError

    def step(self, grad: Tensor, size: Tensor | float) -> Tensor:
        """The steepest-ascent step of the given size (per-sample or scalar) for this norm."""
        raise NotImplementedError

    def random_delta(self, x: Tensor, eps: float, bounds: tuple[float, float], kw: dict,
                     radius: Radius) -> Tensor:
        """A random perturbation in the eps-ball (projected by the caller)."""
        raise NotImplementedError


class Linf(NormGeometry):
    name = "linf"

    def distance(self, delta: Tensor) -> Tensor:
        flat = _flat(delta)
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])

    def diameter(self, dim: int, width: float) -> float:
        return width

    def project(self, x: Tensor, x_adv: Tensor, eps: float, bounds: tuple[float, float]) -> Tensor:
        return (x + (x_adv - x).clamp(-eps, eps)).clamp(*bounds)

    def step(self, grad: Tensor, size: Tensor | float) -> Tensor:
        return per_sample(size, grad) * grad.sign()

    def random_delta(self, x: Tensor, eps: float, bounds: tuple[float, float], kw: dict,
                     radius: Radius) -> Tensor:
        return (torch.rand(x.shape, **kw) * 2 - 1) * eps


class L2(NormGeometry):
    name = "l2"

    def distance(self, delta: Tensor) -> Tensor:
        return _flat(delta).norm(p=2, dim=1)

    def diameter(self, dim: int, width: float) -> float:
        return width * math.sqrt(dim)

    def project(self, x: Tensor, x_adv: Tensor, eps: float, bounds: tuple[float, float]) -> Tensor:
        delta = x_adv - x
        n = self.distance(delta)
        factor = torch.where(n > eps, eps / (n + TINY), torch.ones_like(n))
        return _shrink_into(x, (x + delta * per_sample(factor, delta)).clamp(*bounds), eps, self)

    def step(self, grad: Tensor, size: Tensor | float) -> Tensor:
        flat = _flat(grad)
        return per_sample(size, grad) * (flat / (flat.norm(dim=1, keepdim=True) + TINY)).reshape(grad.shape)

    def random_delta(self, x: Tensor, eps: float, bounds: tuple[float, float], kw: dict,
                     radius: Radius) -> Tensor:
        n, dim = x.shape[0], x[0].numel()
        direction = torch.randn(n, dim, **kw)
        direction = direction / (direction.norm(dim=1, keepdim=True) + TINY)
        u = torch.rand(n, 1, **kw)
        r = (u ** (1.0 / dim) if radius == "volume" else u) * eps
        return (direction * r).reshape(x.shape)


class L1(NormGeometry):
    name = "l1"

    def distance(self, delta: Tensor) -> Tensor:
        return _flat(delta).abs().sum(dim=1)

    def diameter(self, dim: int, width: float) -> float:
        return width * dim

    def project(self, x: Tensor, x_adv: Tensor, eps: float, bounds: tuple[float, float]) -> Tensor:
        lo, hi = bounds
        delta = project_l1_ball_in_box(x_adv - x, eps, lo - x, hi - x)
        return _shrink_into(x, (x + delta).clamp(lo, hi), eps, self)

    def step(self, grad: Tensor, size: Tensor | float, topk: float = 0.05) -> Tensor:
        """sign(g) on the `topk` share of coordinates with the largest |g|, scaled to unit l1 norm
        (the steepest l1 direction is a single coordinate; a share of them moves faster)."""
        flat = _flat(grad)
        k = max(1, int(math.ceil(topk * flat.shape[1])))
        thresh = flat.abs().topk(k, dim=1).values[:, -1:]
        sparse = flat.sign() * (flat.abs() >= thresh)
        direction = sparse / (sparse.abs().sum(dim=1, keepdim=True) + TINY)
        return per_sample(size, grad) * direction.reshape(grad.shape)

    def random_delta(self, x: Tensor, eps: float, bounds: tuple[float, float], kw: dict,
                     radius: Radius) -> Tensor:
        # uniform in the l1 ball: normalized exponentials with one slack coordinate, random signs
        n, dim = x.shape[0], x[0].numel()
        e = -torch.log(torch.rand(n, dim + 1, **kw).clamp_min(1e-30))
        mags = (e / e.sum(dim=1, keepdim=True))[:, :dim]
        signs = torch.rand(n, dim, **kw).lt(0.5).to(x.dtype) * 2 - 1
        if radius == "uniform":
            scale = eps * torch.rand(n, 1, **kw)
            return (mags / (mags.sum(dim=1, keepdim=True) + TINY) * scale * signs).reshape(x.shape)
        return (mags * signs * eps).reshape(x.shape)


class L0(NormGeometry):
    name = "l0"

    def distance(self, delta: Tensor) -> Tensor:
        return (_flat(delta) != 0).sum(dim=1).to(delta.dtype)

    def diameter(self, dim: int, width: float) -> float:
        return float(dim)

    def project(self, x: Tensor, x_adv: Tensor, eps: float, bounds: tuple[float, float]) -> Tensor:
        return (x + keep_topk_magnitude(x_adv - x, int(eps))).clamp(*bounds)

    def step(self, grad: Tensor, size: Tensor | float) -> Tensor:
        """g / ||g||_2: the l0 projection then picks the coordinates."""
        return L2().step(grad, size)

    def random_delta(self, x: Tensor, eps: float, bounds: tuple[float, float], kw: dict,
                     radius: Radius) -> Tensor:
        n, dim = x.shape[0], x[0].numel()
        k = min(int(eps), dim)
        scores = torch.rand(n, dim, **kw)
        idx = scores.topk(k, dim=1).indices if k > 0 else scores[:, :0].long()
        lo, hi = bounds
        values = lo + (hi - lo) * torch.rand(n, dim, **kw)
        mask = torch.zeros(n, dim, dtype=torch.bool, device=x.device).scatter_(1, idx, True)
        return torch.where(mask, values - x.reshape(n, -1), torch.zeros_like(values)).reshape(x.shape)


GEOMETRIES: dict[str, NormGeometry] = {g.name: g for g in (Linf(), L2(), L1(), L0())}


def geometry(norm: str) -> NormGeometry:
    if norm not in GEOMETRIES:
        raise ThreatModelError(f"unknown norm {norm!r}; expected one of {', '.join(GEOMETRIES)}")
    return GEOMETRIES[norm]

"""The smallest step from a point to a hyperplane without leaving the box [0, 1]^D, in the l2, linf
and l1 norms: FAB's projection (Croce & Hein 2020).

For points t (n, D) in the box and hyperplanes w . z = b, each function returns the step d of
least ||d||_p with w . (t + d) = b and 0 <= t + d <= 1; where the box does not reach the hyperplane,
the step to the box corner nearest to it. Each is an exact solve by sorting breakpoints (no
iterations): after flipping signs so that the step must lower w . z by c >= 0,
  l2:   d_i = clip(-lam w_i) to the box, lam the root of a piecewise-linear decreasing function;
  linf: d_i = -sign(w_i) min(delta, room_i), delta the root of sum_i |w_i| min(delta, room_i) = c;
  l1:   spend the budget on the coordinates of largest |w_i| first, each up to its room;
where room_i is how far coordinate i can move in the lowering direction (t_i or 1 - t_i).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import AttackConfigError


def _lowering(t: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(w, c, room) with w's sign flipped per row so that w . t - b = c >= 0 (the step lowers w . z
    by c), and room_i the distance coordinate i can travel against sign(w_i) inside the box."""
    c = (w * t).sum(1) - b
    flip = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    w, c = w * flip[:, None], c * flip
    room = torch.where(w > 0, t, 1 - t).clamp_min(0)
    return w, c, room


def _root_of_capped_sum(weight: Tensor, knots: Tensor, c: Tensor) -> Tensor:
    """Per row, the s >= 0 with sum_i weight_i min(s, knots_i) = c (weights >= 0), or inf where even
    s = max(knots) falls short: the function is piecewise linear and increasing, so sorting the
    knots gives its value at each knot and the root lies on one linear piece."""
    order = knots.argsort(dim=1)
    k_sorted, w_sorted = knots.gather(1, order), weight.gather(1, order)
    below = torch.cumsum(w_sorted * k_sorted, dim=1)            # knots passed: contribute weight * knot
    above = w_sorted.sum(1, keepdim=True) - torch.cumsum(w_sorted, dim=1)  # the rest: weight * s
    value_at_knot = below + k_sorted * above
    piece = (value_at_knot < c[:, None]).sum(1, keepdim=True)    # the root lies after this many knots
    zero = torch.zeros_like(c[:, None])
    below_prev = torch.where(piece > 0, below.gather(1, (piece - 1).clamp_min(0)), zero)
    above_prev = torch.where(piece > 0, above.gather(1, (piece - 1).clamp_min(0)),
                             w_sorted.sum(1, keepdim=True))
    feasible = piece < knots.shape[1]
    s = (c[:, None] - below_prev) / above_prev.clamp_min(1e-30)
    return torch.where(feasible, s, torch.full_like(s, float("inf"))).squeeze(1)


def project_l2(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    w, c, room = _lowering(t, w, b)
    a = w.abs()
    # coordinate i saturates at lam_i = room_i / |w_i|; the decrease sum_i |w_i| min(lam |w_i|, room_i)
    # is the capped sum with weights w_i^2 and knots lam_i
    knots = torch.where(a > 0, room / a.clamp_min(1e-30), torch.zeros_like(a))
    lam = _root_of_capped_sum(a * a, knots, c)
    step = torch.minimum(lam[:, None] * a, room)   # lam = inf: the box corner
    return torch.where(a > 0, -torch.sign(w) * step, torch.zeros_like(w))


def project_linf(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    w, c, room = _lowering(t, w, b)
    delta = _root_of_capped_sum(w.abs(), room, c)
    return -torch.sign(w) * torch.minimum(delta[:, None], room)


def project_l1(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    w, c, room = _lowering(t, w, b)
    a = w.abs()
    order = a.argsort(dim=1, descending=True)
    a_sorted, room_sorted = a.gather(1, order), room.gather(1, order)
    capacity = torch.cumsum(a_sorted * room_sorted, dim=1)
    spent_before = capacity - a_sorted * room_sorted
    # coordinates fill up in order of |w|: full room while the budget lasts, the rest of it on the next
    amount = ((c[:, None] - spent_before) / a_sorted.clamp_min(1e-30)).clamp(min=0)
    amount = torch.where(a_sorted > 0, torch.minimum(amount, room_sorted), torch.zeros_like(amount))
    step = torch.zeros_like(w).scatter(1, order, amount)
    return -torch.sign(w) * step


PROJECTIONS = {"l2": project_l2, "linf": project_linf, "l1": project_l1}


def project_to_hyperplane(t: Tensor, w: Tensor, b: Tensor, norm: str) -> Tensor:
    """The least-norm step d (n, D) from rows of t onto w . z = b inside the box [0, 1]^D."""
    if norm not in PROJECTIONS:
        raise AttackConfigError(f"no box-constrained hyperplane projection for norm {norm!r}")
    return PROJECTIONS[norm](t, w, b)

"""Square attack (Andriushchenko et al. 2020): score-based random search, no gradients, linf and l2.

Each query changes the perturbation inside a random square window whose side shrinks on the
reference schedule (p_init halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 queries,
counted absolutely as in AutoAttack's standard version, or rescaled to a 10,000-query budget with
rescale_schedule=True, the reference's default outside AutoAttack); a change is kept when it
lowers the margin loss. linf windows are set to +-eps per channel; l2 windows get the reference's
"meta-square" pattern, with the mass moved from a second window so that the norm stays eps.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AttackConfigError
from ..threat import ThreatModel, flat_norm
from .base import Attack, ModelProbe, positive_float, positive_int
from .losses import logit_margin
from .targeting import TargetSpec

_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, it: int, n_queries: int, rescale: bool = False) -> float:
    """Fraction of pixels the window covers at query `it` (with `rescale`, the schedule stretched
    over n_queries as if they were 10,000)."""
    scaled = int(it / n_queries * 10000) if rescale else it
    halvings = sum(scaled > t for t in _THRESHOLDS)
    return p_init / (2 ** halvings)


def _rectangles(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Concentric rectangles around the centre with weights 1/(r+1)^2, unit l2 norm."""
    r = torch.arange(rows, device=device, dtype=dtype).view(-1, 1)
    c = torch.arange(cols, device=device, dtype=dtype).view(1, -1)
    cr, cc = rows // 2, cols // 2
    ring = torch.maximum((r - cr).abs(), (c - cc).abs())
    # a cell at ring distance d is covered by rectangles d, d+1, ..., up to the largest needed
    n_rings = max(rows, cols) // 2 + 1
    ks = torch.arange(n_rings, device=device, dtype=dtype).view(1, 1, -1)
    out = ((ks >= ring.unsqueeze(-1)).to(dtype) / (ks + 1) ** 2).sum(-1)
    return out / out.norm()


def meta_square(s: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The l2 Square attack's s x s pattern: +rectangles on one half, -rectangles on the other."""
    top = _rectangles(s // 2, s, device, dtype) if s // 2 > 0 else torch.zeros(0, s, device=device, dtype=dtype)
    bottom = -_rectangles(s - s // 2, s, device, dtype)
    pattern = torch.cat([top, bottom], dim=0)
    pattern = pattern / pattern.norm()
    if float(torch.rand((), generator=gen, device=device)) > 0.5:
        pattern = pattern.t()
    return pattern


def _as_image(x: Tensor) -> Tensor:
    """View (N, D) inputs as images: (N, 1, r, r) when D is a square, else (N, 1, 1, D)."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x.unsqueeze(1)
    d = x[0].numel()
    r = int(math.isqrt(d))
    return x.reshape(x.shape[0], 1, r, r) if r * r == d else x.reshape(x.shape[0], 1, 1, d)


class Square(Attack):
    """Score-based Square attack; untargeted (margin loss) or targeted (cross-entropy to the target)."""

    name = "square"
    norms = ("linf", "l2")
    uses_gradients = False

    def __init__(self, threat: ThreatModel, *, n_queries: int = 5000, p_init: float = 0.8,
                 restarts: int = 1, rescale_schedule: bool = False, target: TargetSpec = None,
                 seed: int | None = 0) -> None:
        super().__init__(threat, target=target, seed=seed)
        self.n_queries = positive_int("n_queries", n_queries)
        self.rescale_schedule = bool(rescale_schedule)
        self.p_init = positive_float("p_init", p_init)
        if self.p_init > 1:
            raise AttackConfigError(f"p_init is a fraction of the image and must be <= 1, got {p_init}")
        self.restarts = positive_int("restarts", restarts)

    def _margin_and_loss(self, probe: ModelProbe, x: Tensor, y: Tensor,
                         t: Tensor | None) -> tuple[Tensor, Tensor]:
        logits = probe.logits(x).float()
        if t is None:
            margin = logit_margin(logits, y)
            return margin, margin
        return -logit_margin(logits, t), F.cross_entropy(logits, t, reduction="none")

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, Tensor]:
        shape = x.shape
        img = _as_image(x)
        fwd = lambda z: z.reshape(shape)  # noqa: E731 - the model sees its own input shape
        best = img.clone()
        best_margin = torch.full((x.shape[0],), float("inf"), device=x.device)
        best_loss = torch.full((x.shape[0],), float("inf"), device=x.device)
        for _ in range(self.restarts):
            todo = (best_margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            t = targets[todo] if targets is not None else None
            adv, margin, loss = self._single_run(probe, img[todo], y[todo], t, gen, fwd_shape=shape)
            better = margin < best_margin[todo]
            sel = todo[better]
            best[sel], best_margin[sel], best_loss[sel] = adv[better], margin[better], loss[better]
        return fwd(best), -best_loss

    def _single_run(self, probe: ModelProbe, x: Tensor, y: Tensor, t: Tensor | None,
                    gen: torch.Generator, fwd_shape: torch.Size) -> tuple[Tensor, Tensor, Tensor]:
        n, c, h, w = x.shape
        eps, th = self.threat.eps, self.threat
        kw = dict(device=x.device, generator=gen)

        def query(z: Tensor, yy: Tensor, tt: Tensor | None) -> tuple[Tensor, Tensor]:
            return self._margin_and_loss(probe, z.reshape(z.shape[0], *fwd_shape[1:]), yy, tt)

        if th.norm == "linf":
            signs = torch.randint(0, 2, (n, c, 1, w), **kw).to(x.dtype) * 2 - 1
            x_best = th.clip(x + eps * signs)
        else:
            x_best = th.clip(x + eps * self._l2_init(x, gen))
        margin_min, loss_min = query(x_best, y, t)
        for it in range(self.n_queries - 1):
            active = (margin_min > 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            xa, xb, ya = x[active], x_best[active], y[active]
            ta = t[active] if t is not None else None
            p = square_fraction(self.p_init, it, self.n_queries, self.rescale_schedule)
            side = max(int(round(math.sqrt(p * h * w))), 1)
            if th.norm == "linf":
                # square windows on images; on (N, 1, 1, D) inputs a strip of the same area
                sh, sw = (1, max(int(round(p * w)), 1)) if h == 1 else (min(side, h, w), min(side, h, w))
                vh = int(torch.randint(0, h - sh + 1, (1,), **kw))
                vw = int(torch.randint(0, w - sw + 1, (1,), **kw))
                delta = xb - xa
                patch = torch.randint(0, 2, (xa.shape[0], c, 1, 1), **kw).to(x.dtype) * 2 - 1
                delta[:, :, vh:vh + sh, vw:vw + sw] = eps * patch
                x_new = th.clip(xa + delta)
            else:
                x_new = self._l2_proposal(xa, xb, side, gen)
            margin, loss = query(x_new, ya, ta)
            improved = loss < loss_min[active]
            loss_min[active] = torch.where(improved, loss, loss_min[active])
            accept = improved | (margin <= 0)
            margin_min[active] = torch.where(accept, margin, margin_min[active])
            x_best[active] = torch.where(accept.view(-1, 1, 1, 1), x_new, xb)
        return x_best, margin_min, loss_min

    def _l2_init(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """A grid of meta-squares with random signs, scaled to unit l2 norm per sample."""
        n, c, h, w = x.shape
        s = max(min(h, w) // 5, 1)
        delta = torch.zeros_like(x)
        start_h, start_w = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
        for i in range(h // s):
            for j in range(w // s):
                signs = torch.randint(0, 2, (n, c, 1, 1), device=x.device, generator=gen).to(x.dtype) * 2 - 1
                vh, vw = start_h + i * s, start_w + j * s
                delta[:, :, vh:vh + s, vw:vw + s] += meta_square(s, gen, x.device, x.dtype) * signs
        return delta / (flat_norm(delta, "l2").view(-1, 1, 1, 1) + 1e-12)

    def _l2_proposal(self, x: Tensor, x_best: Tensor, side: int, gen: torch.Generator) -> Tensor:
        n, c, h, w = x.shape
        eps = self.threat.eps
        s = max(side, 3)
        s += 1 - s % 2
        s = min(s, h, w)
        kw = dict(device=x.device, generator=gen)
        vh, vw = (int(torch.randint(0, h - s + 1, (1,), **kw)), int(torch.randint(0, w - s + 1, (1,), **kw)))
        vh2, vw2 = (int(torch.randint(0, h - s + 1, (1,), **kw)), int(torch.randint(0, w - s + 1, (1,), **kw)))
        delta = x_best - x
        win1 = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        win2 = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))
        mask = torch.zeros_like(x)
        mask[win1] = 1.0
        mask[win2] = 1.0
        norm_win1 = delta[win1].pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        norm_img = flat_norm(delta, "l2").view(-1, 1, 1, 1)
        norm_windows = flat_norm(delta * mask, "l2").view(-1, 1, 1, 1)
        signs = torch.randint(0, 2, (n, c, 1, 1), **kw).to(x.dtype) * 2 - 1
        new = meta_square(s, gen, x.device, x.dtype).view(1, 1, s, s) * signs
        new = new + delta[win1] / (norm_win1 + 1e-12)
        budget = ((eps ** 2 - norm_img ** 2).clamp_min(0) / c + norm_windows ** 2).sqrt()
        new = new / (new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt() + 1e-12) * budget
        delta[win2] = 0.0
        delta[win1] = new
        delta = delta / (flat_norm(delta, "l2").view(-1, 1, 1, 1) + 1e-12) * eps
        return self.threat.clip(x + delta)

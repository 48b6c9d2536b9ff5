"""Margins and confidence: output (logit) margin, normalized margin, max-softmax confidence, entropy,
and the instance-space margin (distance to the decision boundary) from a minimal-norm attack."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..attacks import DeepFool
from ..attacks.losses import logit_margin
from ..evaluation.metrics import predict
from ..threat import ThreatModel


def output_margins(logits: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Per-sample logit margin z_y - max_{j!=y} z_j, max-softmax confidence and entropy."""
    logits = logits.float()
    p = logits.softmax(1)
    return {"margin": logit_margin(logits, y), "confidence": p.amax(1),
            "entropy": -(p * p.clamp_min(1e-30).log()).sum(1)}


def instance_margins(model: nn.Module, x: Tensor, y: Tensor, norm: str = "l2", max_eps: float = 10.0,
                     steps: int = 50, batch_size: int = 500) -> Tensor:
    """Per-sample distance to the decision boundary in input space (DeepFool + bisection; 0 where the
    point is misclassified, inf where no adversarial point was found)."""
    search = ThreatModel(norm, 0.0)  # the search is capped at the input box's diameter
    cap = min(max_eps, search.max_distance(x[0].numel()))
    attack = DeepFool(ThreatModel(norm, cap), steps=steps)
    return torch.cat([attack(model, x[i:i + batch_size], y[i:i + batch_size]).min_norm
                      for i in range(0, x.shape[0], batch_size)])


def margin_report(model: nn.Module, x: Tensor, y: Tensor, *, lipschitz: float | None = None,
                  norm: str = "l2", near: Sequence[float] = (0.5, 1.0, 2.0), instance: bool = True) -> dict:
    """Tables of margins: means, quantiles, fraction of samples within each distance in `near` of the
    boundary. normalized_margin = margin / lipschitz when a Lipschitz bound is given."""
    logits = predict(model, x)
    m = output_margins(logits, y)
    out = {k: v.detach().cpu() for k, v in m.items()}
    if lipschitz:
        out["normalized_margin"] = out["margin"] / lipschitz
    if instance:
        out["instance_margin"] = instance_margins(model, x, y, norm).cpu()
    summary = {k: {"mean": float(v[torch.isfinite(v)].mean()) if torch.isfinite(v).any() else float("nan"),
                   "median": float(v[torch.isfinite(v)].median()) if torch.isfinite(v).any() else float("nan")}
               for k, v in out.items()}
    if instance:
        summary["near_boundary"] = {str(r): float((out["instance_margin"] <= r).float().mean()) for r in near}
    return {"per_sample": out, "summary": summary}

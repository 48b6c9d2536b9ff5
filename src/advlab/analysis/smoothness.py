"""Smoothness of the feature maps (Wen et al. 2020, W5): the layer-wise ratio
||f_l(x + d) - f_l(x)|| / ||d|| for random and for adversarial directions d of the same l2 size."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..attacks import PGD
from ..threat import ThreatModel
from .features import default_layers, layer_features


def layer_ratios(model: nn.Module, x: Tensor, d: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    base, moved = layer_features(model, x, layers), layer_features(model, x + d, layers)
    dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    return {n: (moved[n] - base[n]).norm(dim=1) / dn for n in layers}


def smoothness(model: nn.Module, x: Tensor, y: Tensor, *, radius: float = 0.5, layers: Sequence[str] | None = None,
               pgd_steps: int = 20, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per layer: mean ratio under random Gaussian directions and under PGD-l2 directions of norm `radius`
    (inputs not clipped to the box, so both directions have exactly that size), and random/adversarial."""
    layers = list(layers or default_layers(model))
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    rnd = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    rnd = rnd / rnd.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1))) * radius
    wide = ThreatModel("l2", radius, (-1e6, 1e6))
    adv = PGD(wide, steps=pgd_steps, early_stop=False, seed=seed)
    adv.skip_adversarial = False
    d_adv = adv(model, x, y).x_adv - x
    d_adv = d_adv / d_adv.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1))) * radius
    r_rand, r_adv = layer_ratios(model, x, rnd, layers), layer_ratios(model, x, d_adv, layers)
    return {n: {"random": float(r_rand[n].mean()), "adversarial": float(r_adv[n].mean()),
                "uniformity": float(r_rand[n].mean() / r_adv[n].mean().clamp_min(1e-12))} for n in layers}

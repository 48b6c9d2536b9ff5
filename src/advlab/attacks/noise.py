"""Random-noise baselines with the attack interface: random sign, uniform, gaussian."""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ..errors import AttackConfigError
from ..threat import ThreatModel
from .base import Attack, ModelProbe, positive_float
from .losses import attack_loss

NoiseKind = Literal["sign", "uniform", "gaussian"]


class RandomNoise(Attack):
    """Perturb with random noise inside the threat model; no gradients (a baseline, not an attack).

    sign:     +-eps per coordinate for linf (eps/sqrt(d) per coordinate for l2, a point on the sphere);
    uniform:  uniform inside the eps-ball;
    gaussian: N(0, (sigma*eps)^2) per coordinate, projected into the ball.
    """

    name = "noise"
    norms = ("linf", "l2")
    uses_gradients = False
    skip_adversarial = False

    def __init__(self, threat: ThreatModel, kind: NoiseKind = "sign", *, sigma: float = 1.0,
                 seed: int | None = 0) -> None:
        super().__init__(threat, target=None, seed=seed)
        if kind not in ("sign", "uniform", "gaussian"):
            raise AttackConfigError(f"unknown noise kind {kind!r}; use 'sign', 'uniform' or 'gaussian'")
        self.kind = kind
        self.sigma = positive_float("sigma", sigma)

    def _run(self, probe: ModelProbe, x: Tensor, y: Tensor, targets: Tensor | None,
             gen: torch.Generator) -> tuple[Tensor, Tensor]:
        x_adv = self.sample(x, gen)
        return x_adv, attack_loss("ce", probe.logits(x_adv), y, targets)

    def sample(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """The noisy points alone, without a model pass (what a noise-training objective needs); the
        same draws as the attack with a generator in the same state."""
        eps = self.threat.eps
        if self.kind == "uniform":
            x_adv = self.threat.random_start(x, gen)
        else:
            if self.kind == "sign":
                noise = torch.randint(0, 2, x.shape, device=x.device, generator=gen).to(x.dtype) * 2 - 1
                scale = eps if self.threat.norm == "linf" else eps / math.sqrt(x[0].numel())
            else:
                noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen)
                scale = self.sigma * eps
            x_adv = self.threat.project(x, x + scale * noise)
        return x_adv

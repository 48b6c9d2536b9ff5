"""Building blocks: maxout units and the max-column-norm constraint of the maxout recipe."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Maxout(nn.Module):
    """Dense maxout: `units` outputs, each the max over `pieces` affine pieces (Goodfellow et al. 2013).

    max_norm: if set, `constrain()` rescales each unit-piece's incoming weight vector to norm <= max_norm
    (pylearn2's max_col_norm); the trainer calls it after every optimizer step.
    """

    def __init__(self, in_features: int, units: int, pieces: int, max_norm: float | None = None) -> None:
        super().__init__()
        self.units, self.pieces, self.max_norm = units, pieces, max_norm
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(x.shape[0], self.units, self.pieces).amax(dim=2)

    @torch.no_grad()
    def constrain(self) -> None:
        if self.max_norm is not None:
            w = self.linear.weight
            norms = w.norm(dim=1, keepdim=True)
            w.mul_(torch.clamp(self.max_norm / (norms + 1e-7), max=1.0))


class ConvMaxout(nn.Module):
    """Convolutional maxout: conv to channels * pieces, max over the pieces of each channel."""

    def __init__(self, in_channels: int, channels: int, pieces: int, kernel_size: int, padding: int = 0,
                 max_norm: float | None = None) -> None:
        super().__init__()
        self.channels, self.pieces, self.max_norm = channels, pieces, max_norm
        self.conv = nn.Conv2d(in_channels, channels * pieces, kernel_size, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y.view(y.shape[0], self.channels, self.pieces, *y.shape[2:]).amax(dim=2)

    @torch.no_grad()
    def constrain(self) -> None:
        if self.max_norm is not None:
            w = self.conv.weight
            norms = w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            w.mul_(torch.clamp(self.max_norm / (norms + 1e-7), max=1.0))


def apply_constraints(model: nn.Module) -> None:
    """Apply every submodule's weight constraint (a no-op for models without one)."""
    for m in model.modules():
        if callable(getattr(m, "constrain", None)):
            m.constrain()

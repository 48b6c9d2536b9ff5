"""On-device data augmentation for image batches: random crop with zero padding and horizontal
flip (the CIFAR recipes' augmentation), vectorized over the batch and drawn from a seed, so that a
resumed run draws exactly the crops and flips the uninterrupted run drew."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import AdvlabError


@dataclass(frozen=True)
class Augment:
    """crop: pad each side by this many pixels (zeros) and cut a random window of the original size;
    flip: mirror each image left-right with probability 1/2."""

    crop: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 0:
            raise AdvlabError(f"augment crop must be an integer >= 0 (pixels of padding), got {self.crop!r}")
        if not isinstance(self.flip, bool):
            raise AdvlabError(f"augment flip must be true or false, got {self.flip!r}")

    @property
    def enabled(self) -> bool:
        return self.crop > 0 or self.flip

    def __call__(self, x: Tensor, seed: int) -> Tensor:
        """The augmented batch (N, C, H, W); the same seed gives the same crops and flips."""
        if not self.enabled:
            return x
        if x.ndim != 4:
            raise AdvlabError(f"augmentation needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
        g = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        n, _, h, w = x.shape
        if self.crop:
            p = self.crop
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=g).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=g).to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # N, 1, H, 1
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # N, 1, 1, W
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[batch, chan, rows, cols]
        if self.flip:
            mirror = (torch.rand(n, generator=g) < 0.5).to(x.device)[:, None, None, None]
            x = torch.where(mirror, x.flip(3), x)
        return x.contiguous()


def build_augment(spec: dict | Augment | None) -> Augment:
    """An Augment from an experiment file's `augment = { crop = 4, flip = true }` (None: none)."""
    if spec is None:
        return Augment()
    if isinstance(spec, Augment):
        return spec
    unknown = set(spec) - {"crop", "flip"}
    if unknown:
        raise AdvlabError(f"unknown augment option(s) {sorted(unknown)}; use crop (pixels) and flip (true/false)")
    return Augment(**spec)

"""Sanity checks for evaluations: signs of gradient masking and of a mis-wrapped model.

Each check returns a list of human-readable flags; `evaluate_robustness` warns with
GradientMaskingWarning for every flag and stores them in its result.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attacks.base import ModelProbe
from ..models.guard import attack_mode


class GradientMaskingWarning(UserWarning):
    """An evaluation found a symptom of gradient masking or a mis-specified model."""


@torch.no_grad()
def check_model_outputs(model: nn.Module, x: Tensor) -> list[str]:
    """Flags for outputs that look like probabilities, and for randomized (non-deterministic) outputs."""
    flags = []
    with attack_mode(model):
        probe = ModelProbe(model)
        a, b = probe.logits(x), probe.logits(x)
    if bool(((a >= 0) & (a <= 1)).all()) and torch.allclose(a.sum(1), torch.ones_like(a[:, 0]), atol=1e-4):
        flags.append("softmax-output: the model returns probabilities, not logits; CE/DLR gradients "
                     "saturate and attacks underestimate; remove the final softmax")
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        flags.append("randomized-output: two forward passes on the same input differ; use EOT or "
                     "evaluate the deterministic model, and treat this robust accuracy with suspicion")
    return flags


def check_zero_gradients(model: nn.Module, x: Tensor, y: Tensor, threshold: float = 0.0) -> list[str]:
    """Flag if the cross-entropy gradient w.r.t. the input is exactly zero for some samples."""
    with attack_mode(model):
        probe = ModelProbe(model)
        _, grad, _ = probe.loss_and_grad(x, y, None, "ce")
    zero = grad.reshape(grad.shape[0], -1).abs().amax(dim=1) <= threshold
    frac = float(zero.float().mean())
    if frac > 0:
        return [f"zero-gradients: the input gradient is exactly zero for {frac:.1%} of the samples "
                "(shattered or obfuscated gradients); gradient-based attacks cannot work there"]
    return []


def check_black_box_beats_white_box(broken_by: Tensor, names: list[str], white_box: list[bool]) -> list[str]:
    """Flag points that only a gradient-free attack broke after all gradient attacks ran on them."""
    if not any(white_box) or all(white_box):
        return []
    first_black = min(i for i, wb in enumerate(white_box) if not wb)
    if not any(white_box[:first_black]):
        return []
    black_ids = [i for i, wb in enumerate(white_box) if not wb]
    n = int(sum(int((broken_by == i).sum()) for i in black_ids))
    if n > 0:
        who = ", ".join(names[i] for i in black_ids)
        return [f"black-box-beats-white-box: {n} point(s) survived every gradient-based attack but were "
                f"broken by {who}; the gradients are likely masked, so trust only the worst case"]
    return []

"""Put a model in attack mode (eval, no parameter gradients) and restore it exactly afterwards."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def attack_mode(model: nn.Module, *, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Inside: every module in eval mode (unless eval_mode=False) and no parameter requires grad.

    On exit each module's `training` flag and each parameter's `requires_grad` flag are restored
    to exactly what they were, even if they differed between submodules, and even on error.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if eval_mode:
            model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training
        for p, flag in flags:
            p.requires_grad_(flag)

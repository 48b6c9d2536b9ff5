"""Intermediate features: the outputs of named submodules, captured with forward hooks."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


def default_layers(model: nn.Module) -> list[str]:
    """Names of the model's Linear and Conv2d modules, in forward order of registration."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def feature_fn(model: nn.Module, layer: str) -> Callable[[Tensor], Tensor]:
    """x -> the output of submodule `layer` (the forward stops there), for Jacobian and smoothness work."""
    module = dict(model.named_modules())[layer]

    class _Stop(Exception):
        pass

    def fn(x: Tensor) -> Tensor:
        box: list[Tensor] = []

        def hook(mod: nn.Module, inp: tuple, out: Tensor) -> None:
            box.append(out)
            raise _Stop
        h = module.register_forward_hook(hook)
        try:
            model(x)
        except _Stop:
            pass
        finally:
            h.remove()
        return box[0]
    return fn


@torch.no_grad()
def layer_features(model: nn.Module, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Outputs of all `layers` for x in one forward pass (flattened per sample)."""
    mods = dict(model.named_modules())
    out: dict[str, Tensor] = {}
    def keep(name: str) -> Callable:
        def hook(mod: nn.Module, inp: tuple, output: Tensor) -> None:
            out[name] = output.flatten(1)
        return hook
    hooks = [mods[n].register_forward_hook(keep(n)) for n in layers]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return out

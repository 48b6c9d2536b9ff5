"""The model registry: name -> constructor. Every model takes inputs in their natural bounds."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import AdvlabError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn
    return deco


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Construct a registered model; unknown names and bad arguments raise AdvlabError."""
    from . import architectures  # noqa: F401 - registers the built-in models
    if name not in _REGISTRY:
        raise AdvlabError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        raise AdvlabError(f"bad arguments for model {name!r}: {e}") from e


def model_constructor(name: str) -> Callable[..., nn.Module]:
    """The registered constructor of `name` (to check arguments without building the model)."""
    from . import architectures  # noqa: F401 - registers the built-in models
    if name not in _REGISTRY:
        raise AdvlabError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models() -> list[str]:
    from . import architectures  # noqa: F401
    return sorted(_REGISTRY)

"""advlab: attack models, train them to be robust, evaluate robustness reliably, and understand it."""
from .errors import (AdvlabError, AttackConfigError, CheckpointError, DataError, InputError,
                     ModelOutputError, ThreatModelError)
from .threat import NORMS, ThreatModel

__version__ = "0.1.0"

_LAZY = {"load_model": ("advlab.models.loading", "load_model"),
         "evaluate_robustness": ("advlab.evaluation", "evaluate_robustness")}


def __getattr__(name: str):  # noqa: ANN202 - lazy top-level API (keeps `import advlab` light)
    import importlib
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in ("data", "attacks", "evaluation", "models", "training", "analysis", "experiments"):
        return importlib.import_module(f"advlab.{name}")
    raise AttributeError(f"module 'advlab' has no attribute {name!r}")
__all__ = [
    "ThreatModel", "NORMS", "AdvlabError", "ThreatModelError", "InputError", "ModelOutputError",
    "AttackConfigError", "DataError", "CheckpointError", "__version__", "load_model", "evaluate_robustness",
]

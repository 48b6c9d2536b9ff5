"""advlab: attack models, train them to be robust, evaluate robustness reliably, and understand it."""
from .errors import (AdvlabError, AttackConfigError, CheckpointError, DataError, InputError,
                     ModelOutputError, ThreatModelError)
from .threat import NORMS, ThreatModel

__version__ = "0.1.0"
__all__ = [
    "ThreatModel", "NORMS", "AdvlabError", "ThreatModelError", "InputError", "ModelOutputError",
    "AttackConfigError", "DataError", "CheckpointError", "__version__",
]

"""Models that take inputs in their natural bounds, plus the attack-mode guard."""
from .guard import attack_mode
from .normalize import Normalize
from .simple import MLP, SmallCNN, SoftmaxRegression

__all__ = ["Normalize", "attack_mode", "SoftmaxRegression", "MLP", "SmallCNN"]

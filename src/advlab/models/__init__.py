"""Models that take inputs in their natural bounds, the registry, and the attack-mode guard."""
from .architectures import (ConvMaxoutNet, MaxoutMLP, OneHiddenLayer, PreActResNet18, RBFNetwork,
                            WideResNet)
from .guard import attack_mode
from .layers import ConvMaxout, Maxout, apply_constraints
from .normalize import Normalize
from .simple import MLP, SmallCNN, SoftmaxRegression
from .zoo import build_model, list_models, register

__all__ = ["Normalize", "attack_mode", "SoftmaxRegression", "MLP", "SmallCNN", "MaxoutMLP", "ConvMaxoutNet",
           "RBFNetwork", "OneHiddenLayer", "PreActResNet18", "WideResNet", "Maxout", "ConvMaxout",
           "apply_constraints", "build_model", "list_models", "register"]

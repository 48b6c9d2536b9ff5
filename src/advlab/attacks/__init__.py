"""Attacks: configured objects called as attack(model, x, y) -> AttackResult."""
from .apgd import APGD, APGDT
from .base import Attack, AttackResult, ModelProbe
from .deepfool import DeepFool
from .fab import FAB, FABT
from .fgsm import FGM, FGSM
from .minnorm import MinNormAttack
from .losses import LOSSES, attack_loss, is_successful, logit_margin
from .noise import RandomNoise
from .pgd import BIM, PGD
from .registry import ATTACKS, attack_arguments, attack_names, build_attack
from .sparse import SparseL0
from .square import Square
from .targeting import TargetSpec, resolve_targets

__all__ = [
    "Attack", "AttackResult", "ModelProbe", "FGSM", "FGM", "RandomNoise", "PGD", "BIM", "APGD", "APGDT",
    "Square", "DeepFool", "FAB", "FABT", "MinNormAttack", "SparseL0", "attack_loss", "is_successful",
    "logit_margin", "LOSSES",
    "TargetSpec", "resolve_targets", "ATTACKS", "attack_names", "attack_arguments", "build_attack",
]

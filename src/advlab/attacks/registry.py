"""The one registry of attack names: experiment files, the CLI's choices and the tests read it, so a
new attack is added here and nowhere else."""
from __future__ import annotations

import inspect
from typing import Any

from ..errors import AttackConfigError
from ..threat import ThreatModel
from .apgd import APGD, APGDT
from .base import Attack
from .deepfool import DeepFool
from .fab import FAB, FABT
from .fgsm import FGSM
from .noise import RandomNoise
from .pgd import BIM, PGD
from .sparse import SparseL0
from .square import Square

ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "bim": BIM, "apgd": APGD, "apgd-t": APGDT,
                                    "square": Square, "deepfool": DeepFool, "fab": FAB, "fab-t": FABT,
                                    "sparse-l0": SparseL0,
                                    "noise": RandomNoise}


def attack_names() -> list[str]:
    return list(ATTACKS)


def attack_arguments(name: str) -> list[str]:
    """The keyword arguments attack `name` takes besides its threat model and seed."""
    params = inspect.signature(attack_class(name).__init__).parameters
    return [p for p in params if p not in ("self", "threat", "seed")
            and params[p].kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]


def attack_class(name: str) -> type[Attack]:
    if name not in ATTACKS:
        raise AttackConfigError(f"unknown attack {name!r}; available: {', '.join(ATTACKS)}")
    return ATTACKS[name]


def build_attack(name: str, threat: ThreatModel, *, seed: int | None = 0, **args: Any) -> Attack:
    """Attack `name` configured with `args`; unknown arguments and bad values are AttackConfigErrors
    that name the argument and list the valid ones."""
    cls = attack_class(name)
    valid = attack_arguments(name)
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise AttackConfigError(f"attack {name!r} takes no argument {', '.join(map(repr, unknown))}; "
                                f"its arguments are {', '.join(valid)}")
    try:
        return cls(threat, seed=seed, **args)
    except TypeError as e:
        raise AttackConfigError(f"bad arguments for attack {name!r}: {e}") from None

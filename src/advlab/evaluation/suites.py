"""Named attack suites for worst-case evaluation."""
from __future__ import annotations

from collections.abc import Sequence

from ..attacks import APGD, APGDT, Attack, DeepFool, Square, SparseL0
from ..errors import AttackConfigError
from ..threat import ThreatModel

SUITES = ("standard", "fast")


def build_suite(suite: str | Sequence[Attack], threat: ThreatModel, seed: int = 0) -> list[Attack]:
    """The attacks of a named suite for this threat model, or the given attacks checked against it.

    standard (linf, l2): APGD-CE (100 steps), APGD-T (targeted DLR, 100 steps, 9 targets),
        DeepFool (minimal norm, in place of AutoAttack's FAB-T), Square (5,000 queries) -- AutoAttack's
        budgets. l1: APGD-CE and APGD-T. l0: the greedy sparse attack, untargeted and with 9 targets.
    fast: APGD-CE and APGD-T with 3 targets.
    """
    if not isinstance(suite, str):
        attacks = list(suite)
        if not attacks:
            raise AttackConfigError("the suite is empty: give at least one attack, or a named suite "
                                    f"({', '.join(SUITES)})")
        for a in attacks:
            if not isinstance(a, Attack):
                raise AttackConfigError(f"suite entries must be Attack objects, got {type(a).__name__}")
            if a.threat != threat:
                raise AttackConfigError(f"{a!r} was built for {a.threat}, not the evaluation's {threat}")
            if a.target is not None:
                raise AttackConfigError(f"{a!r} is targeted; worst-case evaluation needs untargeted success")
        return attacks
    if suite not in SUITES:
        raise AttackConfigError(f"unknown suite {suite!r}; use one of {', '.join(SUITES)} or a list of attacks")
    if threat.norm == "l0":
        attacks: list[Attack] = [SparseL0(threat, steps=100, seed=seed)]
        return attacks
    if suite == "fast":
        return [APGD(threat, steps=100, loss="ce", seed=seed),
                APGDT(threat, steps=100, n_target_classes=3, seed=seed)]
    attacks = [APGD(threat, steps=100, loss="ce", seed=seed),
               APGDT(threat, steps=100, n_target_classes=9, seed=seed)]
    if threat.norm in ("linf", "l2"):
        attacks += [DeepFool(threat, steps=50, seed=seed), Square(threat, n_queries=5000, seed=seed)]
    return attacks

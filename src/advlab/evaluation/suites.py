"""Named attack suites for worst-case evaluation: AutoAttack's versions (`standard`, `plus`, `rand`,
as the reference's `set_version`), advlab's quick screen `fast`, and `auto` (standard, or rand for
a randomized model; resolved by evaluate_robustness)."""
from __future__ import annotations

from collections.abc import Sequence

from ..attacks import APGD, APGDT, FAB, FABT, Attack, Square, SparseL0
from ..errors import AttackConfigError
from ..threat import ThreatModel

SUITES: dict[str, str] = {
    "standard": "AutoAttack standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries)",
    "plus": "AutoAttack plus: APGD-CE and APGD-DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T",
    "rand": "AutoAttack rand, for randomized models: APGD-CE and APGD-DLR with EOT over 20 draws",
    "fast": "a screen, not a worst case: APGD-CE and APGD-T (3 targets)",
    "auto": "standard, or rand when the model's output is randomized",
}
EOT_DRAWS = 20


def suite_names() -> list[str]:
    return list(SUITES)


def _standard(threat: ThreatModel, seed: int) -> list[Attack]:
    if threat.norm == "l1":   # the reference: 5 restarts for APGD-CE, 5 targets for APGD-T
        return [APGD(threat, steps=100, restarts=5, loss="ce", large_reps=True, seed=seed),
                APGDT(threat, steps=100, n_target_classes=5, large_reps=True, seed=seed),
                FABT(threat, steps=100, n_target_classes=9, early_stop=True, seed=seed)]
    return [APGD(threat, steps=100, loss="ce", seed=seed),
            APGDT(threat, steps=100, n_target_classes=9, seed=seed),
            FABT(threat, steps=100, n_target_classes=9, early_stop=True, seed=seed),
            Square(threat, n_queries=5000, p_init=0.8, seed=seed)]


def _plus(threat: ThreatModel, seed: int) -> list[Attack]:
    attacks: list[Attack] = [APGD(threat, steps=100, restarts=5, loss="ce", seed=seed),
                             APGD(threat, steps=100, restarts=5, loss="dlr", seed=seed),
                             FAB(threat, steps=100, restarts=5, early_stop=True, seed=seed)]
    if threat.norm in Square.norms:
        attacks.append(Square(threat, n_queries=5000, p_init=0.8, seed=seed))
    return attacks + [APGDT(threat, steps=100, n_target_classes=9, seed=seed),
                      FABT(threat, steps=100, n_target_classes=9, early_stop=True, seed=seed)]


def _rand(threat: ThreatModel, seed: int) -> list[Attack]:
    # no early stop: one noisy pass that misclassifies is no reason to stop (the evaluation judges
    # by the prediction averaged over draws); the kept point is the highest-loss misclassified iterate
    return [APGD(threat, steps=100, loss="ce", eot_iter=EOT_DRAWS, early_stop=False, seed=seed),
            APGD(threat, steps=100, loss="dlr", eot_iter=EOT_DRAWS, early_stop=False, seed=seed)]


def _fast(threat: ThreatModel, seed: int) -> list[Attack]:
    return [APGD(threat, steps=100, loss="ce", seed=seed), APGDT(threat, steps=100, n_target_classes=3, seed=seed)]


BUILDERS = {"standard": _standard, "plus": _plus, "rand": _rand, "fast": _fast}


def build_suite(suite: str | Sequence[Attack], threat: ThreatModel, seed: int = 0) -> list[Attack]:
    """The attacks of a named suite for this threat model, or the given attacks checked against it.

    standard / plus / rand: the reference AutoAttack's `set_version` (attacks, restarts, targets,
    queries, EOT). l1 standard has no Square (advlab's Square covers linf and l2); l0 suites run the
    greedy sparse attack. fast: APGD-CE and APGD-T with 3 targets, a screen. `auto` is resolved by
    evaluate_robustness (standard, or rand for a randomized model) before it gets here.
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
    if suite == "auto":
        suite = "standard"   # evaluate_robustness switches to rand first when the model is randomized
    if threat.norm == "l0":
        return [SparseL0(threat, steps=100, seed=seed)]
    return BUILDERS[suite](threat, seed)

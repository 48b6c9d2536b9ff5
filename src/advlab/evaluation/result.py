"""The outcome of a worst-case evaluation: per-sample results, per-attack costs, flags, and the
results schema written to JSON."""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from ..threat import ThreatModel

NOT_WORST_CASE = ("fast",)   # suites that screen: their numbers say so wherever they are shown


@dataclass
class AttackStats:
    name: str
    broken: int = 0
    attacked: int = 0
    n_forward: int = 0
    n_backward: int = 0
    seconds: float = 0.0


@dataclass
class RobustnessResult:
    """Per-sample outcome of a worst-case evaluation and the numbers a report needs."""

    threat: ThreatModel
    clean_correct: Tensor          # bool [N]
    robust: Tensor                 # bool [N]: correct under every attack
    broken_by: Tensor              # int [N]: index of the attack that broke the point, -1 if none
    adv_norms: Tensor              # [N]: norm of the adversarial perturbation found (nan if none)
    attacks: list[AttackStats]
    flags: list[str] = field(default_factory=list)
    seed: int = 0
    x_adv: Tensor | None = None
    adversarials_dir: str | None = None  # a streamed evaluation's x_adv, one file per chunk on disk
    accel: dict[str, Any] | None = None  # the fast path used and its check against fp32
    suite: str | None = None             # the named suite that ran (auto resolved), None for a custom list
    judge_draws: int = 1                 # forward passes averaged per prediction (a randomized model: > 1)

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean())

    @property
    def n_forward(self) -> int:
        return sum(a.n_forward for a in self.attacks)

    @property
    def n_backward(self) -> int:
        return sum(a.n_backward for a in self.attacks)

    def robust_accuracy_after_each_attack(self) -> dict[str, float]:
        """Robust accuracy after attacks 1..k, for every k (the reference's running report)."""
        n = max(int(self.clean_correct.numel()), 1)
        left, out = float(self.clean_correct.sum()), {}
        for i, a in enumerate(self.attacks):
            left -= float((self.broken_by == i).sum())
            out[a.name if a.name not in out else f"{a.name}#{i}"] = left / n
        return out

    def robustbench(self) -> dict[str, Any]:
        """RobustBench's model-info fields (clean_acc and autoattack_acc in percent, as there)."""
        return {"clean_acc": round(100 * self.clean_accuracy, 2),
                "autoattack_acc": round(100 * self.robust_accuracy, 2),
                "robust_acc_after_attack": {k: round(100 * v, 2) for k, v in
                                            self.robust_accuracy_after_each_attack().items()},
                "eps": self.threat.eps, "norm": {"linf": "Linf", "l2": "L2", "l1": "L1"}.get(self.threat.norm,
                                                                                              self.threat.norm),
                "n_samples": int(self.clean_correct.numel()), "suite": self.suite}

    def to_dict(self) -> dict[str, Any]:
        """The results schema (RobustBench-like): what was run, the numbers, the flags, the versions."""
        return {
            "threat_model": {"norm": self.threat.norm, "eps": self.threat.eps, "bounds": list(self.threat.bounds)},
            "n_samples": int(self.clean_correct.numel()),
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attacks": [asdict(a) for a in self.attacks],
            "n_forward": self.n_forward, "n_backward": self.n_backward,
            "flags": list(self.flags), "seed": self.seed, "accel": self.accel,
            "suite": self.suite, "worst_case": self.suite not in NOT_WORST_CASE, "judge_draws": self.judge_draws,
            "robustbench": self.robustbench(),
            "versions": {"advlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
        }

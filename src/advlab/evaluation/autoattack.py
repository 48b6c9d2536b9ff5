"""Worst-case robustness evaluation with the AutoAttack protocol.

Each attack of the suite runs only on points that are still robust (clean-correct and unbroken by
the attacks before it); a point's robust accuracy is the worst case over the suite. The state is
written atomically after every chunk, so a killed evaluation resumes where it stopped, and the
result records per-sample outcomes, per-attack costs and every sanity-check flag.
"""
from __future__ import annotations

import hashlib
import json
import platform
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..attacks import Attack
from ..attacks.base import check_label_range, check_labels
from ..errors import CheckpointError, InputError
from ..io import load_tensors, save_tensors
from ..threat import ThreatModel
from .checks import (GradientMaskingWarning, check_black_box_beats_white_box, check_model_outputs,
                     check_zero_gradients)
from .metrics import predict
from .suites import build_suite


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

    def to_dict(self) -> dict[str, Any]:
        """The results schema (RobustBench-like): what was run, the numbers, the flags, the versions."""
        return {
            "threat_model": {"norm": self.threat.norm, "eps": self.threat.eps, "bounds": list(self.threat.bounds)},
            "n_samples": int(self.clean_correct.numel()),
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attacks": [asdict(a) for a in self.attacks],
            "n_forward": self.n_forward, "n_backward": self.n_backward,
            "flags": list(self.flags), "seed": self.seed,
            "versions": {"advlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
        }


def _fingerprint(x: Tensor, y: Tensor, threat: ThreatModel, attacks: list[Attack], seed: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([str(threat), [repr(a) for a in attacks], seed, list(x.shape)]).encode())
    h.update(x.detach().float().cpu().contiguous().numpy().tobytes()[:1 << 22])
    h.update(y.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def evaluate_robustness(model: nn.Module, data: tuple[Tensor, Tensor], threat: ThreatModel,
                        suite: str | Sequence[Attack] = "standard", *, batch_size: int = 500,
                        seed: int = 0, state_path: str | Path | None = None, checks: bool = True,
                        keep_adversarials: bool = False, device: torch.device | str | None = None,
                        progress: bool = False) -> RobustnessResult:
    """Worst-case robust accuracy of `model` on `data` = (x, y) under `threat`.

    suite: 'standard' (AutoAttack's attacks and budgets), 'fast', or a list of untargeted attacks.
    state_path: a safetensors file updated after every chunk; an interrupted call with the same
    arguments resumes from it (a file from different inputs or settings is refused).
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise InputError("data must be a pair (x, y) of tensors")
    x_all, y_all = data
    threat.check_inputs(x_all)
    y_all = check_labels(y_all, x_all.shape[0], x_all.device)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else x_all.device
    attacks = build_suite(suite, threat, seed)
    n = x_all.shape[0]
    names = [f"{a.name}" for a in attacks]
    fingerprint = _fingerprint(x_all, y_all, threat, attacks, seed)

    state = _load_state(state_path, fingerprint, n, len(attacks))
    if state is None:
        logits = torch.cat([predict(model, x_all[i:i + batch_size].to(dev)).cpu()
                            for i in range(0, n, batch_size)])
        check_label_range(y_all, logits.shape[1])
        clean = logits.argmax(1) == y_all.cpu()
        state = {"clean_correct": clean, "robust": clean.clone(), "broken_by": torch.full((n,), -1),
                 "adv_norms": torch.full((n,), float("nan")), "start_mask": clean.clone(),
                 "progress": {"attack": 0, "chunk": 0, "stats": [asdict(AttackStats(nm)) for nm in names],
                              "flags": []}}
        if keep_adversarials:
            state["x_adv"] = x_all.detach().cpu().clone()
        if checks:
            state["progress"]["flags"] += _input_checks(model, x_all, y_all, clean, dev)
        _save_state(state_path, state, fingerprint)
    elif keep_adversarials and "x_adv" not in state:
        state["x_adv"] = x_all.detach().cpu().clone()

    prog = state["progress"]
    for ai in range(prog["attack"], len(attacks)):
        attack = attacks[ai]
        if prog["chunk"] == 0:
            state["start_mask"] = state["robust"].clone()
        todo = state["start_mask"].nonzero().squeeze(1)
        chunks = [c for c in todo.split(batch_size) if c.numel()]
        bar = _progress(len(chunks), f"{attack.name}", progress)
        for ci in range(prog["chunk"], len(chunks)):
            idx = chunks[ci]
            xb, yb = x_all[idx.to(x_all.device)].to(dev), y_all[idx.to(y_all.device)].to(dev)
            res = attack(model, xb, yb)
            broken = res.success.cpu()
            hit = idx[broken]
            state["robust"][hit] = False
            state["broken_by"][hit] = ai
            state["adv_norms"][hit] = res.norms.detach().float().cpu()[broken]
            if "x_adv" in state:
                state["x_adv"][hit] = res.x_adv.detach().cpu()[broken].to(state["x_adv"].dtype)
            st = prog["stats"][ai]
            st["broken"] += int(broken.sum())
            st["attacked"] += int(idx.numel())
            st["n_forward"] += res.n_forward
            st["n_backward"] += res.n_backward
            st["seconds"] += res.seconds
            prog["chunk"] = ci + 1
            _save_state(state_path, state, fingerprint)
            bar.update(1)
        bar.close()
        prog["attack"], prog["chunk"] = ai + 1, 0
        _save_state(state_path, state, fingerprint)

    flags = list(prog["flags"])
    if checks:
        flags += check_black_box_beats_white_box(state["broken_by"], names,
                                                 [a.uses_gradients for a in attacks])
    for flag in flags:
        warnings.warn(flag, GradientMaskingWarning, stacklevel=2)
    return RobustnessResult(
        threat=threat, clean_correct=state["clean_correct"], robust=state["robust"],
        broken_by=state["broken_by"], adv_norms=state["adv_norms"],
        attacks=[AttackStats(**s) for s in prog["stats"]], flags=flags, seed=seed,
        x_adv=state.get("x_adv"))


def _input_checks(model: nn.Module, x: Tensor, y: Tensor, clean: Tensor, dev: torch.device) -> list[str]:
    sample = torch.arange(min(x.shape[0], 200))
    flags = check_model_outputs(model, x[sample.to(x.device)].to(dev))
    correct = clean.nonzero().squeeze(1)[:200]
    if correct.numel():
        flags += check_zero_gradients(model, x[correct.to(x.device)].to(dev), y[correct.to(y.device)].to(dev))
    return flags


def _progress(total: int, desc: str, enabled: bool):  # noqa: ANN202 - tqdm or a no-op
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


_STATE_KEYS = ("clean_correct", "robust", "broken_by", "adv_norms", "start_mask", "x_adv")


def _save_state(path: str | Path | None, state: dict[str, Any], fingerprint: str) -> None:
    if path is None:
        return
    tensors = {k: (state[k].to(torch.uint8) if state[k].dtype == torch.bool else state[k])
               for k in _STATE_KEYS if k in state}
    meta = {"fingerprint": fingerprint, "progress": json.dumps(state["progress"]), "format": "advlab-eval-1"}
    save_tensors(path, tensors, metadata=meta)


def _load_state(path: str | Path | None, fingerprint: str, n: int, n_attacks: int) -> dict[str, Any] | None:
    if path is None or not Path(path).exists():
        return None
    tensors, meta = load_tensors(path)
    if meta.get("format") != "advlab-eval-1":
        raise CheckpointError(f"{path} is not an advlab evaluation state file")
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{path} belongs to another evaluation (different data, model settings, "
                              "threat model, suite or seed); delete it or pass another state_path")
    try:
        progress = json.loads(meta["progress"])
        state: dict[str, Any] = {"progress": progress}
        for k in _STATE_KEYS:
            if k in tensors:
                t = tensors[k]
                state[k] = t.bool() if k in ("clean_correct", "robust", "start_mask") else t
        ok = all(state[k].shape[0] == n for k in _STATE_KEYS if k in state) and len(progress["stats"]) == n_attacks
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from e
    if not ok:
        raise CheckpointError(f"{path} is corrupt: its arrays do not match {n} samples / {n_attacks} attacks")
    return state


def robust_accuracy_curve(model: nn.Module, data: tuple[Tensor, Tensor], norm: str,
                          eps_grid: Sequence[float], *, bounds: tuple[float, float] = (0.0, 1.0),
                          batch_size: int = 500, steps: int = 50, seed: int = 0) -> list[tuple[float, float]]:
    """Accuracy versus eps from one minimal-norm (DeepFool) run: an upper bound on robust accuracy
    at every eps at once (cheap, for plots; use evaluate_robustness for the reported number)."""
    from ..attacks import DeepFool
    from .metrics import accuracy_vs_eps
    x, y = data
    threat = ThreatModel(norm, max(eps_grid), bounds)
    attack = DeepFool(threat, steps=steps, seed=seed)
    norms = []
    for i in range(0, x.shape[0], batch_size):
        r = attack(model, x[i:i + batch_size], y[i:i + batch_size])
        norms.append(r.extra.get("min_norm", torch.zeros(r.success.shape[0], device=x.device)).cpu())
    return accuracy_vs_eps(torch.cat(norms), eps_grid)

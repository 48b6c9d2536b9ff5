"""The resumable state of a worst-case evaluation: per-sample outcomes and progress in a safetensors
file, tied by a fingerprint to the model, the data, the threat model, the suite and the seed, so that
a state file is never resumed for anything but the evaluation that wrote it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import Attack
from ..errors import CheckpointError
from ..fingerprint import data_fingerprint, model_fingerprint
from ..io import load_tensors, save_tensors
from ..threat import ThreatModel

FORMAT = "advlab-eval-2"
STATE_KEYS = ("clean_correct", "robust", "broken_by", "adv_norms", "start_mask", "x_adv")
_BOOL_KEYS = ("clean_correct", "robust", "start_mask")


class StaleStateError(CheckpointError):
    """A saved state or result belongs to another model, data set, threat model, suite or seed."""


def evaluation_fingerprint(model: nn.Module, x: Tensor | None, y: Tensor | None, threat: ThreatModel,
                           attacks: list[Attack], seed: int, fast_path: dict[str, Any]) -> dict[str, str]:
    """What an evaluation's result depends on, one entry per part (so a mismatch can say which).
    A streamed evaluation passes x = y = None and checks its data chunk by chunk instead."""
    out = {"model": model_fingerprint(model), "threat": str(threat),
           "suite": json.dumps([repr(a) for a in attacks]), "seed": str(seed),
           "fast_path": json.dumps(fast_path, sort_keys=True)}
    if x is not None and y is not None:
        out["data"] = data_fingerprint(x, y)
    return out


def fingerprint_differences(saved: dict[str, str], current: dict[str, str]) -> list[str]:
    out = []
    for part in current:
        old, new = saved.get(part), current[part]
        if old == new:
            continue
        if part in ("model", "data"):
            out.append(f"{part} (sha256 {str(old)[:12]} in the file, {new[:12]} now)")
        else:
            out.append(f"{part} ({old} in the file, {new} now)")
    return out


def save_state(path: str | Path | None, state: dict[str, Any], fingerprint: dict[str, str]) -> None:
    """Atomically write the state (rank 0 passes its path, the others None)."""
    if path is None:
        return
    tensors = {k: (state[k].to(torch.uint8) if k in _BOOL_KEYS else state[k]) for k in STATE_KEYS if k in state}
    meta = {"fingerprint": json.dumps(fingerprint, sort_keys=True), "progress": json.dumps(state["progress"]),
            "format": FORMAT}
    save_tensors(path, tensors, metadata=meta)


def load_state(path: str | Path | None, fingerprint: dict[str, str], n: int, n_attacks: int) -> dict[str, Any] | None:
    """The saved state at `path`, or None when there is none; refuses one of another evaluation,
    naming what differs."""
    if path is None or not Path(path).exists():
        return None
    tensors, meta = load_tensors(path)
    if meta.get("format") == "advlab-eval-1":
        raise StaleStateError(f"{path} was written by an older advlab without a model fingerprint, so it cannot "
                              "be tied to this model; delete it (or restart) to evaluate afresh")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an advlab evaluation state file")
    try:
        saved = json.loads(meta["fingerprint"])
        progress = json.loads(meta["progress"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from e
    diff = fingerprint_differences(saved, fingerprint)
    if diff:
        raise StaleStateError(f"{path} belongs to another evaluation: different {'; '.join(diff)}; "
                              "evaluate afresh with restart=True (CLI: --restart) or pass another state_path")
    try:
        state: dict[str, Any] = {"progress": progress}
        for k in STATE_KEYS:
            if k in tensors:
                state[k] = tensors[k].bool() if k in _BOOL_KEYS else tensors[k]
        ok = all(state[k].shape[0] == n for k in STATE_KEYS if k in state) and len(progress["stats"]) == n_attacks
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from e
    if not ok:
        raise CheckpointError(f"{path} is corrupt: its arrays do not match {n} samples / {n_attacks} attacks")
    return state

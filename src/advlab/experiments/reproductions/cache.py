"""The one resume layout of every reproduction: OUT/models/KEY.safetensors (a trained model with what
its training recorded) and OUT/cells/KEY.json (a finished measurement), each written atomically as
soon as it exists, so a killed run started again with the same OUT keeps everything that finished."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ...io import atomic_write_json
from ...training import load_checkpoint, save_checkpoint


def model_path(out: Path, key: str) -> Path:
    return out / "models" / f"{key}.safetensors"


def train_or_load(out: Path, key: str, build: Callable[[], nn.Module], train: Callable[[nn.Module], dict[str, Any]],
                  log: Callable[[str], None] = print) -> tuple[nn.Module, dict[str, Any]]:
    """The model `key`: loaded with its recorded info when a previous run trained it (info gets
    cached=True), else built, trained by `train(model)` (which returns what to record) and saved."""
    model = build()
    path = model_path(out, key)
    if path.exists():
        progress, _ = load_checkpoint(path, model, restore_rng=False)
        return model.eval(), {**progress, "cached": True}
    t0 = time.perf_counter()
    info = dict(train(model))
    info.setdefault("seconds", time.perf_counter() - t0)
    save_checkpoint(path, model, None, info)
    log(f"  trained {key} in {info['seconds']:.0f}s")
    return model.eval(), info


def cached_cell(out: Path, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A finished measurement `key`: read back when present, else computed and written at once."""
    path = out / "cells" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_json(path, value)
    return value

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

from ...errors import RunDirError
from ...io import atomic_write_json
from ...training import load_checkpoint, save_checkpoint


def recipe_fingerprint(recipe: Any) -> str:
    """A short hash of everything that decides a cached model or cell (its training recipe)."""
    import hashlib
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_recipe(path: Path, stored: str | None, wanted: str | None) -> None:
    if wanted is not None and stored is not None and stored != wanted:
        raise RunDirError(f"{path} was made with another recipe (fingerprint {stored}, this budget wants {wanted}); "
                          "use another --out, or delete the file to retrain it")


def model_path(out: Path, key: str) -> Path:
    return out / "models" / f"{key}.safetensors"


def cell_path(out: Path, key: str) -> Path:
    return out / "cells" / f"{key}.json"


def train_or_load(out: Path, key: str, build: Callable[[], nn.Module], train: Callable[[nn.Module], dict[str, Any]],
                  log: Callable[[str], None] = print, recipe: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model `key`: loaded with its recorded info when a previous run trained it (info gets
    cached=True), else built, trained by `train(model)` (which returns what to record) and saved.
    `recipe` (anything JSON-able that decides the model) is fingerprinted and recorded; a cached
    model made with another recipe is refused rather than silently reused."""
    model = build()
    path = model_path(out, key)
    wanted = None if recipe is None else recipe_fingerprint(recipe)
    if path.exists():
        progress, _ = load_checkpoint(path, model, restore_rng=False)
        _check_recipe(path, progress.get("recipe"), wanted)
        return model.eval(), {**progress, "cached": True}
    t0 = time.perf_counter()
    info = dict(train(model))
    info.setdefault("seconds", time.perf_counter() - t0)
    if wanted is not None:
        info["recipe"] = wanted
    save_checkpoint(path, model, None, info)
    log(f"  trained {key} in {info['seconds']:.0f}s")
    return model.eval(), info


def cached_cell(out: Path, key: str, compute: Callable[[], dict[str, Any]], recipe: Any = None) -> dict[str, Any]:
    """A finished measurement `key`: read back when present (and made with the same `recipe`), else
    computed and written at once."""
    path = cell_path(out, key)
    wanted = None if recipe is None else recipe_fingerprint(recipe)
    if path.exists():
        value = json.loads(path.read_text())
        _check_recipe(path, value.get("_recipe") if isinstance(value, dict) else None, wanted)
        return value
    value = compute()
    if wanted is not None and isinstance(value, dict):
        value = {**value, "_recipe": wanted}
    atomic_write_json(path, value)
    return value

"""Training checkpoints in safetensors: model, optimizer state, RNG state and progress, no pickle."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import load_tensors, save_tensors

FORMAT = "advlab-train-1"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    progress: dict[str, Any], extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Atomically write model weights and buffers, optimizer state, the torch RNG state and progress."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"progress": progress}
    if optimizer is not None:
        opt_t, opt_meta = _optimizer_tensors(optimizer)
        tensors.update(opt_t)
        meta["optimizer"] = opt_meta
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v
    return save_tensors(path, tensors, metadata={"format": FORMAT, "meta": json.dumps(meta, default=float)})


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore what save_checkpoint wrote; returns (progress, extra tensors). Refuses foreign files."""
    tensors, metadata = load_tensors(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an advlab training checkpoint")
    try:
        meta = json.loads(metadata["meta"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has corrupt metadata: {e}") from e
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this model: {e}") from e
    if optimizer is not None and "optimizer" in meta:
        _load_optimizer(optimizer, tensors, meta["optimizer"])
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta["progress"], extra


def load_weights(path: str | Path, model: nn.Module) -> nn.Module:
    """Load only the model weights of a checkpoint (safetensors, never pickle)."""
    load_checkpoint(path, model, None, restore_rng=False)
    return model

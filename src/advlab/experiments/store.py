"""The run directory: config.toml, env.json, metrics.jsonl, results.json, samples.npz, checkpoints."""
from __future__ import annotations

import io
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch

from .. import __version__
from ..distributed import is_main, world
from ..io import atomic_write_bytes, atomic_write_json


def environment() -> dict[str, Any]:
    """Versions and hardware, recorded with every run."""
    env = {"advlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
           "python": platform.python_version(), "platform": platform.platform(),
           "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


class RunDir:
    """One run's directory. Every write is atomic; metrics.jsonl is rewritten whole on each append so a
    killed run never leaves a torn line. Under torch.distributed only rank 0 writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, root: str | Path, name: str) -> "RunDir":
        """A new directory root/NAME-TIME (under torch.distributed every rank gets rank 0's name)."""
        stamp = [datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")]
        if world()[1] > 1:
            torch.distributed.broadcast_object_list(stamp, src=0)
        return cls(Path(root) / f"{name}-{stamp[0]}")

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.safetensors"

    @property
    def model_file(self) -> Path:
        return self.path / "model.safetensors"

    def write_config(self, config: dict[str, Any]) -> None:
        if not is_main():
            return
        clean = json.loads(json.dumps(config, default=list))
        atomic_write_bytes(self.path / "config.toml", tomli_w.dumps(_drop_none(clean)).encode())

    def write_env(self, extra: dict[str, Any] | None = None) -> None:
        if not is_main():
            return
        atomic_write_json(self.path / "env.json", {**environment(), **(extra or {})})

    def metrics(self) -> list[dict[str, Any]]:
        f = self.path / "metrics.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []

    def log_metrics(self, record: dict[str, Any]) -> None:
        if not is_main():
            return
        lines = [json.dumps(r, default=float) for r in self.metrics() + [record]]
        atomic_write_bytes(self.path / "metrics.jsonl", ("\n".join(lines) + "\n").encode())

    def write_results(self, results: dict[str, Any]) -> None:
        if not is_main():
            return
        atomic_write_json(self.path / "results.json", results)

    def results(self) -> dict[str, Any] | None:
        f = self.path / "results.json"
        return json.loads(f.read_text()) if f.exists() else None

    def write_samples(self, arrays: dict[str, np.ndarray]) -> None:
        if not is_main():
            return
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.path / "samples.npz", buf.getvalue())


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Past runs under root with their key numbers, newest first."""
    rows = []
    for d in sorted(Path(root).glob("*/results.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        r = json.loads(d.read_text())
        rows.append({"run": d.parent.name, "name": r.get("name"), "clean_accuracy": r.get("clean_accuracy"),
                     "robust": {k: v.get("robust_accuracy") for k, v in r.get("attacks", {}).items()},
                     "worst_case": (r.get("worst_case") or {}).get("robust_accuracy"),
                     "train_seconds": r.get("train_seconds")})
    return rows

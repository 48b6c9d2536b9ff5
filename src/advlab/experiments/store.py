"""The run directory: config.toml, env.json, metrics.jsonl, results.json, samples.npz, checkpoints."""
from __future__ import annotations

import io
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch

from .. import __version__
from ..distributed import is_main, world
from ..errors import RunDirError, RunLockedError
from ..io import CHECKSUM_KEY, atomic_write_bytes, atomic_write_json, read_metadata

RUN_FILES = ("config.toml", "results.json", "checkpoint.safetensors", "model.safetensors", "metrics.jsonl")
LOCK_NAME = ".lock"


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
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} is a file, not a run directory")
        self.created = not self.path.exists()   # this process made it (so may remove it if nothing ran)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        self.started = False   # set by the runner once training (or loading the final model) begins

    @property
    def holds_run(self) -> bool:
        """True when the directory already holds (part of) a run."""
        return any((self.path / f).exists() for f in RUN_FILES)

    @contextmanager
    def lock(self) -> Iterator["RunDir"]:
        """Hold the directory's writer lock (an flock, released when the process dies); a second
        writer gets a RunLockedError at once instead of interleaving its files with the first's."""
        if not is_main():
            yield self
            return
        import fcntl
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLockedError(f"{self.path} is being written by another advlab process (pid {holder}); "
                                 "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        try:
            yield self
        finally:
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def is_locked(self) -> bool:
        """Whether some process holds the writer lock now (a running run)."""
        import fcntl
        f = self.path / LOCK_NAME
        if self._lock_fd is not None:
            return True
        if not f.exists():
            return False
        fd = os.open(f, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def clear(self) -> None:
        """Remove every file of the run (for --restart); the lock file stays, held by the caller."""
        for child in self.path.iterdir():
            if child.name == LOCK_NAME:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    def discard(self) -> None:
        """Remove a directory this process created, when the run failed before it produced anything."""
        if self.created and is_main():
            shutil.rmtree(self.path, ignore_errors=True)

    def set_status(self, state: str, **info: Any) -> None:
        """status.json: running / failed / finished, with the error of a failed run."""
        if is_main():
            atomic_write_json(self.path / "status.json", {"state": state, "pid": os.getpid(),
                                                          "time": datetime.now(timezone.utc).isoformat(), **info})

    def status(self) -> dict[str, Any]:
        f = self.path / "status.json"
        try:
            return json.loads(f.read_text()) if f.exists() else {}
        except (OSError, json.JSONDecodeError):
            return {"state": "unreadable"}

    def model_sha256(self) -> str | None:
        """The checksum of the final model's tensors (written with model.safetensors), or None."""
        return model_file_sha256(self.model_file)

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


def model_file_sha256(path: Path) -> str | None:
    """The tensor checksum stored in a safetensors file's header (read without loading the tensors)."""
    if not path.is_file():
        return None
    try:
        return read_metadata(path).get(CHECKSUM_KEY)
    except Exception:  # noqa: BLE001 - an unreadable model file has no checksum
        return None


def derived_files(run: Path) -> list[Path]:
    """Files computed from a finished run's model: results.json, eval_*.json, analysis.json."""
    return [f for f in [run / "results.json", *sorted(run.glob("eval_*.json")), run / "analysis.json"] if f.is_file()]


def stale_files(run: Path) -> list[str]:
    """Derived files whose recorded model checksum differs from the run's model.safetensors now."""
    current = model_file_sha256(run / "model.safetensors")
    out = []
    for f in derived_files(run):
        try:
            recorded = json.loads(f.read_text()).get("model_sha256")
        except (OSError, json.JSONDecodeError, AttributeError):
            out.append(f.name)
            continue
        if recorded != current:
            out.append(f.name)
    return out


def _run_state(run: RunDir, results: dict[str, Any] | None) -> str:
    if run.is_locked():
        return "running"
    state = run.status().get("state")
    if results is not None and state in (None, "finished"):
        return "finished"
    return "failed" if state == "failed" else "unfinished"


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run under root, newest first: finished ones with their key numbers, and running,
    failed and unfinished ones as such; stale lists derived files computed from another model."""
    rows = []
    dirs = [d for d in Path(root).glob("*") if d.is_dir() and any((d / f).exists() for f in RUN_FILES)]
    for d in sorted(dirs, key=lambda p: p.stat().st_mtime, reverse=True):
        run = RunDir(d)
        try:
            r = json.loads((d / "results.json").read_text()) if (d / "results.json").is_file() else None
        except (OSError, json.JSONDecodeError):
            r = None
        status = run.status()
        rows.append({"run": d.name, "state": _run_state(run, r), "error": status.get("error"),
                     "name": (r or {}).get("name"), "clean_accuracy": (r or {}).get("clean_accuracy"),
                     "robust": {k: v.get("robust_accuracy") for k, v in (r or {}).get("attacks", {}).items()},
                     "worst_case": ((r or {}).get("worst_case") or {}).get("robust_accuracy"),
                     "worst_case_suite": ((r or {}).get("worst_case") or {}).get("suite"),
                     "train_seconds": (r or {}).get("train_seconds"),
                     "stale": stale_files(d) if r is not None else []})
    return rows

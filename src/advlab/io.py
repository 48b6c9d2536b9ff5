"""The one place that touches the disk: atomic writes, safetensors files, checksums, and a
restricted unpickler for the few legacy data files that only exist as pickles."""
from __future__ import annotations

import hashlib
import io as _io
import json
import os
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CheckpointError, DataError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


CHECKSUM_KEY = "advlab_tensors_sha256"


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a flat dict of tensors (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> Path:
    """Atomically save a flat dict of tensors as safetensors (no pickle anywhere), with a checksum of
    the tensors in the metadata that `load_tensors` verifies."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**(metadata or {}), CHECKSUM_KEY: tensors_sha256(flat)}
    return atomic_write_bytes(path, st_save(flat, metadata=meta))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; raises CheckpointError on a corrupt or foreign file, or on one whose
    tensors no longer match the checksum written with them."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a safetensors file")
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
    except (OSError, SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    meta = dict(header.get("__metadata__", {}) or {})
    expected = meta.pop(CHECKSUM_KEY, None)
    if expected is not None and tensors_sha256(tensors) != expected:
        raise CheckpointError(f"{path} fails its checksum: its tensors were changed after it was written "
                              "(corrupt or tampered with)")
    return tensors, meta


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A safetensors file's metadata, from its header alone (no tensors are read)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                raise ValueError(f"header length {n}")
            header = json.loads(f.read(n))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    return dict(header.get("__metadata__", {}) or {})


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise DataError(f"checksum mismatch for {path}: sha256 {got}, expected {expected}; "
                        "the file is corrupt or has been tampered with")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only the globals explicitly allowed (e.g. numpy array reconstruction)."""

    def __init__(self, file: Any, allowed: Iterable[tuple[str, str]]) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = set(allowed)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise DataError(f"refusing to unpickle {module}.{name}: not in the allowed list")
        return super().find_class(module, name)


NUMPY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
})


def restricted_loads(data: bytes, allowed: Iterable[tuple[str, str]] = NUMPY_GLOBALS, *, what: str = "data") -> Any:
    """Unpickle `data` admitting only `allowed` globals; a corrupt pickle is a DataError naming `what`."""
    try:
        return RestrictedUnpickler(_io.BytesIO(data), allowed).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise DataError(f"{what} is not a readable pickle ({type(e).__name__}: {e}): corrupt or truncated") from None

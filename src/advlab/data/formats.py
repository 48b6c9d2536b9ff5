"""Readers of the standard on-disk formats: IDX (MNIST, Fashion-MNIST) and CIFAR-10 (binary and
python versions). Pickled CIFAR batches go through the restricted unpickler."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import NUMPY_GLOBALS, restricted_loads


def parse_idx(data: bytes) -> np.ndarray:
    """An IDX file of unsigned bytes (gunzipped) as an array of its declared shape."""
    if len(data) < 4:
        raise DataError("not an IDX file: too short")
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:
        raise DataError("not an IDX file of unsigned bytes")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"IDX file is truncated: {body.size} bytes for shape {dims}")
    return body.reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    return parse_idx(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise DataError(f"{root} has no {stem}[.gz]")


def read_cifar10_dir(root: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 from a directory holding either the binary batches (data_batch_1.bin ... test_batch.bin)
    or the python batches (data_batch_1 ... test_batch); images as uint8 (N, 3, 32, 32)."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    elif (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    out = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        xs, ys = [], []
        for name in names:
            if (root / f"{name}.bin").exists():
                rec = np.frombuffer((root / f"{name}.bin").read_bytes(), dtype=np.uint8)
                if rec.size % 3073:
                    raise DataError(f"{name}.bin is truncated")
                rec = rec.reshape(-1, 3073)
                ys.append(rec[:, 0].astype(np.int64))
                xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
            elif (root / name).exists():
                batch = restricted_loads((root / name).read_bytes(), NUMPY_GLOBALS)
                if not isinstance(batch, dict):
                    raise DataError(f"{name} is not a CIFAR-10 python batch")
                data = batch.get(b"data", batch.get("data"))
                labels = batch.get(b"labels", batch.get("labels"))
                if data is None or labels is None:
                    raise DataError(f"{name} lacks data/labels")
                xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(labels, dtype=np.int64))
            else:
                raise DataError(f"{root} has no {name}(.bin): not a CIFAR-10 directory")
        out[f"{split}_images"], out[f"{split}_labels"] = np.concatenate(xs), np.concatenate(ys)
    if out["train_labels"].max() > 9 or out["test_labels"].max() > 9:
        raise DataError("CIFAR-10 labels out of range")
    return out

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
                x, y = _cifar_python_batch(root / name, b"labels", "CIFAR-10")
                xs.append(x)
                ys.append(y)
            else:
                raise DataError(f"{root} has no {name}(.bin): not a CIFAR-10 directory")
        out[f"{split}_images"], out[f"{split}_labels"] = np.concatenate(xs), np.concatenate(ys)
    if out["train_labels"].max() > 9 or out["test_labels"].max() > 9:
        raise DataError("CIFAR-10 labels out of range")
    return out


def _cifar_python_batch(path: Path, label_key: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch (a pickled dict of data and labels), unpickled with numpy globals only."""
    batch = restricted_loads(path.read_bytes(), NUMPY_GLOBALS, what=str(path))
    if not isinstance(batch, dict):
        raise DataError(f"{path.name} is not a {what} python batch")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(label_key, batch.get(label_key.decode()))
    if data is None or labels is None:
        raise DataError(f"{path.name} lacks data/{label_key.decode()}: not a {what} python batch")
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def read_cifar100_dir(root: Path) -> dict[str, np.ndarray]:
    """CIFAR-100 (fine labels) from a directory holding the binary files (train.bin, test.bin: records
    of coarse label, fine label, 3,072 pixels) or the python files (train, test)."""
    root = Path(root)
    for sub in ("cifar-100-python", "cifar-100-binary"):
        if (root / sub).is_dir():
            root = root / sub
    out = {}
    for split in ("train", "test"):
        if (root / f"{split}.bin").exists():
            rec = np.frombuffer((root / f"{split}.bin").read_bytes(), dtype=np.uint8)
            if rec.size % 3074:
                raise DataError(f"{split}.bin is truncated")
            rec = rec.reshape(-1, 3074)
            x, y = rec[:, 2:].reshape(-1, 3, 32, 32), rec[:, 1].astype(np.int64)
        elif (root / split).exists():
            x, y = _cifar_python_batch(root / split, b"fine_labels", "CIFAR-100")
        else:
            raise DataError(f"{root} has no {split}(.bin): not a CIFAR-100 directory")
        if y.max(initial=0) > 99:
            raise DataError("CIFAR-100 fine labels out of range")
        out[f"{split}_images"], out[f"{split}_labels"] = x, y
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def read_image_folder(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The image-folder layout (ROOT/CLASS/IMAGE, classes in sorted order, as torchvision's ImageFolder):
    uint8 images (N, C, H, W), all of one size and mode, their labels and the class names."""
    try:
        from PIL import Image
    except ImportError as e:
        raise DataError("image folders need Pillow: pip install 'advlab[images]'") from e
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class subfolders (expected ROOT/CLASS/IMAGE.png)")
    images, labels, shape = [], [], None
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16", "I") else "RGB"))
            except Exception as e:  # noqa: BLE001 - Pillow raises many types for a bad file
                raise DataError(f"cannot read image {path}: {e}") from None
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise DataError(f"image {path} is {arr.shape} (C, H, W) but earlier ones are {shape}: "
                                "resize the folder's images to one size")
            images.append(arr)
            labels.append(label)
    if not images:
        raise DataError(f"{root} has class folders but no images ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes

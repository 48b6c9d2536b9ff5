"""A user's test data as arrays: FILE.npz or FILE.safetensors holding `x` (uint8 0-255 or float in
[0, 1], NCHW or NHWC) and `y` (integer labels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .mnist import ArrayDataset


def load_arrays(path: str | Path, *, device: torch.device | str = "cpu") -> ArrayDataset:
    """x as float in [0, 1] shaped (N, C, H, W) (or (N, D)), y as int64; every problem is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from ..io import load_tensors
            tensors, _ = load_tensors(path)
            x, y = tensors.get("x"), tensors.get("y")
            x = None if x is None else x.numpy()
            y = None if y is None else y.numpy()
        else:
            with np.load(path, allow_pickle=False) as z:
                x, y = (z["x"] if "x" in z.files else None), (z["y"] if "y" in z.files else None)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, header and pickle errors all mean an unreadable file
        raise DataError(f"{path} is not a readable .npz / .safetensors file: {type(e).__name__}: {e}") from None
    if x is None or y is None:
        raise DataError(f"{path} must hold arrays named x (inputs) and y (labels)")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must be integer labels shaped ({x.shape[0]},), got {y.dtype} {y.shape}")
    if x.dtype == np.uint8:
        xf = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        xf = x.astype(np.float32)
        if not np.isfinite(xf).all() or xf.min() < 0 or xf.max() > 1:
            raise DataError(f"{path}: float x must be finite and in [0, 1] (got [{xf.min():.3g}, {xf.max():.3g}]); "
                            "store images as uint8 or scale them, and put normalization in the model")
    else:
        raise DataError(f"{path}: x must be uint8 or float, got {x.dtype}")
    if xf.ndim == 4 and xf.shape[-1] in (1, 3) and xf.shape[1] not in (1, 3):
        xf = xf.transpose(0, 3, 1, 2)   # NHWC -> NCHW
    elif xf.ndim == 3:
        xf = xf[:, None]               # (N, H, W) gray images
    x_t = torch.from_numpy(np.ascontiguousarray(xf)).to(device)
    return ArrayDataset(x_t, torch.from_numpy(y.astype(np.int64)).to(device))


def load_image_folder(root: str | Path, *, device: torch.device | str = "cpu") -> ArrayDataset:
    """ROOT/CLASS/IMAGE (classes numbered in sorted order), scaled to [0, 1]."""
    from .formats import read_image_folder
    x, y, _ = read_image_folder(Path(root))
    return ArrayDataset(torch.from_numpy(x.astype(np.float32) / 255.0).to(device), torch.from_numpy(y).to(device))


def load_data_spec(spec: str, split: str = "test", *, device: torch.device | str = "cpu") -> ArrayDataset:
    """A user's data: `mnist`, `fashion_mnist`, `cifar10`, `cifar100` (their standard files, `split`
    test or train), FILE.npz / FILE.safetensors with x and y, or DIR in the image-folder layout."""
    from .datasets import DATASETS, load_dataset
    if split not in ("test", "train"):
        raise DataError(f"unknown split {split!r}; use test or train")
    if spec in DATASETS:
        return load_dataset(spec, split, device=device)
    if Path(spec).suffix in (".npz", ".safetensors"):
        return load_arrays(spec, device=device)
    if Path(spec).is_dir():
        return load_image_folder(spec, device=device)
    raise DataError(f"unknown data {spec!r}; use {', '.join(DATASETS)}, a FILE.npz / FILE.safetensors with x and y, "
                    "or an image folder DIR/CLASS/IMAGE")

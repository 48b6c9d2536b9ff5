"""Datasets by name: MNIST, Fashion-MNIST, CIFAR-10, 8x8 digits, and synthetic sets. Every loader
returns an ArrayDataset with inputs in [0, 1] (natural bounds) and int64 labels."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .formats import find_idx, read_cifar10_dir, read_cifar100_dir, read_idx
from .mnist import ArrayDataset, load_mnist
from .sources import cache_dir, download

FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                 "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"


def _split(x: np.ndarray, y: np.ndarray, split: str, n_valid: int) -> tuple[np.ndarray, np.ndarray]:
    if split == "train":
        return x, y
    if not 0 < n_valid < len(x):
        raise DataError(f"cannot hold out {n_valid} of {len(x)} training images as the valid split; "
                        "set [data] holdout to fewer")
    if split == "train_split":
        return x[:-n_valid], y[:-n_valid]
    if split == "valid":
        return x[-n_valid:], y[-n_valid:]
    raise DataError(f"unknown split {split!r}; use train, test, train_split or valid")


def _to_dataset(x: np.ndarray, y: np.ndarray, device: torch.device | str) -> ArrayDataset:
    xt = torch.from_numpy(np.ascontiguousarray(x).astype(np.float32) / 255.0)
    if xt.ndim == 3:
        xt = xt.unsqueeze(1)
    return ArrayDataset(xt.to(device), torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device))


def load_fashion_mnist(split: str = "test", *, root: str | Path | None = None, n_valid: int = 10000,
                       device: torch.device | str = "cpu") -> ArrayDataset:
    """Fashion-MNIST from IDX files (gzipped or not) in `root` (default: cache/fashion_mnist), which
    are downloaded there when missing and the internet is reachable."""
    root = Path(root) if root else cache_dir() / "fashion_mnist"
    root.mkdir(parents=True, exist_ok=True)
    prefix = "test" if split == "test" else "train"
    arrays = {}
    for key in (f"{prefix}_images", f"{prefix}_labels"):
        stem = FASHION_FILES[key]
        try:
            path = find_idx(root, stem)
        except DataError:
            path = download(FASHION_URL + stem + ".gz", root / f"{stem}.gz")
        arrays[key] = read_idx(path)
    x, y = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
    if x.shape[1:] != (28, 28) or x.shape[0] != y.shape[0]:
        raise DataError(f"unexpected Fashion-MNIST shapes {x.shape}, {y.shape}")
    if split != "test":
        x, y = _split(x, y, split, n_valid)
    return _to_dataset(x, y, device)


def _cifar_root(root: str | Path | None, name: str, url: str) -> Path:
    """The directory of a CIFAR dataset's files; downloaded (binary version) when empty and online."""
    path = Path(root) if root else cache_dir() / name
    if not path.exists() or not any(path.iterdir()):
        path.mkdir(parents=True, exist_ok=True)
        import tarfile
        env = "ADVLAB_" + name.upper()
        try:
            tgz = download(url, path / url.rsplit("/", 1)[1])
        except DataError as e:
            raise DataError(f"{name} is not on this machine and {e}; put its files (binary or python version) "
                            f"in {path} or point {env} at them") from None
        with tarfile.open(tgz) as tf:
            tf.extractall(path, filter="data")
    return path


def _cifar_split(arrays: dict[str, np.ndarray], split: str, n_valid: int,
                 device: torch.device | str) -> ArrayDataset:
    prefix = "test" if split == "test" else "train"
    x, y = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
    if split != "test":
        x, y = _split(x, y, split, n_valid)
    return _to_dataset(x, y, device)


def load_cifar10(split: str = "test", *, root: str | Path | None = None, n_valid: int = 5000,
                 device: torch.device | str = "cpu") -> ArrayDataset:
    """CIFAR-10 from a local directory of its binary or python batches (default: cache/cifar10);
    downloaded (binary version) when missing and the internet is reachable."""
    return _cifar_split(read_cifar10_dir(_cifar_root(root, "cifar10", CIFAR_URL)), split, n_valid, device)


def load_cifar100(split: str = "test", *, root: str | Path | None = None, n_valid: int = 5000,
                  device: torch.device | str = "cpu") -> ArrayDataset:
    """CIFAR-100 (100 fine labels) from a local directory of its binary or python files (default:
    cache/cifar100); downloaded (binary version) when missing and the internet is reachable."""
    return _cifar_split(read_cifar100_dir(_cifar_root(root, "cifar100", CIFAR100_URL)), split, n_valid, device)


def load_digits(split: str = "test", *, test_fraction: float = 0.25, seed: int = 0,
                device: torch.device | str = "cpu") -> ArrayDataset:
    """scikit-learn's 8x8 digits (1,797 images shipped with scikit-learn: no download), in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as e:
        raise DataError("the digits dataset needs scikit-learn: pip install 'advlab[digits]'") from e
    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    labels = torch.from_numpy(d.target[idx].astype(np.int64))
    return ArrayDataset(torch.from_numpy(x[idx]).to(device), labels.to(device))


def orthogonal_data(n: int, d: int, *, distribution: str = "uniform", seed: int = 0,
                    device: torch.device | str = "cpu") -> ArrayDataset:
    """Nearly orthogonal samples (Kumano et al.'s theory): x ~ U([-1, 1]^d) or N(0, I_d), labels
    uniform in {0, 1} (class 1 <-> +1). Their pairwise inner products are O(sqrt(d)) against norms O(d)."""
    g = torch.Generator().manual_seed(seed)
    if distribution == "uniform":
        x = torch.rand(n, d, generator=g) * 2 - 1
    elif distribution == "gaussian":
        x = torch.randn(n, d, generator=g)
    else:
        raise DataError(f"unknown distribution {distribution!r}; use uniform or gaussian")
    y = torch.randint(0, 2, (n,), generator=g)
    return ArrayDataset(x.to(device), y.to(device))


def uniform_noise_images(n: int, shape: tuple[int, ...], num_classes: int = 10, *, seed: int = 0,
                         device: torch.device | str = "cpu") -> ArrayDataset:
    """Images of uniform noise U[0, 1] with uniformly random labels (the 'uniform' scenario's start)."""
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.rand(n, *shape, generator=g).to(device),
                        torch.randint(0, num_classes, (n,), generator=g).to(device))


DATASETS = {"mnist": "MNIST (28x28 gray, 60k/10k)", "fashion_mnist": "Fashion-MNIST (28x28 gray, 60k/10k)",
            "cifar10": "CIFAR-10 (32x32 RGB, 50k/10k)",
            "cifar100": "CIFAR-100 (32x32 RGB, 100 classes, 50k/10k)", "digits": "scikit-learn 8x8 digits (1,797)"}


def load_dataset(name: str, split: str = "test", *, root: str | Path | None = None,
                 device: torch.device | str = "cpu", holdout: int | None = None) -> ArrayDataset:
    """Any named dataset. Splits: train, test, and train_split / valid: the last `holdout` training
    images held out (default 10,000 for MNIST, the maxout recipe's 50k/10k, and Fashion-MNIST;
    5,000 for CIFAR)."""
    if name == "mnist":
        if holdout is not None and split in ("train_split", "valid"):
            full = load_mnist("train", root=Path(root) if root else None, device="cpu")
            x, y = _split(full.x.numpy(), full.y.numpy(), split, holdout)
            return ArrayDataset(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        mapped = {"train_split": "train50k", "valid": "valid10k"}.get(split, split)
        return load_mnist(mapped, root=Path(root) if root else None, device=device)
    kw = {} if holdout is None else {"n_valid": holdout}
    if name == "fashion_mnist":
        return load_fashion_mnist(split, root=root, device=device, **kw)
    if name == "cifar10":
        return load_cifar10(split, root=root or os.environ.get("ADVLAB_CIFAR10"), device=device, **kw)
    if name == "cifar100":
        return load_cifar100(split, root=root or os.environ.get("ADVLAB_CIFAR100"), device=device, **kw)
    if name == "digits":
        return load_digits("test" if split == "test" else "train", device=device)
    raise DataError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")

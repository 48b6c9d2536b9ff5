"""Loaders of the standard file formats, tested on small files the tests write in those formats."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from advlab import DataError
from advlab.data import (load_cifar10, load_dataset, load_fashion_mnist, orthogonal_data, read_cifar10_dir,
                         uniform_noise_images)


def write_idx(path, arr, compress=True):
    header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    blob = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)


@pytest.fixture
def fashion_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), compress=False)
    return tmp_path


def test_fashion_mnist_from_idx_files(fashion_dir):
    test = load_fashion_mnist("test", root=fashion_dir)
    assert test.x.shape == (10, 1, 28, 28) and test.y.dtype == torch.int64
    assert 0 <= float(test.x.min()) and float(test.x.max()) <= 1
    tr = load_fashion_mnist("train_split", root=fashion_dir, n_valid=5)
    va = load_fashion_mnist("valid", root=fashion_dir, n_valid=5)
    assert len(tr) == 25 and len(va) == 5
    raw = gzip.decompress((fashion_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert torch.equal((test.x[3, 0] * 255).round().to(torch.uint8),
                       torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(10, 28, 28)[3].copy()))


def test_truncated_idx_is_refused(fashion_dir):
    p = fashion_dir / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-5]))
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist("test", root=fashion_dir)


def _cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072)).astype(np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_cifar10_both_formats(tmp_path, fmt):
    expected = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x, y = _cifar_arrays(4, i)
        expected[name] = (x, y)
        if fmt == "bin":
            (tmp_path / f"{name}.bin").write_bytes(np.concatenate([y[:, None].astype(np.uint8), x], 1).tobytes())
        else:
            (tmp_path / name).write_bytes(pickle.dumps({b"data": x, b"labels": list(map(int, y))}))
    train, test = load_cifar10("train", root=tmp_path), load_cifar10("test", root=tmp_path)
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
    x, y = expected["test_batch"]
    assert torch.equal(test.y, torch.from_numpy(y.astype(np.int64)))
    assert torch.equal((test.x * 255).round().to(torch.uint8).reshape(4, -1), torch.from_numpy(x))
    held, rest = (load_dataset("cifar10", s, root=tmp_path, holdout=3) for s in ("valid", "train_split"))
    assert len(held) == 3 and len(rest) == 17 and torch.equal(torch.cat([rest.x, held.x]), train.x)
    with pytest.raises(DataError, match="cannot hold out 20 of 20"):
        load_dataset("cifar10", "train_split", root=tmp_path, holdout=20)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="refusing to unpickle"):
        read_cifar10_dir(tmp_path)


def test_synthetic_sets():
    d = orthogonal_data(100, 10000, seed=1)
    x = d.x
    gram = x @ x.t()
    off = gram[~torch.eye(100, dtype=torch.bool)].abs().max()
    assert float(off) < 0.1 * float(gram.diagonal().min()), "nearly orthogonal"
    assert set(d.y.unique().tolist()) == {0, 1}
    g = orthogonal_data(10, 50, distribution="gaussian")
    assert g.x.shape == (10, 50)
    noise = uniform_noise_images(7, (1, 28, 28), seed=3)
    assert noise.x.shape == (7, 1, 28, 28) and float(noise.x.min()) >= 0 and float(noise.x.max()) <= 1
    with pytest.raises(DataError):
        orthogonal_data(3, 3, distribution="cauchy")


def test_unknown_dataset_and_split():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_cifar100_both_formats(tmp_path, fmt):
    rng = np.random.default_rng(3)
    expected = {}
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        fine, coarse = rng.integers(0, 100, n), rng.integers(0, 20, n)
        expected[split] = (x, fine)
        if fmt == "bin":
            rec = np.concatenate([coarse[:, None].astype(np.uint8), fine[:, None].astype(np.uint8), x], 1)
            (tmp_path / f"{split}.bin").write_bytes(rec.tobytes())
        else:
            (tmp_path / split).write_bytes(pickle.dumps({b"data": x, b"fine_labels": list(map(int, fine)),
                                                         b"coarse_labels": list(map(int, coarse))}))
    test = load_dataset("cifar100", "test", root=tmp_path)
    train = load_dataset("cifar100", "train", root=tmp_path)
    assert test.x.shape == (4, 3, 32, 32) and len(train) == 6
    x, fine = expected["test"]
    assert torch.equal(test.y, torch.from_numpy(fine.astype(np.int64)))     # fine labels, not coarse
    assert torch.equal((test.x * 255).round().to(torch.uint8).reshape(4, -1), torch.from_numpy(x))
    (tmp_path / ("test.bin" if fmt == "bin" else "test")).write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="test"):
        load_dataset("cifar100", "test", root=tmp_path)


def test_image_folder_layout(tmp_path):
    from PIL import Image

    from advlab.data import load
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("cat", "airplane"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            arr = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
            pixels[(cls, i)] = arr
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    data = load(str(tmp_path))
    assert data.x.shape == (6, 3, 12, 10) and data.y.tolist() == [0, 0, 0, 1, 1, 1]   # sorted: airplane, cat
    assert torch.equal((data.x[4] * 255).round().to(torch.uint8), torch.from_numpy(pixels[("cat", 1)]).permute(2, 0, 1))
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "cat" / "small.png")
    with pytest.raises(DataError, match="small.png.*one size"):
        load(str(tmp_path))
    (tmp_path / "cat" / "small.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*small.png"):
        load(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load(str(empty))

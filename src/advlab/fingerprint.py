"""Fingerprints that tie a result to what produced it: a model (architecture and every weight) and
a dataset (every byte), so that a saved state or a derived file can never be read as another's."""
from __future__ import annotations

import hashlib

from torch import Tensor, nn

from .accel import FastModel
from .io import tensors_sha256


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model under advlab's fast-path wrapper and DDP / DataParallel (they add no weights)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif isinstance(model, FastModel):
            model = model.inner
        else:
            return model


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's architecture description (its module tree) and its whole state dict."""
    inner = unwrap_model(model)
    h = hashlib.sha256()
    h.update(f"{type(inner).__module__}.{type(inner).__qualname__}\n{inner!r}".encode())
    h.update(tensors_sha256(dict(inner.state_dict())).encode())
    return h.hexdigest()


def data_fingerprint(*tensors: Tensor) -> str:
    """sha256 of every byte of the given tensors with their dtypes and shapes (not a prefix)."""
    return tensors_sha256({str(i): t for i, t in enumerate(tensors)})

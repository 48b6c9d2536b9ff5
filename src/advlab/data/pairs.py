"""What a batch of a user's DataLoader may look like: (x, y, ...) or {"x": ..., "y": ...}; read
the same way by evaluation and training so both accept the same loaders."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError


def as_pair(batch: Any, index: int) -> tuple[Tensor, Tensor]:
    """(x, y) of one batch; labels given as a list of ints become a tensor."""
    if isinstance(batch, dict) and "x" in batch and "y" in batch:
        batch = (batch["x"], batch["y"])
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], Tensor)):
        raise InputError(f"batch {index} of the data is a {type(batch).__name__}, not an (x, y) pair of tensors")
    y = batch[1] if isinstance(batch[1], Tensor) else torch.as_tensor(batch[1])
    return batch[0], y


def iter_pairs(stream: Iterable[Any]) -> Iterator[tuple[Tensor, Tensor]]:
    """The (x, y) pairs of a DataLoader or any iterable of batches."""
    for i, batch in enumerate(stream):
        yield as_pair(batch, i)

"""Where training batches come from: tensors, or a map-style Dataset (or a DataLoader's). Either
way the order is drawn from (seed, epoch), so a run resumed mid-epoch reads exactly the batches
the uninterrupted run read, and the same data as tensors or as a Dataset gives the same batches."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..data.pairs import as_pair
from ..errors import InputError


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of epoch `epoch`, the same on every rank and after a resume."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))


class TensorBatches:
    """Batches indexed out of (x, y) tensors on their device (no copies, no workers)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise InputError("training data must be tensors x and y, or a Dataset / DataLoader (with y=None)")
        if x.shape[0] != y.shape[0]:
            raise InputError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        self.x, self.y, self.n = x, y, int(x.shape[0])
        self.image_shaped = x.ndim == 4

    def epoch(self, order: Tensor, start_step: int, batch_size: int, rank: int, world: int,
              device: torch.device) -> Iterator[tuple[int, Tensor, Tensor]]:
        order = order.to(self.x.device)
        steps = (self.n + batch_size - 1) // batch_size
        for step in range(start_step, steps):
            idx = order[step * batch_size:(step + 1) * batch_size][rank::world]
            yield step, self.x[idx].to(device, non_blocking=True), self.y[idx].to(device, non_blocking=True)

    def head(self, n: int) -> tuple[Tensor, Tensor]:
        return self.x[:n], self.y[:n]


class DatasetBatches:
    """Batches of a map-style Dataset read through a DataLoader with the run's own batch order
    (its workers, collate function and pinning are kept from `loader` when one is given)."""

    def __init__(self, dataset: Dataset, loader: DataLoader | None = None) -> None:
        if isinstance(dataset, IterableDataset):
            raise InputError("training needs a map-style Dataset (with __len__ and __getitem__): an IterableDataset "
                             "has no order to draw from the seed, so a run could not resume exactly")
        try:
            self.n = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise InputError(f"training data {type(dataset).__name__} has no length") from None
        if self.n == 0:
            raise InputError("the training dataset is empty")
        self.dataset = dataset
        self.image_shaped = True  # channels_last is a no-op on other shapes
        self.options: dict[str, Any] = {}
        if loader is not None:
            self.options = {"num_workers": loader.num_workers, "collate_fn": loader.collate_fn,
                            "pin_memory": loader.pin_memory}
            if loader.num_workers:
                self.options["persistent_workers"] = False

    def epoch(self, order: Tensor, start_step: int, batch_size: int, rank: int, world: int,
              device: torch.device) -> Iterator[tuple[int, Tensor, Tensor]]:
        steps = (self.n + batch_size - 1) // batch_size
        plan = [order[s * batch_size:(s + 1) * batch_size][rank::world].tolist() for s in range(start_step, steps)]
        # the loader's own generator: its base seed (workers' seeds) then neither reads the global RNG,
        # which would shift the dropout draws away from the tensor path's, nor depends on the process
        seed = int(order[:2].sum()) * 7919 + start_step * 104729 + rank
        loader = DataLoader(self.dataset, batch_sampler=plan, generator=torch.Generator().manual_seed(seed),
                            **self.options)
        for step, batch in zip(range(start_step, steps), loader):
            x, y = as_pair(batch, step)
            yield step, x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def head(self, n: int) -> tuple[Tensor, Tensor]:
        """The first n points as tensors (validation / the CO guard's held-out points)."""
        loader = DataLoader(self.dataset, batch_sampler=[list(range(min(n, self.n)))],
                            generator=torch.Generator().manual_seed(0), **self.options)
        return as_pair(next(iter(loader)), 0)


BatchSource = TensorBatches | DatasetBatches


def batch_source(x: Any, y: Tensor | None) -> BatchSource:
    """Tensors (x, y), a map-style Dataset or a DataLoader (y=None) as a source of seeded batches."""
    if isinstance(x, Tensor):
        if y is None:
            raise InputError("labels y are missing (pass y, or a Dataset / DataLoader that yields (x, y))")
        return TensorBatches(x, y)
    if y is not None:
        raise InputError("pass y only with tensor x; a Dataset or DataLoader yields its own labels")
    if isinstance(x, DataLoader):
        return DatasetBatches(x.dataset, x)
    if isinstance(x, Dataset) or (hasattr(x, "__getitem__") and hasattr(x, "__len__")):
        return DatasetBatches(x)
    raise InputError(f"cannot train on a {type(x).__name__}: pass tensors (x, y), a Dataset or a DataLoader")


def validation_tensors(x: Any, y: Tensor | None, n: int) -> tuple[Tensor | None, Tensor | None]:
    """Validation data as at most n tensors (None when there is none)."""
    if x is None:
        return None, None
    return batch_source(x, y).head(n)



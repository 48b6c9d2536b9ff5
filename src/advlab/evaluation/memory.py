"""Bounded memory: run work over a batch in pieces, halving the piece size when the device runs out
of memory (with a warning), so that an evaluation never dies of a batch size chosen too large."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from ..attacks import Attack, AttackResult

T = TypeVar("T")


class BatchSizeWarning(UserWarning):
    """The batch size was halved after an out-of-memory error."""


def _free_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def map_in_pieces(fn: Callable[[int, int], T], n: int, piece: int, what: str = "batch") -> tuple[list[T], int]:
    """[fn(0, b), fn(b, 2b), ...] over range(n) in pieces of at most `piece`; a piece that raises
    torch.OutOfMemoryError is retried at half the size (down to 1). Returns the results in order and
    the piece size that worked, which callers reuse for the rest of their work."""
    results: list[T] = []
    start = 0
    while start < n:
        stop = min(start + piece, n)
        try:
            results.append(fn(start, stop))
        except torch.OutOfMemoryError:
            if piece == 1:
                raise
            _free_cached_memory()
            piece = max(1, piece // 2)
            warnings.warn(f"out of memory on a {what} of {stop - start}; retrying with batches of {piece}",
                          BatchSizeWarning, stacklevel=2)
            continue
        start = stop
    return results, piece


def merge_results(parts: list[AttackResult]) -> AttackResult:
    """One AttackResult from the results of consecutive pieces of a batch."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    extra = {k: torch.cat([p.extra[k] for p in parts]) for k in parts[0].extra
             if all(isinstance(p.extra.get(k), Tensor) and p.extra[k].ndim for p in parts)}
    return AttackResult(
        x_adv=cat("x_adv"), success=cat("success"), norms=cat("norms"), loss=cat("loss"),
        n_forward=sum(p.n_forward for p in parts), n_backward=sum(p.n_backward for p in parts),
        targets=cat("targets") if all(p.targets is not None for p in parts) else None,
        seed=parts[0].seed, attack=parts[0].attack, seconds=sum(p.seconds for p in parts), extra=extra)


def attack_in_pieces(attack: Attack, model: torch.nn.Module, x: Tensor, y: Tensor,
                     piece: int) -> tuple[AttackResult, int]:
    """attack(model, x, y) run in pieces of at most `piece` with out-of-memory halving."""
    parts, piece = map_in_pieces(lambda a, b: attack(model, x[a:b], y[a:b]), x.shape[0], piece,
                                 what=f"{attack.name} batch")
    return merge_results(parts), piece

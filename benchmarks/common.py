"""Benchmark helpers: pass counting, paired timing, the forward+backward floor, MNIST models."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advlab import bench
from advlab.bench_suite import PassCounter


Counted = PassCounter   # one pass-counting wrapper for advlab's benchmarks and `advlab bench suite`


def forward_backward_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 20) -> float:
    """Median time of one forward + input-gradient backward pass (the floor of a gradient attack step)."""
    return bench.floor_seconds(model, x, y, repeats)


def paired_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time each function `repeats` times, interleaved (ABBA...) so drift hits all alike."""
    return bench.paired_times(fns, repeats, torch.device("cpu"))


def madry_cnn() -> nn.Module:
    """The Madry et al. MNIST CNN: conv 32 5x5, pool, conv 64 5x5, pool, fc 1024, fc 10."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


def mnist_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def reference_autoattack(model: nn.Module, norm: str, eps: float, seed: int = 0):
    """torchattacks' attacks composed at AutoAttack's standard budgets: APGD-CE (100 steps),
    APGD-T (100 steps, 9 targets), FAB-T (100 steps, 9 targets), Square (5,000 queries), each on the
    points still robust. (torchattacks.AutoAttack itself leaves APGD/APGD-T/FAB at 10 steps.)"""
    import torchattacks
    n = "Linf" if norm == "linf" else "L2"
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, norm=n, eps=eps, steps=100, n_restarts=1, loss="ce", seed=seed),
        torchattacks.APGDT(model, norm=n, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=seed),
        torchattacks.FAB(model, norm=n, eps=eps, steps=100, n_restarts=1, multi_targeted=True,
                         n_classes=10, seed=seed),
        torchattacks.Square(model, norm=n, eps=eps, n_queries=5000, n_restarts=1, seed=seed),
    ])

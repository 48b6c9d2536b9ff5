"""The one registry of paper reproductions: `advlab reproduce NAME` and `advlab report` read it, so a
new paper is one new module that calls `register(...)` and is listed in PAPER_MODULES, with no CLI
code."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import AdvlabError

PAPER_MODULES = ("goodfellow2015", "wen2020", "kumano2024")   # modules under advlab.experiments.reproductions


class ReproductionError(AdvlabError):
    """An unknown paper, or a budget or dataset the paper does not have."""

    exit_code = 2


@dataclass(frozen=True)
class Reproduction:
    """A paper's reproduction: its budgets, the datasets it runs on, how to run it and write its report.

    run(out, budget, seeds, device, log, dataset) trains and measures into `out` (resumable: running it
    again with the same `out` keeps what finished); report(out) writes report.md and report.html.
    budgets(dataset) lists the budget names for a dataset."""

    name: str
    title: str
    run: Callable[..., dict[str, Any]]
    report: Callable[[Path], tuple[Path, Path]]
    budgets: Callable[[str], tuple[str, ...]]
    datasets: tuple[str, ...] = ("mnist",)
    default_budget: str = "quick"

    def check(self, budget: str, dataset: str) -> None:
        if dataset not in self.datasets:
            raise ReproductionError(f"{self.name} runs on {', '.join(self.datasets)}, not {dataset!r}")
        names = self.budgets(dataset)
        if budget not in names:
            raise ReproductionError(f"{self.name} on {dataset} has budgets {', '.join(names)}, not {budget!r}")

    def __call__(self, out: Path, budget: str, seeds: int, device: str, log: Callable[[str], None],
                 dataset: str = "mnist") -> dict[str, Any]:
        self.check(budget, dataset)
        return self.run(out, budget, seeds, device, log=log, dataset=dataset)


_REGISTRY: dict[str, Reproduction] = {}


def register(reproduction: Reproduction) -> Reproduction:
    if reproduction.name in _REGISTRY and _REGISTRY[reproduction.name] is not reproduction:
        raise ValueError(f"reproduction {reproduction.name!r} registered twice")
    _REGISTRY[reproduction.name] = reproduction
    return reproduction


def _load_all() -> None:
    for module in PAPER_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def reproductions() -> dict[str, Reproduction]:
    """Every registered reproduction by name."""
    _load_all()
    return dict(_REGISTRY)


def reproduction(name: str) -> Reproduction:
    table = reproductions()
    if name not in table:
        raise ReproductionError(f"unknown reproduction {name!r}; available: {', '.join(table)}")
    return table[name]

"""Cheap per-epoch diagnostics for training runs: per-layer largest singular value (power iteration),
mean confidence and mean logit margin on a fixed subset, added to each epoch's metrics record."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..evaluation.metrics import predict
from .margins import output_margins
from .spectra import layer_spectra


def epoch_diagnostics(model: nn.Module, x: Tensor, y: Tensor, power_iters: int = 10) -> Callable[[dict], None]:
    """A trainer callback: record['diag_*'] = largest singular value per layer, mean confidence, mean margin."""

    def callback(record: dict[str, Any]) -> None:
        was_training = model.training
        spec = layer_spectra(model, x[:1], power_iters=power_iters)
        for s in spec:
            record[f"diag_sigma_max/{s.name}"] = s.stats()["largest_actual"]
        m = output_margins(predict(model, x), y)
        record["diag_confidence"] = float(m["confidence"].mean())
        record["diag_margin"] = float(m["margin"].mean())
        model.train(was_training)
    return callback


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties), rounded to 12 digits: for a few points it is
    a simple fraction (e.g. -0.8 for 4 points with one swap), and a threshold check on it must not
    fail on float noise such as -0.7999999999999998. NaN where a value is NaN (a statistic that is
    not defined has no rank)."""
    if any(v != v for v in (*a, *b)):
        return float("nan")

    def ranks(v: list[float]) -> Tensor:
        t = torch.tensor(v, dtype=torch.float64)
        order = t.argsort()
        r = torch.empty_like(t)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for val in t.unique():
            tie = t == val
            r[tie] = r[tie].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return round(float((ra * rb).sum()) / denom, 12) if denom > 0 else float("nan")

"""Train a fresh network only on (perturbed input, wrong label) pairs and test it on the clean test
set with true labels, with the controls that make the result mean something: the same inputs
without perturbation (the labels alone must not carry the test accuracy) and uniform noise with
random labels (chance)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..data import ArrayDataset, uniform_noise_images
from ..evaluation import predict
from ..training import Standard, Trainer, TrainConfig


@dataclass
class LearningResult:
    """Clean test accuracy of a network trained on a perturbation dataset (or a control)."""

    name: str
    last_acc: float              # after the last epoch: the honest number
    best_acc: float              # best epoch on the test set (what the public code reports; optimistic)
    best_epoch: int
    per_epoch_acc: list[float]
    train_acc: float             # on its own (mislabeled) training set
    agreement: float | None      # share of test points where it predicts what the source model predicts
    agreement_when_source_correct: float | None
    n_train: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_and_test(name: str, train: ArrayDataset, test: ArrayDataset, build: Callable[[], nn.Module],
                   config: TrainConfig, source: nn.Module | None = None) -> tuple[nn.Module, LearningResult]:
    """Train build() on `train` with cross-entropy under `config`; every epoch's clean test accuracy
    is recorded (never used to pick the weights: the model returned is the last epoch's)."""
    torch.manual_seed(config.seed)
    device = train.x.device
    model = build().to(device)
    cfg = TrainConfig(**{**asdict(config), "early_stopping_patience": 0, "val_samples": len(test)})
    res = Trainer(model, Standard(), cfg).fit(train.x, train.y, test.x, test.y)
    accs = [1.0 - r["val_error"] for r in res.history]
    model.eval()
    pred = predict(model, test.x).argmax(1)
    last = float((pred == test.y).float().mean())
    train_acc = float((predict(model, train.x).argmax(1) == train.y).float().mean())
    agree = agree_correct = None
    if source is not None:
        src = predict(source, test.x).argmax(1)
        agree = float((pred == src).float().mean())
        ok = src == test.y
        agree_correct = float((pred[ok] == src[ok]).float().mean()) if bool(ok.any()) else None
    best = max(range(len(accs)), key=accs.__getitem__)
    return model, LearningResult(name, last, accs[best], best + 1, accs, train_acc, agree, agree_correct,
                                 len(train), res.seconds)


def unperturbed_control(clean_x: Tensor, source_index: Tensor, targets: Tensor) -> ArrayDataset:
    """The same starting images with the same target labels but no perturbation: must stay at or
    below chance on the test set (natural_det's fixed relabeling even drives it towards 0%)."""
    return ArrayDataset(clean_x[source_index.to(clean_x.device)], targets.to(clean_x.device))


def noise_control(n: int, shape: tuple[int, ...], num_classes: int, seed: int,
                  device: torch.device | str) -> ArrayDataset:
    """Uniform noise with uniformly random labels and no perturbation: chance by construction."""
    return uniform_noise_images(n, shape, num_classes, seed=seed, device=device)

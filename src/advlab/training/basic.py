"""A one-call supervised training helper (Adam on cross-entropy) built on the Trainer."""
from __future__ import annotations

from torch import Tensor, nn


def train_classifier(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int = 1, batch_size: int = 128,
                     lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0) -> list[float]:
    """Standard training with Adam over shuffled minibatches of on-device tensors; returns the mean
    training loss of each epoch. For anything more, use Trainer with an objective and a TrainConfig."""
    from .objectives import Standard
    from .trainer import Trainer, TrainConfig
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adam", lr=lr, weight_decay=weight_decay,
                      seed=seed)
    return [r["train_loss"] for r in Trainer(model, Standard(), cfg).fit(x, y).history]

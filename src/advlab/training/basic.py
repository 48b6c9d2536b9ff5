"""Plain supervised training on in-memory tensors: the minimal trainer used by the quick start and
tests until the full trainer (objectives, checkpoints, DDP) lands on top of it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def train_classifier(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int = 1, batch_size: int = 128,
                     lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
                     log_every: int = 0) -> list[float]:
    """Adam on cross-entropy over shuffled minibatches of (x, y), which stay on their device.

    Returns the mean training loss of each epoch. The model is left in train mode.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    history = []
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)
        total, count = torch.zeros((), device=x.device), 0
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
            count += idx.numel()
            if log_every and (i // batch_size) % log_every == 0:
                print(f"epoch {epoch} batch {i // batch_size}: loss {loss.item():.4f}", flush=True)
        history.append(float(total) / count)
    return history

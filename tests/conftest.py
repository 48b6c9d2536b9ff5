"""Shared fixtures: tiny models on (N, D) and (N, C, H, W) inputs, and a small MNIST model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def tiny_mlp(d: int = 20, classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, classes))


@pytest.fixture(params=["flat", "image"])
def model_and_data(request):
    """A random model with inputs in [0, 1] and labels = its own predictions (so every point is attacked)."""
    torch.manual_seed(0)
    if request.param == "flat":
        model, x = tiny_mlp(), torch.rand(12, 20)
    else:
        model, x = TinyCNN(), torch.rand(12, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory) -> Path:
    root = os.environ.get("ADVLAB_DATA")
    path = Path(root) if root else Path.home() / ".cache" / "advlab"
    os.environ["ADVLAB_DATA"] = str(path)
    return path


@pytest.fixture(scope="session")
def mnist_mlp(mnist_cache):
    """A 784-256-10 MLP trained 2 epochs on 20k MNIST images, plus 1000 test points."""
    from advlab.data import load_mnist
    from advlab.training import train_classifier
    train, test = load_mnist("train"), load_mnist("test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    train_classifier(model, train.x[:20000], train.y[:20000], epochs=2, batch_size=100, lr=1e-3)
    model.eval()
    return model, test.x[:1000].clone(), test.y[:1000].clone()

"""Small reference models: softmax regression, MLP, a small CNN. Each takes inputs in natural bounds."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .normalize import Normalize


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression on flattened inputs: logits = W x + b."""

    def __init__(self, in_features: int, num_classes: int = 10,
                 normalize: Normalize | None = None) -> None:
        super().__init__()
        self.normalize = normalize or nn.Identity()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.normalize(x).flatten(1))


class MLP(nn.Module):
    """ReLU multi-layer perceptron on flattened inputs."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 256), num_classes: int = 10,
                 normalize: Normalize | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.normalize = normalize or nn.Identity()
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x).flatten(1))


class SmallCNN(nn.Module):
    """Two conv layers + two dense layers (the Madry et al. MNIST CNN shape at a configurable width)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32,
                 image_size: int = 28, normalize: Normalize | None = None) -> None:
        super().__init__()
        self.normalize = normalize or nn.Identity()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * side * side, 32 * width), nn.ReLU(),
            nn.Linear(32 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.normalize(x)))

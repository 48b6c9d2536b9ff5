"""The architectures of the reproduced papers and of the robustness records, registered by name."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvMaxout, Maxout
from .normalize import Normalize
from .simple import MLP, SoftmaxRegression
from .zoo import register

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def _norm(normalize: bool | tuple, default: tuple) -> nn.Module:
    if normalize is False:
        return nn.Identity()
    mean, std = default if normalize is True else normalize
    return Normalize(mean, std)


@register("softmax_regression")
def softmax_regression(in_features: int = 784, num_classes: int = 10) -> nn.Module:
    return SoftmaxRegression(in_features, num_classes)


@register("mlp")
def mlp(in_features: int = 784, hidden: Sequence[int] = (256, 256), num_classes: int = 10) -> nn.Module:
    return MLP(in_features, hidden, num_classes)


class MaxoutMLP(nn.Module):
    """Permutation-invariant maxout network (Goodfellow et al. 2013/2015): dropout on the input and
    hidden layers, dense maxout layers with a max column norm, softmax output."""

    def __init__(self, in_features: int = 784, units: int = 240, pieces: int = 5, layers: int = 2,
                 num_classes: int = 10, input_dropout: float = 0.2, hidden_dropout: float = 0.5,
                 max_norm: float | None = 1.9365) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Flatten(), nn.Dropout(input_dropout)]
        width = in_features
        for _ in range(layers):
            blocks += [Maxout(width, units, pieces, max_norm), nn.Dropout(hidden_dropout)]
            width = units
        self.features = nn.Sequential(*blocks)
        self.out = nn.Linear(width, num_classes)
        self.max_norm = max_norm

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))

    @torch.no_grad()
    def constrain(self) -> None:
        if self.max_norm is not None:
            w = self.out.weight
            w.mul_(torch.clamp(self.max_norm / (w.norm(dim=1, keepdim=True) + 1e-7), max=1.0))


@register("maxout_mlp")
def maxout_mlp(**kwargs) -> nn.Module:
    return MaxoutMLP(**kwargs)


class ConvMaxoutNet(nn.Module):
    """A conv maxout network in the spirit of Goodfellow et al.'s CIFAR-10 model (smaller by default)."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (64, 128, 128), pieces: int = 2,
                 num_classes: int = 10, dropout: float = 0.5, normalize: bool | tuple = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [_norm(normalize, (CIFAR_MEAN, CIFAR_STD) if in_channels == 3 else
                                         (MNIST_MEAN, MNIST_STD))]
        width = in_channels
        for c in channels:
            layers += [ConvMaxout(width, c, pieces, 3, padding=1), nn.MaxPool2d(2), nn.Dropout(dropout / 2)]
            width = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(Maxout(width, 256, pieces), nn.Dropout(dropout), nn.Linear(256, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register("conv_maxout")
def conv_maxout(**kwargs) -> nn.Module:
    return ConvMaxoutNet(**kwargs)


class RBFNetwork(nn.Module):
    """Shallow RBF network (Goodfellow et al. 2015): one Gaussian unit per class, p(y=i|x) =
    exp(-(x - w_i)^T diag(beta_i) (x - w_i)), with a learned centre w_i and learned per-input widths
    beta_i >= 0. `unit_probabilities` gives the units' own outputs in (0, 1], whose max is the paper's
    confidence: low far from every centre, which is why fooled RBF nets are unconfident. Trained with
    a per-unit likelihood (`training_loss`)."""

    def __init__(self, in_features: int = 784, num_classes: int = 10, init_beta: float = 0.01) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.rand(num_classes, in_features) * 0.2)
        self.log_beta = nn.Parameter(torch.full((num_classes, in_features), math.log(init_beta)))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        beta = self.log_beta.exp()
        d2 = (flat.pow(2) @ beta.t() - 2 * flat @ (beta * self.centers).t()
              + (beta * self.centers.pow(2)).sum(1).unsqueeze(0))
        return -d2.clamp_min(0)

    def unit_probabilities(self, x: Tensor) -> Tensor:
        return self(x).exp()

    @staticmethod
    def training_loss(logits: Tensor, y: Tensor) -> Tensor:
        """Each unit is its own probability p_i = exp(logit_i): binary cross-entropy per unit against
        the one-hot label, so that p_i is high only near class i's centre (softmax cross-entropy would
        leave the units' absolute scale free and their outputs near 0)."""
        logits = logits.float().clamp(max=-1e-6)
        onehot = torch.nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
        log_not = torch.log(-torch.expm1(logits))  # log(1 - exp(z)), stable for z < 0
        return -(onehot * logits + (1 - onehot) * log_not).sum(1).mean()


@register("rbf")
def rbf(**kwargs) -> nn.Module:
    return RBFNetwork(**kwargs)


@register("madry_cnn")
def madry_cnn(in_channels: int = 1, num_classes: int = 10, normalize: bool | tuple = False) -> nn.Module:
    """The MNIST CNN of Madry et al. 2018: conv32-5x5, pool, conv64-5x5, pool, fc1024, fc10."""
    return nn.Sequential(
        _norm(normalize, (MNIST_MEAN, MNIST_STD)),
        nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, num_classes))


@register("fast_mnist_cnn")
def fast_mnist_cnn(in_channels: int = 1, num_classes: int = 10, batchnorm: bool = False) -> nn.Module:
    """The small MNIST CNN of Wong, Rice, Kolter 2020 (fast adversarial training): two strided
    4x4 convolutions (16, 32 channels), a 100-unit dense layer. `batchnorm` puts a BatchNorm after
    each hidden layer (before its ReLU), as in the normalized networks Wen et al. 2020 measure."""
    def norm(kind: type[nn.Module], n: int) -> list[nn.Module]:
        return [kind(n)] if batchnorm else []
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 4, stride=2, padding=1, bias=not batchnorm), *norm(nn.BatchNorm2d, 16), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1, bias=not batchnorm), *norm(nn.BatchNorm2d, 32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100, bias=not batchnorm), *norm(nn.BatchNorm1d, 100), nn.ReLU(),
        nn.Linear(100, num_classes))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


@register("small_resnet")
def small_resnet(in_channels: int = 1, num_classes: int = 10, width: int = 32,
                 normalize: bool | tuple = True) -> nn.Module:
    """A small residual ConvNet for 28x28 inputs (the kind Kumano et al. use on MNIST/Fashion-MNIST):
    stem conv, two basic blocks at `width`, two at 2x width with stride 2, global pooling."""
    return nn.Sequential(
        _norm(normalize, (MNIST_MEAN, MNIST_STD)),
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        _BasicBlock(width, width, 1), _BasicBlock(width, width, 1),
        _BasicBlock(width, 2 * width, 2), _BasicBlock(2 * width, 2 * width, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


class _Residual(nn.Module):
    """x + ReLU(conv(x)) (no BatchNorm), the skip connection of Kumano et al.'s ConvNet."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.conv(x))


@register("kumano_convnet")
def kumano_convnet(in_channels: int = 1, num_classes: int = 10, width: float = 1.0,
                   normalize: bool | tuple = True) -> nn.Module:
    """Kumano et al.'s MNIST/Fashion-MNIST ConvNet: conv 16 (stride 2), conv 128, residual 128,
    conv 256, residual 256, global average pooling, linear; `width` scales the channels (1 = paper)."""
    c1, c2, c3 = (max(1, round(c * width)) for c in (16, 128, 256))
    return nn.Sequential(
        _norm(normalize, (MNIST_MEAN, MNIST_STD)),
        nn.Conv2d(in_channels, c1, 3, stride=2), nn.ReLU(),
        nn.Conv2d(c1, c2, 3), nn.ReLU(), _Residual(c2),
        nn.Conv2d(c2, c3, 3), nn.ReLU(), _Residual(c3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c3, num_classes))


class OneHiddenLayer(nn.Module):
    """f(x) = a^T LeakyReLU(W x) with fixed output weights a_k = +-1/sqrt(m) (half each), the network
    of Kumano et al.'s theory. forward returns 2-class logits (-f/2, f/2), so label 1 <-> f > 0 and
    the logit margin of class 1 is f; `score` returns f itself."""

    def __init__(self, in_features: int, width: int = 1000, slope: float = 0.1, init_std: float | None = None) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, width, bias=False)
        nn.init.normal_(self.hidden.weight, std=init_std if init_std is not None else 1.0 / math.sqrt(in_features))
        signs = torch.ones(width)
        signs[width // 2:] = -1
        self.register_buffer("a", signs / math.sqrt(width))
        self.slope = slope

    def score(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.hidden(x.flatten(1)), self.slope) @ self.a

    def forward(self, x: Tensor) -> Tensor:
        f = self.score(x).unsqueeze(1)
        return torch.cat([-f / 2, f / 2], dim=1)


@register("one_hidden")
def one_hidden(**kwargs) -> nn.Module:
    return OneHiddenLayer(**kwargs)


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.short = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        short = self.short(out) if self.short is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + short


class PreActResNet18(nn.Module):
    """PreActResNet-18 (He et al. 2016) for 32x32 inputs, the fast-AT benchmark model."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, normalize: bool | tuple = True) -> None:
        super().__init__()
        self.normalize = _norm(normalize, (CIFAR_MEAN, CIFAR_STD))
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_PreActBlock(cin, cout, stride), _PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.stem(self.normalize(x)))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1))


@register("preact_resnet18")
def preact_resnet18(**kwargs) -> nn.Module:
    return PreActResNet18(**kwargs)


class WideResNet(nn.Module):
    """WideResNet-depth-k (Zagoruyko & Komodakis 2016) for 32x32 inputs."""

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0, normalize: bool | tuple = True) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.normalize = _norm(normalize, (CIFAR_MEAN, CIFAR_STD))
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, stride in enumerate((1, 2, 2)):
            for j in range(n):
                blocks.append(_PreActBlock(cin, widths[i + 1], stride if j == 0 else 1, dropout))
                cin = widths[i + 1]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.blocks(self.stem(self.normalize(x)))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1))


@register("wrn")
def wrn(**kwargs) -> nn.Module:
    return WideResNet(**kwargs)


@register("wrn28_10")
def wrn28_10(**kwargs) -> nn.Module:
    return WideResNet(28, 10, **kwargs)


@register("wrn34_10")
def wrn34_10(**kwargs) -> nn.Module:
    return WideResNet(34, 10, **kwargs)


@register("small_cnn")
def small_cnn(**kwargs) -> nn.Module:
    from .simple import SmallCNN
    return SmallCNN(**kwargs)

"""Normalize layer, the attack-mode guard, and the model registry."""
import pytest
import torch
from torch import nn

from advlab.models import MLP, Normalize, SmallCNN, SoftmaxRegression, attack_mode


def test_normalize_per_channel_and_scalar():
    x = torch.rand(2, 3, 4, 4)
    n = Normalize([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    assert torch.allclose(n(x), expected)
    assert torch.allclose(Normalize(0.5, 0.5)(x), (x - 0.5) / 0.5)
    assert n.double()(x.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="positive"):
        Normalize(0.0, 0.0)


def test_attack_mode_restores_on_error():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout())
    model.train()
    model[0].weight.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with attack_mode(model):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("boom")
    assert model.training and model[1].training
    assert [p.requires_grad for p in model.parameters()] == [False, True]


@pytest.mark.parametrize("make,shape", [
    (lambda: SoftmaxRegression(784), (2, 1, 28, 28)), (lambda: MLP(784), (2, 784)),
    (lambda: SmallCNN(width=4, normalize=Normalize(0.13, 0.31)), (2, 1, 28, 28)),
])
def test_reference_models_shapes(make, shape):
    assert make()(torch.rand(shape)).shape == (2, 10)


def test_registry_builds_every_model_and_rejects_unknown():
    from advlab import AdvlabError
    from advlab.models import build_model, list_models
    shapes = {"conv_maxout": (2, 3, 32, 32), "preact_resnet18": (2, 3, 32, 32), "one_hidden": (2, 784)}
    for name in list_models():
        if name in ("wrn28_10", "wrn34_10"):
            continue  # large; the generic "wrn" covers the code path
        kw = {"depth": 10, "widen": 1} if name == "wrn" else {}
        if name == "one_hidden":
            kw = {"in_features": 784, "width": 16}
        shape = shapes.get(name, (2, 3, 32, 32) if name == "wrn" else (2, 1, 28, 28))
        out = build_model(name, **kw)(torch.rand(shape))
        assert out.shape == (2, 2 if name == "one_hidden" else 10), name
    with pytest.raises(AdvlabError, match="unknown model"):
        build_model("resnet1000")
    with pytest.raises(AdvlabError, match="bad arguments"):
        build_model("mlp", widht=3)


def test_maxout_column_norm_constraint():
    from advlab.models import MaxoutMLP, apply_constraints
    m = MaxoutMLP(units=8, pieces=3)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(100)
    apply_constraints(m)
    for lin in (m.features[2].linear, m.features[4].linear, m.out):
        assert float(lin.weight.norm(dim=1).max()) <= 1.9365 + 1e-4


def test_one_hidden_layer_fixed_output_weights():
    from advlab.models import OneHiddenLayer
    m = OneHiddenLayer(10, width=6)
    assert "a" not in dict(m.named_parameters()) and torch.allclose(m.a.abs(), torch.full((6,), 6 ** -0.5))
    x = torch.randn(4, 10)
    logits = m(x)
    assert torch.allclose(logits[:, 1] - logits[:, 0], m.score(x))

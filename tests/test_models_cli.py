"""Normalize layer, the attack-mode guard, and the CLI end to end on a miniature budget."""
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from advlab.cli import main
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


@pytest.mark.mnist
def test_quickstart_miniature(mnist_cache, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["quickstart", "--train-size", "2000", "--n-eval", "40", "--suite", "fast",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads((out / "results.json").read_text())
    ev = payload["evaluation"]
    assert ev["robust_accuracy"] <= payload["pgd20_accuracy"] + 1e-9 <= ev["clean_accuracy"] + 1e-9
    assert "worst case" in res.output

"""advlab's suites against the official AutoAttack code (`pyautoattack`, the authors' PyTorch code), on
the same small MNIST model and the same points: `standard` never reports more than 0.5 points above
the reference's `standard` for linf, l2 and l1, also on a model whose logits are scaled by 1e4 (no
CE gradient left); FAB-T alone is within 1 point of the reference's FAB-T; the hyperplane projections
equal the reference's; `rand` on a model with Gaussian input noise is within 1 point of the
reference's `rand`; and the `fast` screen is not above the reference's `standard` on masked models."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import FABT
from advlab.attacks.hyperplane import project_l1, project_l2, project_linf
from advlab.evaluation import evaluate_robustness
from advlab.evaluation.autoattack import mean_probabilities

pyautoattack = pytest.importorskip("pyautoattack")
pytestmark = [pytest.mark.parity, pytest.mark.mnist]
logging.getLogger("auto-attack").setLevel(logging.ERROR)
REF_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}
EPS = {"linf": 0.06, "l2": 1.0, "l1": 8.0}
N = 100


class Scaled(nn.Module):
    """Logits times 1e4: the softmax saturates, so CE gradients vanish (gradient masking)."""

    def __init__(self, inner: nn.Module, factor: float = 1e4) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x):
        return self.inner(x) * self.factor


class Quantized(nn.Module):
    """round(4x)/4 in front of the model: zero gradients almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(4 * x) / 4)


class GaussianInput(nn.Module):
    """A randomized defense: Gaussian noise (sigma 0.1) added to the input at every pass."""

    def __init__(self, inner: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x):
        return self.inner((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


def reference(model, norm, eps, x, y, version="standard", attacks=None, **settings):
    aa = pyautoattack.AutoAttack(model, norm=REF_NORM[norm], eps=eps, version=version, seed=0, device="cpu",
                                 **({"attacks": attacks} if attacks else {}))
    aa.verbose = False
    for name, values in settings.items():   # e.g. fab={"n_target_classes": 9}
        for k, v in values.items():
            setattr(getattr(aa, name), k, v)
    return aa.run_standard_evaluation(x, y, batch_size=N)[0]   # (x_adv, y_adv)


def accuracy(model, x, y, draws=1):
    return float((mean_probabilities(model, x, draws).argmax(1) == y).float().mean())


def test_projections_equal_the_reference():
    from pyautoattack import fab_projections as ref
    g = torch.Generator().manual_seed(0)
    t, w = torch.rand(64, 40, generator=g), torch.randn(64, 40, generator=g)
    w[:, :4] = 0
    for scale in (0.5, 1.0, 3.0):   # at 3x, some hyperplanes are out of the box's reach
        b = (w * torch.rand(64, 40, generator=g)).sum(1) * scale
        for ours, theirs, p in ((project_l2, ref.projection_l2, 2), (project_linf, ref.projection_linf, float("inf")),
                                (project_l1, ref.projection_l1, 1)):
            d, d_ref = ours(t, w, b), theirs(t, w.clone(), b.clone())
            assert torch.allclose(d.norm(p=p, dim=1), d_ref.norm(p=p, dim=1), atol=1e-5)
            assert torch.allclose((w * (t + d)).sum(1), (w * (t + d_ref)).sum(1), atol=1e-4)
            assert float((t + d).min()) >= -1e-6 and float((t + d).max()) <= 1 + 1e-6


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("scaled", [False, True])
def test_fab_t_within_one_point_of_the_reference(mnist_mlp, norm, scaled):
    model, x, y = mnist_mlp
    model = Scaled(model) if scaled else model
    x, y = x[:N], y[:N]
    ours = FABT(ThreatModel(norm, EPS[norm]), steps=100, n_target_classes=9, early_stop=True)(model, x, y)
    ref = reference(model, norm, EPS[norm], x, y, version="custom", attacks=["fab-t"],
                    fab={"n_target_classes": 9, "n_restarts": 1})
    ref_acc = accuracy(model, ref, y)
    assert 1 - ours.success_rate <= ref_acc + 0.01, (1 - ours.success_rate, ref_acc)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("scaled", [False, True])
def test_standard_never_above_the_reference_standard(mnist_mlp, norm, scaled):
    model, x, y = mnist_mlp
    model = Scaled(model) if scaled else model
    x, y = x[:N], y[:N]
    ours = evaluate_robustness(model, (x, y), ThreatModel(norm, EPS[norm]), "standard", batch_size=N)
    ref_acc = accuracy(model, reference(model, norm, EPS[norm], x, y), y)
    assert ours.suite == "standard" and [a.name for a in ours.attacks][:3] == ["apgd", "apgd-t", "fab-t"]
    assert ours.robust_accuracy <= ref_acc + 0.005, (ours.robust_accuracy, ref_acc)


@pytest.mark.parametrize("masked", ["quantized", "scaled"])
def test_fast_is_not_above_the_reference_standard_on_masked_models(mnist_mlp, masked):
    model, x, y = mnist_mlp
    model = Quantized(model) if masked == "quantized" else Scaled(model)
    x, y = x[:N], y[:N]
    with pytest.warns(UserWarning, match="fast suite extended"):
        ours = evaluate_robustness(model, (x, y), ThreatModel("linf", EPS["linf"]), "fast", batch_size=N)
    ref_acc = accuracy(model, reference(model, "linf", EPS["linf"], x, y), y)
    assert not ours.to_dict()["worst_case"], "a fast number always says it is a screen"
    assert ours.robust_accuracy <= ref_acc + 0.005, (ours.robust_accuracy, ref_acc)


@pytest.mark.parametrize("scaled", [False, True])
def test_rand_on_a_noisy_model_within_one_point_of_the_reference(mnist_mlp, scaled):
    """Both sides judged alike: by the prediction averaged over 10 draws (one noisy pass is a coin
    toss near the boundary; advlab reports the averaged judgement and says how many draws)."""
    model, x, y = mnist_mlp
    noisy = GaussianInput(Scaled(model) if scaled else model).eval()
    x, y = x[:N], y[:N]
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomized"):
        ours = evaluate_robustness(noisy, (x, y), ThreatModel("linf", EPS["linf"]), "auto", batch_size=N)
    assert ours.suite == "rand" and ours.judge_draws == 10
    torch.manual_seed(0)
    ref_adv = reference(noisy, "linf", EPS["linf"], x, y, version="rand")
    torch.manual_seed(1)
    ref_acc = accuracy(noisy, ref_adv, y, draws=10)
    assert ours.robust_accuracy <= ref_acc + 0.01, (ours.robust_accuracy, ref_acc)

"""Parity with IBM's Adversarial Robustness Toolbox (ART) on the same trained MNIST model and budgets:
a second, independently written reference beside torchattacks. FGSM must match ART's FGM point for
point; PGD and APGD must find robust accuracy no higher than ART's (within 0.5 points)."""
import numpy as np
import pytest
import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import APGD, FGSM, PGD

art_attacks = pytest.importorskip("art.attacks.evasion")
art_classifiers = pytest.importorskip("art.estimators.classification")
pytestmark = [pytest.mark.parity, pytest.mark.mnist]
SLACK = 0.005


def art_classifier(model: nn.Module):
    return art_classifiers.PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                             nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


def robust_acc(model, x_adv: np.ndarray, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x_adv)).argmax(1) == y).float().mean())


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_fgsm_matches_art_fgm(mnist_mlp, norm, eps):
    model, x, y = mnist_mlp
    ours = FGSM(ThreatModel(norm, eps))(model, x, y).x_adv
    ref = art_attacks.FastGradientMethod(art_classifier(model), norm=np.inf if norm == "linf" else 2, eps=eps,
                                         batch_size=1000).generate(x.numpy(), y=y.numpy())
    assert torch.allclose(ours, torch.from_numpy(ref), atol=1e-5)


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.1, 0.01), ("l2", 1.0, 0.2)])
def test_pgd_no_weaker_than_art(mnist_mlp, norm, eps, alpha):
    """Mean over 3 seeds on 1,000 points, so that random-start noise does not decide the test."""
    model, x, y = mnist_mlp
    ours, ref = [], []
    for seed in range(3):
        ours.append(1 - PGD(ThreatModel(norm, eps), steps=10, step_size=alpha, seed=seed)(model, x, y).success_rate)
        np.random.seed(seed)
        atk = art_attacks.ProjectedGradientDescentPyTorch(
            art_classifier(model), norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=alpha, max_iter=10,
            num_random_init=1, batch_size=1000, verbose=False)
        ref.append(robust_acc(model, atk.generate(x.numpy(), y=y.numpy()), y))
    assert sum(ours) / 3 <= sum(ref) / 3 + SLACK, (ours, ref)


def test_apgd_no_weaker_than_art(mnist_mlp):
    model, x, y = mnist_mlp
    np.random.seed(0)
    ours = 1 - APGD(ThreatModel("linf", 0.08), steps=50)(model, x, y).success_rate
    atk = art_attacks.AutoProjectedGradientDescent(art_classifier(model), norm=np.inf, eps=0.08, eps_step=0.16,
                                                   max_iter=50, nb_random_init=1, batch_size=1000,
                                                   loss_type="cross_entropy", verbose=False)
    ref = robust_acc(model, atk.generate(x.numpy(), y=y.numpy()), y)
    assert ours <= ref + SLACK, (ours, ref)

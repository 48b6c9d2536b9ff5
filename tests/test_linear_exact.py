"""Closed forms on linear softmax models: FGSM is the optimal perturbation, DeepFool finds the
true distance to the decision boundary, and targeted attacks reach targets that are provably reachable."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab import ThreatModel
from advlab.attacks import APGD, FAB, FGSM, PGD, DeepFool, SparseL0, Square

WIDE = (-100.0, 100.0)  # bounds far away, so the box never binds and the closed forms hold


def linear(w: torch.Tensor, b: torch.Tensor) -> nn.Linear:
    m = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
    return m


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_equals_optimal_perturbation_binary(norm):
    torch.manual_seed(0)
    w, b = torch.randn(2, 30, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    model = linear(w, b)
    x = torch.randn(16, 30, dtype=torch.float64)
    y = model(x).argmax(1)
    eps = 0.05 if norm == "linf" else 0.3
    th = ThreatModel(norm, eps, WIDE)
    r = FGSM(th)(model, x, y)
    # CE of a 2-class linear model increases monotonically along v = w_other - w_y; the optimum of a
    # linear function over the ball is eps * sign(v) (linf) or eps * v / ||v|| (l2)
    v = (w[1 - y] - w[y])
    opt = eps * v.sign() if norm == "linf" else eps * v / v.norm(dim=1, keepdim=True)
    assert torch.allclose(r.x_adv, x + opt, atol=1e-12)
    # and no random point in the ball has a higher loss
    rand = th.random_start(x.repeat(50, 1), torch.Generator().manual_seed(0))
    lr = F.cross_entropy(model(rand), y.repeat(50), reduction="none").view(50, -1).amax(0)
    assert bool((F.cross_entropy(model(r.x_adv), y, reduction="none") >= lr - 1e-12).all())


@pytest.mark.parametrize("attack, norm", [("deepfool", "linf"), ("deepfool", "l2"), ("fab", "linf"), ("fab", "l2"),
                                          ("fab", "l1")])
@pytest.mark.parametrize("classes", [2, 10])
def test_min_norm_attacks_find_true_distance_to_boundary(attack, norm, classes):
    torch.manual_seed(1)
    w, b = torch.randn(classes, 50, dtype=torch.float64), torch.randn(classes, dtype=torch.float64)
    model = linear(w, b)
    x = torch.randn(64, 50, dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    # distance to the set where class k beats y: (z_y - z_k) / ||w_y - w_k||_dual; min over k
    diff_w = w[y].unsqueeze(1) - w.unsqueeze(0)               # [n, C, D]
    gap = z.gather(1, y[:, None]) - z                          # [n, C]
    dual = diff_w.norm(p={"l2": 2, "linf": 1, "l1": float("inf")}[norm], dim=2)
    dist = torch.where(torch.arange(classes)[None] == y[:, None], torch.inf, gap / dual).amin(1)
    th = ThreatModel(norm, float(dist.max()) * 2, WIDE)
    r = (DeepFool(th, steps=20, candidates=classes) if attack == "deepfool" else FAB(th, steps=20))(model, x, y)
    found = r.min_norm
    assert bool(r.success.all()) and torch.equal(r.norms, th.distance(x, r.x_min))
    rel = (found - dist) / dist
    assert float(rel.abs().max()) < 0.01, f"relative error {float(rel.abs().max()):.4f}"
    assert bool((rel > -1e-9).all()), "a norm below the true distance is impossible"
    assert r.robust_accuracy_at([0.0, float(dist.median()), float(dist.max()) * 1.01]) == pytest.approx(
        [1.0, float((found > dist.median()).double().mean()), 0.0])


def _reachable_problem():
    """logits_k = 10 * x_k: setting x_t high and the rest low provably makes t the argmax."""
    model = linear(10 * torch.eye(10, dtype=torch.float64), torch.zeros(10, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.1 * torch.rand(20, 10, generator=g, dtype=torch.float64)
    y = model(x).argmax(1)
    t = (y + 1 + torch.randint(0, 9, (20,), generator=g)) % 10
    return model, x, y, t


@pytest.mark.parametrize("make,norm,eps", [
    (lambda th: FGSM(th), "linf", 0.5),
    (lambda th: FGSM(th), "l2", 1.0),
    (lambda th: PGD(th, steps=20), "linf", 0.2),
    (lambda th: PGD(th, steps=30, loss="margin"), "l2", 0.5),
    (lambda th: PGD(th, steps=50), "l1", 0.5),
    (lambda th: APGD(th, steps=20, loss="dlr"), "linf", 0.2),
    (lambda th: APGD(th, steps=20), "l2", 0.5),
    (lambda th: Square(th, n_queries=300), "linf", 0.2),
    (lambda th: DeepFool(th), "l2", 0.5),
    (lambda th: SparseL0(th, steps=10), "l0", 2),
])
def test_targeted_attacks_reach_reachable_targets(make, norm, eps):
    model, x, y, t = _reachable_problem()
    r = make(ThreatModel(norm, eps))(model, x, y, targets=t)
    assert bool(r.success.all()), f"reached {int(r.success.sum())}/20 targets"
    assert torch.equal(model(r.x_adv).argmax(1), t)
    assert torch.equal(r.targets, t)

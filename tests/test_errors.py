"""Bad input gets a clear advlab error naming the problem, never a silent wrong number."""
import pytest
import torch
from torch import nn

from advlab import AttackConfigError, InputError, ModelOutputError, ThreatModel
from advlab.attacks import APGD, PGD, Square
from advlab.evaluation import evaluate_robustness

TH = ThreatModel("linf", 0.1)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 5))


@pytest.fixture
def xy():
    return torch.rand(4, 8), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("mutate,msg", [
    (lambda x, y: (x + 2, y), "outside the declared bounds"),
    (lambda x, y: (x.masked_fill(x > 0.5, float("nan")), y), "NaN or inf"),
    (lambda x, y: (x.masked_fill(x > 0.5, float("inf")), y), "NaN or inf"),
    (lambda x, y: ((x * 255).long(), y), "floating-point"),
    (lambda x, y: (x[0], y), "batch shaped"),
    (lambda x, y: (x, y[:3]), "batch size mismatch"),
    (lambda x, y: (x, y.float()), "integer class indices"),
    (lambda x, y: (x, y.view(2, 2)), r"shape \(N,\)"),
    (lambda x, y: (x, y + 10), "model has 5 classes"),
    (lambda x, y: (x, y - 5), "model has 5 classes"),
    (lambda x, y: (x.numpy(), y), "torch.Tensor"),
])
def test_bad_inputs(model, xy, mutate, msg):
    x, y = mutate(*xy)
    with pytest.raises(InputError, match=msg):
        PGD(TH, steps=2)(model, x, y)


@pytest.mark.parametrize("bad_model,msg", [
    (lambda m: nn.Sequential(m, nn.Flatten(0)), "expected \\(N, num_classes\\)"),
    (lambda m: nn.Sequential(m, nn.Linear(5, 1)), "at least 2"),
    (lambda m: (lambda x: (m(x), 1)), "expected a logits tensor"),
])
def test_bad_model_outputs(model, xy, bad_model, msg):
    wrapped = bad_model(model)
    if not isinstance(wrapped, nn.Module):
        fn = wrapped
        wrapped = type("W", (nn.Module,), {"forward": lambda self, x: fn(x)})()
    with pytest.raises(ModelOutputError, match=msg):
        PGD(TH, steps=2)(wrapped, *xy)


@pytest.mark.parametrize("make,msg", [
    (lambda: PGD(TH, steps=0), "steps must be an integer >= 1"),
    (lambda: PGD(TH, loss="hinge"), "unknown loss"),
    (lambda: PGD(TH, target="sometimes"), "unknown target spec"),
    (lambda: PGD(TH, target=0), "true class"),
    (lambda: PGD(TH, schedule="linear"), "schedule"),
    (lambda: PGD(TH, step_size=-1.0), "step_size"),
    (lambda: Square(ThreatModel("l1", 1.0)), "supports norms"),
    (lambda: APGD("linf"), "ThreatModel"),
    (lambda: Square(TH, p_init=2.0), "p_init"),
])
def test_bad_attack_configs(make, msg):
    with pytest.raises(AttackConfigError, match=msg):
        make()


def test_targets_equal_to_labels_rejected(model, xy):
    x, y = xy
    with pytest.raises(InputError, match="targets equal the true labels"):
        PGD(TH, steps=2)(model, x, y, targets=y)


def test_dlr_needs_enough_classes(xy):
    m = nn.Linear(8, 2)
    x, _ = xy
    with torch.no_grad():
        y = m(x).argmax(1)
    with pytest.raises(AttackConfigError, match="at least 3 classes"):
        APGD(TH, steps=2, loss="dlr")(m, x, y)


def test_evaluation_rejects_bad_data(model, xy):
    x, y = xy
    with pytest.raises(InputError, match="pair"):
        evaluate_robustness(model, x, TH)
    with pytest.raises(InputError, match="outside the declared bounds"):
        evaluate_robustness(model, (x - 1, y), TH)
    with pytest.raises(AttackConfigError, match="unknown suite"):
        evaluate_robustness(model, (x, y), TH, suite="strongest")

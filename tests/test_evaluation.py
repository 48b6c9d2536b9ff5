"""Worst-case evaluation: protocol, resume after a kill, state-file safety, masking detection."""
import warnings

import pytest
import torch
from torch import nn

from advlab import CheckpointError, ThreatModel
from advlab.attacks import APGD, APGDT, FGSM, PGD, Square
from advlab.attacks import pgd as pgd_module
from advlab.evaluation import (GradientMaskingWarning, accuracy_vs_eps, evaluate_robustness,
                               robust_accuracy_curve)


@pytest.fixture
def small_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.rand(60, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:5] = (y[:5] + 1) % 4  # a few clean errors
    return model, x, y


def test_worst_case_is_per_sample_union(small_problem):
    model, x, y = small_problem
    th = ThreatModel("linf", 0.05)
    suite = [FGSM(th), PGD(th, steps=10)]
    res = evaluate_robustness(model, (x, y), th, suite=suite, batch_size=16, checks=False)
    fgsm, pgd = FGSM(th)(model, x, y), PGD(th, steps=10)(model, x, y)
    assert res.clean_accuracy == pytest.approx(55 / 60)
    assert res.robust_accuracy <= min(1 - fgsm.success_rate, 1 - pgd.success_rate) + 1e-9
    assert not bool((res.robust & ~res.clean_correct).any())
    broken = res.broken_by >= 0
    assert torch.equal(broken, res.clean_correct & ~res.robust)
    assert res.attacks[0].attacked == 55
    assert res.attacks[1].attacked == 55 - res.attacks[0].broken  # only still-robust points
    d = res.to_dict()
    assert d["robust_accuracy"] == res.robust_accuracy and d["threat_model"]["norm"] == "linf"


def test_resume_after_kill_matches_uninterrupted(small_problem, tmp_path, monkeypatch):
    model, x, y = small_problem
    th = ThreatModel("linf", 0.03)
    suite = lambda: [PGD(th, steps=5), APGD(th, steps=10)]  # noqa: E731
    full = evaluate_robustness(model, (x, y), th, suite=suite(), batch_size=10, checks=False)

    state = tmp_path / "state.safetensors"
    calls = {"n": 0}
    real_run = pgd_module.PGD._run

    def dying_run(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_run(self, *a, **k)

    monkeypatch.setattr(pgd_module.PGD, "_run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        evaluate_robustness(model, (x, y), th, suite=suite(), batch_size=10, checks=False, state_path=state)
    monkeypatch.setattr(pgd_module.PGD, "_run", real_run)
    assert state.exists()
    resumed = evaluate_robustness(model, (x, y), th, suite=suite(), batch_size=10, checks=False,
                                  state_path=state)
    assert torch.equal(resumed.robust, full.robust)
    assert torch.equal(resumed.broken_by, full.broken_by)
    assert [a.broken for a in resumed.attacks] == [a.broken for a in full.attacks]


def test_state_file_from_other_data_or_corrupt_is_refused(small_problem, tmp_path):
    model, x, y = small_problem
    th = ThreatModel("linf", 0.03)
    state = tmp_path / "state.safetensors"
    evaluate_robustness(model, (x, y), th, suite=[PGD(th, steps=2)], checks=False, state_path=state)
    with pytest.raises(CheckpointError, match="another evaluation"):
        evaluate_robustness(model, (x.flip(0), y.flip(0)), th, suite=[PGD(th, steps=2)], checks=False,
                            state_path=state)
    state.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        evaluate_robustness(model, (x, y), th, suite=[PGD(th, steps=2)], checks=False, state_path=state)


class Quantized(nn.Module):
    """A non-differentiable input quantization in front of a classifier: zero input gradients."""

    def __init__(self, inner: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        return self.inner(torch.round(x * self.levels) / self.levels)


@pytest.mark.mnist
def test_gradient_masked_model_is_caught(mnist_mlp):
    model, x, y = mnist_mlp
    masked = Quantized(model).eval()
    x, y = x[:150], y[:150]
    th = ThreatModel("linf", 0.15)
    white = evaluate_robustness(masked, (x, y), th, suite=[APGD(th, steps=30), APGDT(th, steps=30, n_target_classes=3)],
                                checks=False)
    suite = [APGD(th, steps=30), APGDT(th, steps=30, n_target_classes=3), Square(th, n_queries=1000)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate_robustness(masked, (x, y), th, suite=suite)
    flags = " ".join(res.flags)
    assert "zero-gradients" in flags and "black-box-beats-white-box" in flags
    assert any(issubclass(w.category, GradientMaskingWarning) for w in caught)
    assert white.robust_accuracy > 0.7, "white-box attacks should fail on the masked model"
    assert res.robust_accuracy < white.robust_accuracy - 0.3, "Square must expose the low robustness"


def test_softmax_and_randomized_models_are_flagged(small_problem):
    model, x, y = small_problem
    th = ThreatModel("linf", 0.01)
    soft = nn.Sequential(model, nn.Softmax(dim=1))
    res = evaluate_robustness(soft, (x, y), th, suite=[PGD(th, steps=2)], batch_size=100)
    assert any(f.startswith("softmax-output") for f in res.flags)

    class Noisy(nn.Module):
        def forward(self, z):
            return model(z) + torch.randn(z.shape[0], 4)

    with pytest.warns(GradientMaskingWarning, match="randomized-output"):
        evaluate_robustness(Noisy(), (x, y), th, suite=[PGD(th, steps=2)])


def test_accuracy_vs_eps_from_min_norms(small_problem):
    model, x, y = small_problem
    curve = robust_accuracy_curve(model, (x, y), "linf", [0.0, 0.01, 0.03, 0.1, 1.0], steps=30)
    accs = [a for _, a in curve]
    assert accs[0] == pytest.approx(55 / 60)
    assert all(a >= b for a, b in zip(accs, accs[1:]))
    assert accs[-1] == 0.0
    assert accuracy_vs_eps(torch.tensor([0.0, 0.5, float("inf")]), [0.1]) == [(0.1, 2 / 3)]
    # the curve agrees with the same minimal-norm attack run inside an eps-ball
    from advlab.attacks import DeepFool
    r = DeepFool(ThreatModel("linf", 0.03), steps=30)(model, x, y)
    assert 1 - r.success_rate == pytest.approx(accs[2], abs=1e-6)


def test_nothing_left_to_attack(small_problem):
    model, x, y = small_problem
    th = ThreatModel("linf", 0.5)
    res = evaluate_robustness(model, (x, y), th, suite=[PGD(th, steps=20), APGD(th, steps=10)], checks=False)
    assert res.robust_accuracy == 0.0
    assert res.attacks[1].attacked == 0

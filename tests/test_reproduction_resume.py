"""The reproductions' shared resume layout refuses what another recipe made, and reports say where
each number came from and why a check misses."""
import pytest
import torch
from torch import nn

from advlab.attacks import PGD
from advlab.errors import AttackConfigError, RunDirError
from advlab.experiments.report import comparison_table, miss_explanations
from advlab.experiments.reproductions.cache import cached_cell, train_or_load
from advlab.threat import ThreatModel


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def test_cached_model_from_another_recipe_is_refused(tmp_path):
    calls = []

    def fit(model):
        calls.append(1)
        return {"epochs": 1}

    train_or_load(tmp_path, "m", _linear, fit, log=lambda s: None, recipe={"epochs": 1})
    _, info = train_or_load(tmp_path, "m", _linear, fit, log=lambda s: None, recipe={"epochs": 1})
    assert info["cached"] and len(calls) == 1
    with pytest.raises(RunDirError, match="another recipe"):
        train_or_load(tmp_path, "m", _linear, fit, log=lambda s: None, recipe={"epochs": 2})
    assert len(calls) == 1


def test_cached_cell_from_another_recipe_is_refused(tmp_path):
    assert cached_cell(tmp_path, "c", lambda: {"acc": 0.5}, recipe={"steps": 10})["acc"] == 0.5
    assert cached_cell(tmp_path, "c", lambda: {"acc": 0.9}, recipe={"steps": 10})["acc"] == 0.5
    with pytest.raises(RunDirError, match="another recipe"):
        cached_cell(tmp_path, "c", lambda: {"acc": 0.9}, recipe={"steps": 100})


def test_rows_carry_their_source_and_misses_their_reason():
    rows = [{"id": "G5", "quantity": "clean error", "paper": 0.0094, "ours": 0.02, "check": "<= 1.3%",
             "holds": False, "why": "60 epochs", "source": "cpu budget, CPU: maxout 60 ep, 5.0 min"},
            {"id": "G1", "quantity": "fgsm error", "paper": 0.999, "ours": 0.99, "holds": True}]
    cells = comparison_table(rows)
    assert cells[0][-1] == "produced by" and cells[1][-1].startswith("cpu budget") and cells[2][-1] == ""
    assert miss_explanations(rows) == ["G5 clean error: 60 epochs"]
    assert comparison_table(rows[1:])[0][-1] == "verdict"   # no source anywhere: no column


def test_scaled_linf_steps_stay_in_the_ball_and_box():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x = torch.rand(32, 1, 4, 4)
    y = torch.randint(0, 4, (32,))
    threat = ThreatModel("linf", 0.1)
    res = PGD(threat, steps=20, step_size=0.02, step_rule="scaled", random_start=False, early_stop=False)(model, x, y)
    assert bool(threat.contains(x, res.x_adv).all())
    assert float((res.x_adv - x).abs().amax()) > 0.05   # it moves
    # the perturbation is shaped like a gradient, not a sign: entries take many magnitudes
    assert (res.x_adv - x).abs().flatten(1)[0].unique().numel() > 3
    with pytest.raises(AttackConfigError, match="unknown step_rule"):
        PGD(threat, step_rule="sign")
    with pytest.raises(AttackConfigError, match="linf rule"):
        PGD(ThreatModel("l2", 1.0), step_rule="scaled")

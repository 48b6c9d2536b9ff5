"""Learning from perturbations: builders (labels, budgets, provenance), training with controls, the
synthetic theory experiment, and a miniature reproduction."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from advlab.data import ArrayDataset
from advlab.errors import AttackConfigError, CheckpointError, DataError, InputError
from advlab.perturbation_learning import (PerturbationBudget, PerturbationDataset, SyntheticConfig,
                                          build_perturbation_dataset, next_labels, noise_control, paper_budget,
                                          run_synthetic, state_sha256, theory_prediction, train_and_test,
                                          unperturbed_control)
from advlab.perturbation_learning.synthetic import one_hidden_network
from advlab.training import TrainConfig

SHAPE = (1, 6, 6)


def _source(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def _images(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *SHAPE), generator=g).float() / 255  # on the uint8 grid like real images
    return x, torch.randint(0, 10, (n,), generator=g)


BUDGETS = [PerturbationBudget("linf", 0.1, 10), PerturbationBudget("l2", 0.5, 10), PerturbationBudget("l0", 4, 4)]


@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: b.norm)
@pytest.mark.parametrize("scenario", ["natural_rand", "natural_det"])
@pytest.mark.parametrize("storage", ["uint8", "float16", "float32"])
def test_natural_builders_mislabel_and_respect_the_budget(budget, scenario, storage):
    x, y = _images()
    ds = build_perturbation_dataset(_source(), scenario, budget, x=x, y=y, storage=storage, seed=3)
    assert bool((ds.targets != y).all()), "every target must be a wrong label"
    if scenario == "natural_det":
        assert torch.equal(ds.targets, next_labels(y, 10))
    assert torch.equal(ds.source_labels, y) and torch.equal(ds.source_index, torch.arange(len(x)))
    assert float(ds.x.min()) >= 0 and float(ds.x.max()) <= 1
    delta = (ds.x - x).flatten(1)
    slack = {"uint8": 1e-6, "float16": 1e-3, "float32": 1e-5}[storage]
    if budget.norm == "linf":
        assert float(delta.abs().max()) <= budget.eps + slack
    elif budget.norm == "l2":
        assert float(delta.norm(dim=1).max()) <= budget.eps + slack * 6
    else:
        changed = (delta.abs() > (2e-3 if storage == "float16" else 0)).sum(dim=1)
        assert int(changed.max()) <= budget.eps       # l0 counts changed pixels
    assert ds.provenance["norms"][budget.norm]["max"] <= budget.eps + slack * 6
    if storage == "uint8":
        assert torch.equal((ds.x * 255).round() / 255, ds.x)
    # the recorded fooling rate is that of the stored values
    pred = _source()(ds.x).argmax(1)
    assert torch.equal(pred, ds.source_pred)
    assert ds.provenance["fooling_rate"] == pytest.approx(float((pred == ds.targets).float().mean()))


def test_attack_actually_fools_the_source():
    from advlab.training import train_classifier
    data = _separable(1000, 0)
    src = _source()
    train_classifier(src, data.x, data.y, epochs=3, batch_size=50, lr=1e-2)
    src.eval()
    x, y = data.x[:128], data.y[:128]
    assert float((src(x).argmax(1) == y).float().mean()) > 0.95
    ds = build_perturbation_dataset(src, "natural_rand", PerturbationBudget("linf", 1.0, 20), x=x, y=y)
    assert ds.provenance["fooling_rate"] > 0.9
    per_class = ds.provenance["fooling_rate_per_target_class"]
    assert len(per_class) == 10 and all(0 <= v <= 1 for v in per_class)


def test_uniform_scenario_starts_from_noise_with_any_target():
    ds = build_perturbation_dataset(_source(), "uniform", PerturbationBudget("l2", 1.0, 5), n_noise=200,
                                    image_shape=SHAPE, seed=1)
    assert len(ds) == 200 and bool((ds.source_labels == -1).all()) and bool((ds.source_index == -1).all())
    assert ds.targets.unique().numel() == 10
    assert float(ds.x.min()) >= 0 and float(ds.x.max()) <= 1


def test_builders_are_deterministic_under_a_seed():
    x, y = _images()
    a = build_perturbation_dataset(_source(), "natural_rand", BUDGETS[0], x=x, y=y, seed=5)
    b = build_perturbation_dataset(_source(), "natural_rand", BUDGETS[0], x=x, y=y, seed=5)
    c = build_perturbation_dataset(_source(), "natural_rand", BUDGETS[0], x=x, y=y, seed=6)
    assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.targets, c.targets)


@pytest.mark.parametrize("storage", ["uint8", "float16", "float32"])
def test_provenance_round_trips(tmp_path, storage):
    x, y = _images()
    src = _source()
    ds = build_perturbation_dataset(src, "natural_det", BUDGETS[1], x=x, y=y, storage=storage, seed=2)
    path = ds.save(tmp_path / "d.safetensors")
    back = PerturbationDataset.load(path)
    assert torch.equal(back.x, ds.x), "stored values are exactly the ones measured"
    for k in ("targets", "source_labels", "source_index", "source_pred"):
        assert torch.equal(getattr(back, k), getattr(ds, k))
    assert back.provenance == json.loads(json.dumps(ds.provenance))
    p = back.provenance
    assert p["source_sha256"] == state_sha256(src) and p["seed"] == 2 and p["scenario"] == "natural_det"
    assert p["budget"] == {"norm": "l2", "eps": 0.5, "steps": 10, "step_size": None, "pixels_per_step": 1,
                           "linf_rule": "steepest", "loss": "ce"}
    assert p["storage"] == storage and "PGD" in p["attack"]


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError):
        PerturbationDataset.load(bad)
    from advlab.io import save_tensors
    save_tensors(tmp_path / "foreign.safetensors", {"x": torch.zeros(2, 3)})
    with pytest.raises(CheckpointError, match="not an advlab perturbation dataset"):
        PerturbationDataset.load(tmp_path / "foreign.safetensors")


def test_bad_inputs_get_clear_errors():
    x, y = _images()
    src = _source()
    with pytest.raises(DataError, match="scenario"):
        build_perturbation_dataset(src, "natural", BUDGETS[0], x=x, y=y)
    with pytest.raises(InputError, match="needs the source images"):
        build_perturbation_dataset(src, "natural_rand", BUDGETS[0])
    with pytest.raises(InputError, match="n_noise"):
        build_perturbation_dataset(src, "uniform", BUDGETS[0])
    with pytest.raises(InputError, match="true label"):
        build_perturbation_dataset(src, "natural_rand", BUDGETS[0], x=x, y=y, label_map=lambda yy, c, g: yy.clone())
    with pytest.raises(InputError, match="labels must lie"):
        build_perturbation_dataset(src, "natural_rand", BUDGETS[0], x=x, y=y + 10)
    with pytest.raises(InputError, match="outside the declared bounds"):
        build_perturbation_dataset(src, "natural_rand", BUDGETS[0], x=x * 2, y=y)
    with pytest.raises(DataError, match="uint8"):
        build_perturbation_dataset(src, "natural_rand", BUDGETS[0], x=x, y=y, bounds=(-1.0, 1.0))
    with pytest.raises(AttackConfigError):
        PerturbationBudget("l1", 1.0, 5)
    with pytest.raises(DataError):
        paper_budget("svhn", "l2")
    assert paper_budget("mnist", "Linf").eps == 0.3 and paper_budget("cifar10", "l0").eps == 150


def test_custom_label_map_is_used_and_recorded():
    x, y = _images()

    def swap_pairs(yy, c, g):
        return yy ^ 1
    ds = build_perturbation_dataset(_source(), "natural_rand", BUDGETS[0], x=x, y=y, label_map=swap_pairs)
    assert torch.equal(ds.targets, y ^ 1) and ds.provenance["label_map"] == "swap_pairs"


def _separable(n: int, seed: int) -> ArrayDataset:
    """Class c lights up pixel c: a task a small network learns in one epoch."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, *SHAPE, generator=g) * 0.2
    x.view(n, -1)[torch.arange(n), y] = 1.0
    return ArrayDataset(x, y)


def test_train_and_test_reports_last_best_and_agreement():
    train, test = _separable(600, 0), _separable(200, 1)
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=1e-2)
    model, res = train_and_test("sep", train, test, _source, cfg, source=_source(9))
    assert len(res.per_epoch_acc) == 3 and res.best_acc == max(res.per_epoch_acc)
    assert res.last_acc == pytest.approx(res.per_epoch_acc[-1]) and res.last_acc > 0.9
    assert 0 <= res.agreement <= 1 and res.n_train == 600 and res.best_epoch in (1, 2, 3)


def test_controls():
    x, y = _images(50)
    idx = torch.tensor([3, 1, 4])
    ctrl = unperturbed_control(x, idx, torch.tensor([7, 8, 9]))
    assert torch.equal(ctrl.x, x[idx]) and ctrl.y.tolist() == [7, 8, 9]
    noise = noise_control(100, SHAPE, 10, seed=0, device="cpu")
    assert noise.x.shape == (100, *SHAPE) and float(noise.x.min()) >= 0 and float(noise.x.max()) <= 1


def test_theory_prediction_closed_form():
    xt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    yt = torch.tensor([1.0, -1.0])
    x = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    assert theory_prediction(xt, yt, x).tolist() == [1.0, -1.0]
    assert theory_prediction(xt, yt, x, torch.tensor([1.0, 0.1])).tolist() == [1.0, 1.0]


def test_synthetic_defaults_follow_the_paper():
    assert SyntheticConfig(d=10000, norm="l2").budget_eps == pytest.approx(0.78)
    assert SyntheticConfig(d=10000, norm="linf").budget_eps == 0.03
    b = SyntheticConfig(d=10000, norm="l0", l0_steps=20).budget()
    assert b.eps == 500 and b.steps == 20 and b.pixels_per_step == 25
    with pytest.raises(DataError):
        SyntheticConfig(width=3)
    with pytest.raises(AttackConfigError):
        SyntheticConfig(norm="l1")
    with pytest.raises(AttackConfigError):
        SyntheticConfig(attack_loss="hinge")
    assert b.loss == "margin" and b.attack((-1.0, 1.0), 0).loss == "margin"


def test_synthetic_attack_spends_its_budget_where_ce_saturates():
    """A confident binary net: targeted CE reaches exactly 0 in float32 after a few l0 steps, so the
    lowest-loss iterate stops growing; the margin loss (the public code's exp(-y f) up to a monotone
    map) keeps every one of the k entries it may change."""
    torch.manual_seed(0)
    net = one_hidden_network(400, 40, 0.01)
    with torch.no_grad():
        net.hidden.weight.mul_(200.0)
    x = torch.rand(16, 400) * 2 - 1
    t = (net.score(x) < 0).long()   # the label the net does not give: every point needs a perturbation
    changed = {}
    for loss in ("ce", "margin"):
        adv = PerturbationBudget("l0", 40, 40, step_size=0.3, loss=loss).attack((-1.0, 1.0), 0)(net, x, 1 - t,
                                                                                                 targets=t)
        assert bool(adv.success.all())
        changed[loss] = float(((adv.x_adv - x) != 0).sum(1).float().mean())
    assert changed["margin"] == 40
    assert changed["ce"] < 30, changed


@pytest.mark.parametrize("norm", ["l2", "linf", "l0"])
def test_synthetic_experiment_learns_from_perturbations(norm):
    eps = {"l2": 1.0, "linf": 0.05, "l0": None}[norm]  # above the paper's d = 10,000 values, for a small d
    cfg = SyntheticConfig(d=1500, n=100, width=60, n_noise=200, norm=norm, eps=eps, train_steps=40, attack_steps=20,
                          l0_steps=10, seed=0)
    r = run_synthetic(cfg)
    assert r["source_acc"] == 1.0, "the source fits nearly orthogonal data"
    assert r["perturbation_train_acc"] > 0.95
    assert r["perturbation_acc"] > 0.7, "trained on perturbed noise, it classifies the original samples"
    assert abs(r["noise_only_acc"] - 0.5) < 0.2, "noise without perturbations carries nothing"
    assert r["theory_agreement"] > 0.8


@pytest.mark.mnist
def test_miniature_kumano_pipeline_resumes(tmp_path, monkeypatch, mnist_cache):
    from advlab.experiments.reproductions import kumano2024 as k
    monkeypatch.setitem(k.KUMANO_BUDGETS, "tiny", k.KumanoBudget(
        n_source=200, n_noise=200, steps=3, source_epochs=1, student_epochs=1, n_test=200, model="mlp",
        synth_d=(50, 200), synth_n_noise=(20, 60), synth_base_n_noise=60, synth_n=60, synth_width=40,
        synth_train_steps=20, synth_norms=("l2",), norms=("l2", "l0")))
    logs: list[str] = []
    r = k.run_kumano2024(tmp_path, "tiny", log=logs.append)
    keys = {f"{c['scenario']}/{c['norm']}" for c in r["cells"]}
    assert keys == {"natural_rand/l2", "natural_rand/l0", "natural_det/l2", "natural_det/l0", "uniform/l2",
                    "uniform/l0", "natural_rand/none", "natural_det/none", "uniform/none"}
    assert {row["id"] for row in r["rows"]} >= {"K1", "K2", "K3", "K4"}
    for row in r["rows"]:   # every row says which budget, device and minutes made it; misses say why
        assert row["source"].startswith("tiny budget, CPU"), row
        if row["id"] in ("K1", "K2", "K3"):
            assert "attack + student" in row["source"], row
        assert row.get("holds") is not False or row["why"], row
    for c in r["cells"]:
        assert 0 <= c["last_acc"] <= 1 and c["best_acc"] >= c["last_acc"] - 1e-9
    # the paper column holds the authors' own MNIST runs, for MNIST only
    by_key = {row["key"]: row for row in r["rows"] if row["id"] in ("K1", "K2")}
    assert by_key["natural_det/l2"]["paper"] == k.AUTHORS_MNIST["natural_det/l2"][0] == 0.386
    assert by_key["uniform/l0"]["paper"] == k.AUTHORS_MNIST["uniform/l0"][0]
    assert by_key["natural_rand/none"]["paper"] is None
    cifar_rows = k.finding_rows(r["table"], {}, [], dataset="cifar10")
    assert all(row["paper"] is None for row in cifar_rows if row["id"] == "K1")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["versions"]["torch"] and saved["budget"] == "tiny"
    from click.testing import CliRunner

    from advlab.cli import main
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "Paper vs advlab" in (tmp_path / "report.md").read_text() and (tmp_path / "report.html").exists()
    # a rerun finds every cell and dataset on disk and trains nothing
    logs.clear()
    r2 = k.run_kumano2024(tmp_path, "tiny", log=logs.append)
    assert r2["table"] == r["table"] and not any("trained in" in line for line in logs)
    # a rerun with another recipe in the same directory is refused, not mixed in
    from advlab.errors import RunDirError
    monkeypatch.setitem(k.KUMANO_BUDGETS, "tiny", dataclasses.replace(k.KUMANO_BUDGETS["tiny"], student_epochs=2))
    with pytest.raises(RunDirError, match="another recipe"):
        k.run_kumano2024(tmp_path, "tiny", log=logs.append)
    # with the cells gone, a stored dataset of another size is refused, not reused
    import shutil
    shutil.rmtree(tmp_path / "cells")
    monkeypatch.setitem(k.KUMANO_BUDGETS, "tiny", dataclasses.replace(k.KUMANO_BUDGETS["tiny"], n_source=150))
    with pytest.raises(RunDirError, match="n 200; this run needs n 150"):
        k.run_kumano2024(tmp_path, "tiny", log=logs.append)


def test_kumano_convnet_and_scaled_l0_steps():
    from advlab.attacks import SparseL0
    from advlab.models import build_model
    from advlab.threat import ThreatModel
    net = build_model("kumano_convnet", width=0.125).eval()
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in build_model("kumano_convnet").parameters()) == 1054122  # the paper's size
    with pytest.raises(AttackConfigError, match="step_rule"):
        SparseL0(ThreatModel("l0", 3), step_rule="bogus")
    x, y = _images(16)
    res = SparseL0(ThreatModel("l0", 3), steps=3, step_rule="scaled", early_stop=False)(_source(), x, y)
    assert int(((res.x_adv - x).flatten(1) != 0).sum(1).max()) <= 3


def test_kumano_students_learning_rate_per_scenario():
    from advlab.experiments.reproductions.kumano2024 import KUMANO_BUDGETS, student_lr
    cpu = KUMANO_BUDGETS["cpu"]
    assert student_lr(cpu, "natural_rand") == student_lr(cpu, "natural_det") == 0.1
    assert student_lr(cpu, "uniform") == cpu.lr == 0.05          # noise students keep the source's rate
    assert student_lr(KUMANO_BUDGETS["quick"], "natural_rand") == KUMANO_BUDGETS["quick"].lr

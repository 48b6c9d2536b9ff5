"""A miniature Goodfellow et al. 2015 reproduction (tiny models, a few hundred samples) end to end."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advlab.analysis.diagnostics import spearman
from advlab.cli import main
from advlab.errors import AdvlabError
from advlab.experiments.reproductions.wen2020 import compare_settings, layer_kinds


@pytest.mark.mnist
def test_goodfellow2015_miniature_pipeline(mnist_cache, tmp_path):
    out = tmp_path / "gf"
    res = CliRunner().invoke(main, ["reproduce", "goodfellow2015", "--budget", "tiny", "--out", str(out),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    ids = {row["id"] for row in r["rows"]}
    assert {"G1", "G2", "G4", "G5", "G7", "G8", "G9", "G10", "G11", "G12", "G13", "G14"} <= ids
    for row in r["rows"]:
        assert row["ours"] is not None, row["quantity"]
        assert row["source"].startswith("tiny budget, CPU"), row   # which budget, device and time made it
    assert "produced by" in (out / "report.md").read_text()
    assert r["versions"]["advlab"] and r["seeds"] == 1 and "per_seed" in r
    err = r["transfer"]["error"]
    assert len(err) == len(r["transfer"]["names"]) and all(0 <= v <= 1 for row in err for v in row)
    md = (out / "report.md").read_text()
    assert "Paper vs advlab" in md and "G13" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") == 4
    (out / "report.md").unlink()
    again = CliRunner().invoke(main, ["report", str(out)])
    assert again.exit_code == 0 and (out / "report.md").exists()
    # every measurement is a cell: without the trained models, a rerun reads them back and trains nothing
    import shutil
    shutil.rmtree(out / "models")
    again = CliRunner().invoke(main, ["reproduce", "goodfellow2015", "--budget", "tiny", "--out", str(out),
                                      "--device", "cpu"])
    assert again.exit_code == 0, again.output
    r2 = json.loads((out / "results.json").read_text())
    assert r2["rows"] == r["rows"] and r2["models"] == r["models"] and not (out / "models").exists()
    assert len(r2["reused_cells"]) == len(r["per_seed"]) + 3 and "read back" in (out / "report.md").read_text()


def test_goodfellow_follows_the_papers_unclipped_fgsm_and_objective():
    """The paper adds eps sign(grad) without clipping to [0, 1]; its FGSM objective is taken on the dropout
    cost; the FGSM-trained net may train longer (at_epochs); the plain nets' recipes are untouched."""
    from dataclasses import replace

    from advlab.experiments.reproductions.goodfellow2015 import BUDGETS, _fgsm, model_plan, paper_threat
    th = paper_threat(0.25)
    assert th.bounds[0] == -0.25 and th.bounds[1] == 1.25
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.zeros(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    assert _fgsm(model, x, y, 0.25).min() == -0.25, "unclipped: a black pixel can go below 0"
    assert _fgsm(model, x, y, 0.25, clip=True).min() == 0.0
    plan = model_plan(replace(BUDGETS["tiny"], at_epochs=3))
    assert plan["maxout_at"]["cfg"](0).epochs == 3 and plan["maxout"]["cfg"](0).epochs == 1
    assert plan["maxout_at"]["objective"][1]["craft_in_eval"] is False
    for name in ("maxout_at", "maxout_sign_noise", "maxout_uniform_noise"):
        assert tuple(plan[name]["threat"]["bounds"]) == (-0.25, 1.25)
    assert "bounds" not in plan["maxout"]["threat"]   # cached plain nets keep their recipe fingerprint


@pytest.mark.mnist
def test_committed_goodfellow_cpu_report_has_every_g_row(tmp_path):
    """Every G row but G3 (CIFAR-10) is in the committed cpu report; one a budget leaves untrained is a
    miss with its reason, never silently absent (issue 18)."""
    from pathlib import Path

    from advlab.experiments.reproductions.goodfellow2015 import paper_rows
    root = Path(__file__).resolve().parents[1] / "docs" / "results" / "goodfellow2015"
    r = json.loads((root / "results.json").read_text())
    rows = paper_rows(r)
    ids = {row["id"] for row in rows}
    assert {f"G{i}" for i in range(1, 15) if i != 3} <= ids, sorted(ids)
    for row in rows:
        if row.get("holds") is False:
            assert row.get("why"), row
    assert rows == r["rows"]   # the committed rows are this version's


def test_every_committed_miss_says_why():
    """Every committed reproduction report explains each check it misses (never 'no explanation')."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "docs" / "results"
    seen = 0
    for path in sorted(root.glob("*/results.json")):
        r = json.loads(path.read_text())
        for row in r.get("rows", []):
            if row.get("holds") is False:
                seen += 1
                assert row.get("why"), (path.parent.name, row["quantity"])
        if (path.parent / "report.md").exists() and r.get("rows"):
            assert "no explanation recorded" not in (path.parent / "report.md").read_text(), path.parent.name
    assert seen > 0


def test_wide_net_carries_g7_only_when_trained_as_long_as_the_paper():
    """G6's 1600-unit net: trained shorter (the cpu budget's wide_epochs), G7's 17.9% check stays on the
    240-unit net and the wide row says why; trained to the full recipe, the check moves to the wide net."""
    from copy import deepcopy
    from pathlib import Path

    from advlab.experiments.reproductions.goodfellow2015 import BUDGETS, model_plan, paper_rows
    plan = model_plan(BUDGETS["cpu"])
    assert plan["maxout1600"]["cfg"](0).epochs == 10 and plan["maxout1600_at"]["cfg"](0).epochs == 15
    assert plan["maxout1600"]["model"] == ("maxout_mlp", {"units": 1600})
    assert model_plan(BUDGETS["full"])["maxout1600_at"]["cfg"](0).epochs == BUDGETS["full"].at_epochs
    root = Path(__file__).resolve().parents[1] / "docs" / "results" / "goodfellow2015"
    r = json.loads((root / "results.json").read_text())
    r["models"].setdefault("maxout1600", deepcopy(r["models"]["maxout"]))
    r["models"].setdefault("maxout1600_at", deepcopy(r["models"]["maxout_at"]))
    for epochs, short in (([10, 15], True), (None, False)):
        r["budget_settings"].update(wide_units=1600, wide_epochs=epochs)
        rows = paper_rows(r)
        g7 = [row for row in rows if row["id"] == "G7" and "FGSM error" in row["quantity"]]
        narrow, wide = g7[0], g7[-1]
        assert wide["quantity"].startswith("1600-unit") and len([x for x in rows if x["id"] == "G6"]) == 2
        assert (narrow["holds"] is not None) == short and (wide["holds"] is None) == short
        assert ("10 naive and 15 FGSM-trained epochs" in wide.get("why", "")) == short


def test_wen2020_miniature_pipeline_and_analyze(mnist_cache, tmp_path):
    out = tmp_path / "wen"
    res = CliRunner().invoke(main, ["reproduce", "wen2020", "--budget", "tiny", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert [x["eps"] for x in r["runs"]] == [0.0, 0.1, 0.2, 0.3]
    assert {row["id"] for row in r["rows"]} == {"W1", "W2", "W3", "W4", "W5"}
    lip = [float(np.prod([v["largest_actual"] for v in x["layers"].values()])) for x in r["runs"]]
    assert r["findings"]["W3"]["lipschitz_bound"] == pytest.approx(spearman([0.0, 0.1, 0.2, 0.3], lip))
    sr = {n: spearman([0.0, 0.1, 0.2, 0.3], [x["layers"][n]["stable_rank"] for x in r["runs"]])
          for n in r["runs"][0]["layers"]}
    assert r["findings"]["W3"]["share_stable_rank_rises"] == pytest.approx(np.mean([v > 0 for v in sr.values()]))
    sd = [spearman([0.0, 0.1, 0.2, 0.3], [x["layers"][n]["std"] for x in r["runs"]]) for n in r["runs"][0]["layers"]]
    assert r["findings"]["W3"]["share_std_strong"] == pytest.approx(np.mean([v <= -0.8 for v in sd]))
    for x in r["runs"]:  # std / largest is the relative spread
        assert all(v["std"] == pytest.approx(v["spread"] * v["largest"]) for v in x["layers"].values())
    traj = r["trajectories"]["eps0.1-seed0"]
    assert any(k.startswith("diag_sigma_max/") for k in traj[0]) and "diag_confidence" in traj[0]
    assert (out / "report.html").exists()
    # W3 per kind of layer: the kinds are stored, and older results get the same ones from the architecture
    kinds = r["runs"][0]["layer_kinds"]
    assert kinds == {"0": "conv", "2": "conv", "5": "dense", "7": "dense"}
    assert layer_kinds({**r, "runs": [{k: v for k, v in x.items() if k != "layer_kinds"} for x in r["runs"]]}) == kinds
    largest = {n: spearman([0.0, 0.1, 0.2, 0.3], [x["layers"][n]["largest_actual"] for x in r["runs"]]) for n in kinds}
    by_kind = r["findings"]["W3"]["by_kind"]
    assert by_kind["conv"]["n"] == 2 and by_kind["dense"]["n"] == 2
    assert by_kind["conv"]["largest_falls"] == np.mean([largest[n] < 0 for n in ("0", "2")])
    assert any(row["quantity"].startswith("convolutions (2)") for row in r["rows"])
    # several settings side by side
    table = tmp_path / "compare.md"
    res = CliRunner().invoke(main, ["report", str(out), str(out), "--compare", str(table)])
    assert res.exit_code == 0, res.output
    lines = table.read_text().splitlines()
    assert len(lines) == 4 and lines[2].startswith("| wen |") and " of 2 |" in lines[2]


def test_compare_refuses_other_papers_and_empty_dirs(tmp_path):
    other = tmp_path / "k"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"paper": "kumano2024"}))
    res = CliRunner().invoke(main, ["report", str(other), "--compare", str(tmp_path / "c.md")])
    assert res.exit_code == 2 and "wen2020 runs only" in res.output
    empty = tmp_path / "e"
    empty.mkdir()
    res = CliRunner().invoke(main, ["report", str(empty)])
    assert res.exit_code == 2 and "holds no finished run" in res.output
    with pytest.raises(AdvlabError, match="not wen2020"):
        compare_settings([other])
    with pytest.raises(AdvlabError, match="at least one"):
        compare_settings([])


@pytest.mark.mnist
def test_analyze_cli_on_a_run(mnist_cache, tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", "mnist_standard", "--out", str(run), "--set", "data.train_samples=300",
                                    "--set", "eval.samples=50", "--set", "eval.attacks=[]", "--set",
                                    'eval.suite="none"', "--set", 'model.name="fast_mnist_cnn"'])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["analyze", str(run), "--n", "50"])
    assert res.exit_code == 0, res.output
    a = json.loads((run / "analysis.json").read_text())
    assert len(a["layers"]) == 4 and a["lipschitz_upper_bound"] > 0 and "instance_margin" in a["margins"]
    bare = CliRunner().invoke(main, ["analyze", str(run / "model.safetensors"), "--model", "fast_mnist_cnn",
                                     "--n", "30", "--out", str(tmp_path / "a.json")])
    assert bare.exit_code == 0, bare.output
    assert json.loads((tmp_path / "a.json").read_text())["layers"].keys() == a["layers"].keys()
    no_name = CliRunner().invoke(main, ["analyze", str(run / "model.safetensors")])
    assert no_name.exit_code != 0 and "--model" in no_name.output


@pytest.mark.parametrize("paper", ["goodfellow2015", "kumano2024"])
@pytest.mark.parametrize("budget", ["standard", "standard-bn", "standard-mlp", "standard-mlp-sgd"])
def test_other_papers_refuse_wen_budgets(paper, budget, tmp_path):
    res = CliRunner().invoke(main, ["reproduce", paper, "--budget", budget, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and f"{paper} on mnist has budgets" in res.output and f"not '{budget}'" in res.output
    assert not (tmp_path / "r").exists()


def test_reproductions_are_one_registry():
    """advlab reproduce reads the registry: each paper is one module with its budgets and datasets."""
    from advlab.experiments.reproductions.registry import reproduction, reproductions
    table = reproductions()
    assert list(table) == ["goodfellow2015", "wen2020", "kumano2024"]
    assert "standard-bn" in table["wen2020"].budgets("mnist") and table["goodfellow2015"].datasets == ("mnist",)
    with pytest.raises(Exception, match="unknown reproduction 'x'"):
        reproduction("x")


def test_every_wen_budget_is_accepted_by_the_cli():
    from advlab.cli import _budget_names
    from advlab.experiments.reproductions.wen2020 import WEN_BUDGETS, WEN_CIFAR10_BUDGETS
    assert set(WEN_BUDGETS) | set(WEN_CIFAR10_BUDGETS) <= set(_budget_names())


@pytest.mark.parametrize("twin", ["standard-mlp", "standard-bn", "standard-resnet"])
def test_sgd_budgets_change_only_the_optimizer_and_length(twin):
    """The *-sgd budgets are their Adam twins with the paper's optimizer (SGD, momentum, weight decay), each
    trained as long as it needs to fit."""
    from dataclasses import replace
    from advlab.experiments.reproductions.wen2020 import WEN_BUDGETS
    adam, sgd = WEN_BUDGETS[twin], WEN_BUDGETS[twin + "-sgd"]
    assert (sgd.optimizer, sgd.momentum, sgd.weight_decay) == ("sgd", 0.9, 5e-4)
    assert replace(sgd, optimizer=adam.optimizer, lr=adam.lr, momentum=adam.momentum,
                   weight_decay=adam.weight_decay, epochs=adam.epochs) == adam


def test_standard_bn_budget_is_the_standard_recipe_on_the_batchnorm_cnn():
    from advlab.experiments.reproductions.wen2020 import WEN_BUDGETS
    from advlab.models import build_model
    std, bn = WEN_BUDGETS["standard"], WEN_BUDGETS["standard-bn"]
    assert (bn.epochs, bn.pgd_steps, bn.eps_ramp_epochs, bn.schedule, bn.n_eval) == \
        (std.epochs, std.pgd_steps, std.eps_ramp_epochs, std.schedule, std.n_eval)
    model = build_model(bn.model, **dict(bn.model_args))
    assert sum(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in model.modules()) == 3


def test_wen2020_on_cifar10_files(tmp_path, monkeypatch):
    """The CIFAR-10 path end to end on small files in the binary CIFAR-10 format (random images: the
    pipeline, not the findings): 32x32x3 inputs, eps in units of 1/255, W1's robust accuracy at 8/255."""
    data = tmp_path / "cifar"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        x, y = rng.integers(0, 256, (40, 3072)).astype(np.uint8), rng.integers(0, 10, 40).astype(np.uint8)
        (data / f"{name}.bin").write_bytes(np.concatenate([y[:, None], x], 1).tobytes())
    monkeypatch.setenv("ADVLAB_CIFAR10", str(data))
    out = tmp_path / "wen"
    res = CliRunner().invoke(main, ["reproduce", "wen2020", "--dataset", "cifar10", "--budget", "tiny",
                                    "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["dataset"] == "cifar10" and r["budget_settings"]["model"] == "small_cnn"
    assert [round(x["eps"] * 255) for x in r["runs"]] == [0, 4, 8, 16]
    assert all(x["ref_eps"] == pytest.approx(8 / 255) and 0 <= x["robust_acc_ref"] <= 1 for x in r["runs"])
    assert r["runs"][2]["robust_acc_ref"] == r["runs"][2]["robust_acc_own_eps"]  # its own eps is the reference
    assert any("8/255" in row["quantity"] or "0.03137" in row["quantity"] for row in r["rows"])
    assert (out / "report.md").read_text().startswith("# Wen") and "CIFAR-10" in (out / "report.md").read_text()
    bad = CliRunner().invoke(main, ["reproduce", "wen2020", "--dataset", "cifar10", "--budget", "standard-bn"])
    assert bad.exit_code == 2 and "has budgets" in bad.output

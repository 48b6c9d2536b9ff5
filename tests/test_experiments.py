"""Experiment files: schema errors name the key; a miniature run writes a complete run directory."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from advlab.cli import main
from advlab.experiments import ExperimentError, RunDir, list_runs, load_spec, parse_spec

GOOD = {"name": "t", "model": {"name": "mlp", "args": {"hidden": [32]}},
        "train": {"objective": "fgsm_mixture", "threat": {"norm": "linf", "eps": 0.1}, "epochs": 1}}


def test_valid_spec_parses():
    spec = parse_spec(GOOD)
    assert spec.train.threat.norm == "linf" and spec.model.args == {"hidden": [32]}


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d["train"].update(lr="fast"), "train.lr"),
    (lambda d: d["train"].update(learning_rate=0.1), "train.learning_rate: unknown key"),
    (lambda d: d["train"].update(objective="magic"), "train.objective"),
    (lambda d: d["train"]["threat"].update(eps=-1), "train.threat.eps"),
    (lambda d: d["train"]["threat"].update(norm="l3"), "train.threat.norm"),
    (lambda d: d.pop("model"), "model: Field required"),
    (lambda d: d["train"].pop("threat"), "train.threat: objective 'fgsm_mixture' needs a threat model"),
    (lambda d: d.update(eval={"attacks": [{"name": "pgd"}]}), "eval.attacks.0.threat"),
    (lambda d: d.update(data={"name": "imagenet"}), "data.name"),
    (lambda d: d.update(data={"augment": {"crop": -1}}), "data.augment.crop"),
    (lambda d: d.update(data={"augment": {"crop": 2.5}}), "data.augment.crop"),
    (lambda d: d.update(data={"augment": {"flip": "yes"}}), "data.augment.flip"),
    (lambda d: d.update(data={"augment": {"rotate": 10}}), "data.augment.rotate: unknown key"),
    (lambda d: d.update(data={"holdout": 0}), "data.holdout"),
])
def test_malformed_spec_names_the_key(mutate, needle):
    d = json.loads(json.dumps(GOOD))
    mutate(d)
    with pytest.raises(ExperimentError) as e:
        parse_spec(d, "exp.toml")
    assert needle in str(e.value), str(e.value)


def test_bad_toml_is_reported(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("name = 't'\n[model\nname='mlp'")
    with pytest.raises(ExperimentError, match="not valid TOML"):
        load_spec(f)


def test_builtin_recipes_are_valid():
    from importlib.resources import files
    recipes = [p for p in (files("advlab.experiments") / "recipes").iterdir() if p.name.endswith(".toml")]
    assert recipes
    for p in recipes:
        load_spec(str(p))


@pytest.mark.mnist
def test_miniature_run_and_cli(mnist_cache, tmp_path):
    out = tmp_path / "run"
    args = ["run", "mnist_fgsm_rs", "--out", str(out), "--set", "data.train_samples=600", "--set", "train.epochs=1",
            "--set", "eval.samples=100", "--set", "data.val_samples=100", "--set", "model.name=\"mlp\"",
            "--set", "eval.suite=\"fast\"", "--set", "eval.threat={norm=\"linf\", eps=0.3}"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    run = RunDir(out)
    for f in ("config.toml", "env.json", "metrics.jsonl", "results.json", "samples.npz", "model.safetensors",
              "checkpoint.safetensors"):
        assert (out / f).exists(), f
    results = run.results()
    assert results["n_eval"] == 100 and 0 <= results["attacks"]["pgd20"]["robust_accuracy"] <= 1
    assert results["worst_case"]["robust_accuracy"] <= results["attacks"]["pgd20"]["robust_accuracy"] + 1e-9
    with np.load(out / "samples.npz") as z:
        assert z["labels"].shape == (100,) and z["success__pgd20"].dtype == bool
    assert len(run.metrics()) == 1
    assert load_spec(out / "config.toml").data.train_samples == 600
    # resume: training is finished, evaluation state is reused, same numbers
    again = CliRunner().invoke(main, args + ["--resume"])
    assert again.exit_code == 0, again.output
    assert RunDir(out).results()["worst_case"]["robust_accuracy"] == results["worst_case"]["robust_accuracy"]
    assert list_runs(tmp_path)[0]["run"] == "run"
    listed = CliRunner().invoke(main, ["runs", "--root", str(tmp_path)])
    assert "run" in listed.output and "worst case" in listed.output
    atk = CliRunner().invoke(main, ["attack", str(out), "--attack", "fgsm", "--eps", "0.3", "--n", "50"])
    assert atk.exit_code == 0, atk.output
    assert 0 <= json.loads(atk.output)["robust_accuracy"] <= 1


@pytest.mark.mnist
def test_early_stopping_then_retrain_on_all(mnist_cache, tmp_path):
    from advlab.experiments import run_experiment
    spec = parse_spec({
        "name": "g6-mini", "model": {"name": "mlp", "args": {"hidden": [16]}},
        "data": {"name": "mnist", "train_split": "train_split", "val_split": "valid", "train_samples": 300,
                 "val_samples": 100, "test_samples": 100},
        "train": {"objective": "fgsm_mixture", "threat": {"norm": "linf", "eps": 0.25}, "epochs": 4,
                  "lr": 0.05, "batch_size": 50, "early_stopping_patience": 2, "monitor": "val_adv_error",
                  "retrain_on_all": True, "diagnostics": True}})
    run = RunDir(tmp_path / "run")
    results = run_experiment(spec, run, log=lambda s: None)
    phases = [r.get("phase") for r in run.metrics()]
    n_retrain = phases.count("retrain_on_all")
    assert n_retrain == results["train"]["retrained_on_all_epochs"] >= 1
    assert "val_adv_error" in run.metrics()[0]
    assert any(k.startswith("diag_sigma_max/") for k in run.metrics()[0])


@pytest.mark.mnist
def test_torchrun_two_processes_match_one_process(mnist_cache, tmp_path):
    """`torchrun --nproc_per_node 2 -m advlab run ...` on CPU (gloo): DDP training, sharded evaluation,
    one run directory written by rank 0, with the numbers of the same command in one process."""
    import os
    import shutil
    import subprocess
    import sys
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.fail("torchrun is not installed next to this python")
    common = ["run", "mnist_standard", "--device", "cpu", "--set", "data.train_samples=512",
              "--set", "train.epochs=1", "--set", "train.batch_size=64", "--set", "eval.samples=64",
              "--set", "data.val_samples=64", "--set", "model.name=\"mlp\"", "--set", "eval.suite=\"fast\"",
              "--set", "eval.threat={norm=\"linf\", eps=0.1}"]
    single = tmp_path / "single"
    res = CliRunner().invoke(main, common + ["--out", str(single)])
    assert res.exit_code == 0, res.output
    multi = tmp_path / "multi"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2",
                           "--master_port", str(29500 + os.getpid() % 1000), "-m", "advlab"] + common
                          + ["--out", str(multi)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = RunDir(single).results(), RunDir(multi).results()
    assert b["clean_accuracy"] == pytest.approx(a["clean_accuracy"], abs=0.02)
    assert b["worst_case"]["robust_accuracy"] == pytest.approx(a["worst_case"]["robust_accuracy"], abs=0.05)
    assert len(RunDir(multi).metrics()) == 1  # one writer
    assert json.loads((multi / "env.json").read_text())["world_size"] == 2


@pytest.mark.mnist
def test_gpu_trades_recipe_runs_in_miniature(mnist_cache, tmp_path):
    """The #7 MNIST recipe is sized for a GPU; here its pipeline (TRADES, eps ramp, weight averaging, the
    held-out validation split, the fast path resolved for the CPU) runs on a few hundred images."""
    out = tmp_path / "trades"
    res = CliRunner().invoke(main, [
        "run", "mnist_trades_gpu", "--out", str(out), "--device", "cpu", "--set", "data.train_samples=300",
        "--set", "train.epochs=2", "--set", "train.eps_ramp_epochs=1", "--set", "data.val_samples=100",
        "--set", "train.objective_args={beta=6.0, steps=2, step_size=0.15}", "--set", "model.name=\"mlp\"",
        "--set", "eval.samples=50", "--set", "eval.suite=\"fast\""])
    assert res.exit_code == 0, res.output
    spec = load_spec(out / "config.toml")
    assert spec.train.objective == "trades" and spec.train.ema_decay == 0.999 and spec.data.val_split == "valid"
    results = RunDir(out).results()
    assert results["n_eval"] == 50 and len(RunDir(out).metrics()) == 2
    assert results["worst_case"]["robust_accuracy"] <= results["attacks"]["pgd40"]["robust_accuracy"] + 1e-9

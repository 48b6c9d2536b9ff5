"""The field's CIFAR-10 recipes (PGD-AT on PreActResNet-18 after Rice et al. 2020, TRADES on WRN-34-10,
FGSM-RS after Wong et al. 2020) run end to end in miniature, through the CLI, on small files in the
CIFAR-10 binary format that the test writes. Full runs need a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from advlab.experiments import load_spec

MINIATURE = {  # each recipe's own settings stay; only sizes shrink
    "cifar10_pgd_at_rice": ["train.objective_args={steps=2, step_size=0.0157}", "train.epochs=2"],
    "cifar10_trades_wrn34": ["model.args={depth=10, widen=1}", "train.objective_args={beta=6.0, steps=2}",
                             "train.epochs=2"],
    "cifar10_fgsm_rs_wong": ["train.epochs=1"],
}


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """CIFAR-10's binary layout (data_batch_1..5.bin, test_batch.bin: label byte + 3,072 pixels) with
    images whose class is a colour, so that a couple of epochs learn something."""
    root = tmp_path_factory.mktemp("cifar-10-batches-bin")
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 24) for i in range(1, 6)] + [("test_batch", 40)]:
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 80, (n, 3, 32, 32)).astype(np.uint8)
        x[np.arange(n), y % 3] += (40 + 17 * y).astype(np.uint8)[:, None, None]
        (root / f"{name}.bin").write_bytes(np.concatenate([y[:, None], x.reshape(n, -1)], 1).tobytes())
    return root


@pytest.mark.parametrize("recipe", list(MINIATURE))
def test_cifar_recipe_runs_end_to_end_in_miniature(cifar_dir, tmp_path, recipe):
    out = tmp_path / recipe
    sets = [f"data.root=\"{cifar_dir}\"", "data.val_samples=20", "train.batch_size=50", "eval.samples=8",
            "eval.suite=\"fast\"", "eval.curve_samples=8", "data.holdout=20", *MINIATURE[recipe]]
    cmd = [sys.executable, "-m", "advlab", "run", recipe, "--out", str(out), "--device", "cpu"]
    for s in sets:
        cmd += ["--set", s]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "ADVLAB_QUIET": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    spec = load_spec(out / "config.toml")
    assert spec.data.augment.crop == 4 and spec.data.augment.flip, "the recipe trains with crop and flip"
    results = json.loads((out / "results.json").read_text())
    assert results["n_eval"] == 8 and 0 <= results["clean_accuracy"] <= 1
    assert results["worst_case"]["robust_accuracy"] <= results["clean_accuracy"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) >= 1 and all(np.isfinite(m["train_loss"]) for m in metrics)
    if recipe == "cifar10_pgd_at_rice":
        assert "val_adv_error" in metrics[0], "early stopping watches PGD accuracy on the held-out images"

"""benchmarks/gpu_run.sh and gpu_mnist_record.sh are checked on the CPU (tiny sizes) before any device time
is spent on them: every step runs and writes its JSON with the fields that benchmarks/RESULTS.md quotes."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _smoke(script: str, out: Path) -> str:
    """Run benchmarks/SCRIPT.sh at its tiny CPU sizes into `out`; its log, after checking it exited 0."""
    if shutil.which("timeout") is None:
        pytest.skip("needs coreutils timeout")
    env = {**os.environ, "GPU_RUN_SMOKE": "1", "OUT": str(out)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / f"{script}.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    log = (out / f"{script}.log").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    return log


@pytest.mark.mnist
def test_gpu_run_script_smoke_on_cpu(tmp_path, mnist_cache):
    pytest.importorskip("torchattacks")
    pytest.importorskip("pyautoattack")
    log = _smoke("gpu_run", tmp_path)
    for step in ("attacks", "train", "checks"):
        assert f"== {step}: exit 0" in log, log
    attacks = json.loads((tmp_path / "attacks.json").read_text())
    row = attacks["rows"][0]
    assert row["attack"] == "pgd10" and row["advlab_images_per_s"] > 0 and "speedup_vs_torchattacks" in row
    train = json.loads((tmp_path / "train.json").read_text())
    assert {r["objective"] for r in train["rows"]} >= {"pgd_at", "fgsm_rs"}
    bf16 = json.loads((tmp_path / "bf16.json").read_text())
    assert 0.0 <= bf16["robust_accuracy_fp32"] <= 1.0 and "difference_pt" in bf16
    graphs = json.loads((tmp_path / "graphs.json").read_text())
    for path in ("fp32", "fast_path"):   # on a CPU the fixed-shape loop runs eagerly: the same points
        assert graphs[path]["no_early_stop_max_abs_diff"] == 0.0, graphs
        assert graphs[path]["cuda_graphs"]["robust_accuracy"] <= graphs[path]["eager"]["robust_accuracy"]
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert [r["impl"].split()[0] for r in suite["rows"]] == ["advlab", "pyautoattack"]
    assert json.loads((tmp_path / "env.json").read_text())["torch"]


@pytest.mark.mnist
def test_gpu_mnist_record_script_smoke_on_cpu(tmp_path, mnist_cache):
    """benchmarks/gpu_mnist_record.sh trains and evaluates the record recipe (tiny sizes on the CPU) and
    brings back the run directory, the exact command and a summary with the numbers RESULTS.md quotes."""
    _smoke("gpu_mnist_record", tmp_path)
    assert "run mnist_trades_gpu" in (tmp_path / "command.txt").read_text()
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["finished"] and record["n_eval"] == 16 and record["train_seconds"] > 0
    assert 0.0 <= record["robust_accuracy"] <= record["clean_accuracy"] <= 1.0
    results = json.loads((tmp_path / "mnist_trades_gpu" / "results.json").read_text())
    assert results["worst_case"]["suite"] == "standard"

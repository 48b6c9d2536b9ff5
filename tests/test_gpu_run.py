"""benchmarks/gpu_run.sh is checked on the CPU (tiny sizes) before any device time is spent on it:
every step runs and writes its JSON with the fields that benchmarks/RESULTS.md quotes."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.mnist
def test_gpu_run_script_smoke_on_cpu(tmp_path, mnist_cache):
    pytest.importorskip("torchattacks")
    pytest.importorskip("pyautoattack")
    if shutil.which("timeout") is None:
        pytest.skip("needs coreutils timeout")
    env = {**os.environ, "GPU_RUN_SMOKE": "1", "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    log = (tmp_path / "gpu_run.log").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
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

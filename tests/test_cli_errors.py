"""Every predictable mistake on the command line ends in one line on stderr, no traceback, and the
right exit code (2 usage, 1 runtime), run as a user would: `advlab` as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ADVLAB = [sys.executable, "-m", "advlab"]
GOOD = """name = "tiny"
device = "cpu"
[data]
name = "digits"
[model]
name = "mlp"
args = { in_features = 64, hidden = [32] }
[train]
epochs = 1
"""


def advlab(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "ADVLAB_DEBUG"}
    e.update({"ADVLAB_QUIET": "1", **(env or {})})
    return subprocess.run([*ADVLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=e)


def assert_one_line(res: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("advlab"), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "good.toml").write_text(GOOD)
    (d / "section.toml").write_text(GOOD.replace("[model]", "[modell]"))
    (d / "key.toml").write_text(GOOD.replace("epochs = 1", "epochs = 1\nepoch = 3"))
    (d / "value.toml").write_text(GOOD.replace("epochs = 1", "epochs = 1\nlr = \"fast\""))
    (d / "syntax.toml").write_text(GOOD.replace("[train]", "[train"))
    (d / "model.toml").write_text(GOOD.replace('name = "mlp"', 'name = "resnet9000"'))
    (d / "notarun").mkdir()
    (d / "plain.txt").write_text("hello")
    return d


FILE_CASES = {
    "unknown section": (["run", "section.toml"], 2, ["modell", "unknown key"]),
    "unknown key": (["run", "key.toml"], 2, ["train.epoch", "unknown key"]),
    "bad value": (["run", "value.toml"], 2, ["train.lr"]),
    "TOML syntax": (["run", "syntax.toml"], 2, ["not valid TOML"]),
    "bad --set path": (["run", "good.toml", "--set", "train.epochz=2"], 2, ["--set train.epochz=2", "unknown key"]),
    "bad --set value": (["run", "good.toml", "--set", "train.lr=-1"], 2, ["--set train.lr=-1"]),
    "--set without =": (["run", "good.toml", "--set", "train.lr"], 2, ["KEY=VALUE"]),
    "unknown model": (["run", "model.toml"], 2, ["resnet9000", "available"]),
    "--device gpu": (["run", "good.toml", "--device", "gpu"], 2, ["gpu", "cpu"]),
    "non-run dir to attack": (["attack", "notarun", "--eps", "0.1"], 2, ["not a finished advlab run"]),
    "non-run dir to eval": (["eval", "notarun", "--eps", "0.1"], 2, ["not a finished advlab run"]),
    "non-run dir to analyze": (["analyze", "notarun"], 2, ["not a finished advlab run"]),
    "file to attack": (["attack", "plain.txt", "--eps", "0.1"], 2, ["plain.txt"]),
    "file to eval": (["eval", "plain.txt", "--eps", "0.1"], 2, ["plain.txt"]),
    "file to analyze": (["analyze", "plain.txt", "--model", "mlp"], 1, ["plain.txt"]),
    "--norm l3": (["eval", "notarun", "--norm", "l3", "--eps", "0.1"], 2, ["l3"]),
    "--seeds 0": (["reproduce", "goodfellow2015", "--seeds", "0"], 2, ["--seeds"]),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_cli_error_is_one_line(files, case):
    args, code, needles = FILE_CASES[case]
    assert_one_line(advlab(*args, cwd=files), code, *needles)


def test_failed_start_leaves_no_directory(files):
    for toml, extra in (("model.toml", []), ("good.toml", ["--device", "gpu"]), ("good.toml", ["--set", "x=1"])):
        out = files / f"never-{toml}-{len(extra)}"
        res = advlab("run", toml, "--out", str(out), *extra, cwd=files)
        assert res.returncode == 2 and not out.exists(), res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda(files):
    out = files / "cuda-run"
    res = advlab("run", "good.toml", "--device", "cuda", "--out", str(out), cwd=files)
    assert_one_line(res, 2, "CUDA is not available", "--device cpu")
    assert not out.exists()


@pytest.fixture(scope="module")
def finished_run(files):
    out = files / "run-ok"
    res = advlab("run", "good.toml", "--out", str(out), cwd=files)
    assert res.returncode == 0, res.stderr
    return out


def test_eps_and_arg_errors(files, finished_run):
    run = str(finished_run)
    assert_one_line(advlab("eval", run, "--eps", "-1", cwd=files), 2, "eps must be >= 0")
    assert_one_line(advlab("attack", run, "--eps", "0.1", "--arg", "steps", cwd=files), 2, "KEY=VALUE")
    assert_one_line(advlab("attack", run, "--eps", "0.1", "--arg", "stpes=40", cwd=files), 2, "stpes", "steps")
    assert_one_line(advlab("attack", run, "--eps", "3", cwd=files), 2, "larger than the input range")


def test_existing_run_is_refused_without_resume(files, finished_run):
    before = (finished_run / "results.json").read_bytes()
    res = advlab("run", "good.toml", "--out", str(finished_run), "--set", "train.lr=0.003", cwd=files)
    assert_one_line(res, 2, "already holds a run", "--resume")
    res = advlab("run", "good.toml", "--out", str(finished_run), "--resume", "--set", "train.lr=0.003", cwd=files)
    assert_one_line(res, 2, "train.lr")
    assert (finished_run / "results.json").read_bytes() == before


def test_debug_shows_the_traceback(files):
    res = advlab("--debug", "run", "model.toml", cwd=files)
    assert res.returncode != 0 and "Traceback" in res.stderr
    res = advlab("run", "model.toml", cwd=files, env={"ADVLAB_DEBUG": "1"})
    assert "Traceback" in res.stderr


def test_stale_results_are_refused_marked_and_recomputed(files, finished_run, tmp_path):
    """The issue's case: a run's model replaced (retrained elsewhere) must not inherit the old model's
    worst case: `eval` refuses the old state, `runs` marks the old files stale, --restart recomputes."""
    import json
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    res = advlab("eval", str(run), "--eps", "0.1", "--suite", "fast", "--n", "50", cwd=files)
    assert res.returncode == 0, res.stderr
    old = json.loads(res.stdout)
    other = files / "run-other"
    assert advlab("run", "good.toml", "--out", str(other), "--set", "seed=5", "--set", "train.lr=0.5",
                  cwd=files).returncode == 0
    shutil.copy(other / "model.safetensors", run / "model.safetensors")
    listing = advlab("runs", "--root", str(tmp_path), cwd=files).stdout
    assert "STALE" in listing and "eval_fast-linf-0.1-50.json" in listing and "results.json" in listing
    assert_one_line(advlab("eval", str(run), "--eps", "0.1", "--suite", "fast", "--n", "50", cwd=files),
                    1, "another evaluation", "model", "--restart")
    res = advlab("eval", str(run), "--eps", "0.1", "--suite", "fast", "--n", "50", "--restart", cwd=files)
    assert res.returncode == 0, res.stderr
    new = json.loads(res.stdout)
    fresh = advlab("eval", str(other), "--eps", "0.1", "--suite", "fast", "--n", "50", cwd=files)
    assert json.loads(fresh.stdout)["robust_accuracy"] == new["robust_accuracy"]
    assert new["model_sha256"] != old["model_sha256"]
    listing = advlab("runs", "--root", str(tmp_path), cwd=files).stdout
    assert "eval_fast" not in listing.split("STALE")[-1] and "results.json" in listing


def test_runs_lists_failed_and_unfinished_runs(files, tmp_path):
    import json
    good = files / "run-ok"
    assert good.exists() or advlab("run", "good.toml", "--out", str(good), cwd=files).returncode == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text("name = 'x'")
    (broken / "status.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: boom"}))
    half = tmp_path / "half"
    half.mkdir()
    (half / "checkpoint.safetensors").write_bytes(b"")
    listing = advlab("runs", "--root", str(tmp_path), cwd=files).stdout
    assert "failed: RuntimeError: boom" in listing and "half" in listing and "unfinished" in listing


def test_reports_state_what_was_run(files, finished_run):
    """An ordinary run's report and a reproduction's: settings beside each table, pt differences,
    titled and captioned figures, the verdict summary; `advlab report` accepts both kinds."""
    import re
    md = (finished_run / "report.md").read_text()
    assert "## Settings" in md and "## Robustness per attack" in md
    assert re.search(r"Evaluated on \d+ test points, seed 0", md)
    res = advlab("report", str(finished_run), cwd=files)
    assert res.returncode == 0, res.stderr
    from advlab.experiments.report import write_report
    rows = [{"id": "X1", "quantity": "error", "paper": 0.9, "ours": 0.85, "check": ">= 0.8", "holds": True},
            {"id": "X2", "quantity": "error", "paper": 0.1, "ours": 0.2, "check": "<= 0.15", "holds": False}]
    out = files / "rep"
    out.mkdir(exist_ok=True)
    md_path, html_path = write_report(out, "T", "intro", rows, [("S", "text")],
                                      {"f": lambda fig: fig.add_subplot(111).plot([0, 1])}, {},
                                      setting="Threat: linf eps 0.3, 1000 test points, 2 seeds.")
    md = md_path.read_text()
    assert "Threat: linf eps 0.3, 1000 test points, 2 seeds." in md
    assert "-5.00 pt" in md and "+10.00 pt" in md
    assert "1 of 2 checks hold; misses: X2" in md
    assert re.search(r"\*Figure 1\. .+\*", md) and "<figcaption>Figure 1." in html_path.read_text()

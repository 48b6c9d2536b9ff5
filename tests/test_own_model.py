"""Evaluate your own model: a class in a user's file, weights saved with plain torch.save, data in an
npz; a pickle that asks to run code is refused and runs nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from advlab.errors import CheckpointError
from advlab.models.loading import load_model, read_state_dict

NET = """
import torch
from torch import nn
from torch import nn

class Net(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)
"""


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('ADVLAB_EVIL_MARK', '/tmp/advlab-evil')}",))


@pytest.fixture
def user_files(tmp_path):
    (tmp_path / "mynet.py").write_text(NET)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib
        mod = importlib.import_module("mynet")
        importlib.reload(mod)
        torch.manual_seed(0)
        net = mod.Net()
        torch.save(net.state_dict(), tmp_path / "w.pt")
        torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ddp.pt")
    finally:
        sys.path.remove(str(tmp_path))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 8, 8, 1), dtype=np.uint8)   # NHWC uint8
    with torch.no_grad():
        y = net(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)).argmax(1).numpy()
    np.savez(tmp_path / "test.npz", x=x, y=y)
    return tmp_path


def test_cli_evaluates_a_users_model(user_files):
    env = {**os.environ, "ADVLAB_QUIET": "1"}
    res = subprocess.run([sys.executable, "-m", "advlab", "eval", "--model", "mynet.py:Net", "--weights", "w.pt",
                          "--data", "test.npz", "--eps", "0.1", "--suite", "fast", "--n", "200"],
                         cwd=user_files, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["n_samples"] == 200 and out["clean_accuracy"] == 1.0 and out["robust_accuracy"] < 1.0


def test_python_api_in_three_lines(user_files, monkeypatch):
    monkeypatch.chdir(user_files)
    import advlab
    model = advlab.load_model("mynet.py:Net", weights="ddp.pt")      # module. prefixes and state_dict key
    data = advlab.data.load("test.npz")
    res = advlab.evaluate_robustness(model, (data.x, data.y), advlab.ThreatModel("linf", 0.1), suite="fast")
    assert res.clean_accuracy == 1.0


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("ADVLAB_EVIL_MARK", str(mark))
    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(tmp_path / "evil.pt")
    assert not mark.exists()


def test_missing_and_unexpected_keys_are_listed(user_files):
    sd = torch.load(user_files / "w.pt", weights_only=True)
    sd["extra.weight"] = sd.pop("body.1.weight")
    torch.save(sd, user_files / "bad.pt")
    with pytest.raises(CheckpointError, match="missing keys body.1.weight; unexpected keys extra.weight"):
        load_model(str(user_files / "mynet.py") + ":Net", weights=user_files / "bad.pt")


def _advlab(cwd, *args):
    env = {**os.environ, "ADVLAB_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "advlab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_attack_and_analyze_take_a_users_model(user_files):
    res = _advlab(user_files, "attack", "--model", "mynet.py:Net", "--weights", "ddp.pt", "--data", "test.npz",
                  "--attack", "pgd", "--eps", "0.1", "--n", "50", "--arg", "steps=5")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["n"] == 50 and 0 <= out["robust_accuracy"] < 1 and out["model"] == "mynet.py:Net"
    res = _advlab(user_files, "analyze", "--model", "mynet.py:Net", "--model-args", '{"hidden": 32}',
                  "--weights", "w.pt", "--data", "test.npz", "--n", "50", "--out", "a.json")
    assert res.returncode == 0, res.stderr
    analysis = json.loads((user_files / "a.json").read_text())
    assert analysis["n"] == 50 and analysis["lipschitz_upper_bound"] > 0 and len(analysis["layers"]) == 2


@pytest.mark.parametrize("args, message", [
    (["eval", "--eps", "0.1"], "give either RUN_DIR or --model"),
    (["eval", "--model", "mynet.py:Net", "--weights", "w.pt", "--eps", "0.1"], "--model needs --data"),
    (["eval", "--model", "mynet.py:Nope", "--weights", "w.pt", "--data", "test.npz", "--eps", "0.1"], "Nope"),
    (["eval", "--model", "mynet.py:Net", "--weights", "w.pt", "--data", "missing.npz", "--eps", "0.1"],
     "missing.npz"),
    (["attack", "--model", "mynet.py:Net", "--model-args", "{hidden: 3}", "--weights", "w.pt", "--data", "test.npz",
      "--eps", "0.1"], "--model-args"),
    (["eval", "--model", "mynet.py:Net", "--weights", "w.pt", "--data", "test.npz", "--normalize", "0.5",
      "--eps", "0.1"], "--normalize"),
    (["analyze", "w.pt"], "--model"),
])
def test_own_model_errors_are_one_line(user_files, args, message):
    res = _advlab(user_files, *args)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr


TIMM_STANDIN = '''
"""A stand-in for timm (whose torchvision cannot be installed beside the CPU torch of CI): the same
create_model(name, pretrained=False, **kwargs) contract on a tiny registry."""
from torch import nn

def create_model(name, pretrained=False, num_classes=1000, **kwargs):
    if pretrained:
        raise AssertionError("advlab must never ask timm to download weights")
    if name != "tiny_net":
        raise RuntimeError(f"Unknown model ({name})")
    if kwargs:
        raise TypeError(f"unexpected {sorted(kwargs)}")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes))
'''


def test_timm_models_through_the_cli_with_a_standin(user_files):
    (user_files / "standin").mkdir()
    (user_files / "standin" / "timm.py").write_text(TIMM_STANDIN)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    torch.save(net.state_dict(), user_files / "timm_w.pt")
    env = {**os.environ, "ADVLAB_QUIET": "1", "PYTHONPATH": str(user_files / "standin")}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "advlab", *args], cwd=user_files, capture_output=True,
                              text=True, timeout=300, env=env)
    res = run("eval", "--model", "timm:tiny_net", "--model-args", '{"num_classes": 10}', "--weights", "timm_w.pt",
              "--data", "test.npz", "--eps", "0.1", "--suite", "fast", "--n", "50")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n_samples"] == 50
    res = run("eval", "--model", "timm:nope", "--weights", "timm_w.pt", "--data", "test.npz", "--eps", "0.1")
    assert res.returncode == 2 and "Unknown model (nope)" in res.stderr and "Traceback" not in res.stderr
    res = run("eval", "--model", "timm:tiny_net", "--model-args", '{"depth": 3}', "--weights", "timm_w.pt",
              "--data", "test.npz", "--eps", "0.1")
    assert res.returncode == 2 and "bad arguments" in res.stderr


def test_a_timm_that_cannot_import_is_one_named_error(monkeypatch, tmp_path):
    (tmp_path / "timm.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "timm", raising=False)
    from advlab.models.loading import ModelSpecError, build_user_model
    with pytest.raises(ModelSpecError, match="cannot be imported .*torchvision::nms.*torchvision built for"):
        build_user_model("timm:resnet18", {"num_classes": 10})

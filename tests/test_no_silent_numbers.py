"""No number from another model, a broken model or a broken file: stale state is refused naming what
differs, NaN/inf logits and dtype mismatches are named errors, values that cannot be meant are
refused, and tampered files fail their checksums."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import APGD, APGDT, FGSM, PGD, DeepFool, SparseL0, Square, attack_names, build_attack
from advlab.errors import (AttackConfigError, CheckpointError, DataError, InputError, ModelOutputError,
                           RunLockedError, ThreatModelError)
from advlab.evaluation import evaluate_robustness
from advlab.evaluation.state import StaleStateError
from advlab.experiments import ExperimentError, RunDir, parse_spec


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


@pytest.fixture
def data():
    torch.manual_seed(1)
    x = torch.rand(60, 20)
    y = _model(0)(x).argmax(1).detach()
    return x, y


def test_state_of_another_model_is_refused_and_restart_recomputes(tmp_path, data):
    x, y = data
    th = ThreatModel("linf", 0.1)
    state = tmp_path / "eval.safetensors"
    first = evaluate_robustness(_model(0), (x, y), th, suite=[PGD(th, steps=5)], state_path=state)
    other = _model(1)
    with pytest.raises(StaleStateError, match="model"):
        evaluate_robustness(other, (x, y), th, suite=[PGD(th, steps=5)], state_path=state)
    fresh = evaluate_robustness(other, (x, y), th, suite=[PGD(th, steps=5)])
    redone = evaluate_robustness(other, (x, y), th, suite=[PGD(th, steps=5)], state_path=state, restart=True)
    assert redone.clean_accuracy == fresh.clean_accuracy and redone.robust_accuracy == fresh.robust_accuracy
    assert first.clean_accuracy == 1.0 and fresh.clean_accuracy < 1.0


def test_state_names_every_difference(tmp_path, data):
    x, y = data
    th = ThreatModel("linf", 0.1)
    state = tmp_path / "eval.safetensors"
    evaluate_robustness(_model(0), (x, y), th, suite=[PGD(th, steps=5)], state_path=state)
    x2 = x.clone()
    x2[-1, -1] = 0.5 * x2[-1, -1]   # one value of the last sample: a prefix hash would miss it
    with pytest.raises(StaleStateError, match="data"):
        evaluate_robustness(_model(0), (x2, y), th, suite=[PGD(th, steps=5)], state_path=state)
    th2 = ThreatModel("linf", 0.2)
    with pytest.raises(StaleStateError, match="threat.*suite"):
        evaluate_robustness(_model(0), (x, y), th2, suite=[PGD(th2, steps=5)], state_path=state)


class NaNModel(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.lin = nn.Linear(20, 5)
        self.value = value

    def forward(self, x):
        out = self.lin(x)
        return out + torch.where(x[:, :1] > -1, torch.full_like(out[:, :1], self.value), 0)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd", "apgd-t", "square", "deepfool", "noise"])
def test_non_finite_logits_are_a_model_output_error(data, name, value):
    x, y = data
    attack = build_attack(name, ThreatModel("linf", 0.1))
    with pytest.raises(ModelOutputError, match="NaN or inf"):
        attack(NaNModel(value), x, y % 5)


def test_non_finite_logits_in_evaluation_and_l0(data):
    x, y = data
    with pytest.raises(ModelOutputError):
        evaluate_robustness(NaNModel(float("nan")), (x, y), ThreatModel("linf", 0.1), suite="fast")
    with pytest.raises(ModelOutputError):
        SparseL0(ThreatModel("l0", 3), steps=2)(NaNModel(float("nan")), x, y)


def test_dtype_mismatch_is_named(data):
    x, y = data
    th = ThreatModel("linf", 0.1)
    for attack in (FGSM(th), PGD(th, steps=2), APGD(th, steps=2), Square(th, n_queries=5), DeepFool(th, steps=2)):
        with pytest.raises(InputError, match="dtype torch.float64.*float32"):
            attack(_model(0), x.double(), y)
    with pytest.raises(InputError, match="dtype"):
        evaluate_robustness(_model(0), (x.double(), y), th, suite="fast")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_attacks_stay_in_the_ball(data, dtype):
    """The issue's case: linf eps 0.05 used to come back as 0.0508 in bf16, and APGD crashed."""
    x, y = data
    model = _model(0).to(dtype)
    th = ThreatModel("linf", 0.05)
    for attack in (FGSM(th), PGD(th, steps=5), APGD(th, steps=5), APGDT(th, steps=5, n_target_classes=2),
                   Square(th, n_queries=10), DeepFool(th, steps=5)):
        r = attack(model, x.to(dtype), y)
        assert r.x_adv.dtype == dtype
        assert float((r.x_adv.double() - x.to(dtype).double()).abs().max()) <= 0.05


def test_values_that_cannot_be_meant():
    with pytest.raises(ThreatModelError, match="input range"):
        ThreatModel("linf", 3)
    with pytest.raises(ThreatModelError, match="float32"):
        ThreatModel("l2", 1e308)
    with pytest.raises(ThreatModelError, match="boolean"):
        ThreatModel("linf", True)
    with pytest.raises(InputError, match="diameter"):
        PGD(ThreatModel("l2", 100.0), steps=2)(_model(0), torch.rand(3, 20), torch.zeros(3, dtype=torch.long))
    for rho in (0, 1, 1.5, -0.2):
        with pytest.raises(AttackConfigError, match="rho"):
            APGD(ThreatModel("linf", 0.1), rho=rho)
    with pytest.raises(AttackConfigError, match="empty"):
        evaluate_robustness(_model(0), (torch.rand(3, 20), torch.zeros(3, dtype=torch.long)),
                            ThreatModel("linf", 0.1), suite=[])
    with pytest.raises(AttackConfigError, match="stpes.*steps"):
        build_attack("pgd", ThreatModel("linf", 0.1), stpes=40)


SPEC = {"name": "x", "data": {"name": "digits"}, "model": {"name": "mlp"}}


@pytest.mark.parametrize("patch,key", [
    ({"train": {"objective": "pgd_at", "threat": {"norm": "linf", "eps": 0.3}, "objective_args": {"stepz": 3}}},
     "train.objective_args"),
    ({"train": {"objective": "pgd_at", "threat": {"norm": "linf", "eps": 3.0}}}, "train.threat"),
    ({"train": {"lr": float("inf")}}, "train.lr"),
    ({"train": {"lr": float("nan")}}, "train.lr"),
    ({"eval": {"attacks": [{"name": "pgd", "threat": {"norm": "linf", "eps": 0.1}, "args": {"stpes": 4}}]}},
     "eval.attacks.0.args"),
    ({"eval": {"attacks": [{"name": "apgd", "threat": {"norm": "linf", "eps": 0.1}, "args": {"rho": 2}}]}},
     "eval.attacks.0"),
    ({"eval": {"attacks": [{"name": "pgdd", "threat": {"norm": "linf", "eps": 0.1}}]}}, "eval.attacks.0.name"),
    ({"model": {"name": "mlp", "args": {"widht": 3}}}, "model.args"),
    ({"device": "gpu"}, "device"),
])
def test_experiment_files_are_checked_whole_when_parsed(patch, key):
    with pytest.raises(ExperimentError) as err:
        parse_spec({**SPEC, **patch})
    assert any(k.startswith(key) for k, _ in err.value.problems), err.value.problems
    assert "\n" not in str(err.value)


def test_every_registered_attack_is_an_experiment_and_cli_name():
    from advlab.cli import _attack_choices
    assert _attack_choices() == attack_names()
    for name in attack_names():
        spec = parse_spec({**SPEC, "eval": {"attacks": [{"name": name, "threat": {
            "norm": "l0" if name == "sparse-l0" else "linf", "eps": 2 if name == "sparse-l0" else 0.1}}]}})
        assert spec.eval.attacks[0].name == name


def test_tampered_mnist_cache_is_a_data_error(tmp_path, mnist_cache):
    from advlab.data import load_mnist
    from advlab.data.mnist import fetch_mnist
    src = fetch_mnist()
    with np.load(src) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["test_images"][17, 3, 4] ^= 1
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataError, match="advlab data fetch mnist"):
        load_mnist("test", root=tmp_path)
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 this is not a zip file")
    with pytest.raises(DataError, match="corrupt.*advlab data fetch mnist"):
        load_mnist("test", root=tmp_path)


def test_tampered_checkpoint_fails_its_checksum(tmp_path):
    from advlab.training import load_weights, save_checkpoint
    model = _model(0)
    path = save_checkpoint(tmp_path / "m.safetensors", model, None, {})
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF   # a byte of the last tensor
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        load_weights(path, _model(0))


def test_a_second_writer_is_refused(tmp_path):
    run = RunDir(tmp_path / "r")
    with run.lock():
        assert run.is_locked()
        with pytest.raises(RunLockedError, match="another advlab process"):
            with RunDir(tmp_path / "r").lock():
                pass
    assert not run.is_locked()


def test_a_second_process_is_refused(tmp_path):
    """The lock holds across processes (flock), and dies with its holder."""
    import subprocess
    import sys
    import time
    (tmp_path / "r").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / 'r' / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=str(holder.pid)):
            with RunDir(tmp_path / "r").lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    with RunDir(tmp_path / "r").lock():
        pass

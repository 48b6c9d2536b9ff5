"""Streaming evaluation over DataLoaders: the same per-sample result as the tensor path chunk by
chunk, exact resume after an interruption or a kill, stale-state refusal, adversarials on disk,
sharding over two gloo ranks."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advlab import ThreatModel
from advlab.attacks import APGD, PGD, FGSM
from advlab.errors import CheckpointError, InputError
from advlab.evaluation import evaluate_robustness
from advlab.evaluation.state import StaleStateError
from advlab.evaluation.streaming import load_adversarials


def problem(n: int = 120, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.rand(n, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:6] = (y[:6] + 1) % 4
    return model, x, y


def suite(th):
    return [PGD(th, steps=5, seed=3), APGD(th, steps=10, seed=3)]


TH = ThreatModel("linf", 0.08)


def loader(x, y, batch=32):
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def test_each_batch_gets_the_tensor_paths_result():
    model, x, y = problem()
    res = evaluate_robustness(model, loader(x, y), TH, suite(TH), checks=False)
    assert 0 < res.robust_accuracy < res.clean_accuracy < 1  # a mixed outcome, or the test says nothing
    for i in range(0, x.shape[0], 32):
        ref = evaluate_robustness(model, (x[i:i + 32], y[i:i + 32]), TH, suite(TH), checks=False)
        assert torch.equal(res.robust[i:i + 32], ref.robust)
        assert torch.equal(res.broken_by[i:i + 32], ref.broken_by)
        assert torch.equal(res.clean_correct[i:i + 32], ref.clean_correct)
    assert sum(a.broken for a in res.attacks) == int((res.clean_correct & ~res.robust).sum())
    assert res.attacks[0].attacked == int(res.clean_correct.sum())


class Interrupted(RuntimeError):
    pass


def stop_after(stream, k):
    for i, batch in enumerate(stream):
        if i == k:
            raise Interrupted
        yield batch


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    model, x, y = problem()
    whole = evaluate_robustness(model, loader(x, y), TH, suite(TH), state_path=tmp_path / "a")
    with pytest.raises(Interrupted):
        evaluate_robustness(model, stop_after(loader(x, y), 2), TH, suite(TH), state_path=tmp_path / "b")
    assert len(list((tmp_path / "b").glob("chunk_*.safetensors"))) == 2
    resumed = evaluate_robustness(model, loader(x, y), TH, suite(TH), state_path=tmp_path / "b")
    for name in ("robust", "broken_by", "clean_correct"):
        assert torch.equal(getattr(resumed, name), getattr(whole, name))
    assert torch.allclose(resumed.adv_norms, whole.adv_norms, equal_nan=True)
    assert [a.broken for a in resumed.attacks] == [a.broken for a in whole.attacks]


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from advlab import ThreatModel
    from advlab.attacks import FGSM, PGD
    from advlab.evaluation import evaluate_robustness
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.rand(160, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    th = ThreatModel("linf", 0.08)
    kill_at = int(sys.argv[2])
    def batches():
        for i, b in enumerate(DataLoader(TensorDataset(x, y), batch_size=20)):
            if i == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # dies like a preempted job: no cleanup runs
            yield b
    res = evaluate_robustness(model, batches(), th, [PGD(th, steps=5, seed=1), FGSM(th)], state_path=sys.argv[1])
    torch.save({"robust": res.robust, "broken_by": res.broken_by}, sys.argv[1] + ".out")
""")


def test_killed_process_resumes_to_the_same_result(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "ADVLAB_QUIET": "1"}
    whole = subprocess.run([sys.executable, str(script), str(tmp_path / "whole"), "-1"], env=env)
    assert whole.returncode == 0
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "part"), "5"], env=env)
    assert killed.returncode == -signal.SIGKILL
    assert len(list((tmp_path / "part").glob("chunk_*.safetensors"))) == 5
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "part"), "-1"], env=env)
    assert resumed.returncode == 0
    a = torch.load(tmp_path / "whole.out", weights_only=True)
    b = torch.load(tmp_path / "part.out", weights_only=True)
    assert torch.equal(a["robust"], b["robust"]) and torch.equal(a["broken_by"], b["broken_by"])


def test_resume_refuses_other_data_model_or_length(tmp_path):
    model, x, y = problem()
    state = tmp_path / "s"
    evaluate_robustness(model, loader(x, y), TH, suite(TH), state_path=state)
    x2 = x.clone()
    x2[40, 3] = 0.5 if x2[40, 3] != 0.5 else 0.25  # one value in the second batch
    with pytest.raises(StaleStateError, match="batch 1"):
        evaluate_robustness(model, loader(x2, y), TH, suite(TH), state_path=state)
    other, _, _ = problem(seed=1)
    with pytest.raises(StaleStateError, match="model"):
        evaluate_robustness(other, loader(x, y), TH, suite(TH), state_path=state)
    with pytest.raises(StaleStateError, match="batches"):
        evaluate_robustness(model, loader(x[:64], y[:64]), TH, suite(TH), state_path=state)
    fresh = evaluate_robustness(model, loader(x2, y), TH, suite(TH), state_path=state, restart=True)
    assert fresh.robust.shape == (120,)


def test_adversarials_stay_on_disk_inside_the_ball(tmp_path):
    model, x, y = problem()
    res = evaluate_robustness(model, loader(x, y), TH, suite(TH), state_path=tmp_path / "s", keep_adversarials=True)
    assert res.x_adv is None and res.adversarials_dir == str(tmp_path / "s")
    x_adv = torch.cat(list(load_adversarials(res.adversarials_dir)))
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= TH.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    broken = res.clean_correct & ~res.robust
    with torch.no_grad():
        assert (model(x_adv[broken]).argmax(1) != y[broken]).all()
    with pytest.raises(InputError, match="state_path"):
        evaluate_robustness(model, loader(x, y), TH, suite(TH), keep_adversarials=True)
    with pytest.raises(CheckpointError, match="without keep_adversarials"):
        evaluate_robustness(model, loader(x, y), TH, suite(TH), state_path=tmp_path / "t")
        list(load_adversarials(tmp_path / "t"))


def test_bad_streams_are_one_line_errors(tmp_path):
    model, x, y = problem()
    with pytest.raises(InputError, match="no batches"):
        evaluate_robustness(model, iter([]), TH, "fast")
    with pytest.raises(InputError, match="batch 0 .* not an \\(x, y\\) pair"):
        evaluate_robustness(model, [x[:10]], TH, "fast")
    with pytest.raises(InputError):
        evaluate_robustness(model, [(x[:10] * 3, y[:10])], TH, "fast")  # outside the bounds
    res = evaluate_robustness(model, [{"x": x[:10], "y": y[:10]}], TH, [FGSM(TH)])  # dict batches work
    assert res.robust.shape == (10,)
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="directory"):
        evaluate_robustness(model, loader(x, y), TH, [FGSM(TH)], state_path=tmp_path / "f")


def _stream_worker(rank, world, port, queue, tmp):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, x, y = problem()
    res = evaluate_robustness(model, loader(x, y), TH, suite(TH), checks=False, state_path=f"{tmp}/s",
                              keep_adversarials=True)
    queue.put((rank, res.robust.numpy(), res.broken_by.numpy(), [(a.broken, a.attacked) for a in res.attacks]))
    dist.barrier()
    dist.destroy_process_group()


def test_stream_sharded_on_two_gloo_ranks_matches_one_process(tmp_path):
    import torch.multiprocessing as mp
    model, x, y = problem()
    single = evaluate_robustness(model, loader(x, y), TH, suite(TH), checks=False, state_path=tmp_path / "one",
                                 keep_adversarials=True)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = random.randint(20000, 40000)
    procs = [ctx.Process(target=_stream_worker, args=(r, 2, port, queue, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    outs = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    for _, robust, broken_by, stats in outs:
        assert np.array_equal(robust, single.robust.numpy())
        assert np.array_equal(broken_by, single.broken_by.numpy())
        assert stats == [(a.broken, a.attacked) for a in single.attacks]
    assert len(list((tmp_path / "s").glob("chunk_*.safetensors"))) == 4  # rank 0 wrote every batch
    a = torch.cat(list(load_adversarials(tmp_path / "s")))
    b = torch.cat(list(load_adversarials(tmp_path / "one")))
    assert torch.equal(a, b)


def test_accuracy_curve_over_a_loader_equals_the_tensor_curve():
    from advlab.evaluation import robust_accuracy_curve
    model, x, y = problem()
    grid = [0.0, 0.05, 0.1, 0.3]
    tensors = robust_accuracy_curve(model, (x, y), "l2", grid, batch_size=40, steps=20)
    streamed = robust_accuracy_curve(model, loader(x, y, batch=40), "l2", grid, steps=20)
    assert streamed == tensors and tensors[0][1] > tensors[-1][1]
    with pytest.raises(InputError, match="no data"):
        robust_accuracy_curve(model, loader(x[:0], y[:0]), "l2", grid)

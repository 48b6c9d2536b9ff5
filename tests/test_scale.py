"""Scale: out-of-memory batch halving, evaluation sharded over torch.distributed ranks, the fast path."""
from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import APGD, PGD
from advlab.evaluation import evaluate_robustness
from advlab.evaluation.memory import BatchSizeWarning, map_in_pieces


class OOMAbove(nn.Module):
    """Wraps a model and raises the out-of-memory error a GPU would for batches larger than `limit`."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.largest = inner, limit, 0

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"simulated: batch of {x.shape[0]} > {self.limit}")
        self.largest = max(self.largest, x.shape[0])
        return self.inner(x)


def problem(n: int = 90):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.rand(n, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:4] = (y[:4] + 1) % 4
    return model, x, y


def suite(th):
    return [PGD(th, steps=5, seed=3), APGD(th, steps=10, seed=3)]


def test_map_in_pieces_halves_and_keeps_order():
    calls = []

    def fn(a, b):
        calls.append(b - a)
        if b - a > 3:
            raise torch.OutOfMemoryError("simulated")
        return list(range(a, b))

    with pytest.warns(BatchSizeWarning, match="retrying with batches of"):
        parts, piece = map_in_pieces(fn, 11, 10)
    assert [v for p in parts for v in p] == list(range(11)) and piece == 2
    assert calls[:3] == [10, 5, 2]


def test_map_in_pieces_gives_up_at_one():
    def fn(a, b):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(torch.OutOfMemoryError), warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchSizeWarning)
        map_in_pieces(fn, 4, 4)


def test_evaluation_survives_out_of_memory_with_the_same_per_sample_results():
    model, x, y = problem()
    th = ThreatModel("linf", 0.1)
    reference = evaluate_robustness(model, (x, y), th, suite=suite(th), batch_size=20, checks=False)
    wrapped = OOMAbove(model, limit=20)
    with pytest.warns(BatchSizeWarning):
        res = evaluate_robustness(wrapped, (x, y), th, suite=suite(th), batch_size=80, checks=False)
    assert wrapped.largest <= 20
    assert torch.equal(res.clean_correct, reference.clean_correct)
    assert 0 < reference.robust_accuracy < reference.clean_accuracy
    # 80 -> 40 -> 20: pieces of 20 over chunks of 80 are the same batches as chunks of 20
    assert torch.equal(res.robust, reference.robust)
    assert torch.equal(res.broken_by, reference.broken_by)


def _sharded_worker(rank: int, world: int, port: int, queue, state_dir: str) -> None:
    import os

    import torch.distributed as dist
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, x, y = problem()
    th = ThreatModel("linf", 0.1)
    res = evaluate_robustness(model, (x, y), th, suite=suite(th), batch_size=16, checks=False,
                              keep_adversarials=True, state_path=f"{state_dir}/state.safetensors")
    queue.put((rank, res.robust.numpy(), res.broken_by.numpy(), res.adv_norms.numpy(), res.x_adv.numpy(),
               [(a.broken, a.attacked, a.n_forward, a.n_backward) for a in res.attacks]))
    dist.barrier()
    dist.destroy_process_group()


def test_sharded_evaluation_on_two_gloo_ranks_matches_one_process(tmp_path):
    import numpy as np
    import torch.multiprocessing as mp
    model, x, y = problem()
    th = ThreatModel("linf", 0.1)
    single = evaluate_robustness(model, (x, y), th, suite=suite(th), batch_size=16, checks=False,
                                 keep_adversarials=True)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = random.randint(20000, 40000)
    procs = [ctx.Process(target=_sharded_worker, args=(r, 2, port, queue, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    outs = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert (tmp_path / "state.safetensors").exists()  # rank 0 wrote the resumable state
    for _, robust, broken_by, norms, x_adv, stats in outs:
        assert np.array_equal(robust, single.robust.numpy())
        assert np.array_equal(broken_by, single.broken_by.numpy())
        assert np.allclose(norms, single.adv_norms.numpy(), equal_nan=True)
        assert np.array_equal(x_adv, single.x_adv.numpy())
        assert stats == [(a.broken, a.attacked, a.n_forward, a.n_backward) for a in single.attacks]


def test_fast_path_resolution():
    from advlab.accel import FastModel, accelerate, resolve_accel
    cpu = resolve_accel("auto", "cpu")  # on CPUs only channels_last, which pays there and is exact
    assert cpu.channels_last and cpu.dtype is None and not cpu.compile and cpu.exact
    assert resolve_accel("auto", "cuda").dtype == torch.bfloat16 and resolve_accel("auto", "cuda").compile
    assert resolve_accel("on", "cpu", compile=False).channels_last
    with pytest.raises(Exception, match="unknown accel mode"):
        resolve_accel("fast", "cpu")
    model = nn.Linear(4, 3)
    assert accelerate(model, "auto", "cpu") is model
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 3))
    x = torch.rand(5, 1, 8, 8)
    ref = conv(x)
    fast_conv = accelerate(conv, "auto", "cpu")
    assert isinstance(fast_conv, FastModel) and torch.allclose(fast_conv(x), ref, atol=1e-6)
    fast = accelerate(model, resolve_accel("on", "cpu", compile=False))
    assert isinstance(fast, FastModel) and fast(torch.rand(2, 4)).dtype == torch.float32


def test_fast_path_evaluation_is_checked_against_fp32():
    """bf16 autocast (forced on the CPU here): the evaluation reruns APGD in fp32 on the same points,
    reports both accuracies, and never reports more than the fp32 run finds."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 4)).eval()
    x = torch.rand(60, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    th = ThreatModel("linf", 0.02)
    ref = evaluate_robustness(model, (x, y), th, suite=suite(th), batch_size=30, checks=False)
    res = evaluate_robustness(model, (x, y), th, suite=suite(th), batch_size=30, checks=False, accel="on",
                              verify_samples=60)
    info = res.to_dict()["accel"]
    assert info["path"]["autocast"] == "bfloat16" and info["path"]["channels_last"]
    assert info["n"] == 60 and abs(info["difference"]) <= 0.1
    assert info["within_tolerance"] == (abs(info["fast"] - info["fp32"]) <= 0.005)
    # the worst case over both paths is never above the fp32 attack's own robust accuracy
    assert res.robust_accuracy <= info["fp32"] + 1e-9
    assert abs(res.robust_accuracy - ref.robust_accuracy) <= 0.1
    assert next(model.parameters()).dtype == torch.float32  # weights untouched


def test_trainer_fast_path_option():
    from advlab.training import Standard, Trainer, TrainConfig
    torch.manual_seed(0)
    x = torch.rand(128, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, accel="on")
    trainer = Trainer(model, Standard(), cfg)
    assert trainer._fast_settings(torch.device("cpu"))[:2] == ("bf16", True)
    # auto on a CPU is channels_last alone: never CPU autocast, which is many times slower there
    assert Trainer(model, Standard(), TrainConfig(accel="auto"))._fast_settings(torch.device("cpu")) == (
        "none", True, False)
    assert trainer._fast_settings(torch.device("cpu")) != Trainer(model, Standard(), TrainConfig())._fast_settings(
        torch.device("cpu"))
    hist = trainer.fit(x, y).history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert next(model.parameters()).dtype == torch.float32


def test_bench_rows_and_cli(tmp_path):
    import json

    from click.testing import CliRunner

    from advlab import bench
    from advlab.cli import main
    s = bench.setup("madry_cnn", 2, "cpu", "off")
    # Madry CNN forward: 13.9 M multiply-adds per image; forward + input-backward about twice that
    per_image = bench.step_flops(s.model, s.x, s.y) / 2
    assert 2 * 2 * 13.9e6 * 0.9 < per_image < 2 * 2 * 13.9e6 * 1.1
    rows = bench.bench_attacks("madry_cnn", batch=4, device="cpu", accel="off", attacks=("fgsm", "pgd10"), repeats=1)
    assert [r["attack"] for r in rows] == ["fgsm", "pgd10"]
    for r in rows:
        assert r["advlab_images_per_s"] > 0 and r["advlab_floor_ratio"] > 0 and r["advlab_perturb_images_per_s"] > 0
        for ref in ("torchattacks", "art"):  # both installed by the test extras
            assert r[f"speedup_vs_{ref}_min"] <= r[f"speedup_vs_{ref}"] <= r[f"speedup_vs_{ref}_max"]
            assert r[f"speedup_x_adv_only_vs_{ref}"] > 0 and r[f"{ref}_acc_images_per_s"] > 0
        assert 0 < r["advlab_tflops"] < 10 * r["peak_tflops"]
    # the reference's same-output variant reports what advlab's call reports: which points were fooled
    fgsm_ref = bench._torchattacks_attack("fgsm", s)
    fooled = bench._with_accuracy(fgsm_ref, s.model, s.y)()
    ours = bench._advlab_attack("fgsm", s)[1](s.model, s.x, s.y)
    assert torch.equal(fooled, ours.success)
    art_fgsm = bench._art_attack("fgsm", s)()
    assert torch.allclose(art_fgsm, ours.x_adv, atol=1e-5)  # ART's FGM is the same map
    with pytest.raises(Exception, match="unknown reference"):
        bench.bench_attacks("madry_cnn", batch=2, references=("foolbox",))
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "train", "--model", "madry_cnn", "--objective", "fgsm_rs",
                                    "--images", "16", "--batch", "8", "--repeats", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["objective"] == "fgsm_rs" and saved["rows"][0]["advlab_epoch_s"] > 0
    assert saved["environment"]["device"] == "cpu"
    with pytest.raises(Exception, match="unknown benchmark model"):
        bench.setup("vgg", 2, "cpu")

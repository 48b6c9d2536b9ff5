"""The training engine: objectives, equivalences, the CO guard, exact resume, checkpoints, DDP."""
import contextlib
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab import CheckpointError, ThreatModel
from advlab.training import (FGSMRS, PGDAT, TRADES, FGSMMixture, FreeAT, NoiseMixture, Standard, StepContext,
                             Trainer, TrainConfig, load_checkpoint, lr_at, momentum_at)

TH = ThreatModel("linf", 0.1)


def problem(n=256, d=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = (centers[y] + 0.15 * torch.randn(n, d, generator=g)).clamp(0, 1)
    return x, y


def net(d=20, classes=4, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, classes))


OBJECTIVES = {
    "standard": lambda: Standard(),
    "fgsm_mixture": lambda: FGSMMixture(TH, alpha=0.5),
    "noise_mixture": lambda: NoiseMixture(TH, "sign"),
    "pgd_at": lambda: PGDAT(TH, steps=3),
    "trades": lambda: TRADES(TH, beta=3.0, steps=3),
    "fgsm_rs": lambda: FGSMRS(TH),
    "free_at": lambda: FreeAT(TH, replays=2),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_each_objective_decreases_its_loss(name):
    x, y = problem()
    model = net()
    cfg = TrainConfig(epochs=6, batch_size=32, lr=0.05, momentum=0.9)
    res = Trainer(model, OBJECTIVES[name](), cfg).fit(x, y)
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < 0.8 * losses[0], losses


def _train(objective, seed=0, epochs=2, dropout=0.3):
    x, y = problem()
    model = net(dropout=dropout)
    Trainer(model, objective, TrainConfig(epochs=epochs, batch_size=32, lr=0.05, seed=seed)).fit(x, y)
    return model


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_trades_beta_zero_equals_standard():
    assert _same(_train(TRADES(TH, beta=0.0)), _train(Standard()))


def test_goodfellow_alpha_one_equals_standard():
    assert _same(_train(FGSMMixture(TH, alpha=1.0)), _train(Standard()))
    assert not _same(_train(FGSMMixture(TH, alpha=0.5)), _train(Standard()))


def test_free_at_with_one_replay_is_fgsm_like():
    """m = 1: one optimizer step per minibatch, on x + the previous perturbation; the new perturbation
    is that perturbation plus the FGSM step at the pre-update weights (from 0: exactly FGSM)."""
    x, y = problem(n=32)
    model = net()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    free = FreeAT(TH, replays=1)
    free.train_step(model, x, y, StepContext(optimizer=opt, seed=0, autocast=contextlib.nullcontext))
    xr = x.clone().requires_grad_(True)
    grad_x, = torch.autograd.grad(F.cross_entropy(ref(xr), y), xr)
    assert torch.equal(free.delta, (TH.eps * grad_x.sign()).clamp(-TH.eps, TH.eps))
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    F.cross_entropy(ref(x), y).backward()
    ref_opt.step()
    assert _same(model, ref), "the first replay trains on x + 0, i.e. one standard step"


@pytest.mark.parametrize("name", ["fgsm_mixture", "pgd_at", "trades", "fgsm_rs", "free_at", "noise_mixture"])
def test_eps_ramp_grows_the_threat_linearly_and_ends_at_the_configured_objective(name):
    obj = OBJECTIVES[name]()
    parts = [p for p in (obj, getattr(obj, "attack", None)) if p is not None and hasattr(p, "threat")]
    sizes = [getattr(p, "step_size", None) for p in parts]
    seen = []
    original = obj.set_eps_scale
    obj.set_eps_scale = lambda s: (seen.append(s), original(s))[1]
    x, y = problem(n=64)
    Trainer(net(), obj, TrainConfig(epochs=2, batch_size=32, lr=0.05, eps_ramp_epochs=1.5)).fit(x, y)
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    original(0.5)
    assert all(p.threat.eps == pytest.approx(0.05) for p in parts)
    assert [getattr(p, "step_size", None) for p in parts] == [s and pytest.approx(s / 2) for s in sizes]
    original(1.0)
    assert all(p.threat == TH for p in parts) and [getattr(p, "step_size", None) for p in parts] == sizes
    with pytest.raises(Exception, match="eps scale"):
        original(0.0)


def test_eps_ramp_changes_training_and_off_means_unchanged():
    ramped = _train(PGDAT(TH, steps=2))
    x, y = problem()
    model = net(dropout=0.3)
    Trainer(model, PGDAT(TH, steps=2), TrainConfig(epochs=2, batch_size=32, lr=0.05, eps_ramp_epochs=1)).fit(x, y)
    assert not _same(model, ramped)


def test_weight_average_is_the_ema_of_the_trajectory_and_leaves_training_unchanged():
    x, y = problem()
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=3)
    plain, trajectory = net(), []
    Trainer(plain, Standard(), cfg,
            step_hook=lambda _: trajectory.append({k: v.clone() for k, v in plain.state_dict().items()})).fit(x, y)
    averaged = net()
    Trainer(averaged, Standard(), TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=3, ema_decay=0.9)).fit(x, y)
    expected = dict(trajectory[0])
    for weights in trajectory[1:]:
        expected = {k: 0.9 * expected[k] + 0.1 * weights[k] for k in expected}
    for k, v in averaged.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6), k
    assert not _same(averaged, plain)
    with pytest.raises(Exception, match="ema_decay"):
        Trainer(net(), Standard(), TrainConfig(epochs=1, ema_decay=1.0)).fit(x, y)


def test_resume_with_weight_average_is_exact(tmp_path):
    x, y = problem()
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, checkpoint_every=3, seed=1, ema_decay=0.8)
    full = net(dropout=0.3)
    Trainer(full, Standard(), cfg).fit(x, y, x[:64], y[:64])
    ckpt = tmp_path / "ckpt.safetensors"

    def die(step):
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(net(dropout=0.3), Standard(), cfg, checkpoint_path=ckpt, step_hook=die).fit(x, y, x[:64], y[:64])
    resumed = net(dropout=0.3, seed=7)
    Trainer(resumed, Standard(), cfg, checkpoint_path=ckpt).fit(x, y, x[:64], y[:64], resume=True)
    assert _same(resumed, full)


def test_catastrophic_overfitting_guard_fires_and_rolls_back(monkeypatch):
    x, y = problem()
    model = net()
    cfg = TrainConfig(epochs=6, batch_size=32, lr=0.05, co_guard=True, co_drop=0.2,
                      monitor_threat={"norm": "linf", "eps": 0.1})
    trainer = Trainer(model, FGSMRS(TH), cfg)
    pgd_acc = iter([0.6, 0.7, 0.2, 0.9, 0.9, 0.9])
    snapshots = []
    monkeypatch.setattr(trainer, "_pgd_accuracy", lambda xs, ys: (snapshots.append(copy.deepcopy(model.state_dict())),
                                                                   next(pgd_acc))[1])
    res = trainer.fit(x, y, x[:64], y[:64])
    assert res.co_fired and res.stopped_early
    assert len(snapshots) == 3, "training stops at the collapse"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), snapshots[1].values())), \
        "weights roll back to the last check before the collapse"
    assert res.history[-1]["event"] == "catastrophic_overfitting"


@pytest.mark.parametrize("objective", ["standard", "pgd_at", "free_at"])
def test_resume_after_kill_mid_epoch_is_exact(tmp_path, objective):
    x, y = problem()
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, momentum=0.9, checkpoint_every=3, seed=1)
    full = net(dropout=0.3)
    Trainer(full, OBJECTIVES[objective](), cfg).fit(x, y, x[:64], y[:64])

    ckpt = tmp_path / "ckpt.safetensors"
    killed = net(dropout=0.3)

    def die(step):
        if step == 13:  # mid-epoch 2 (8 steps per epoch), after the checkpoint at step 11
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(killed, OBJECTIVES[objective](), cfg, checkpoint_path=ckpt, step_hook=die).fit(x, y, x[:64], y[:64])
    resumed = net(dropout=0.3, seed=99)  # a fresh process: different initial weights and RNG
    torch.manual_seed(12345)
    res = Trainer(resumed, OBJECTIVES[objective](), cfg, checkpoint_path=ckpt).fit(x, y, x[:64], y[:64], resume=True)
    assert _same(resumed, full)
    assert len(res.history) == 3


def test_early_stopping_restores_best(tmp_path):
    x, y = problem()
    model = net()
    cfg = TrainConfig(epochs=30, batch_size=32, lr=0.5, early_stopping_patience=2)
    res = Trainer(model, Standard(), cfg).fit(x[:128], y[:128], x[128:], y[128:])
    best = min(r["val_error"] for r in res.history)
    with torch.no_grad():
        err = float((model(x[128:]).argmax(1) != y[128:]).float().mean())
    assert err == pytest.approx(best)
    assert res.best_epoch is not None


def test_l1_on_first_layer_shrinks_it():
    x, y = problem()
    plain, sparse = net(), net()
    Trainer(plain, Standard(), TrainConfig(epochs=5, batch_size=32, lr=0.05)).fit(x, y)
    Trainer(sparse, Standard(), TrainConfig(epochs=5, batch_size=32, lr=0.05, l1={"0.": 0.01})).fit(x, y)
    assert sparse[0].weight.abs().sum() < 0.7 * plain[0].weight.abs().sum()


def test_checkpoint_refuses_pickles_and_foreign_files(tmp_path):
    p = tmp_path / "model.pt"
    torch.save(net().state_dict(), p)
    with pytest.raises(CheckpointError):
        load_checkpoint(p, net())
    from advlab.io import save_tensors
    q = tmp_path / "other.safetensors"
    save_tensors(q, {"w": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="not an advlab training checkpoint"):
        load_checkpoint(q, net())


def test_schedules():
    assert lr_at(0.1, 0.0, "cosine") == pytest.approx(0.1) and lr_at(0.1, 1.0, "cosine") == pytest.approx(0.0)
    assert lr_at(0.1, 0.6, "step") == pytest.approx(0.01)
    assert lr_at(0.2, 0.4, "onecycle") == pytest.approx(0.2) and lr_at(0.2, 1.0, "onecycle") == 0.0
    assert momentum_at(0.5, 0.7, 5, 10) == pytest.approx(0.6)


def _ddp_worker(rank, world, path, queue):
    import torch.distributed as dist
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(path)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    x, y = problem()
    model = net()
    res = Trainer(model, Standard(), TrainConfig(epochs=2, batch_size=32, lr=0.1, momentum=0.9)).fit(x, y)
    if rank == 0:
        queue.put(([p.detach().numpy().copy() for p in model.parameters()], res.history[-1]["train_loss"]))
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_two_gloo_processes_match_one_process():
    import random

    import torch.multiprocessing as mp
    x, y = problem()
    single = net()
    single_res = Trainer(single, Standard(), TrainConfig(epochs=2, batch_size=32, lr=0.1, momentum=0.9)).fit(x, y)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = random.randint(20000, 40000)
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    params, loss = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
    for a, b in zip(params, single.parameters()):
        a = torch.from_numpy(a)
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    assert loss == pytest.approx(single_res.history[-1]["train_loss"], rel=1e-4)


@pytest.mark.parametrize("kind", ["sign", "uniform", "gaussian"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_noise_training_draws_the_attacks_points_without_a_model_pass(kind, norm):
    """The noise baselines (G9) train on exactly the RandomNoise attack's points, but the objective
    samples them directly: no forward pass of the model is spent on noise."""
    from advlab.attacks import RandomNoise
    from advlab.attacks.base import make_generator
    from advlab.threat import ThreatModel
    calls = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    model.register_forward_hook(lambda *a: calls.append(1))
    x, y = torch.rand(10, 1, 4, 4), torch.randint(0, 3, (10,))
    attack = RandomNoise(ThreatModel(norm, 0.3), kind, seed=7)
    assert torch.equal(attack.perturb(model, x, y), attack.sample(x, make_generator(7, x.device)[0]))
    from advlab.training import build_objective
    from advlab.training.objectives import NoiseMixture
    objective = build_objective("noise_mixture", ThreatModel(norm, 0.3), kind=kind)
    assert isinstance(objective, NoiseMixture)
    calls.clear()
    ctx = type("Ctx", (), {"seed": 7})()
    objective.loss(model, x, y, ctx)
    assert len(calls) == 2   # J(x) and J(x + noise), nothing else

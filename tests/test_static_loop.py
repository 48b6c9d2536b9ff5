"""The fixed-shape attack loop behind `FastPath(cuda_graphs=True)`: on a CPU it runs the same body
eagerly, so it must give what the ordinary loop gives (exactly where nothing shrinks)."""
import pytest
import torch
from torch import nn

from advlab.accel import FastModel, FastPath, accelerate, resolve_accel
from advlab.attacks import PGD
from advlab.attacks.static_loop import StepLoop, graphs_available
from advlab.threat import ThreatModel


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    x = torch.rand(40, 1, 8, 8)
    y = torch.randint(0, 5, (40,))
    return model, x, y


def graphed(model: nn.Module) -> nn.Module:
    wrapped = accelerate(model, FastPath(cuda_graphs=True))
    assert isinstance(wrapped, FastModel) and wrapped.path.cuda_graphs
    return wrapped


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_fixed_shape_loop_equals_the_ordinary_loop_without_early_stop(problem, norm, eps, schedule):
    model, x, y = problem
    atk = PGD(ThreatModel(norm, eps), steps=12, early_stop=False, schedule=schedule, seed=3)
    ref = atk(model, x, y)
    got = atk(graphed(model), x, y)
    assert torch.equal(got.x_adv, ref.x_adv) and torch.equal(got.success, ref.success)
    assert torch.equal(got.loss, ref.loss)
    assert (got.n_forward, got.n_backward) == (ref.n_forward, ref.n_backward)
    # perturb(): Madry's last iterate, the same in both loops
    assert torch.equal(atk.perturb(graphed(model), x, y), atk.perturb(model, x, y))


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_fixed_shape_loop_with_early_stop_breaks_at_least_as_many(problem, norm, eps):
    model, x, y = problem
    th = ThreatModel(norm, eps)
    for restarts in (1, 2):
        atk = PGD(th, steps=10, restarts=restarts, seed=1)
        ref, got = atk(model, x, y), atk(graphed(model), x, y)
        assert bool((got.success | ~ref.success).all())          # a superset of the ordinary loop's breaks
        assert bool((th.distance(x, got.x_adv) <= eps * (1 + 1e-5)).all())
        assert got.x_adv.min() >= 0 and got.x_adv.max() <= 1
        with torch.no_grad():   # reported success is the model's verdict on the returned points
            assert torch.equal(got.success, model(got.x_adv).argmax(1) != y)


def test_fixed_shape_loop_keeps_targeted_success(problem):
    model, x, y = problem
    t = (y + 1) % 5
    atk = PGD(ThreatModel("linf", 0.3), steps=20, seed=0)
    got = atk(graphed(model), x, y, targets=t)
    with torch.no_grad():
        assert torch.equal(got.success, model(got.x_adv).argmax(1) == t)
    assert got.success.float().mean() >= atk(model, x, y, targets=t).success.float().mean()


def test_step_loop_runs_eagerly_where_no_graph_can_be_captured():
    assert not graphs_available(torch.device("cpu"))
    calls = []

    def body(s):
        calls.append(1)
        return {"v": s["v"] + s["inc"]}

    loop = StepLoop(body, {"v": torch.zeros(3), "inc": torch.ones(())}, graph=True)
    assert not loop.graph
    n = loop.run(5, before=lambda i: loop.state["inc"].fill_(i))
    assert n == 5 and torch.equal(loop.state["v"], torch.full((3,), 10.0))
    assert loop.uncounted == 0 and len(calls) == 5
    # stop() is asked every check_every iterations and ends the loop
    loop2 = StepLoop(body, {"v": torch.zeros(1), "inc": torch.ones(())}, graph=False)
    assert loop2.run(100, stop=lambda: bool(loop2.state["v"] >= 4), check_every=2) == 4


def test_cuda_graphs_are_opt_in():
    assert not resolve_accel("auto", "cpu").cuda_graphs and not resolve_accel("on", "cpu").cuda_graphs
    p = resolve_accel("auto", "cpu", cuda_graphs=True)
    assert p.cuda_graphs and p.describe()["cuda_graphs"] is True


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_fixed_shape_loop_equals_the_ordinary_loop_without_early_stop(problem, norm, eps, loss):
    from advlab.attacks import APGD
    model, x, y = problem
    atk = APGD(ThreatModel(norm, eps), steps=25, loss=loss, early_stop=False, seed=2)
    ref, got = atk(model, x, y), atk(graphed(model), x, y)
    assert torch.equal(got.x_adv, ref.x_adv) and torch.equal(got.success, ref.success)
    assert (got.n_forward, got.n_backward) == (ref.n_forward, ref.n_backward)


def test_apgd_t_fixed_shape_loop_breaks_at_least_as_many(problem):
    from advlab.attacks import APGD, APGDT
    model, x, y = problem
    th = ThreatModel("linf", 0.08)
    for atk in (APGD(th, steps=20, seed=0), APGDT(th, steps=20, n_target_classes=3, seed=0)):
        ref, got = atk(model, x, y), atk(graphed(model), x, y)
        assert bool((got.success | ~ref.success).all())
        assert bool((th.distance(x, got.x_adv) <= 0.08 + 1e-6).all())
        with torch.no_grad():
            assert torch.equal(got.success, model(got.x_adv).argmax(1) != y)

"""Invariants every attack must keep, on every norm branch, dtype and input shape."""
import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import (ATTACKS as REGISTRY, APGD, APGDT, BIM, FAB, FABT, FGSM, PGD, DeepFool, RandomNoise,
                            SparseL0, Square)

EPS = {"linf": 0.05, "l2": 0.5, "l1": 2.0, "l0": 4}

ATTACKS = {
    "fgsm": (("linf", "l2"), lambda th: FGSM(th)),
    "fgsm-targeted": (("linf", "l2"), lambda th: FGSM(th, target="random")),
    "noise-sign": (("linf", "l2"), lambda th: RandomNoise(th, "sign")),
    "noise-uniform": (("linf", "l2"), lambda th: RandomNoise(th, "uniform")),
    "noise-gaussian": (("linf", "l2"), lambda th: RandomNoise(th, "gaussian")),
    "pgd": (("linf", "l2", "l1"), lambda th: PGD(th, steps=5, restarts=2)),
    "pgd-margin-cosine": (("linf", "l2", "l1"), lambda th: PGD(th, steps=5, loss="margin", schedule="cosine")),
    "pgd-dlr-no-early-stop": (("linf", "l2"), lambda th: PGD(th, steps=5, loss="dlr", early_stop=False)),
    "pgd-check-every-3": (("linf", "l2"), lambda th: PGD(th, steps=7, check_every=3)),
    "pgd-targeted-shift": (("linf", "l2", "l1"), lambda th: PGD(th, steps=5, target=1)),
    "pgd-least-likely": (("linf", "l2"), lambda th: PGD(th, steps=5, target="least_likely")),
    "bim": (("linf", "l2"), lambda th: BIM(th, steps=5)),
    "apgd-ce": (("linf", "l2", "l1"), lambda th: APGD(th, steps=10)),
    "apgd-dlr": (("linf", "l2"), lambda th: APGD(th, steps=10, loss="dlr")),
    "apgd-targeted": (("linf", "l2"), lambda th: APGD(th, steps=10, loss="dlr", target="random")),
    "apgd-t": (("linf", "l2", "l1"), lambda th: APGDT(th, steps=10, n_target_classes=3)),
    "square": (("linf", "l2"), lambda th: Square(th, n_queries=30)),
    "square-targeted": (("linf", "l2"), lambda th: Square(th, n_queries=30, target="random")),
    "deepfool": (("linf", "l2"), lambda th: DeepFool(th, steps=10)),
    "fab": (("linf", "l2", "l1"), lambda th: FAB(th, steps=8, restarts=2)),
    "fab-t": (("linf", "l2", "l1"), lambda th: FABT(th, steps=5, n_target_classes=3)),
    "fab-early-stop": (("linf", "l2"), lambda th: FAB(th, steps=8, early_stop=True)),
    "sparse-l0": (("l0",), lambda th: SparseL0(th, steps=8)),
    "sparse-l0-targeted": (("l0",), lambda th: SparseL0(th, steps=8, target="random")),
}
CASES = [(name, norm) for name, (norms, _) in ATTACKS.items() for norm in norms]


def _build(name, norm):
    return ATTACKS[name][1](ThreatModel(norm, EPS[norm]))


def test_every_registered_attack_is_in_the_table():
    """The table covers the registry (advlab.attacks.ATTACKS): a new attack cannot skip the invariants."""
    covered = {type(_build(name, norms[0])) for name, (norms, _) in ATTACKS.items()}
    missing = sorted(name for name, cls in REGISTRY.items() if cls not in covered)
    assert not missing, f"registered attacks without invariant tests: {missing}"


@pytest.mark.parametrize("name,norm", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_inside_ball_and_bounds_and_shapes(model_and_data, name, norm, dtype):
    """Half-precision models too: the returned point is inside the ball in exact arithmetic (no
    rounding of x + eps past the ball), and success is the model's own verdict in its dtype."""
    model, x, y = model_and_data
    model, x = model.to(dtype), x.to(dtype)
    attack = _build(name, norm)
    r = attack(model, x, y)
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == dtype
    assert r.success.shape == (x.shape[0],) and r.success.dtype == torch.bool
    tol = 0.5 if norm == "l0" else 1e-6
    exact = attack.threat.distance(x.double(), r.x_adv.double())
    assert float(exact.max()) <= EPS[norm] + tol
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
    assert torch.allclose(r.norms.double(), exact, atol=1e-6)
    if dtype in (torch.bfloat16, torch.float16):
        with torch.no_grad():
            pred = model(r.x_adv).argmax(1)
        judged = (pred == r.targets) if r.targets is not None else (pred != y)
        assert torch.equal(r.success, judged)
    assert r.n_forward > 0
    if attack.uses_gradients:
        assert r.n_backward > 0
    else:
        assert r.n_backward == 0


@pytest.mark.parametrize("name,norm", CASES)
def test_deterministic_under_seed(model_and_data, name, norm):
    model, x, y = model_and_data
    a, b = _build(name, norm)(model, x, y), _build(name, norm)(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.success, b.success)


@pytest.mark.parametrize("name,norm", CASES)
def test_model_mode_and_flags_restored(model_and_data, name, norm):
    model, x, y = model_and_data
    model.train()
    first = next(model.children())
    first.eval()  # mixed modes must survive exactly
    params = list(model.parameters())
    params[0].requires_grad_(False)
    before_modes = [m.training for m in model.modules()]
    before_flags = [p.requires_grad for p in params]
    before_weights = [p.detach().clone() for p in params]
    _build(name, norm)(model, x, y)
    assert [m.training for m in model.modules()] == before_modes
    assert [p.requires_grad for p in params] == before_flags
    assert all(p.grad is None for p in params), "attacks must not build weight gradients"
    assert all(torch.equal(a, b) for a, b in zip(before_weights, params))
    model.eval()


@pytest.mark.parametrize("name,norm", CASES)
def test_reported_success_is_what_the_model_says(model_and_data, name, norm):
    """Success may come from logits computed inside the attack: they must be the model's on x_adv."""
    model, x, y = model_and_data
    r = _build(name, norm)(model, x, y)
    with torch.no_grad():
        pred = model(r.x_adv).argmax(1)
    expected = pred != y if r.targets is None else pred == r.targets
    assert torch.equal(r.success, expected)


def test_already_misclassified_points_are_left_alone(model_and_data):
    model, x, y = model_and_data
    wrong = (y + 1) % 10
    r = PGD(ThreatModel("linf", 0.1), steps=5)(model, x, wrong)
    assert bool(r.success.all())
    assert torch.equal(r.x_adv, x)
    assert r.n_backward == 0


@pytest.mark.parametrize("name,norm", [("fgsm", "linf"), ("pgd", "l2"), ("pgd-dlr-no-early-stop", "linf"),
                                       ("noise-sign", "linf"), ("apgd-ce", "linf")])
def test_perturb_returns_the_same_points_with_no_more_forward_passes(model_and_data, name, norm):
    model, x, y = model_and_data
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    full = _build(name, norm)(model, x, y)
    n_call = sum(calls)
    calls.clear()
    lean = _build(name, norm).perturb(model, x, y)
    handle.remove()
    assert sum(calls) <= n_call
    assert bool(_build(name, norm).threat.contains(x, lean).all())
    if name == "pgd-dlr-no-early-stop":  # Madry's last iterate instead of the best one, unchecked
        assert sum(calls) == n_call - x.shape[0]
        return
    assert torch.equal(lean, full.x_adv)
    if name in ("fgsm", "noise-sign"):
        assert sum(calls) == n_call - x.shape[0], "the verifying forward pass is skipped"


def test_early_stop_checks_every_k_steps_find_a_superset_of_breaks(model_and_data):
    model, x, y = model_and_data
    mixed = 0
    for eps in (0.01, 0.02, 0.05, 0.1, 0.2, 0.4):
        th = ThreatModel("linf", eps)
        eager = PGD(th, steps=9, check_every=1)(model, x, y)
        lazy = PGD(th, steps=9, check_every=4)(model, x, y)
        assert bool((lazy.success | ~eager.success).all()), eps
        assert lazy.n_backward >= eager.n_backward
        mixed += 0 < int(eager.success.sum()) < x.shape[0]
    assert mixed, "no eps gave a mix of broken and robust points"
    with pytest.raises(Exception, match="check_every"):
        PGD(th, check_every=0)


def test_fixed_step_pgd_attacks_every_point_without_a_clean_pass(model_and_data):
    """early_stop=False is Madry et al.'s training attack: every point, every step, one forward
    pass per iterate (the last one's verifies success) and no separate clean pass."""
    model, x, y = model_and_data
    wrong = (y + 1) % 10
    r = PGD(ThreatModel("linf", 0.1), steps=5, early_stop=False)(model, x, wrong)
    assert bool(r.success.all())
    assert not torch.equal(r.x_adv, x)
    n = x.shape[0]
    assert (r.n_forward, r.n_backward) == (6 * n, 5 * n)


def test_different_seeds_give_different_random_starts(model_and_data):
    model, x, y = model_and_data
    th = ThreatModel("linf", 0.05)
    a = RandomNoise(th, "uniform", seed=1)(model, x, y)
    b = RandomNoise(th, "uniform", seed=2)(model, x, y)
    assert not torch.equal(a.x_adv, b.x_adv)
    assert a.seed == 1 and b.seed == 2
    c = RandomNoise(th, "uniform", seed=None)(model, x, y)
    assert isinstance(c.seed, int)


def test_restarts_never_hurt(model_and_data):
    model, x, y = model_and_data
    th = ThreatModel("linf", 0.02)
    one = PGD(th, steps=5, restarts=1)(model, x, y)
    three = PGD(th, steps=5, restarts=3)(model, x, y)
    assert int(three.success.sum()) >= int(one.success.sum())

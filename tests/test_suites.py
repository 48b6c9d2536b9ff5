"""The named suites: what each version runs (as the reference's set_version), how `auto` and `fast`
adapt to what the model is, how a randomized model is judged, and the RobustBench fields."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advlab import ThreatModel
from advlab.attacks import APGD, APGDT, FAB, FABT, SparseL0, Square
from advlab.cli import main
from advlab.errors import AttackConfigError
from advlab.evaluation import evaluate_robustness
from advlab.evaluation.suites import SUITES, build_suite


def kinds(attacks):
    return [(type(a).__name__, getattr(a, "restarts", None), getattr(a, "n_target_classes", None),
             getattr(a, "eot_iter", None)) for a in attacks]


def test_versions_match_the_reference_set_version():
    th = ThreatModel("linf", 0.3)
    assert kinds(build_suite("standard", th)) == [("APGD", 1, None, 1), ("APGDT", 1, 9, 1), ("FABT", 1, 9, None),
                                                 ("Square", 1, None, None)]
    sq = build_suite("standard", th)[3]
    assert sq.n_queries == 5000 and sq.p_init == 0.8 and not sq.rescale_schedule
    assert kinds(build_suite("plus", th)) == [("APGD", 5, None, 1), ("APGD", 5, None, 1), ("FAB", 5, None, None),
                                             ("Square", 1, None, None), ("APGDT", 1, 9, 1), ("FABT", 1, 9, None)]
    assert [a.loss for a in build_suite("plus", th)[:2]] == ["ce", "dlr"]
    rand = build_suite("rand", th)
    assert kinds(rand) == [("APGD", 1, None, 20), ("APGD", 1, None, 20)] and [a.loss for a in rand] == ["ce", "dlr"]
    l1 = build_suite("standard", ThreatModel("l1", 10.0))
    assert kinds(l1) == [("APGD", 5, None, 1), ("APGDT", 1, 5, 1), ("FABT", 1, 9, None)]
    assert all(a.large_reps for a in l1[:2])
    assert isinstance(build_suite("standard", ThreatModel("l0", 5))[0], SparseL0)
    assert set(SUITES) == {"standard", "plus", "rand", "fast", "auto"}
    with pytest.raises(AttackConfigError, match="unknown suite 'aa'"):
        build_suite("aa", th)


def problem(n=60, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.rand(n, 10)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


class Noisy(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x + 0.05 * torch.randn_like(x))


def test_auto_runs_standard_on_a_deterministic_model_and_rand_on_a_randomized_one():
    model, x, y = problem()
    th = ThreatModel("linf", 0.05)
    res = evaluate_robustness(model, (x, y), th, "auto", batch_size=60)
    assert res.suite == "standard" and res.judge_draws == 1 and [a.name for a in res.attacks][2] == "fab-t"
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="suite auto ran rand: the model's output is randomized"):
        noisy = evaluate_robustness(Noisy(model), (x[:20], y[:20]), th, "auto", batch_size=20)
    assert noisy.suite == "rand" and noisy.judge_draws == 10
    assert any("averaged over 10 draws" in f for f in noisy.flags)
    d = noisy.to_dict()
    assert d["suite"] == "rand" and d["judge_draws"] == 10 and d["worst_case"]


def test_a_randomized_model_is_judged_by_its_averaged_prediction_also_when_streamed():
    model, x, y = problem(20)
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    with pytest.warns(UserWarning, match="randomized"):
        res = evaluate_robustness(Noisy(model), loader, ThreatModel("linf", 0.05), "auto")
    assert res.suite == "rand" and res.judge_draws == 10


def test_fast_is_unchanged_on_a_plain_model_and_extended_on_a_masked_one():
    model, x, y = problem()
    th = ThreatModel("linf", 0.05)
    plain = evaluate_robustness(model, (x, y), th, "fast", batch_size=60)
    assert [a.name for a in plain.attacks] == ["apgd", "apgd-t"] and not plain.to_dict()["worst_case"]

    class Quantized(nn.Module):
        def forward(self, x):
            return model(torch.round(4 * x) / 4)
    with pytest.warns(UserWarning, match="fast suite extended with APGD-T over 9 targets and Square"):
        masked = evaluate_robustness(Quantized(), (x, y), th, "fast", batch_size=60)
    assert [a.name for a in masked.attacks] == ["apgd", "apgd-t", "square"]


def test_robustbench_fields_and_accuracy_after_each_attack():
    model, x, y = problem()
    th = ThreatModel("l2", 0.3)
    res = evaluate_robustness(model, (x, y), th, [APGD(th, steps=10), FAB(th, steps=10)], batch_size=60)
    rb = res.to_dict()["robustbench"]
    assert set(rb) >= {"clean_acc", "autoattack_acc", "robust_acc_after_attack", "eps", "norm", "n_samples"}
    after = list(rb["robust_acc_after_attack"].values())
    assert rb["clean_acc"] >= after[0] >= after[1] == rb["autoattack_acc"] and rb["norm"] == "L2"


def test_min_norm_results_answer_every_eps():
    model, x, y = problem()
    th = ThreatModel("l2", 0.5)
    r = FAB(th, steps=20)(model, x, y)
    grid = [0.0, 0.1, 0.2, 0.5]
    accs = r.robust_accuracy_at(grid)
    assert accs == sorted(accs, reverse=True) and accs[0] == 1.0
    assert accs[-1] == pytest.approx(1 - r.success_rate)   # at the attack's own eps: its own verdict
    with pytest.raises(AttackConfigError, match="not a minimum-norm attack"):
        APGD(th, steps=2)(model, x, y).robust_accuracy_at(0.1)


def test_cli_offers_every_suite():
    from click.testing import CliRunner
    out = CliRunner().invoke(main, ["eval", "--help"]).output
    assert all(name in out for name in SUITES)


def test_targeted_fab_and_apgd_t_keep_untargeted_success():
    model, x, y = problem()
    th = ThreatModel("linf", 0.1)
    for attack in (FABT(th, steps=10, n_target_classes=2), APGDT(th, steps=10, n_target_classes=2),
                   Square(th, n_queries=20)):
        r = attack(model, x, y)
        with torch.no_grad():
            assert torch.equal(r.success, model(r.x_adv).argmax(1) != y)


def test_accuracy_curve_takes_a_min_norm_attack_per_norm():
    from advlab.evaluation import robust_accuracy_curve
    model, x, y = problem()
    l1 = robust_accuracy_curve(model, (x, y), "l1", [0.0, 0.5, 2.0], steps=20)
    assert l1[0][1] == 1.0 and l1[0][1] >= l1[1][1] >= l1[2][1]
    fab = robust_accuracy_curve(model, (x, y), "l2", [0.0, 0.3], steps=20, attack="fab")
    deepfool = robust_accuracy_curve(model, (x, y), "l2", [0.0, 0.3], steps=20)
    assert abs(fab[1][1] - deepfool[1][1]) <= 0.1
    with pytest.raises(Exception, match="unknown minimum-norm attack"):
        robust_accuracy_curve(model, (x, y), "l2", [0.1], attack="cw")

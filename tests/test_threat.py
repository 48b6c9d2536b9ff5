"""ThreatModel geometry: projection, random start, steps and distances, for every norm."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab import ThreatModel, ThreatModelError
from advlab.threat import flat_norm, project_l1_ball

NORM_EPS = [("linf", 0.1), ("l2", 0.7), ("l1", 3.0), ("l0", 5)]


@settings(max_examples=40, deadline=None)
@given(norm_eps=st.sampled_from(NORM_EPS), scale=st.floats(0.1, 20), seed=st.integers(0, 10_000),
       shape=st.sampled_from([(4, 30), (3, 2, 5, 5)]))
def test_project_lands_in_ball_and_box(norm_eps, scale, seed, shape):
    norm, eps = norm_eps
    th = ThreatModel(norm, eps)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    x_adv = x + scale * torch.randn(shape, generator=g, dtype=torch.float64)
    p = th.project(x, x_adv)
    assert bool(th.contains(x, p, atol=1e-6).all())
    assert float(p.min()) >= 0 and float(p.max()) <= 1


@pytest.mark.parametrize("norm,eps", NORM_EPS)
def test_project_is_identity_inside(norm, eps):
    th = ThreatModel(norm, eps)
    x = torch.rand(6, 40, dtype=torch.float64) * 0.5 + 0.25
    inner = th.random_start(x, torch.Generator().manual_seed(1))
    assert torch.allclose(th.project(x, inner), inner, atol=1e-12)


@pytest.mark.parametrize("norm,eps", NORM_EPS)
def test_random_start_inside_and_seeded(norm, eps):
    th = ThreatModel(norm, eps)
    x = torch.rand(50, 64)
    a = th.random_start(x, torch.Generator().manual_seed(3))
    b = th.random_start(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert bool(th.contains(x, a).all())
    assert float(th.distance(x, a).mean()) > 0


def test_l1_projection_matches_sort_free_reference():
    torch.manual_seed(0)
    v = torch.randn(20, 15, dtype=torch.float64)
    p = project_l1_ball(v, 2.0)
    assert torch.allclose(p.abs().sum(1), torch.full((20,), 2.0, dtype=torch.float64))
    # optimality: the projection is w = sign(v) * max(|v| - theta, 0) with a common theta per row
    for row_v, row_p in zip(v, p):
        nz = row_p != 0
        theta = (row_v.abs() - row_p.abs())[nz]
        assert torch.allclose(theta, theta[0].expand_as(theta), atol=1e-10)
        assert bool((row_v.abs()[~nz] <= theta[0] + 1e-10).all())


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_step_has_unit_norm_and_ascends(norm):
    th = ThreatModel(norm, 1.0)
    g = torch.randn(5, 100, dtype=torch.float64)
    s = th.step(g, 0.5)
    expected = {"linf": 0.5, "l2": 0.5, "l1": 0.5}[norm]
    assert torch.allclose(flat_norm(s, norm), torch.full((5,), expected, dtype=torch.float64))
    assert bool(((s * g).sum(1) > 0).all())


def test_distance_counts_changed_entries_for_l0():
    th = ThreatModel("l0", 3)
    x = torch.zeros(2, 10)
    x_adv = x.clone()
    x_adv[0, :3] = 0.5
    assert th.distance(x, x_adv).tolist() == [3, 0]


@pytest.mark.parametrize("kwargs,msg", [
    (dict(norm="linf", eps=-0.1), "eps must be >= 0"),
    (dict(norm="l3", eps=0.1), "unknown norm"),
    (dict(norm="linf", eps=math.nan), "finite"),
    (dict(norm="l0", eps=2.5), "integer"),
    (dict(norm="linf", eps=0.1, bounds=(1, 0)), "low < high"),
    (dict(norm="linf", eps="big"), "number"),
])
def test_bad_threat_models(kwargs, msg):
    with pytest.raises(ThreatModelError, match=msg):
        ThreatModel(**kwargs)


def test_norm_aliases():
    assert ThreatModel("Linf", 0.1).norm == "linf"
    assert ThreatModel("inf", 0.1).norm == "linf"
    assert ThreatModel("L2", 0.1).norm == "l2"

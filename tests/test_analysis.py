"""Analysis against exact references: explicit convolution matrices, autograd Jacobians, closed forms."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.analysis import (conv_operator_top_singular_value, conv_singular_values, feature_fn,
                             jacobian_top_singular_values, layer_spectra, lipschitz_upper_bound, margin_report,
                             output_margins, smoothness, strided_conv_singular_values)


def explicit_matrix(apply, in_shape):
    """The matrix of a linear map on inputs of in_shape, built column by column from basis vectors."""
    n = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n, dtype=torch.float64).view(n, *in_shape)
    return apply(basis).reshape(n, -1).t()


@pytest.mark.parametrize("cout,cin,k,n", [(2, 3, 3, 5), (4, 2, 3, 6), (3, 3, 5, 7), (1, 1, 2, 4), (2, 2, 3, 2)])
def test_fft_conv_singular_values_match_explicit_circular_matrix(cout, cin, k, n):
    torch.manual_seed(0)
    w = torch.randn(cout, cin, k, k, dtype=torch.float64)

    def circular(x):
        pad = (k // 2, k - 1 - k // 2, k // 2, k - 1 - k // 2)
        return F.conv2d(F.pad(x, pad, mode="circular"), w)
    exact = torch.linalg.svdvals(explicit_matrix(circular, (cin, n, n)))
    fft = conv_singular_values(w, (n, n)).double()
    exact = exact[:fft.numel()]
    assert torch.allclose(fft[:exact.numel()], exact, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_power_iteration_matches_exact_zero_padding(stride, padding):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, bias=False).double()
    exact = torch.linalg.svdvals(explicit_matrix(lambda x: conv(x), (3, 6, 6)))[0]
    approx = conv_operator_top_singular_value(conv, (6, 6), iters=300)
    assert abs(approx - float(exact)) / float(exact) < 1e-3


def test_jacobian_power_iteration_matches_autograd():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    for layer in ("2", "4"):
        fn = feature_fn(net, layer)
        approx = jacobian_top_singular_values(fn, x, iters=200)
        for i in range(4):
            jac = torch.autograd.functional.jacobian(lambda z, fn=fn: fn(z.unsqueeze(0)).squeeze(0), x[i])
            exact = torch.linalg.svdvals(jac)[0]
            assert abs(float(approx[i]) - float(exact)) / float(exact) < 1e-6


def test_margins_of_linear_model_match_closed_forms():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], dtype=torch.float64)
    model = nn.Linear(2, 3, bias=False).double()
    model.weight.data.copy_(w)
    x = torch.tensor([[0.9, 0.1], [0.2, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    z = x @ w.t()
    m = output_margins(z, y)
    assert torch.allclose(m["margin"], torch.tensor([0.9 - 0.2, 1.2 - 0.2], dtype=torch.float32))
    p = torch.softmax(z, 1)
    assert torch.allclose(m["confidence"].double(), p.max(1).values, atol=1e-6)
    assert torch.allclose(m["entropy"].double(), -(p * p.log()).sum(1), atol=1e-6)
    # distance to the boundary of a linear model: min_k (z_y - z_k) / ||w_y - w_k||_2
    rep = margin_report(model, x, y, norm="l2")
    dist = torch.stack([min((z[i, y[i]] - z[i, k]) / (w[y[i]] - w[k]).norm() for k in range(3) if k != y[i])
                        for i in range(2)])
    assert torch.allclose(rep["per_sample"]["instance_margin"].double(), dist, rtol=1e-2)


def test_layer_spectra_fold_batchnorm_and_bound():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 10))
    net[1].running_var.fill_(4.0)
    net[1].weight.data.fill_(1.0)
    net.eval()
    spec = layer_spectra(net, torch.rand(2, 1, 8, 8))
    assert [s.kind for s in spec] == ["conv", "dense"]
    raw = conv_singular_values(net[0].weight, (8, 8))
    assert torch.allclose(spec[0].singular_values, raw / (4.0 + 1e-5) ** 0.5, rtol=1e-4, atol=1e-6)
    stats = spec[0].stats()
    assert stats["largest_actual"] <= stats["largest"] * (1 + 1e-3)  # zero padding never beats circular
    assert lipschitz_upper_bound(spec) > 0


def test_smoothness_random_vs_adversarial():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5)).eval()
    x = torch.rand(16, 20)
    y = net(x).argmax(1)
    s = smoothness(net, x, y, radius=0.1, pgd_steps=10)
    assert set(s) == {"0", "2"}
    assert s["2"]["adversarial"] >= s["2"]["random"]  # the adversarial direction moves the output most


@pytest.mark.slow
def test_preact_resnet18_spectra_cover_every_layer():
    """Functional check on the full network (its speed is measured in benchmarks/analysis.py)."""
    from advlab.models import build_model
    model = build_model("preact_resnet18").eval()
    spec = layer_spectra(model, torch.rand(1, 3, 32, 32), power_iters=5)
    assert len(spec) == 21 and all(s.stats()["largest"] > 0 for s in spec)
    assert all(s.complete for s in spec)  # strided convolutions too (polyphase FFT)


def test_small_wide_resnet_spectra():
    from advlab.models import build_model
    model = build_model("wrn", depth=10, widen=1).eval()
    spec = layer_spectra(model, torch.rand(1, 3, 32, 32), power_iters=5)
    convs = [s for s in spec if s.kind == "conv"]
    assert len(spec) == 1 + len(convs) and {s.input_size for s in convs} >= {(32, 32), (16, 16), (8, 8)}


def circular_strided(w, stride):
    """A circular convolution with stride: wrap the input by k - 1 pixels, convolve with no padding."""
    kh, kw = w.shape[-2:]
    return lambda x: F.conv2d(F.pad(x, (0, kw - 1, 0, kh - 1), mode="circular"), w, None, stride)


@pytest.mark.parametrize("cout,cin,k,stride,size", [(3, 2, 3, (2, 2), (8, 8)), (2, 3, 4, (2, 2), (6, 6)),
                                                   (4, 2, 1, (2, 2), (8, 8)), (2, 2, 5, (3, 3), (9, 9)),
                                                   (2, 1, 3, (2, 1), (6, 5)), (3, 2, 3, (1, 1), (5, 5))])
def test_polyphase_strided_conv_singular_values_match_explicit_circular_matrix(cout, cin, k, stride, size):
    torch.manual_seed(1)
    w = torch.randn(cout, cin, k, k, dtype=torch.float64)
    exact = torch.linalg.svdvals(explicit_matrix(circular_strided(w, stride), (cin, *size)))
    ours = strided_conv_singular_values(w, size, stride).double()
    assert ours.numel() == min(exact.numel(), cout * size[0] * size[1] // (stride[0] * stride[1]))
    assert torch.allclose(ours, exact[:ours.numel()], rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="does not divide"):
        strided_conv_singular_values(w, (size[0] + 1, size[1]), (2, 2))


def test_strided_conv_spectrum_is_exact_on_small_inputs():
    """A strided convolution on a small input: the exact matrix of the layer itself (zero padding)."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(2, 3, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    spec = layer_spectra(net.eval(), torch.rand(1, 2, 10, 10))
    conv = net[0]
    exact = torch.linalg.svdvals(explicit_matrix(
        lambda x: F.conv2d(x, conv.weight.double(), None, 2, 1), (2, 10, 10)))
    assert torch.allclose(spec[0].singular_values.double(), exact[:spec[0].singular_values.numel()], rtol=1e-4)
    assert all(v == v for v in spec[0].stats().values())  # no NaN


def test_strided_conv_spectrum_on_large_inputs_is_the_polyphase_fft_and_power_iteration_keeps_real_padding():
    """Above explicit_max_dim: every singular value of the circular strided layer (polyphase FFT), the
    largest one also with the layer's real zero padding by power iteration."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(2, 3, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    spec = layer_spectra(net.eval().double(), torch.rand(1, 2, 10, 10, dtype=torch.float64), power_iters=200,
                         explicit_max_dim=16)
    conv = net[0]
    exact = torch.linalg.svdvals(explicit_matrix(circular_strided(conv.weight.detach(), 2), (2, 10, 10)))
    assert spec[0].complete
    assert torch.allclose(spec[0].singular_values.double(), exact[:spec[0].singular_values.numel()], rtol=1e-5)
    zero_pad = torch.linalg.svdvals(explicit_matrix(lambda x: F.conv2d(x, conv.weight.detach(), None, 2, 1),
                                                    (2, 10, 10)))[0]
    assert spec[0].stats()["largest_actual"] == pytest.approx(float(zero_pad), rel=1e-3)
    assert all(v == v for v in spec[0].stats().values())  # no NaN


def test_a_spectrum_known_only_by_its_largest_value_reports_nan_not_made_up_statistics():
    """Grouped convolution on an input too large for the explicit matrix: only the largest value."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    spec = layer_spectra(net.eval(), torch.rand(1, 4, 8, 8), explicit_max_dim=16)
    st = spec[0].stats()
    assert not spec[0].complete and st["largest"] > 0 and st["largest"] == st["largest_actual"]
    assert all(st[k] != st[k] for k in ("mean", "std", "spread", "stable_rank", "condition"))
    full = layer_spectra(net.eval(), torch.rand(1, 4, 8, 8))[0]
    assert full.complete and full.stats()["largest"] == pytest.approx(st["largest"], rel=1e-3)


def test_batchnorm_cnn_spectra_fold_every_norm():
    """fast_mnist_cnn(batchnorm=True): each hidden layer's spectrum is that of the layer followed by
    its BatchNorm (the function the network computes in eval mode), dense layers included."""
    from advlab.models import build_model
    torch.manual_seed(0)
    net = build_model("fast_mnist_cnn", batchnorm=True)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()
    spec = layer_spectra(net, torch.rand(1, 1, 28, 28))
    assert [s.kind for s in spec] == ["conv", "conv", "dense", "dense"]
    fc, bn = net[7], net[8]
    scale = bn.weight.detach() / (bn.running_var + bn.eps).sqrt()
    exact = torch.linalg.svdvals((fc.weight * scale[:, None]).double())
    assert torch.allclose(spec[2].singular_values.double(), exact, rtol=1e-5)
    assert torch.allclose(spec[3].singular_values.double(), torch.linalg.svdvals(net[10].weight.double()), rtol=1e-5)


def test_spearman_exact_fractions_and_ties():
    from advlab.analysis.diagnostics import spearman
    # 4 points, one adjacent swap: 1 - 6 * 2 / (4 * 15) = 0.8 exactly, so a "<= -0.8" check holds
    assert spearman([0.0, 0.1, 0.2, 0.3], [0.9897, 0.9915, 0.9890, 0.9833]) == -0.8
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(0.894427191, abs=1e-9)  # average ranks for ties
    nan = float("nan")  # an undefined statistic has no rank: never a made-up +-1
    assert spearman([0.0, 0.1, 0.2, 0.3], [nan] * 4) != spearman([0.0, 0.1, 0.2, 0.3], [nan] * 4)
    assert spearman([0.0, 0.1, 0.2], [1.0, nan, 2.0]) != spearman([0.0, 0.1, 0.2], [1.0, nan, 2.0])


def test_wen_shares_skip_layers_whose_statistic_is_undefined():
    from advlab.experiments.reproductions.wen2020 import _share
    nan = float("nan")
    assert _share([-1.0, nan, 0.5], lambda v: v < 0) == 0.5
    assert _share([nan, nan], lambda v: v < 0) != _share([nan, nan], lambda v: v < 0)

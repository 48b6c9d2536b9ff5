"""Singular values of a network's linear maps: dense layers by SVD, convolutions as operators over
their actual input size (exact FFT method of Sedghi, Gupta, Long 2019 for circular padding, with a
polyphase split for strides; power iteration for the largest value under the real zero padding),
BatchNorm folded in, and the largest singular values of input-to-layer Jacobians at data points."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.guard import attack_mode


def dense_singular_values(weight: Tensor) -> Tensor:
    """All singular values of a dense layer's weight (out, in), descending."""
    return torch.linalg.svdvals(weight.detach().double()).float()


def conv_singular_values(kernel: Tensor, input_size: tuple[int, int]) -> Tensor:
    """All singular values of the circular (periodic) convolution with `kernel` (c_out, c_in, kh, kw)
    on inputs of spatial size `input_size`: the SVDs of the c_out x c_in matrices of the kernel's 2-D
    DFT at every frequency (exact; Sedghi et al. 2019). Returns them sorted, descending."""
    n, m = input_size
    k = kernel.detach()  # float32 -> complex64 SVDs (fast), float64 -> complex128 (reference precision)
    co, ci, kh, kw = k.shape
    if kh > n or kw > m:  # a kernel larger than the input wraps around: taps p and p + n act on one pixel
        kh2, kw2 = -(-kh // n) * n, -(-kw // m) * m
        k = F.pad(k, (0, kw2 - kw, 0, kh2 - kh)).reshape(co, ci, kh2 // n, n, kw2 // m, m).sum((2, 4))
    transform = torch.fft.fft2(k, s=(n, m))                       # (c_out, c_in, n, m)
    per_freq = transform.permute(2, 3, 0, 1)                     # (n, m, c_out, c_in)
    return torch.linalg.svdvals(per_freq).flatten().sort(descending=True).values


def strided_conv_singular_values(kernel: Tensor, input_size: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """All singular values of a circular convolution with stride (sh, sw) on inputs whose size the stride
    divides: split the input into its sh * sw polyphase components (pixels (s*i + a, s*j + b)), and the
    layer is a stride-1 circular convolution on the (n / sh, m / sw) grid with c_in * sh * sw input
    channels, whose spectrum `conv_singular_values` gives exactly."""
    (n, m), (sh, sw) = input_size, stride
    if n % sh or m % sw:
        raise ValueError(f"stride {stride} does not divide the input size {input_size}")
    co, ci, kh, kw = kernel.shape
    ph, pw = -(-kh // sh), -(-kw // sw)
    k = F.pad(kernel.detach(), (0, pw * sw - kw, 0, ph * sh - kh))          # taps p = u * sh + a
    k = k.view(co, ci, ph, sh, pw, sw).permute(0, 1, 3, 5, 2, 4).reshape(co, ci * sh * sw, ph, pw)
    return conv_singular_values(k, (n // sh, m // sw))


def linear_map_top_singular_value(apply: Callable[[Tensor], Tensor], input_shape: tuple[int, ...],
                                  iters: int = 100, seed: int = 0, dtype: torch.dtype = torch.float64,
                                  device: torch.device | str = "cpu") -> float:
    """Largest singular value of a linear map x -> apply(x) by power iteration on A^T A (A^T via autograd)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn((1, *input_shape), generator=g, dtype=dtype).to(device)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(iters):
        v_req = v.detach().requires_grad_(True)
        with torch.enable_grad():
            u = apply(v_req)
            (w,) = torch.autograd.grad(u, v_req, grad_outputs=u)  # A^T A v
        sigma = float(u.detach().norm())
        v = w / (w.norm() + 1e-30)
    return sigma


def conv_operator_top_singular_value(conv: nn.Conv2d, input_size: tuple[int, int], iters: int = 100) -> float:
    """Largest singular value of a Conv2d (its own zero padding, stride, dilation, groups; no bias)."""
    w = conv.weight.detach()

    def apply(x: Tensor) -> Tensor:
        return F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return linear_map_top_singular_value(apply, (conv.in_channels, *input_size), iters, dtype=w.dtype,
                                         device=w.device)


def explicit_operator_singular_values(apply: Callable[[Tensor], Tensor], input_shape: tuple[int, ...],
                                     dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """All singular values of a linear map by building its matrix from the basis vectors (exact; for
    strided or grouped convolutions on small inputs, where the FFT method does not apply)."""
    n = 1
    for d in input_shape:
        n *= d
    basis = torch.eye(n, dtype=dtype, device=device).view(n, *input_shape)
    with torch.no_grad():
        matrix = torch.cat([apply(basis[i:i + 1024]).reshape(min(1024, n - i), -1) for i in range(0, n, 1024)])
    return torch.linalg.svdvals(matrix.t().double()).to(dtype)


@dataclass
class LayerSpectrum:
    name: str
    kind: str                  # dense | conv
    singular_values: Tensor    # descending (exact for dense and circular conv)
    top_power: float | None    # power-iteration largest value with the layer's real padding/stride (conv)
    input_size: tuple[int, ...] | None = None
    complete: bool = True      # False: only the largest value is known (the rest of the statistics are NaN)

    def stats(self) -> dict[str, float]:
        s = self.singular_values.double()
        top = float(s[0])
        actual = self.top_power if self.top_power is not None else top
        if not self.complete:
            nan = float("nan")
            return {"largest": top, "largest_actual": actual, "mean": nan, "std": nan, "spread": nan,
                    "stable_rank": nan, "condition": nan}
        nonzero = s[s > 1e-12 * top] if top > 0 else s
        std = float(s.std()) if len(s) > 1 else float("nan")
        spread = std / top if top > 0 else float("nan")  # relative spread: std / largest
        return {"largest": top, "largest_actual": actual,
                "mean": float(s.mean()), "std": std, "spread": spread,
                "stable_rank": float((s ** 2).sum() / top ** 2) if top > 0 else 0.0,
                "condition": float(top / nonzero[-1]) if len(nonzero) else float("inf")}


def _bn_scale(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> Tensor:
    scale = bn.running_var.detach().double().add(bn.eps).rsqrt()
    return scale * bn.weight.detach().double() if bn.weight is not None else scale


def layer_spectra(model: nn.Module, example_input: Tensor, *, fold_batchnorm: bool = True,
                  power_iters: int = 50, explicit_max_dim: int = 4096) -> list[LayerSpectrum]:
    """Spectra of every Linear and Conv2d of `model`, convolutions over the input size they actually see
    for `example_input` (one sample suffices). A BatchNorm registered right after a layer (in module
    order, with matching channels) is folded in as a diagonal scaling of that layer's outputs."""
    sizes: dict[str, tuple[int, ...]] = {}
    def remember(name: str) -> Callable:
        def hook(mod: nn.Module, inp: tuple, out: Tensor) -> None:
            sizes.setdefault(name, tuple(inp[0].shape[2:]))
        return hook
    hooks = [m.register_forward_hook(remember(name)) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with attack_mode(model), torch.no_grad():
        model(example_input[:1])
    for h in hooks:
        h.remove()
    mods = list(model.named_modules())
    out: list[LayerSpectrum] = []
    for i, (name, m) in enumerate(mods):
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        nxt = mods[i + 1][1] if i + 1 < len(mods) else None
        scale = None
        if fold_batchnorm and isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)) and \
                nxt.num_features == (m.out_features if isinstance(m, nn.Linear) else m.out_channels):
            scale = _bn_scale(nxt)
        if isinstance(m, nn.Linear):
            w = m.weight.detach().double()
            if scale is not None:
                w = w * scale[:, None]
            out.append(LayerSpectrum(name, "dense", dense_singular_values(w), None))
            continue
        if name not in sizes:
            continue  # not reached by the forward pass
        w = m.weight.detach()
        if scale is not None:
            w = w * scale.view(-1, 1, 1, 1).to(w.dtype)
        folded = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                           m.groups, bias=False).to(device=w.device, dtype=w.dtype)
        folded.weight.data.copy_(w)
        in_dim = m.in_channels * sizes[name][0] * sizes[name][1]
        size = sizes[name][:2]
        top = conv_operator_top_singular_value(folded, size, power_iters)
        complete = True
        plain = m.groups == 1 and m.dilation == (1, 1)
        if plain and m.stride == (1, 1):  # exact for circular padding (the real padding's largest value: `top`)
            sv = conv_singular_values(w, size)
        elif in_dim <= explicit_max_dim:  # strided / grouped on a small input: the layer's own exact matrix
            sv = explicit_operator_singular_values(folded, (m.in_channels, *size), w.dtype, w.device)
        elif plain and size[0] % m.stride[0] == 0 and size[1] % m.stride[1] == 0:  # exact, circular padding
            sv = strided_conv_singular_values(w, size, m.stride)
        else:  # only the largest value is known
            sv, complete = torch.tensor([top]), False
        out.append(LayerSpectrum(name, "conv", sv, top, sizes[name], complete))
    return out


def lipschitz_upper_bound(spectra: list[LayerSpectrum]) -> float:
    """Product of the layers' largest singular values (with their real padding): an upper bound on the
    network's l2 Lipschitz constant for 1-Lipschitz activations (ReLU, max pooling excluded)."""
    prod = 1.0
    for s in spectra:
        prod *= s.stats()["largest_actual"]
    return prod


def jacobian_top_singular_values(fn: Callable[[Tensor], Tensor], x: Tensor, iters: int = 30,
                                 seed: int = 0) -> Tensor:
    """Per-sample largest singular value of the Jacobian of fn (applied per sample, batched) at x, by
    power iteration on J^T J with forward-mode (jvp) and reverse-mode (vjp) products. fn must treat
    samples independently (eval mode)."""
    from torch.func import jvp, vjp
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    shape = (-1,) + (1,) * (x.ndim - 1)
    v = v / v.flatten(1).norm(dim=1).view(shape)
    sigma = torch.zeros(x.shape[0], device=x.device)
    for _ in range(iters):
        _, u = jvp(fn, (x,), (v,))
        sigma = u.flatten(1).norm(dim=1)
        _, pullback = vjp(fn, x)
        (w,) = pullback(u)
        v = w / (w.flatten(1).norm(dim=1).view(shape) + 1e-30)
    return sigma.detach()

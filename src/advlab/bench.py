"""Speed benchmarks (`advlab bench`): attacks and training epochs against peers measured in the same
run, on the same model, batch and device, interleaved so that drift hits all alike. Reported per
case: images/s, the ratio to the model's forward + input-backward floor, the paired time ratio to
the reference, and the achieved TFLOP/s (FLOPs from torch.utils.flop_counter) against a measured
matrix-multiply peak. Synthetic data: speed does not depend on what the pixels show.
"""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__
from .accel import FastPath, accelerate, resolve_accel
from .attacks import APGD, FGSM, PGD, Attack
from .errors import AdvlabError
from .models import build_model
from .threat import ThreatModel

BENCH_MODELS = {  # name -> (registry name, input shape, linf eps, PGD step)
    "madry_cnn": ("madry_cnn", (1, 28, 28), 0.3, 0.01),
    "preact_resnet18": ("preact_resnet18", (3, 32, 32), 8 / 255, 2 / 255),
}
ATTACKS = ("fgsm", "pgd10", "pgd10-es", "apgd100")
TRAINING = ("pgd_at", "fgsm_rs", "trades")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_times(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                 warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each function, `repeats` times, interleaved ABBA so drift hits all alike."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    for r in range(repeats):
        for name in (list(fns) if r % 2 == 0 else list(reversed(list(fns)))):
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            out[name].append(time.perf_counter() - t0)
    return out


def _input_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    xr = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xr).float(), y, reduction="sum")
    return torch.autograd.grad(loss, xr)[0]


def floor_seconds(model: nn.Module, x: Tensor, y: Tensor, repeats: int = 10) -> float:
    """Median time of one forward + input-gradient backward pass: the floor of one attack step."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        return statistics.median(paired_times({"floor": lambda: _input_grad(model, x, y)}, repeats, x.device,
                                              warmup=2)["floor"])
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def step_flops(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """FLOPs of one forward + input-gradient backward pass of the batch (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        xr = x.detach().requires_grad_(True)
        with FlopCounterMode(display=False) as counter:  # (.backward: the counter's hooks refuse autograd.grad)
            nn.functional.cross_entropy(model(xr).float(), y, reduction="sum").backward()
        return int(counter.get_total_flops())
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int | None = None) -> float:
    """Measured dense matrix-multiply throughput, the yardstick for achieved TFLOP/s."""
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = paired_times({"mm": lambda: a @ b}, 5 if device.type == "cuda" else 3, device, warmup=2)["mm"]
    return 2 * n ** 3 / statistics.median(t) / 1e12


@dataclass
class BenchSetup:
    model_name: str
    model: nn.Module          # the fp32 model
    fast: nn.Module           # the model under the fast path (the same module when it is off)
    path: FastPath
    x: Tensor
    y: Tensor
    threat: ThreatModel
    step: float


def setup(model_name: str, batch: int, device: str | torch.device, accel: str = "auto", seed: int = 0) -> BenchSetup:
    if model_name not in BENCH_MODELS:
        raise AdvlabError(f"unknown benchmark model {model_name!r}; use one of {', '.join(BENCH_MODELS)}")
    reg, shape, eps, step = BENCH_MODELS[model_name]
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = build_model(reg).to(dev).eval()
    x = torch.rand(batch, *shape, device=dev)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = the model's predictions: every point starts correct
    path = resolve_accel(accel, dev)
    return BenchSetup(model_name, model, accelerate(model, path), path, x, y, ThreatModel("linf", eps), step)


def _advlab_attack(name: str, s: BenchSetup) -> tuple[int, Attack]:
    th = s.threat
    if name == "fgsm":
        return 1, FGSM(th)
    if name == "pgd10":
        return 10, PGD(th, steps=10, step_size=s.step, early_stop=False)
    if name == "pgd10-es":
        return 10, PGD(th, steps=10, step_size=s.step)
    if name == "apgd100":
        return 100, APGD(th, steps=100, early_stop=False)
    raise AdvlabError(f"unknown benchmark attack {name!r}; use one of {', '.join(ATTACKS)}")


def _torchattacks_attack(name: str, s: BenchSetup) -> Callable[[], Tensor] | None:
    try:
        import torchattacks
    except ImportError:
        return None
    m, eps = s.model, s.threat.eps
    if name == "fgsm":
        atk = torchattacks.FGSM(m, eps=eps)
    elif name in ("pgd10", "pgd10-es"):
        atk = torchattacks.PGD(m, eps=eps, alpha=s.step, steps=10)
    else:
        atk = torchattacks.APGD(m, eps=eps, steps=100, n_restarts=1)
    return lambda: atk(s.x, s.y)


def _art_attack(name: str, s: BenchSetup) -> Callable[[], Tensor] | None:
    """IBM ART's attack of the same name and budget on the same fp32 model (numpy in, numpy out, as
    ART users call it); the result is turned back into a tensor on the model's device."""
    try:
        import numpy as np
        from art.attacks.evasion import AutoProjectedGradientDescent, FastGradientMethod, \
            ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return None
    with torch.no_grad():
        classes = int(s.model(s.x[:1]).shape[1])
    clf = PyTorchClassifier(model=s.model, loss=nn.CrossEntropyLoss(), input_shape=tuple(s.x.shape[1:]),
                            nb_classes=classes, clip_values=(0.0, 1.0),
                            device_type="gpu" if s.x.is_cuda else "cpu")
    eps, batch = s.threat.eps, s.x.shape[0]
    if name == "fgsm":
        atk: Any = FastGradientMethod(clf, norm=np.inf, eps=eps, batch_size=batch)
    elif name in ("pgd10", "pgd10-es"):
        atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=s.step, max_iter=10,
                                              num_random_init=1, batch_size=batch, verbose=False)
    else:
        atk = AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=100,
                                           nb_random_init=1, batch_size=batch, loss_type="cross_entropy",
                                           verbose=False)
    x_np, y_np = s.x.cpu().numpy(), s.y.cpu().numpy()
    return lambda: torch.from_numpy(atk.generate(x_np, y=y_np)).to(s.x.device)


REFERENCES: dict[str, Callable[[str, BenchSetup], Callable[[], Tensor] | None]] = {
    "torchattacks": _torchattacks_attack, "art": _art_attack}
"""Peer libraries timed beside advlab (each skipped when not installed)."""


def _with_accuracy(craft: Callable[[], Tensor], model: nn.Module, y: Tensor) -> Callable[[], Tensor]:
    """The reference's attack plus the forward pass that tells which points it fooled: the same
    output as advlab's attack call (x_adv and per-sample success)."""
    def run() -> Tensor:
        x_adv = craft()
        with torch.no_grad():
            return model(x_adv).argmax(1) != y
    return run


def _speedups(ours: list[float], ref: list[float]) -> tuple[float, float, float]:
    """Paired median, min and max of reference time / advlab time (> 1: advlab faster)."""
    r = [b / a for a, b in zip(ours, ref)]
    return statistics.median(r), min(r), max(r)


def bench_attacks(model_name: str = "madry_cnn", *, batch: int = 256, device: str = "cpu", accel: str = "auto",
                  attacks: tuple[str, ...] = ("fgsm", "pgd10", "pgd10-es"), repeats: int = 5,
                  references: tuple[str, ...] = tuple(REFERENCES)) -> list[dict[str, Any]]:
    """One row per attack: advlab (fast path as `accel` resolves on `device`) and each installed
    reference library (PyTorch defaults, fp32), timed in the same run on like outputs: advlab's call
    (x_adv and per-sample success) against the reference plus the forward pass that finds its
    successes (`speedup_vs_<ref>`), and advlab's `perturb` (x_adv only) against the reference alone
    (`speedup_x_adv_only_vs_<ref>`)."""
    unknown = set(references) - set(REFERENCES)
    if unknown:
        raise AdvlabError(f"unknown reference {sorted(unknown)}; use {', '.join(REFERENCES)}")
    s = setup(model_name, batch, device, accel)
    dev = s.x.device
    floor = floor_seconds(s.model, s.x, s.y)
    flops = step_flops(s.model, s.x, s.y)
    peak = matmul_peak_tflops(dev, s.path.dtype or torch.float32)
    rows = []
    for name in attacks:
        steps, attack = _advlab_attack(name, s)
        fns: dict[str, Callable[[], object]] = {
            "advlab": lambda a=attack: a(s.fast, s.x, s.y),
            "advlab_perturb": lambda a=attack: a.perturb(s.fast, s.x, s.y)}
        found = []
        for ref_name in references:
            ref = REFERENCES[ref_name](name, s)
            if ref is not None:
                found.append(ref_name)
                fns[ref_name] = ref
                fns[f"{ref_name}_acc"] = _with_accuracy(ref, s.model, s.y)
        t = paired_times(fns, repeats if steps < 100 else max(2, repeats // 2), dev)
        med = {k: statistics.median(v) for k, v in t.items()}
        row: dict[str, Any] = {
            "model": model_name, "attack": name, "batch": batch, "steps": steps,
            "advlab_images_per_s": batch / med["advlab"],
            "advlab_perturb_images_per_s": batch / med["advlab_perturb"],
            "advlab_floor_ratio": med["advlab"] / (steps * floor),
            "advlab_tflops": steps * flops / med["advlab"] / 1e12,
            "floor_images_per_s": batch / floor, "peak_tflops": peak,
        }
        for ref_name in found:
            same, lo, hi = _speedups(t["advlab"], t[f"{ref_name}_acc"])
            only, lo2, hi2 = _speedups(t["advlab_perturb"], t[ref_name])
            row.update({f"{ref_name}_images_per_s": batch / med[ref_name],
                        f"{ref_name}_acc_images_per_s": batch / med[f"{ref_name}_acc"],
                        f"speedup_vs_{ref_name}": same, f"speedup_vs_{ref_name}_min": lo,
                        f"speedup_vs_{ref_name}_max": hi, f"speedup_x_adv_only_vs_{ref_name}": only,
                        f"speedup_x_adv_only_vs_{ref_name}_min": lo2, f"speedup_x_adv_only_vs_{ref_name}_max": hi2})
        rows.append(row)
    return rows


def _reference_pgd_at_epoch(model: nn.Module, x: Tensor, y: Tensor, eps: float, step: float,
                            batch: int) -> Callable[[], None]:
    """What a user writes with torchattacks today: PGD-10 to craft, then SGD on the adversarial batch."""
    import torchattacks
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def epoch() -> None:
        atk = torchattacks.PGD(model, eps=eps, alpha=step, steps=10)
        for i in range(0, x.shape[0], batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            model.eval()
            xa = atk(xb, yb)
            model.train()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xa), yb).backward()
            opt.step()
    return epoch


def bench_training(model_name: str = "madry_cnn", *, n_images: int = 2048, batch: int = 128, device: str = "cpu",
                   accel: str = "auto", objectives: tuple[str, ...] = TRAINING, repeats: int = 2,
                   reference: bool = True) -> list[dict[str, Any]]:
    """Seconds per training epoch on n_images synthetic images, per objective; PGD-AT also against a
    torchattacks + plain PyTorch loop (fp32) in the same run."""
    from .training import Trainer, TrainConfig, build_objective
    s = setup(model_name, n_images, device, accel)
    dev = s.x.device
    rows = []
    for obj in objectives:
        kw: dict[str, Any] = {"steps": 10, "step_size": s.step} if obj in ("pgd_at", "trades") else {}
        objective = build_objective(obj, s.threat, **kw)
        cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.01, momentum=0.9, accel=accel)
        fns: dict[str, Callable[[], object]] = {
            "advlab": lambda objective=objective, cfg=cfg: Trainer(s.model, objective, cfg).fit(s.x, s.y)}
        if reference and obj == "pgd_at":
            try:
                fns["reference"] = _reference_pgd_at_epoch(s.model, s.x, s.y, s.threat.eps, s.step, batch)
            except ImportError:
                pass
        t = paired_times(fns, repeats, dev)
        med = {k: statistics.median(v) for k, v in t.items()}
        row: dict[str, Any] = {"model": model_name, "objective": obj, "n_images": n_images, "batch": batch,
                               "advlab_epoch_s": med["advlab"], "advlab_images_per_s": n_images / med["advlab"],
                               "advlab_epoch_s_per_50k": med["advlab"] * 50000 / n_images}
        if "reference" in med:
            row.update(reference_epoch_s=med["reference"], speedup_vs_reference=med["reference"] / med["advlab"])
        rows.append(row)
    return rows


def environment(device: str | torch.device) -> dict[str, Any]:
    dev = torch.device(device)
    env: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "advlab": __version__,
                           "torch": torch.__version__, "python": platform.python_version(),
                           "machine": platform.machine(), "threads": torch.get_num_threads(), "device": str(dev)}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    for module in ("torchattacks", "art"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = None
    return env

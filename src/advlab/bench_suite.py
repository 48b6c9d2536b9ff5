"""`advlab bench suite`: advlab's AutoAttack suite and the official code (`pyautoattack`) on the same
model and points in one run: seconds, forward and backward passes (counted in samples by one
wrapper around the model for both), robust accuracy after each attack."""
from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import Tensor, nn

from .errors import AdvlabError
from .threat import ThreatModel

REF_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}


class PassCounter(nn.Module):
    """The model, counting forward passes and input-gradient (backward) passes in samples."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.forward_samples = 0
        self.backward_samples = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forward_samples += x.shape[0]
        out = self.inner(x)
        if out.requires_grad:
            n = x.shape[0]

            def count(grad: Tensor) -> Tensor:
                self.backward_samples += n
                return grad
            out.register_hook(count)
        return out

    def reset(self) -> None:
        self.forward_samples = self.backward_samples = 0


def bench_suite(model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, *, version: str = "standard",
                batch: int = 500, seed: int = 0) -> list[dict[str, Any]]:
    """Two rows (advlab, reference) with seconds, passes and robust accuracy on the same points."""
    try:
        import pyautoattack
    except ImportError:
        raise AdvlabError("advlab bench suite needs the reference AutoAttack: pip install pyautoattack==0.2.0") \
            from None
    from .evaluation import evaluate_robustness
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    model = model.eval()
    counted = PassCounter(model).eval()
    rows = []
    t0 = time.perf_counter()
    res = evaluate_robustness(counted, (x, y), ThreatModel(norm, eps), version, batch_size=batch, seed=seed,
                              progress=False)
    rows.append({"impl": "advlab", "suite": res.suite, "seconds": time.perf_counter() - t0,
                 "n_forward": counted.forward_samples, "n_backward": counted.backward_samples,
                 "clean_accuracy": res.clean_accuracy, "robust_accuracy": res.robust_accuracy,
                 "after_each": res.robust_accuracy_after_each_attack(), "n": int(x.shape[0])})
    counted.reset()
    aa = pyautoattack.AutoAttack(counted, norm=REF_NORM[norm], eps=eps, version=version, seed=seed,
                                 device=str(x.device))
    aa.verbose = False
    t0 = time.perf_counter()
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        robust = float((model(x_adv).argmax(1) == y).float().mean())
        clean = float((model(x).argmax(1) == y).float().mean())
    rows.append({"impl": "pyautoattack " + pyautoattack.__version__, "suite": version, "seconds": seconds,
                 "n_forward": counted.forward_samples, "n_backward": counted.backward_samples,
                 "clean_accuracy": clean, "robust_accuracy": robust, "n": int(x.shape[0])})
    rows[0]["time_ratio_to_reference"] = rows[0]["seconds"] / max(seconds, 1e-9)
    return rows

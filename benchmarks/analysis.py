"""Time advlab's analysis of a PreActResNet-18 on 32x32 inputs (untrained weights) on this machine.

    python benchmarks/analysis.py
"""
from __future__ import annotations

import json
import time

import torch

from advlab.analysis import jacobian_top_singular_values, layer_spectra, lipschitz_upper_bound, margin_report
from advlab.models import build_model


def main() -> None:
    torch.manual_seed(0)
    model = build_model("preact_resnet18").eval()
    x = torch.rand(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))
    t0 = time.perf_counter()
    spec = layer_spectra(model, x[:1], power_iters=20)
    t_spec = time.perf_counter() - t0
    t0 = time.perf_counter()
    jac = jacobian_top_singular_values(model, x[:4], iters=10)
    t_jac = time.perf_counter() - t0
    t0 = time.perf_counter()
    margin_report(model, x, y, instance=False)
    t_margin = time.perf_counter() - t0
    print(json.dumps({"model": "preact_resnet18", "threads": torch.get_num_threads(), "layers": len(spec),
                      "singular_values": sum(s.singular_values.numel() for s in spec),
                      "spectra_seconds": round(t_spec, 2), "jacobian_4_points_10_iters_seconds": round(t_jac, 2),
                      "margins_16_points_seconds": round(t_margin, 2),
                      "lipschitz_upper_bound": lipschitz_upper_bound(spec), "jacobian_sigma_mean": float(jac.mean())}))


if __name__ == "__main__":
    main()

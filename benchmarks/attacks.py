"""advlab attacks against torchattacks (and ART when installed) on the same model, batch and machine.

    python benchmarks/attacks.py [--batch 256] [--repeats 7] [--suite-points 1000]

Prints, per attack, the paired median time ratio advlab / reference and the ratio of advlab's
time to `steps x (forward + input-backward)` time, then the standard suite against torchattacks'
AutoAttack composition (APGD-CE, APGD-T, FAB-T, Square at AutoAttack's budgets) on MNIST test points:
robust accuracy, forward/backward passes and time. Numbers go to benchmarks/RESULTS.md by hand.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Counted, forward_backward_seconds, madry_cnn, mnist_mlp, paired_times,  # noqa: E402
                    reference_autoattack)

from advlab import ThreatModel  # noqa: E402
from advlab.attacks import APGD, FGSM, PGD  # noqa: E402
from advlab.data import load_mnist  # noqa: E402
from advlab.evaluation import evaluate_robustness  # noqa: E402
from advlab.training import train_classifier  # noqa: E402


def trained(model: torch.nn.Module, train, n: int, epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    train_classifier(model, train.x[:n], train.y[:n], epochs=epochs, batch_size=128, lr=1e-3)
    return model.eval()


def speed(model, x, y, repeats: int) -> list[dict]:
    import torchattacks
    eps, alpha = 0.3, 0.01
    th = ThreatModel("linf", eps)
    floor = forward_backward_seconds(model, x, y)
    rows = []
    cases = {
        "FGSM": (1, lambda: FGSM(th)(model, x, y), lambda: torchattacks.FGSM(model, eps=eps)(x, y)),
        "PGD-10": (10, lambda: PGD(th, steps=10, step_size=alpha, early_stop=False)(model, x, y),
                   lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=10)(x, y)),
        "PGD-10 (early stop)": (10, lambda: PGD(th, steps=10, step_size=alpha)(model, x, y),
                                lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=10)(x, y)),
        "APGD-CE-100": (100, lambda: APGD(th, steps=100, early_stop=False)(model, x, y),
                        lambda: torchattacks.APGD(model, eps=eps, steps=100, n_restarts=1)(x, y)),
    }
    for name, (steps, ours, ref) in cases.items():
        t = paired_times({"advlab": ours, "torchattacks": ref}, repeats if steps < 100 else max(3, repeats // 2))
        ratios = [a / b for a, b in zip(t["advlab"], t["torchattacks"])]
        rows.append({
            "attack": name, "advlab_s": statistics.median(t["advlab"]),
            "torchattacks_s": statistics.median(t["torchattacks"]),
            "paired_median_ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "advlab_floor_ratio": statistics.median(t["advlab"]) / (steps * floor),
            "torchattacks_floor_ratio": statistics.median(t["torchattacks"]) / (steps * floor),
        })
    return rows


def suite(model, x, y, eps: float) -> dict:
    counted = Counted(model).eval()
    t0 = time.perf_counter()
    ours = evaluate_robustness(counted, (x, y), ThreatModel("linf", eps), suite="standard", batch_size=500)
    ours_s = time.perf_counter() - t0
    ours_passes = (counted.forward_samples, counted.backward_samples)
    counted.reset()
    t0 = time.perf_counter()
    ref = reference_autoattack(counted, "linf", eps)
    adv = torch.cat([ref(x[i:i + 500], y[i:i + 500]) for i in range(0, x.shape[0], 500)])
    ref_s = time.perf_counter() - t0
    ref_passes = (counted.forward_samples, counted.backward_samples)
    with torch.no_grad():
        ref_acc = float((model(adv).argmax(1) == y).float().mean())
    return {"eps": eps, "n": x.shape[0], "advlab_robust_acc": ours.robust_accuracy, "reference_robust_acc": ref_acc,
            "clean_acc": ours.clean_accuracy, "advlab_s": ours_s, "reference_s": ref_s,
            "advlab_forward_backward": ours_passes, "reference_forward_backward": ref_passes,
            "advlab_per_attack": [(a.name, a.broken, a.attacked) for a in ours.attacks]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--suite-points", type=int, default=1000)
    ap.add_argument("--suite-eps", type=float, default=0.1)
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    train, test = load_mnist("train"), load_mnist("test")
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "processor": platform.processor() or platform.platform(), "batch": args.batch}
    print(json.dumps(info))
    x, y = test.x[:args.batch], test.y[:args.batch]
    models = () if args.skip_speed else (("madry-cnn", trained(madry_cnn(), train, 10000, 1)),
                                         ("mlp", trained(mnist_mlp(), train, 20000, 2)))
    for name, model in models:
        for row in speed(model, x, y, args.repeats):
            rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            print(json.dumps({"model": name, **rounded}))
    if not args.skip_suite:
        mlp = trained(mnist_mlp(), train, 20000, 2)
        res = suite(mlp, test.x[:args.suite_points], test.y[:args.suite_points], args.suite_eps)
        print(json.dumps({"suite": "standard", "model": "mlp", **res}))


if __name__ == "__main__":
    main()

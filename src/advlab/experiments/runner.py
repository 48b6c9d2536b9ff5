"""Run an experiment spec end to end: data -> model -> training -> evaluation -> run directory.
Each stage is a plain call into the library; a killed run resumes (training from its checkpoint,
the worst-case evaluation from its state file) when run again with resume=True."""
from __future__ import annotations

import json
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..attacks import Attack
from ..attacks import build_attack as build_named_attack
from ..data import ArrayDataset, load_dataset
from ..evaluation import evaluate_robustness, mean_confidence, predict
from ..models import build_model
from ..device import resolve_device
from ..distributed import is_main, local_device, world
from ..progress import progress_enabled
from ..errors import AdvlabError, RunDirError
from ..threat import ThreatModel
from ..training import Trainer, TrainConfig, build_objective, load_checkpoint, save_checkpoint
from .spec import AttackSpec, ExperimentError, ExperimentSpec, ThreatSpec
from .store import RunDir

def threat_of(spec: ThreatSpec) -> ThreatModel:
    return ThreatModel(spec.norm, spec.eps, tuple(spec.bounds))


def build_attack(spec: AttackSpec, seed: int = 0) -> Attack:
    """The attack an experiment file's [[eval.attacks]] entry describes."""
    return build_named_attack(spec.name, threat_of(spec.threat), seed=seed, **spec.args)


def train_config(spec: ExperimentSpec) -> TrainConfig:
    t = spec.train
    names = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in t.model_dump().items() if k in names}
    kw["milestones"] = tuple(kw["milestones"])
    kw["seed"] = spec.seed
    kw["val_samples"] = spec.data.val_samples
    augment = spec.data.augment
    kw["augment"] = augment.model_dump() if augment.crop or augment.flip else {}  # {}: as runs made before it
    kw["progress"] = progress_enabled()
    if t.threat is not None:
        kw["monitor_threat"] = {"norm": t.threat.norm, "eps": t.threat.eps, "bounds": tuple(t.threat.bounds)}
    return TrainConfig(**kw)


def _take(ds: ArrayDataset, n: int | None) -> ArrayDataset:
    return ds if n is None else ds.subset(n)


def load_data(spec: ExperimentSpec, device: torch.device) -> tuple[ArrayDataset, ArrayDataset | None, ArrayDataset]:
    d = spec.data
    train = _take(load_dataset(d.name, d.train_split, root=d.root, device=device, holdout=d.holdout),
                  d.train_samples)
    val = None if d.val_split == "none" else _take(load_dataset(d.name, d.val_split, root=d.root, device=device,
                                                                holdout=d.holdout), d.val_samples)
    test = _take(load_dataset(d.name, "test", root=d.root, device=device), d.test_samples)
    return train, val, test


_NOT_COMPARED = ("device", "description")   # settings a resumed run may change


def spec_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved specs (for a refused resume)."""
    out = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if path in _NOT_COMPARED:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += spec_differences(a, b, path + ".")
        elif json.dumps(a, default=list) != json.dumps(b, default=list):
            out.append(f"{path} ({a!r} in the run, {b!r} now)")
    return out


def check_run_dir(spec: ExperimentSpec, run: RunDir, *, resume: bool, restart: bool) -> None:
    """A directory that holds a run is continued only with resume (and the same experiment) or
    wiped and started afresh only with restart; anything else is refused, saying why."""
    if restart:
        run.clear()
        return
    if not run.holds_run:
        return
    if not resume:
        raise RunDirError(f"{run.path} already holds a run; pass --resume to continue it, --restart to start "
                          "it afresh, or another --out")
    from .spec import load_spec
    if (run.path / "config.toml").is_file():
        stored = load_spec(run.path / "config.toml")
        diff = spec_differences(_plain(stored.model_dump()), _plain(spec.model_dump()))
        if diff:
            raise RunDirError(f"{run.path} holds a run of another experiment ({'; '.join(diff[:4])}"
                              f"{'; ...' if len(diff) > 4 else ''}); --restart to start it afresh or choose "
                              "another --out")


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """A spec dump as its config.toml round trip gives it (tuples as lists, None dropped)."""
    from .store import _drop_none
    return _drop_none(json.loads(json.dumps(d, default=list)))


def check_model_fits_data(spec: ExperimentSpec, model: torch.nn.Module, data: ArrayDataset) -> None:
    """One forward pass on two training images before anything is written: a model that cannot take
    the data's shape, or has fewer outputs than the data has classes, is named as such."""
    from ..attacks.base import check_label_range
    from ..models.guard import attack_mode
    try:
        with torch.no_grad(), attack_mode(model):
            out = model(data.x[:2])
    except RuntimeError as e:
        raise ExperimentError(f"model {spec.model.name!r} cannot take {spec.data.name} inputs shaped "
                              f"{tuple(data.x.shape[1:])} ({_first_line(e)}); check model.args") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ExperimentError(f"model {spec.model.name!r} returned {type(out).__name__} "
                              f"{tuple(getattr(out, 'shape', ()))}, expected logits shaped (N, classes)")
    try:
        check_label_range(data.y, out.shape[1])
    except AdvlabError as e:
        raise ExperimentError(f"model {spec.model.name!r} has {out.shape[1]} outputs but {spec.data.name} has "
                              f"labels up to {int(data.y.max())} ({e}); set model.args num_classes") from None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def run_experiment(spec: ExperimentSpec, run: RunDir, *, resume: bool = False, restart: bool = False,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate as the spec says, writing everything into `run`; returns results.json's content.

    A directory that already holds a run needs resume=True (the same experiment: its settings are
    compared with config.toml) or restart=True (wiped first). `run.started` turns True once training
    (or loading the finished model) begins: a failure before that leaves nothing worth keeping."""
    device = local_device(resolve_device(spec.device))
    check_run_dir(spec, run, resume=resume, restart=restart)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model.name, **spec.model.args).to(device)
    train, val, test = load_data(spec, device)
    check_model_fits_data(spec, model, train)
    run.write_config(spec.model_dump())
    run.write_env({"device": str(device), "world_size": world()[1]})
    run.set_status("running")
    log(f"[{spec.name}] data {spec.data.name}: {len(train)} train, {len(val) if val else 0} val, {len(test)} test")
    t0 = time.perf_counter()
    train_info: dict[str, Any] = {"epochs": spec.train.epochs}
    run.started = True
    fresh_model = True
    if run.model_file.exists() and resume:
        load_checkpoint(run.model_file, model, restore_rng=False)
        fresh_model = False
        log(f"[{spec.name}] training already finished; loaded {run.model_file}")
    elif spec.train.epochs > 0:
        threat = threat_of(spec.train.threat) if spec.train.threat else None
        objective = build_objective(spec.train.objective, threat, **spec.train.objective_args)

        def on_epoch(record: dict[str, Any]) -> None:
            run.log_metrics(record)
            log(f"[{spec.name}] epoch {record['epoch']}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))

        cfg = train_config(spec)
        callbacks = [on_epoch] + ([tensorboard_logger(run.path / "tensorboard")] if spec.train.tensorboard else [])
        if spec.train.diagnostics:
            from ..analysis import epoch_diagnostics
            probe = val or test
            callbacks.insert(0, epoch_diagnostics(model, probe.x[:500], probe.y[:500]))
        result = Trainer(model, objective, cfg, callbacks=callbacks, checkpoint_path=run.checkpoint).fit(
            train.x, train.y, val.x if val else None, val.y if val else None, resume=resume)
        train_info.update(best_epoch=result.best_epoch, stopped_early=result.stopped_early,
                          co_fired=result.co_fired, seconds=result.seconds, objective=objective.describe(),
                          final=result.history[-1] if result.history else None)
        if spec.train.retrain_on_all:
            model = retrain_on_all(spec, train, val, result.best_epoch, run, log)
            train_info["retrained_on_all_epochs"] = (result.best_epoch or spec.train.epochs - 1) + 1
    if fresh_model and is_main():
        save_checkpoint(run.model_file, model, None, {"name": spec.name, "model": spec.model.model_dump()})
    train_seconds = time.perf_counter() - t0
    results = evaluate(spec, model, test, run, log, restart=fresh_model)
    results.update(name=spec.name, seed=spec.seed, train=train_info, train_seconds=train_seconds,
                   model=spec.model.model_dump(), data=spec.data.model_dump(), model_sha256=run.model_sha256())
    run.write_results(results)
    run.set_status("finished")
    return results


def retrain_on_all(spec: ExperimentSpec, train: ArrayDataset, val: ArrayDataset | None, best_epoch: int | None,
                   run: RunDir, log: Callable[[str], None]) -> torch.nn.Module:
    """The recipe of Goodfellow et al.'s G6: after early stopping chose the number of epochs, train a
    fresh model (same seed) on training + validation data for that many epochs, without validation."""
    if val is None:
        raise ExperimentError("train.retrain_on_all needs a validation split (data.val_split)")
    epochs = (best_epoch if best_epoch is not None else spec.train.epochs - 1) + 1
    torch.manual_seed(spec.seed)
    model = build_model(spec.model.name, **spec.model.args).to(train.x.device)
    cfg = replace(train_config(spec), epochs=epochs, early_stopping_patience=0, co_guard=False)
    threat = threat_of(spec.train.threat) if spec.train.threat else None
    objective = build_objective(spec.train.objective, threat, **spec.train.objective_args)
    log(f"[{spec.name}] retraining on train + validation for {epochs} epoch(s)")
    x, y = torch.cat([train.x, val.x]), torch.cat([train.y, val.y])
    Trainer(model, objective, cfg, callbacks=[lambda r: run.log_metrics({**r, "phase": "retrain_on_all"})],
            checkpoint_path=run.path / "checkpoint_retrain.safetensors").fit(x, y)
    return model


def tensorboard_logger(logdir: Path) -> Callable[[dict[str, Any]], None]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ExperimentError("train.tensorboard needs the tensorboard package: pip install tensorboard") from e
    writer = SummaryWriter(str(logdir))

    def log(record: dict[str, Any]) -> None:
        for k, v in record.items():
            if isinstance(v, (int, float)) and k != "epoch":
                writer.add_scalar(k, v, record.get("epoch", 0))
        writer.flush()
    return log


def evaluate(spec: ExperimentSpec, model: torch.nn.Module, test: ArrayDataset, run: RunDir,
             log: Callable[[str], None] = print, restart: bool = False) -> dict[str, Any]:
    """Clean accuracy, each configured attack, and the worst-case suite; per-sample arrays to samples.npz."""
    e = spec.eval
    x, y = (test.x, test.y) if e.samples is None else (test.x[:e.samples], test.y[:e.samples])
    logits = predict(model, x, e.batch_size)
    correct = logits.argmax(1) == y
    samples: dict[str, np.ndarray] = {"labels": y.cpu().numpy(), "clean_pred": logits.argmax(1).cpu().numpy()}
    out: dict[str, Any] = {"n_eval": int(y.shape[0]), "clean_accuracy": float(correct.float().mean()),
                           "clean_confidence": mean_confidence(logits), "attacks": {}}
    log(f"[{spec.name}] clean accuracy {out['clean_accuracy']:.2%} on {y.shape[0]} test points")
    for a in e.attacks:
        attack = build_attack(a, spec.seed)
        label = a.label or f"{a.name}-{a.threat.norm}-{a.threat.eps:g}"
        succ, adv_logits = [], []
        t0 = time.perf_counter()
        for i in range(0, x.shape[0], e.batch_size):
            r = attack(model, x[i:i + e.batch_size], y[i:i + e.batch_size])
            succ.append(r.success)
            adv_logits.append(predict(model, r.x_adv, e.batch_size))
        success, adv = torch.cat(succ), torch.cat(adv_logits)
        fooled = success & correct
        out["attacks"][label] = {
            "attack": a.name, "threat": a.threat.model_dump(), "args": a.args,
            "robust_accuracy": float((~success).float().mean()), "error": float(success.float().mean()),
            "confidence_on_mistakes": mean_confidence(adv, success), "confidence": mean_confidence(adv),
            "fooled_of_correct": float(fooled.sum()) / max(int(correct.sum()), 1), "seconds": time.perf_counter() - t0}
        samples[f"success__{label}"] = success.cpu().numpy()
        log(f"[{spec.name}] {label}: robust accuracy {out['attacks'][label]['robust_accuracy']:.2%}")
    if e.suite != "none":
        threat = threat_of(e.threat)
        res = evaluate_robustness(model, (x, y), threat, e.suite, batch_size=e.batch_size, seed=spec.seed,
                                  state_path=run.path / "eval_state.safetensors", accel=e.accel, restart=restart)
        out["worst_case"] = {**res.to_dict(), "suite": e.suite}
        samples["robust"] = res.robust.numpy()
        samples["broken_by"] = res.broken_by.numpy()
        log(f"[{spec.name}] worst case ({e.suite} suite, {threat}): robust accuracy {res.robust_accuracy:.2%}")
    if e.threat is not None and e.threat.norm in ("linf", "l2", "l1") and e.curve_samples:
        out["curve"] = accuracy_curve(model, x[:e.curve_samples], y[:e.curve_samples], threat_of(e.threat),
                                      e.batch_size, spec.seed)
    run.write_samples(samples)
    return out


def accuracy_curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                   batch_size: int, seed: int) -> dict[str, Any]:
    """Accuracy at 0, eps/4, ..., 2 eps from one minimum-norm run (DeepFool; FAB for l1): an upper bound
    at each eps."""
    from ..evaluation import robust_accuracy_curve
    grid = [threat.eps * k / 4 for k in range(9)]
    curve = robust_accuracy_curve(model, (x, y), threat.norm, grid, bounds=threat.bounds, batch_size=batch_size,
                                  seed=seed)
    return {"norm": threat.norm, "eps": [e for e, _ in curve], "accuracy": [a for _, a in curve],
            "n": int(y.shape[0]),
            "attack": f"{'FAB' if threat.norm == 'l1' else 'DeepFool'} (minimum norm, 50 steps)"}


def load_run_model(run_path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, ExperimentSpec]:
    """The trained model of a run directory (weights from safetensors) and its spec."""
    from .spec import load_spec
    path = Path(run_path)
    if not path.is_dir():
        raise RunDirError(f"{path} is {'a file' if path.exists() else 'missing'}, expected a run directory "
                          "written by `advlab run`")
    if not (path / "config.toml").is_file() or not (path / "model.safetensors").is_file():
        raise RunDirError(f"{path} is not a finished advlab run (it lacks config.toml or model.safetensors); "
                          "give a directory written by `advlab run`")
    run = RunDir(path)
    spec = load_spec(run.path / "config.toml")
    model = build_model(spec.model.name, **spec.model.args)
    load_checkpoint(run.model_file, model, restore_rng=False)
    return model.to(device).eval(), spec

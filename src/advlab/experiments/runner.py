"""Run an experiment spec end to end: data -> model -> training -> evaluation -> run directory.
Each stage is a plain call into the library; a killed run resumes (training from its checkpoint,
the worst-case evaluation from its state file) when run again with resume=True."""
from __future__ import annotations

import time
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..attacks import APGD, APGDT, BIM, FGSM, PGD, Attack, DeepFool, RandomNoise, SparseL0, Square
from ..data import ArrayDataset, load_dataset
from ..evaluation import evaluate_robustness, mean_confidence, predict
from ..models import build_model
from ..distributed import is_main, local_device, world
from ..threat import ThreatModel
from ..training import Trainer, TrainConfig, build_objective, load_checkpoint, save_checkpoint
from .spec import AttackSpec, ExperimentError, ExperimentSpec, ThreatSpec
from .store import RunDir

ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "bim": BIM, "apgd": APGD, "apgd-t": APGDT,
                                    "square": Square, "deepfool": DeepFool, "sparse-l0": SparseL0,
                                    "noise": RandomNoise}


def threat_of(spec: ThreatSpec) -> ThreatModel:
    return ThreatModel(spec.norm, spec.eps, tuple(spec.bounds))


def build_attack(spec: AttackSpec, seed: int = 0) -> Attack:
    try:
        return ATTACKS[spec.name](threat_of(spec.threat), seed=seed, **spec.args)
    except TypeError as e:
        raise ExperimentError(f"bad arguments for attack {spec.name!r}: {e}") from e


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_config(spec: ExperimentSpec) -> TrainConfig:
    t = spec.train
    names = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in t.model_dump().items() if k in names}
    kw["milestones"] = tuple(kw["milestones"])
    kw["seed"] = spec.seed
    kw["val_samples"] = spec.data.val_samples
    kw["progress"] = sys.stderr.isatty()
    if t.threat is not None:
        kw["monitor_threat"] = {"norm": t.threat.norm, "eps": t.threat.eps, "bounds": tuple(t.threat.bounds)}
    return TrainConfig(**kw)


def _take(ds: ArrayDataset, n: int | None) -> ArrayDataset:
    return ds if n is None else ds.subset(n)


def load_data(spec: ExperimentSpec, device: torch.device) -> tuple[ArrayDataset, ArrayDataset | None, ArrayDataset]:
    d = spec.data
    train = _take(load_dataset(d.name, d.train_split, root=d.root, device=device), d.train_samples)
    val = None if d.val_split == "none" else _take(load_dataset(d.name, d.val_split, root=d.root, device=device),
                                                    d.val_samples)
    test = _take(load_dataset(d.name, "test", root=d.root, device=device), d.test_samples)
    return train, val, test


def run_experiment(spec: ExperimentSpec, run: RunDir, *, resume: bool = False,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate as the spec says, writing everything into `run`; returns results.json's content."""
    device = local_device(resolve_device(spec.device))
    torch.manual_seed(spec.seed)
    run.write_config(spec.model_dump())
    run.write_env({"device": str(device), "world_size": world()[1]})
    train, val, test = load_data(spec, device)
    log(f"[{spec.name}] data {spec.data.name}: {len(train)} train, {len(val) if val else 0} val, {len(test)} test")
    model = build_model(spec.model.name, **spec.model.args).to(device)
    t0 = time.perf_counter()
    train_info: dict[str, Any] = {"epochs": spec.train.epochs}
    if run.model_file.exists() and resume:
        load_checkpoint(run.model_file, model, restore_rng=False)
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
        if is_main():
            save_checkpoint(run.model_file, model, None, {"name": spec.name, "model": spec.model.model_dump()})
    train_seconds = time.perf_counter() - t0
    results = evaluate(spec, model, test, run, log)
    results.update(name=spec.name, seed=spec.seed, train=train_info, train_seconds=train_seconds,
                   model=spec.model.model_dump(), data=spec.data.model_dump())
    run.write_results(results)
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
             log: Callable[[str], None] = print) -> dict[str, Any]:
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
                                  state_path=run.path / "eval_state.safetensors", accel=e.accel)
        out["worst_case"] = res.to_dict()
        samples["robust"] = res.robust.numpy()
        samples["broken_by"] = res.broken_by.numpy()
        log(f"[{spec.name}] worst case ({e.suite} suite, {threat}): robust accuracy {res.robust_accuracy:.2%}")
    run.write_samples(samples)
    return out


def load_run_model(run_path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, ExperimentSpec]:
    """The trained model of a run directory (weights from safetensors) and its spec."""
    from .spec import load_spec
    run = RunDir(run_path)
    spec = load_spec(run.path / "config.toml")
    model = build_model(spec.model.name, **spec.model.args)
    load_checkpoint(run.model_file, model, restore_rng=False)
    return model.to(device).eval(), spec

"""Worst-case robustness evaluation with the AutoAttack protocol.

Each attack of the suite runs only on points that are still robust (clean-correct and unbroken by
the attacks before it); a point's robust accuracy is the worst case over the suite. The state is
written atomically after every chunk, so a killed evaluation resumes where it stopped, and the
result records per-sample outcomes, per-attack costs and every sanity-check flag.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..accel import accelerate, resolve_accel
from ..attacks import Attack
from ..attacks.base import check_label_range, check_labels, check_model_dtype
from ..distributed import all_gather_padded, all_reduce_sum
from ..distributed import world as dist_world
from ..errors import InputError
from ..threat import ThreatModel, canonical_norm
from .checks import (GradientMaskingWarning, check_black_box_beats_white_box, check_model_outputs,
                     check_zero_gradients)
from .memory import attack_in_pieces, map_in_pieces
from ..progress import progress_bar, progress_enabled
from .metrics import predict
from .result import AttackStats, RobustnessResult
from .state import evaluation_fingerprint, load_state, save_state
from .suites import build_suite


def evaluate_robustness(model: nn.Module, data: tuple[Tensor, Tensor] | Iterable[Any], threat: ThreatModel,
                        suite: str | Sequence[Attack] = "standard", *, batch_size: int = 500,
                        seed: int = 0, state_path: str | Path | None = None, checks: bool = True,
                        keep_adversarials: bool = False, device: torch.device | str | None = None,
                        progress: bool | None = None, accel: str = "off", verify_samples: int = 500,
                        restart: bool = False) -> RobustnessResult:
    """Worst-case robust accuracy of `model` on `data` = (x, y) under `threat`.

    suite: 'standard' (AutoAttack's attacks and budgets), 'fast', or a list of untargeted attacks.
    state_path: a safetensors file updated after every chunk; an interrupted call with the same
    arguments resumes from it. The file records a fingerprint of the model (architecture and every
    weight), all of the data, the threat model, the suite and the seed; a file of another evaluation
    is refused with a StaleStateError naming what differs, unless restart=True (start afresh).
    batch_size: samples per chunk; a chunk that runs out of device memory is attacked in halves
    (with a BatchSizeWarning), so memory stays bounded by the batch size whatever the data size.
    Under torch.distributed (e.g. torchrun) every rank passes the same data: rank r attacks chunks
    r, r + world, ... and all ranks receive every per-sample outcome, which are the same as one
    process's (each chunk's attack is seeded on its own); rank 0 writes the state file.
    accel: 'off', 'auto' (the fast path on CUDA devices) or 'on' (see advlab.accel). With the fast
    path on, the suite's first attack is rerun in fp32 and on the fast path on the first
    `verify_samples` clean-correct points; the result's `accel` entry gives both robust accuracies
    (a GradientMaskingWarning-style flag when they differ by more than 0.5 points), and points that
    only the fp32 run breaks count as broken, so the fast path never reports a higher number.
    data may also be a DataLoader or any iterable of (x, y) batches: then each batch is attacked by
    the whole suite in turn with memory bounded by the batch size, state_path is a directory that
    gets each batch's per-sample results as it finishes, and the fast-path check uses the first
    batch (see advlab.evaluation.streaming).
    """
    from .streaming import evaluate_stream, is_batch_stream
    if is_batch_stream(data):
        return evaluate_stream(model, data, threat, suite, batch_size=batch_size, seed=seed, state_path=state_path,
                               checks=checks, keep_adversarials=keep_adversarials, device=device,
                               progress=progress, accel=accel, verify_samples=verify_samples, restart=restart)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise InputError("data must be a pair (x, y) of tensors")
    x_all, y_all = data
    threat.check_inputs(x_all)
    y_all = check_labels(y_all, x_all.shape[0], x_all.device)
    check_model_dtype(model, x_all)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else x_all.device
    attacks, suite_name, notes, draws = choose_suite(suite, model, x_all, y_all, threat, seed, dev, checks)
    n = x_all.shape[0]
    names = [f"{a.name}" for a in attacks]
    path = resolve_accel(accel, dev)
    reference_model, model = model, accelerate(model, path)
    fingerprint = evaluation_fingerprint(reference_model, x_all, y_all, threat, attacks, seed, path.describe())

    rank, world = dist_world()
    own_state_path = state_path if rank == 0 else None  # only rank 0 writes
    piece = batch_size  # may shrink on out-of-memory; chunks keep their size so that resume is exact
    if restart and state_path is not None and rank == 0:
        Path(state_path).unlink(missing_ok=True)
    state = load_state(state_path, fingerprint, n, len(attacks))
    if state is None:
        parts, piece = map_in_pieces(lambda a, b: mean_probabilities(model, x_all[a:b].to(dev), draws).cpu(), n,
                                     batch_size, what="clean batch")
        logits = torch.cat(parts)
        check_label_range(y_all, logits.shape[1])
        clean = logits.argmax(1) == y_all.cpu()
        state = {"clean_correct": clean, "robust": clean.clone(), "broken_by": torch.full((n,), -1),
                 "adv_norms": torch.full((n,), float("nan")), "start_mask": clean.clone(),
                 "progress": {"attack": 0, "chunk": 0, "stats": [asdict(AttackStats(nm)) for nm in names],
                              "flags": []}}
        if keep_adversarials:
            state["x_adv"] = x_all.detach().cpu().clone()
        if checks:
            state["progress"]["flags"] += _input_checks(model, x_all, y_all, clean, dev)
        save_state(own_state_path, state, fingerprint)
    elif keep_adversarials and "x_adv" not in state:
        state["x_adv"] = x_all.detach().cpu().clone()

    prog = state["progress"]
    for ai in range(prog["attack"], len(attacks)):
        attack = attacks[ai]
        if prog["chunk"] == 0:
            state["start_mask"] = state["robust"].clone()
        todo = state["start_mask"].nonzero().squeeze(1)
        chunks = [c for c in todo.split(batch_size) if c.numel()]
        done_points = sum(int(c.numel()) for c in chunks[:prog["chunk"]])
        bar = progress_bar(int(todo.numel()), f"{attack.name} ({ai + 1}/{len(attacks)})", unit="pt",
                           initial=done_points, enabled=progress_enabled(progress) and rank == 0)
        while prog["chunk"] < len(chunks):
            # one round: rank r attacks chunk (first + r), then every rank learns every outcome
            mine = prog["chunk"] + rank
            idx = chunks[mine] if mine < len(chunks) else todo[:0]
            broken, norms, cost = idx[:0] < 0, torch.zeros(0), [0.0, 0.0, 0.0, 0.0, 0.0]
            x_adv = x_all[:0].detach().cpu() if "x_adv" in state else None
            if idx.numel():
                xb, yb = x_all[idx.to(x_all.device)].to(dev), y_all[idx.to(y_all.device)].to(dev)
                res, piece = attack_in_pieces(attack, model, xb, yb, piece)
                # a randomized model is judged by its prediction averaged over draws, not one lucky pass
                broken = (res.success if draws == 1 else
                          mean_probabilities(model, res.x_adv, draws).argmax(1) != yb).cpu()
                norms = res.norms.detach().float().cpu()
                x_adv = res.x_adv.detach().cpu() if "x_adv" in state else None
                cost = [float(broken.sum()), float(idx.numel()), res.n_forward, res.n_backward, res.seconds]
            _apply_round(state, ai, _gather_round(idx, broken, norms, x_adv, batch_size, world))
            st = prog["stats"][ai]
            totals = all_reduce_sum(cost)
            for key, value in zip(("broken", "attacked", "n_forward", "n_backward"), totals):
                st[key] += int(value)
            st["seconds"] += totals[4] / world
            done = min(prog["chunk"] + world, len(chunks))
            bar.update(sum(int(c.numel()) for c in chunks[prog["chunk"]:done]))
            bar.set_postfix(broken=st["broken"], robust=int(state["robust"].sum()))
            prog["chunk"] = done
            save_state(own_state_path, state, fingerprint)
        bar.close()
        prog["attack"], prog["chunk"] = ai + 1, 0
        save_state(own_state_path, state, fingerprint)

    flags = notes + list(prog["flags"])
    accel_info = None
    if path.enabled and path.exact:
        accel_info = {"path": path.describe(), "verified": "exact fp32 path, nothing to verify"}
    elif path.enabled:
        accel_info = _verify_fast_path(reference_model, model, attacks[0], x_all, y_all, state, dev,
                                       verify_samples, piece)
        accel_info["path"] = path.describe()
        if not accel_info["within_tolerance"]:
            flags.append(f"fast path: {attacks[0].name} robust accuracy {accel_info['fast']:.4f} on the fast path vs "
                         f"{accel_info['fp32']:.4f} in fp32 on {accel_info['n']} points (> 0.5 points apart)")
    if checks:
        flags += check_black_box_beats_white_box(state["broken_by"], names,
                                                 [a.uses_gradients for a in attacks])
    for flag in flags:
        warnings.warn(flag, GradientMaskingWarning, stacklevel=2)
    return RobustnessResult(
        threat=threat, clean_correct=state["clean_correct"], robust=state["robust"],
        broken_by=state["broken_by"], adv_norms=state["adv_norms"],
        attacks=[AttackStats(**s) for s in prog["stats"]], flags=flags, seed=seed,
        x_adv=state.get("x_adv"), accel=accel_info, suite=suite_name, judge_draws=draws)


JUDGE_DRAWS = 10   # forward passes averaged to judge a randomized model's prediction


@torch.no_grad()
def mean_probabilities(model: nn.Module, x: Tensor, draws: int = 1) -> Tensor:
    """The model's logits (draws = 1), or its softmax averaged over `draws` forward passes: the
    prediction of a randomized model, by which a point is judged clean-correct or broken."""
    if draws == 1:
        return predict(model, x)
    return sum(torch.softmax(predict(model, x).float(), dim=1) for _ in range(draws)) / draws


def choose_suite(suite: str | Sequence[Attack], model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel,
                 seed: int, dev: torch.device, checks: bool) -> tuple[list[Attack], str | None, list[str], int]:
    """(attacks, the suite's name, notes, prediction draws). A quick look at the first 200 points
    decides what the named suite must become: `auto` runs `rand` for a randomized model, `standard`
    otherwise; `fast` adds Square and APGD-T over 9 targets when a gradient-masking check fires
    (a screen must not stay above the worst case it stands for); a randomized model is judged by
    its prediction averaged over JUDGE_DRAWS passes."""
    if not isinstance(suite, str):
        return build_suite(suite, threat, seed), None, [], 1
    notes: list[str] = []
    randomized = masked = False
    if checks and suite in ("auto", "fast", "rand", "standard", "plus"):
        xs = x[:200].to(dev)
        out_flags = check_model_outputs(model, xs)
        randomized = any(f.startswith("randomized-output") for f in out_flags)
        if suite == "fast":
            correct = (predict(model, xs).argmax(1) == y[:200].to(dev)).nonzero().squeeze(1)
            grad_flags = check_zero_gradients(model, xs[correct], y[:200].to(dev)[correct]) if correct.numel() else []
            masked = bool(grad_flags) or any(f.startswith("softmax-output") for f in out_flags) or randomized
    name = suite
    if suite == "auto":
        name = "rand" if randomized else "standard"
        notes.append(f"suite auto ran {name}" + (": the model's output is randomized, so the rand suite "
                                                  "(EOT over 20 draws) replaced standard" if randomized else ""))
    attacks = build_suite(name, threat, seed)
    if suite == "fast" and masked and threat.norm != "l0":
        from ..attacks import APGDT, Square
        attacks = [attacks[0], APGDT(threat, steps=100, n_target_classes=9, seed=seed)]
        if threat.norm in Square.norms:
            attacks.append(Square(threat, n_queries=5000, p_init=0.8, seed=seed))
        notes.append("fast suite extended with APGD-T over 9 targets and Square (5,000 queries): a gradient-"
                     "masking check fired on the first 200 points, and gradients alone would overstate robustness")
    draws = JUDGE_DRAWS if randomized else 1
    if randomized:
        notes.append(f"randomized model: every point is judged by its prediction averaged over {draws} draws")
    return attacks, name, notes, draws


def _verify_fast_path(reference: nn.Module, fast: nn.Module, attack: Attack, x: Tensor, y: Tensor,
                      state: dict[str, Any], dev: torch.device, n_verify: int, piece: int) -> dict[str, Any]:
    """Rerun one attack in fp32 and on the fast path on the same clean-correct points; merge the
    fp32 run's breaks into the result (worst case over both) and report the two accuracies."""
    idx = state["clean_correct"].nonzero().squeeze(1)[:max(n_verify, 0)]
    if not idx.numel():
        return {"n": 0, "fast": float("nan"), "fp32": float("nan"), "difference": 0.0, "within_tolerance": True}
    xb, yb = x[idx.to(x.device)].to(dev), y[idx.to(y.device)].to(dev)
    fast_res, _ = attack_in_pieces(attack, fast, xb, yb, piece)
    ref_res, _ = attack_in_pieces(attack, reference, xb, yb, piece)
    fast_acc = float((~fast_res.success).float().mean())
    ref_acc = float((~ref_res.success).float().mean())
    only_ref = ref_res.success.cpu() & state["robust"][idx]
    _apply_round(state, 0, [(idx, only_ref, ref_res.norms.detach().float().cpu(), ref_res.x_adv.detach().cpu())])
    return {"n": int(idx.numel()), "attack": attack.name, "fast": fast_acc, "fp32": ref_acc,
            "difference": fast_acc - ref_acc, "within_tolerance": abs(fast_acc - ref_acc) <= 0.005,
            "merged_fp32_breaks": int(only_ref.sum())}


def _gather_round(idx: Tensor, broken: Tensor, norms: Tensor, x_adv: Tensor | None, rows: int,
                  world: int) -> list[tuple[Tensor, Tensor, Tensor, Tensor | None]]:
    """Every rank's (indices, broken, norms, adversarial inputs) of this round, on every rank."""
    if world == 1:
        return [(idx, broken, norms, x_adv)]
    idxs = all_gather_padded(idx, rows, fill=-1)
    brokens = all_gather_padded(broken.to(torch.uint8), rows)
    normss = all_gather_padded(norms, rows)
    advs: list[Tensor | None] = [None] * world
    if x_adv is not None:
        advs = list(all_gather_padded(x_adv, rows))
    return [(i, b.bool(), m, a) for i, b, m, a in zip(idxs, brokens, normss, advs)]


def _apply_round(state: dict[str, Any], attack_index: int,
                 outcomes: list[tuple[Tensor, Tensor, Tensor, Tensor | None]]) -> None:
    for idx, broken, norms, x_adv in outcomes:
        hit = idx[broken]
        state["robust"][hit] = False
        state["broken_by"][hit] = attack_index
        state["adv_norms"][hit] = norms[broken]
        if x_adv is not None and "x_adv" in state:
            state["x_adv"][hit] = x_adv[broken].to(state["x_adv"].dtype)


def _input_checks(model: nn.Module, x: Tensor, y: Tensor, clean: Tensor, dev: torch.device) -> list[str]:
    sample = torch.arange(min(x.shape[0], 200))
    flags = check_model_outputs(model, x[sample.to(x.device)].to(dev))
    correct = clean.nonzero().squeeze(1)[:200]
    if correct.numel():
        flags += check_zero_gradients(model, x[correct.to(x.device)].to(dev), y[correct.to(y.device)].to(dev))
    return flags


def robust_accuracy_curve(model: nn.Module, data: tuple[Tensor, Tensor] | Iterable[Any], norm: str,
                          eps_grid: Sequence[float], *, bounds: tuple[float, float] = (0.0, 1.0),
                          batch_size: int = 500, steps: int = 50, seed: int = 0,
                          attack: str = "auto") -> list[tuple[float, float]]:
    """Accuracy versus eps from one minimum-norm attack run (attacks.MinNormAttack): an upper bound on
    robust accuracy at every eps at once (cheap, for plots; use evaluate_robustness for the reported
    number). attack: 'deepfool', 'fab', or 'auto' (DeepFool for linf / l2, FAB for l1).
    data: (x, y) tensors, attacked batch_size at a time, or a DataLoader / iterable of (x, y) batches."""
    from ..attacks import FAB, DeepFool
    from ..data.pairs import iter_pairs
    from .metrics import accuracy_vs_eps
    from .streaming import is_batch_stream
    kinds = {"deepfool": DeepFool, "fab": FAB}
    choice = ("fab" if canonical_norm(norm) == "l1" else "deepfool") if attack == "auto" else attack
    if choice not in kinds:
        raise InputError(f"unknown minimum-norm attack {attack!r}; use auto, deepfool or fab")
    if is_batch_stream(data):
        chunks = iter_pairs(data)
    else:
        x, y = data
        chunks = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size))
    runner, norms = None, []
    for xb, yb in chunks:
        if runner is None:
            box = ThreatModel(norm, 0.0, bounds)
            threat = box.with_eps(min(max(eps_grid), box.max_distance(xb[0].numel())))  # never reached beyond
            runner = kinds[choice](threat, steps=steps, seed=seed)
        r = runner(model, xb, yb)
        norms.append(r.min_norm.cpu())
    if not norms:
        raise InputError("robust_accuracy_curve got no data (an empty loader?)")
    return accuracy_vs_eps(torch.cat(norms), eps_grid)

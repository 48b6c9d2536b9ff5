"""One trainer for every objective: epochs over on-device tensors, validation, early stopping with
best-weights restore, a catastrophic-overfitting guard, atomic checkpoints with exact resume,
autocast / channels_last / compile options on GPU, and DDP when torch.distributed is initialized."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..accel import resolve_accel
from ..attacks import PGD
from ..distributed import world
from ..errors import AdvlabError
from ..evaluation.metrics import predict
from ..models.layers import apply_constraints
from ..threat import ThreatModel
from torch.utils.data import DataLoader, Dataset

from .augment import build_augment
from .batches import BatchSource, batch_source, epoch_order, validation_tensors
from .checkpoint import load_checkpoint, save_checkpoint
from .objectives import Objective, StepContext
from .schedules import lr_at, momentum_at


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded with its results)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"              # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9
    momentum_final: float | None = None  # ramp momentum -> momentum_final over momentum_ramp_epochs
    momentum_ramp_epochs: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0           # L2 through the optimizer
    l1: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> L1 coefficient
    schedule: str = "constant"          # constant | step | cosine | onecycle
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup: float = 0.0
    eps_ramp_epochs: float = 0.0        # grow the objective's eps linearly from ~0 to its value over these epochs
    ema_decay: float = 0.0              # > 0: keep an exponential moving average of the weights (and buffers);
                                        # validation uses it and the model ends with it
    seed: int = 0
    accel: str = "off"                  # off | auto | on: the fast path (bf16 + channels_last + compile on CUDA)
    amp: str = "none"                   # none | bf16 | fp16 (GPU)
    channels_last: bool = False
    compile: bool = False
    early_stopping_patience: int = 0    # epochs without improvement; 0 = off
    monitor: str = "val_error"          # val_error | val_adv_error
    monitor_threat: dict[str, Any] | None = None  # threat for val_adv_error / the CO guard
    monitor_pgd_steps: int = 10
    co_guard: bool = False              # catastrophic-overfitting guard (fast AT)
    co_drop: float = 0.2                # fire when PGD accuracy falls this much below its best
    co_check_every: int = 0             # steps between checks (0: every epoch end)
    checkpoint_every: int = 0           # steps between mid-epoch checkpoints (0: epoch ends only)
    val_samples: int = 10000
    augment: dict[str, Any] = field(default_factory=dict)  # {"crop": 4, "flip": True}: on-device, seeded per step
    progress: bool = False

    def fingerprint(self) -> str:
        fields = asdict(self)
        if not fields["augment"]:
            del fields["augment"]  # so runs written before augmentation existed still resume
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int | None
    stopped_early: bool
    co_fired: bool
    seconds: float


class Trainer:
    """trainer.fit(x, y, x_val, y_val) trains `model` in place with `objective` under `config`;
    x may also be a map-style Dataset or a DataLoader yielding (x, y) (then y=None; the loader's
    workers and collate function are used, the batch order is the run's own), and so may x_val.

    callbacks: functions called with each epoch's record (a dict), e.g. a metrics logger.
    checkpoint_path: where the run's state is written atomically; resume=True continues from it.
    """

    def __init__(self, model: nn.Module, objective: Objective, config: TrainConfig,
                 callbacks: list[Callable[[dict[str, Any]], None]] | None = None,
                 checkpoint_path: str | Path | None = None, step_hook: Callable[[int], None] | None = None) -> None:
        self.model, self.objective, self.cfg = model, objective, config
        self.callbacks = list(callbacks or [])
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.step_hook = step_hook
        self.rank, self.world = world()
        self.optimizer = self._make_optimizer()
        self._l1 = [(n, p, c) for n, p in model.named_parameters() for pre, c in config.l1.items()
                    if n.startswith(pre) and c > 0]
        self.augment = build_augment(config.augment or None)
        if config.l1 and not self._l1:
            raise AdvlabError(f"l1 prefixes {list(config.l1)} match no parameter of the model")
        if not 0 <= config.ema_decay < 1:
            raise AdvlabError(f"ema_decay must be in [0, 1), got {config.ema_decay}")

    # ------------------------------------------------------------------ setup
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c, params = self.cfg, [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                   weight_decay=c.weight_decay)
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        raise AdvlabError(f"unknown optimizer {c.optimizer!r}; use sgd or adam")

    def _fast_settings(self, device: torch.device) -> tuple[str, bool, bool]:
        """(amp, channels_last, compile): the explicit options, or the fast path's where accel turns it on."""
        c = self.cfg
        path = resolve_accel(c.accel, device)
        if not path.enabled:
            return c.amp, c.channels_last, c.compile
        amp = c.amp if c.amp != "none" else ("bf16" if path.dtype == torch.bfloat16 else "none")
        return amp, c.channels_last or path.channels_last, c.compile or path.compile

    def _autocast(self, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
        amp = self._fast_settings(device)[0]
        if amp == "none":
            return contextlib.nullcontext
        if amp not in ("bf16", "fp16"):
            raise AdvlabError(f"unknown amp mode {amp!r}; use none, bf16 or fp16")
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return lambda: torch.autocast(device.type, dtype=dtype)

    def _l1_penalty(self) -> Tensor:
        return sum(c * p.abs().sum() for _, p, c in self._l1)

    # ------------------------------------------------------------------- eval
    def _val_metrics(self, x_val: Tensor | None, y_val: Tensor | None) -> dict[str, float]:
        if x_val is None:
            return {}
        n = min(self.cfg.val_samples, x_val.shape[0])
        xv, yv = x_val[:n], y_val[:n]
        model = self._kept_model()
        out = {"val_error": 1 - float((predict(model, xv).argmax(1) == yv).float().mean())}
        if self.cfg.monitor == "val_adv_error":
            out["val_adv_error"] = 1 - self._pgd_accuracy(xv[:1000], yv[:1000], model)
        return out

    def _kept_model(self) -> nn.Module:
        """The weights training hands back: the running average when ema_decay > 0, else the model."""
        return self._ema.module if self._ema is not None else self.model

    def _pgd_accuracy(self, x: Tensor, y: Tensor, model: nn.Module | None = None) -> float:
        if not self.cfg.monitor_threat:
            raise AdvlabError("monitor 'val_adv_error' and the CO guard need monitor_threat")
        th = ThreatModel(**self.cfg.monitor_threat)
        attack = PGD(th, steps=self.cfg.monitor_pgd_steps, step_size=2.5 * th.eps / self.cfg.monitor_pgd_steps)
        model = model if model is not None else self.model
        hits = sum(int((~attack(model, x[i:i + 500], y[i:i + 500]).success).sum())
                   for i in range(0, x.shape[0], 500))
        return hits / x.shape[0]

    # -------------------------------------------------------------------- fit
    def fit(self, x: Tensor | Dataset | DataLoader, y: Tensor | None = None, x_val: Any = None,
            y_val: Tensor | None = None, *, resume: bool = False) -> TrainResult:
        c, model = self.cfg, self.model
        source = batch_source(x, y)
        x_val, y_val = validation_tensors(x_val, y_val, c.val_samples)
        device = x.device if isinstance(x, Tensor) else next(model.parameters(), torch.zeros(0)).device
        if x_val is not None:
            x_val, y_val = x_val.to(device), y_val.to(device)
        _, channels_last, compile_model = self._fast_settings(device)
        if channels_last and source.image_shaped:
            model.to(memory_format=torch.channels_last)
        train_model: nn.Module = model
        if self.world > 1:
            with warnings.catch_warnings():  # rank-local BN buffers are intended: no per-forward collective
                warnings.simplefilter("ignore", FutureWarning)
                train_model = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        if compile_model:
            train_model = torch.compile(train_model)
        n = source.n
        steps_per_epoch = math.ceil(n / c.batch_size)
        total_steps = steps_per_epoch * c.epochs
        state = {"epoch": 0, "step": 0, "history": [], "best_metric": None, "best_epoch": None,
                 "bad_epochs": 0, "co_best": None, "co_fired": False, "stopped_early": False,
                 "config": c.fingerprint()}
        best_weights: dict[str, Tensor] | None = None
        self._ema = None
        if c.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
            self._ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(c.ema_decay), use_buffers=True)
        resumed = resume and self.checkpoint_path is not None and self.checkpoint_path.exists()
        if not resumed:
            torch.manual_seed(c.seed)  # dropout draws; a resumed run restores the saved RNG state instead
        else:
            state, extra = load_checkpoint(self.checkpoint_path, model, self.optimizer)
            if state.get("config") != c.fingerprint():
                raise AdvlabError(f"{self.checkpoint_path} was written with another training config")
            best_weights = {k[len("best."):]: v.to(device) for k, v in extra.items() if k.startswith("best.")} or None
            if self._ema is not None:
                ema = {k[len("ema."):]: v.to(device) for k, v in extra.items() if k.startswith("ema.")}
                if not ema:
                    raise AdvlabError(f"{self.checkpoint_path} has no weight average to resume (ema_decay > 0)")
                self._ema.load_state_dict(ema)
            if "delta" in extra and hasattr(self.objective, "delta"):
                self.objective.delta = extra["delta"].to(device)
        ctx = StepContext(optimizer=self.optimizer, seed=c.seed, after_step=lambda: apply_constraints(model),
                          autocast=self._autocast(device))
        ctx.penalty = self._l1_penalty if self._l1 else None
        t0 = time.perf_counter()
        from ..progress import progress_bar
        show = c.progress and self.rank == 0
        epochs_bar = progress_bar(c.epochs, "training", unit="epoch", initial=state["epoch"], enabled=show)
        while state["epoch"] < c.epochs and not state["stopped_early"]:
            epoch = state["epoch"]
            order = epoch_order(n, c.seed, epoch)
            model.train()
            bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{c.epochs}", unit="step", initial=state["step"],
                               enabled=show)
            # the epoch's loss sum stays on the device (no host sync per step); it is copied into
            # `state` only where state is saved or read
            loss_sum = torch.tensor(state.get("loss_sum", 0.0), dtype=torch.float64, device=device)
            for step, xb, yb in source.epoch(order, state["step"], c.batch_size, self.rank, self.world, device):
                if channels_last and xb.ndim == 4:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                global_step = epoch * steps_per_epoch + step
                for g in self.optimizer.param_groups:
                    g["lr"] = lr_at(c.lr, global_step / max(total_steps, 1), c.schedule,
                                    milestones=c.milestones, gamma=c.gamma, warmup=c.warmup)
                    if "momentum" in g:
                        g["momentum"] = momentum_at(c.momentum, c.momentum_final,
                                                    epoch + step / steps_per_epoch, c.momentum_ramp_epochs)
                if c.eps_ramp_epochs > 0:
                    self.objective.set_eps_scale(min(1.0, (global_step + 1) / (c.eps_ramp_epochs * steps_per_epoch)))
                ctx.seed = c.seed * 1_000_003 + global_step * 7 + self.rank
                xb = self.augment(xb, ctx.seed * 31 + 17)  # its own stream, fixed by the step
                loss = self.objective.train_step(train_model, xb, yb, ctx)
                if self._ema is not None:
                    self._ema.update_parameters(model)
                loss_sum += loss.detach().double() * xb.shape[0]
                state["loss_count"] = state.get("loss_count", 0) + xb.shape[0]
                state["step"] = step + 1
                bar.update(1)
                if c.co_guard and c.co_check_every and (global_step + 1) % c.co_check_every == 0:
                    state["loss_sum"] = float(loss_sum)
                    if self._co_check(state, x_val, y_val, source):
                        break
                if c.checkpoint_every and (step + 1) % c.checkpoint_every == 0 and step + 1 < steps_per_epoch:
                    state["loss_sum"] = float(loss_sum)
                    self._save(state, best_weights)
                if self.step_hook is not None:
                    self.step_hook(global_step)
            bar.close()
            if state["co_fired"]:
                break
            state.pop("loss_sum", None)
            mean_loss = self._mean(float(loss_sum), state.pop("loss_count", 0))
            record = {"epoch": epoch, "train_loss": mean_loss, "lr": self.optimizer.param_groups[0]["lr"],
                      "seconds": time.perf_counter() - t0, **self._val_metrics(x_val, y_val)}
            if c.co_guard and not c.co_check_every and self._co_check(state, x_val, y_val, source, record):
                break
            best_weights = self._early_stopping(state, record, best_weights)
            state["history"].append(record)
            state["epoch"], state["step"] = epoch + 1, 0
            for cb in self.callbacks:
                cb(record)
            self._save(state, best_weights)
            epochs_bar.update(1)
            epochs_bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("train_loss", "val_error")})
        epochs_bar.close()
        if best_weights is not None and c.early_stopping_patience:
            model.load_state_dict(best_weights)
        elif self._ema is not None:
            model.load_state_dict(self._ema.module.state_dict())
        return TrainResult(state["history"], state["best_epoch"], state["stopped_early"], state["co_fired"],
                           time.perf_counter() - t0)

    def _mean(self, total: float, count: int) -> float:
        if self.world > 1:
            t = torch.tensor([total, float(count)], dtype=torch.float64)
            dist.all_reduce(t)
            total, count = float(t[0]), int(t[1])
        return total / max(count, 1)

    def _early_stopping(self, state: dict, record: dict, best: dict | None) -> dict | None:
        c = self.cfg
        if not c.early_stopping_patience or c.monitor not in record:
            return best
        metric = record[c.monitor]
        if state["best_metric"] is None or metric < state["best_metric"]:
            state["best_metric"], state["best_epoch"], state["bad_epochs"] = metric, record["epoch"], 0
            return {k: v.detach().clone() for k, v in self._kept_model().state_dict().items()}
        state["bad_epochs"] += 1
        if state["bad_epochs"] >= c.early_stopping_patience:
            state["stopped_early"] = True
        return best

    def _co_check(self, state: dict, x_val, y_val, source: BatchSource, record: dict | None = None) -> bool:
        """Catastrophic-overfitting guard: PGD accuracy on held-out points collapsing below its best
        by more than co_drop rolls the model back to the last good weights and stops training."""
        xs, ys = (x_val, y_val) if x_val is not None else source.head(500)
        acc = self._pgd_accuracy(xs[:500], ys[:500])
        if record is not None:
            record["co_pgd_acc"] = acc
        best = state["co_best"]
        if best is not None and acc < best - self.cfg.co_drop:
            if self._good_weights is not None:
                self.model.load_state_dict(self._good_weights)
            state["co_fired"] = True
            state["stopped_early"] = True
            state["history"].append({"epoch": state["epoch"], "event": "catastrophic_overfitting",
                                     "pgd_acc": acc, "best_pgd_acc": best})
            self._save(state, None)
            return True
        if best is None or acc >= best:
            state["co_best"] = acc
            self._good_weights = copy.deepcopy(self.model.state_dict())
        return False

    _good_weights: dict[str, Tensor] | None = None
    _ema: nn.Module | None = None  # torch.optim.swa_utils.AveragedModel while fitting with ema_decay > 0

    def _save(self, state: dict, best_weights: dict | None) -> None:
        if self.checkpoint_path is None or self.rank != 0:
            return
        extra = {f"best.{k}": v for k, v in (best_weights or {}).items()}
        delta = getattr(self.objective, "delta", None)
        if isinstance(delta, Tensor):
            extra["delta"] = delta
        if self._ema is not None:
            extra.update({f"ema.{k}": v for k, v in self._ema.state_dict().items()})
        save_checkpoint(self.checkpoint_path, self.model, self.optimizer, state, extra)

"""The experiment-file schema (TOML), validated with pydantic: unknown keys and bad values are
errors that name the key, the value and what was expected."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from ..errors import AdvlabError
from ..threat import NORMS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ExperimentError(AdvlabError):
    """A malformed or invalid experiment file. `problems` lists (key, message) pairs, one per bad key."""

    exit_code = 2

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ThreatSpec(_Strict):
    norm: Literal["linf", "l2", "l1", "l0"]
    eps: float = Field(ge=0)
    bounds: tuple[float, float] = (0.0, 1.0)

    @field_validator("norm", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class AugmentSpec(_Strict):
    """On-device augmentation of training batches: `augment = { crop = 4, flip = true }`."""

    crop: StrictInt = Field(default=0, ge=0, le=64)   # pixels of zero padding on each side before a random crop
    flip: StrictBool = False                    # mirror left-right with probability 1/2


class DataSpec(_Strict):
    name: Literal["mnist", "fashion_mnist", "cifar10", "cifar100", "digits"] = "mnist"
    root: str | None = None
    augment: AugmentSpec = AugmentSpec()
    holdout: int | None = Field(default=None, gt=0)   # training images held out as the valid split
    train_split: Literal["train", "train_split"] = "train"
    val_split: Literal["valid", "test", "none"] = "test"
    train_samples: int | None = Field(default=None, gt=0)
    val_samples: int = Field(default=1000, gt=0)
    test_samples: int | None = Field(default=None, gt=0)


class ModelSpec(_Strict):
    name: str
    args: dict[str, Any] = {}


class TrainSpec(_Strict):
    objective: Literal["standard", "fgsm_mixture", "noise_mixture", "pgd_at", "trades", "fgsm_rs",
                       "free_at"] = "standard"
    objective_args: dict[str, Any] = {}
    threat: ThreatSpec | None = None
    epochs: int = Field(default=10, ge=0)
    batch_size: int = Field(default=128, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    momentum_final: float | None = None
    momentum_ramp_epochs: float = 0.0
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0)
    l1: dict[str, float] = {}
    schedule: Literal["constant", "step", "cosine", "onecycle"] = "constant"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup: float = 0.0
    eps_ramp_epochs: float = Field(0.0, ge=0)
    ema_decay: float = Field(0.0, ge=0, lt=1)   # weight averaging; 0 = off
    accel: Literal["off", "auto", "on"] = "off"   # the fast path (advlab.accel); auto = on for CUDA only
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    early_stopping_patience: int = Field(default=0, ge=0)
    monitor: Literal["val_error", "val_adv_error"] = "val_error"
    co_guard: bool = False
    co_drop: float = 0.2
    co_check_every: int = 0
    checkpoint_every: int = 0
    retrain_on_all: bool = False     # after early stopping: retrain on train + validation for the best epochs
    tensorboard: bool = False        # also log epoch metrics to RUN_DIR/tensorboard (needs `tensorboard`)
    diagnostics: bool = False        # per-epoch largest singular values, confidence, margin in metrics.jsonl


class AttackSpec(_Strict):
    name: str   # a name of advlab.attacks.ATTACKS (checked when the file is parsed)
    threat: ThreatSpec
    args: dict[str, Any] = {}
    label: str | None = None


class EvalSpec(_Strict):
    attacks: list[AttackSpec] = []
    suite: str = "none"   # a name of advlab.evaluation.SUITES, or none (checked below)
    threat: ThreatSpec | None = None
    samples: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=500, gt=0)
    accel: Literal["off", "auto", "on"] = "off"   # fast path for the worst-case suite, checked against fp32
    curve_samples: int = Field(default=200, ge=0)  # accuracy vs eps (DeepFool; FAB for l1) on this many points; 0 = off

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, v: str) -> str:
        from ..evaluation.suites import SUITES
        if v != "none" and v not in SUITES:
            raise ValueError(f"unknown suite {v!r}; use none or one of {', '.join(SUITES)}")
        return v


class ExperimentSpec(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    data: DataSpec = DataSpec()
    model: ModelSpec
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            out.append((key, f"unknown key (value {got!r})"))
        elif e["type"] == "string_pattern_mismatch" and key == "device":
            out.append((key, f"unknown device {got!r}; use auto, cpu, cuda, cuda:N or mps"))
        else:
            out.append((key, f"{e['msg']} (got {got!r})"))
    return out


def experiment_error(source: str, problems: list[tuple[str, str]]) -> ExperimentError:
    """One line: the file and every bad key with what is wrong with it."""
    text = "; ".join(f"{k}: {m}" for k, m in problems)
    return ExperimentError(f"invalid experiment file {source}: {text}", problems)


def _threat_problem(key: str, t: ThreatSpec | None) -> list[tuple[str, str]]:
    if t is None:
        return []
    from ..threat import ThreatModel
    try:
        ThreatModel(t.norm, t.eps, tuple(t.bounds))
    except AdvlabError as e:
        return [(key, str(e))]
    return []


def _buildable_problems(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """Everything a run would only find out later: threat models, the model's name and arguments,
    the objective's and each attack's arguments (cheap to construct, so they are constructed)."""
    import inspect

    from ..attacks import build_attack
    from ..models import list_models
    from ..models.zoo import model_constructor
    from ..threat import ThreatModel
    from ..training import build_objective
    problems = _threat_problem("train.threat", spec.train.threat) + _threat_problem("eval.threat", spec.eval.threat)
    if spec.model.name not in list_models():
        problems.append(("model.name", f"unknown model {spec.model.name!r}; available: {', '.join(list_models())}"))
    else:
        try:
            inspect.signature(model_constructor(spec.model.name)).bind(**spec.model.args)
        except TypeError as e:
            problems.append(("model.args", f"bad arguments for model {spec.model.name!r}: {e}"))
    t = spec.train
    if not any(k == "train.threat" for k, _ in problems):
        try:
            threat = ThreatModel(t.threat.norm, t.threat.eps, tuple(t.threat.bounds)) if t.threat else None
            build_objective(t.objective, threat, **t.objective_args)
        except AdvlabError as e:
            problems.append(("train.objective_args", str(e)))
    for i, a in enumerate(spec.eval.attacks):
        key = f"eval.attacks.{i}"
        bad_threat = _threat_problem(f"{key}.threat", a.threat)
        if bad_threat:
            problems += bad_threat
            continue
        try:
            build_attack(a.name, ThreatModel(a.threat.norm, a.threat.eps, tuple(a.threat.bounds)), **a.args)
        except AdvlabError as e:
            problems.append((f"{key}.{'args' if 'argument' in str(e) else 'name'}", str(e)))
    return problems


def parse_spec(data: dict[str, Any], source: str = "<dict>") -> ExperimentSpec:
    """Validate an experiment's data completely, before any data is loaded or any model built."""
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as e:
        raise experiment_error(source, _problems(e)) from None
    problems = []
    if spec.train.objective != "standard" and spec.train.threat is None:
        problems.append(("train.threat", f"objective {spec.train.objective!r} needs a threat model"))
    if spec.eval.suite != "none" and spec.eval.threat is None:
        problems.append(("eval.threat", f"suite {spec.eval.suite!r} needs a threat model"))
    problems += _buildable_problems(spec) if not problems else []
    if problems:
        raise experiment_error(source, problems)
    assert set(NORMS) == {"linf", "l2", "l1", "l0"}
    return spec


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ExperimentError(f"cannot read experiment file {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"experiment file {path} is not valid TOML: {e}") from e
    return parse_spec(data, str(path))

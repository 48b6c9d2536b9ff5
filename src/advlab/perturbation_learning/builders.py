"""Datasets of mislabeled adversarial examples (Ilyas et al. 2019; Kumano et al. 2024).

Each training input is pushed by a *targeted* attack against a source model toward a label it does
not have, and only (perturbed input, target label) is kept. Scenarios: `natural_rand` (target
uniform over the other classes), `natural_det` (target (y + 1) mod C), `uniform` (start from uniform
noise, target uniform over all classes), or any label map. Attacks run batched on the source
model's device and keep, per sample, the lowest-target-loss iterate (no early stop), as in the
public code. The result carries its provenance and is saved as safetensors (never pickle).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import PGD, Attack, SparseL0
from ..attacks.losses import check_loss_name
from ..data import ArrayDataset
from ..evaluation import predict
from ..errors import AttackConfigError, CheckpointError, DataError, InputError
from ..io import load_tensors, save_tensors
from ..threat import ThreatModel, canonical_norm, flat_norm

SCENARIOS: tuple[str, ...] = ("natural_rand", "natural_det", "uniform")
STORAGE: tuple[str, ...] = ("float32", "float16", "uint8")
LabelMap = Callable[[Tensor, int, torch.Generator], Tensor]
"""(labels, num_classes, generator) -> target labels, one per sample."""


def random_other_labels(y: Tensor, num_classes: int, gen: torch.Generator) -> Tensor:
    """Uniform over the classes other than y (natural_rand)."""
    off = torch.randint(1, num_classes, y.shape, generator=gen, device=gen.device).to(y.device)
    return (y + off) % num_classes


def next_labels(y: Tensor, num_classes: int, gen: torch.Generator | None = None) -> Tensor:
    """(y + 1) mod C (natural_det)."""
    return (y + 1) % num_classes


def any_labels(y: Tensor, num_classes: int, gen: torch.Generator) -> Tensor:
    """Uniform over all classes (the uniform-noise scenario, where y means nothing)."""
    return torch.randint(0, num_classes, y.shape, generator=gen, device=gen.device).to(y.device)


SCENARIO_LABELS: dict[str, LabelMap] = {"natural_rand": random_other_labels, "natural_det": next_labels,
                                        "uniform": any_labels}


@dataclass(frozen=True)
class PerturbationBudget:
    """The targeted attack that builds a dataset. eps counts pixels for l0. step_size defaults to
    eps / 5 (l2, linf) and to 0.3 of the input range with gradient-scaled steps (l0), as in the
    public code; l0 adds `pixels_per_step` entries per step until eps are chosen. linf_rule
    "steepest" is sign-PGD; "scaled" steps along g / max|g| and rescales into the ball, as the public
    code does (on MNIST it fools the source far less often: 20% against 99% at eps 0.3). loss is
    the attack loss ("ce" as the public code on images; "margin" for binary networks, where it orders
    iterates and steps exactly as the public code's exp(-y f(x)) and, unlike CE, never saturates)."""

    norm: str
    eps: float
    steps: int
    step_size: float | None = None
    pixels_per_step: int = 1
    linf_rule: str = "steepest"
    loss: str = "ce"

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        check_loss_name(self.loss)
        if self.norm == "l1":
            raise AttackConfigError("perturbation datasets support l0, l2 and linf budgets")

    def made(self, stored: Any) -> bool:
        """Whether a dataset whose provenance records `stored` was built by this budget; fields added
        since it was written count at their defaults (which are what built it)."""
        if not isinstance(stored, dict):
            return False
        return {**{f.name: f.default for f in fields(self)}, **stored} == json.loads(json.dumps(asdict(self)))

    def attack(self, bounds: tuple[float, float], seed: int) -> Attack:
        threat = ThreatModel(self.norm, self.eps, bounds)
        attack: Attack
        if self.norm == "l0":
            size = self.step_size if self.step_size is not None else 0.3 * (bounds[1] - bounds[0])
            attack = SparseL0(threat, steps=self.steps, step_size=size, pixels_per_step=self.pixels_per_step,
                              loss=self.loss, early_stop=False, step_rule="scaled", seed=seed)
        else:
            size = self.step_size if self.step_size is not None else self.eps / 5
            attack = PGD(threat, steps=self.steps, step_size=size, random_start=False, early_stop=False,
                         loss=self.loss, step_rule=self.linf_rule if self.norm == "linf" else "steepest", seed=seed)
        attack.skip_adversarial = False  # every sample gets its lowest-loss point, fooled or not
        return attack


# the public code's budgets: 100 steps for l2/linf, one pixel per step for l0
PAPER_BUDGETS: dict[str, dict[str, PerturbationBudget]] = {
    "mnist": {"l0": PerturbationBudget("l0", 10, 10), "l2": PerturbationBudget("l2", 2.0, 100),
              "linf": PerturbationBudget("linf", 0.3, 100)},
    "fashion_mnist": {"l0": PerturbationBudget("l0", 35, 35), "l2": PerturbationBudget("l2", 2.0, 100),
                      "linf": PerturbationBudget("linf", 0.3, 100)},
    "cifar10": {"l0": PerturbationBudget("l0", 150, 150), "l2": PerturbationBudget("l2", 0.5, 100),
                "linf": PerturbationBudget("linf", 0.1, 100)},
}


def paper_budget(dataset: str, norm: str) -> PerturbationBudget:
    try:
        return PAPER_BUDGETS[dataset][canonical_norm(norm)]
    except KeyError:
        raise DataError(f"no paper budget for dataset {dataset!r}, norm {norm!r}; "
                        f"known datasets: {', '.join(PAPER_BUDGETS)}") from None


@dataclass
class PerturbationDataset:
    """Perturbed inputs with the labels to learn from. source_labels holds the true class of the
    starting image (-1 for noise) and source_index its row in the source split (-1 for noise)."""

    x: Tensor
    targets: Tensor
    source_labels: Tensor
    source_index: Tensor
    source_pred: Tensor
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def fooled(self) -> Tensor:
        """Whether the source model classifies each stored input as its target."""
        return self.source_pred == self.targets

    def training_set(self) -> ArrayDataset:
        return ArrayDataset(self.x, self.targets)

    def save(self, path: str | Path, storage: str | None = None) -> Path:
        """Write as safetensors with the provenance as JSON metadata (atomically); storage defaults
        to the one the dataset was built for (its values are already on that grid)."""
        storage = storage or self.provenance.get("storage", "float32")
        if storage not in STORAGE:
            raise DataError(f"unknown storage {storage!r}; use {', '.join(STORAGE)}")
        bounds = tuple(self.provenance.get("bounds", (0.0, 1.0)))
        if storage == "uint8" and bounds != (0.0, 1.0):
            raise DataError("uint8 storage needs inputs in [0, 1]")
        stored = (self.x * 255).round().to(torch.uint8) if storage == "uint8" else self.x.to(getattr(torch, storage))
        tensors = {"x": stored, "targets": self.targets, "source_labels": self.source_labels,
                   "source_index": self.source_index, "source_pred": self.source_pred}
        meta = {"format": "advlab.perturbation_dataset/1", "storage": storage,
                "provenance": json.dumps(self.provenance, sort_keys=True, default=str)}
        return save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "PerturbationDataset":
        tensors, meta = load_tensors(path)
        if meta.get("format") != "advlab.perturbation_dataset/1":
            raise CheckpointError(f"{path} is not an advlab perturbation dataset (format {meta.get('format')!r})")
        keys = ("x", "targets", "source_labels", "source_index", "source_pred")
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise CheckpointError(f"{path} lacks {', '.join(missing)}")
        n = tensors["x"].shape[0]
        if any(tensors[k].shape != (n,) for k in keys[1:]):
            raise CheckpointError(f"{path}: label arrays do not match {n} inputs")
        x = tensors["x"]
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        try:
            provenance = json.loads(meta.get("provenance", "{}"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: unreadable provenance: {e}") from e
        return cls(x, tensors["targets"].long(), tensors["source_labels"].long(), tensors["source_index"].long(),
                   tensors["source_pred"].long(), provenance)


def quantize(x: Tensor, storage: str) -> Tensor:
    """The float32 values that `storage` will hold, so that fooling rates describe what is saved."""
    if storage == "uint8":
        return (x * 255).round() / 255
    if storage == "float16":
        return x.half().float()
    return x


def store_perturbed(x: Tensor, x_adv: Tensor, storage: str, bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """(clean, perturbed) as `storage` holds them. For uint8 the perturbation is rounded toward zero
    on the 1/255 grid, so no norm grows and unchanged pixels stay unchanged (exact l0 counts)."""
    clean = quantize(x, storage)
    if storage == "uint8":
        steps = torch.trunc((x_adv - x) * 255 * (1 + 1e-6))
        return clean, ((x * 255).round() + steps).clamp(0, 255) / 255
    return clean, torch.where(x_adv == x, clean, quantize(x_adv, storage)).clamp(*bounds)


def state_sha256(model: nn.Module) -> str:
    """A hash of the model's weights and buffers (identifies the source model in provenance)."""
    import hashlib
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def build_perturbation_dataset(
        source: nn.Module, scenario: str, budget: PerturbationBudget, *, x: Tensor | None = None,
        y: Tensor | None = None, n_noise: int | None = None, image_shape: tuple[int, ...] | None = None,
        num_classes: int = 10, label_map: LabelMap | None = None, bounds: tuple[float, float] = (0.0, 1.0),
        seed: int = 0, batch_size: int = 1000, storage: str = "uint8", source_id: str | None = None,
        progress: Callable[[int, int], None] | None = None) -> PerturbationDataset:
    """Craft the dataset of `scenario` against `source`.

    Natural scenarios take (x, y) (inputs in `bounds`, true labels); `uniform` draws `n_noise`
    inputs of `image_shape` uniformly in `bounds`. `label_map` overrides the scenario's targets;
    for natural scenarios every target must differ from the true label. The values are rounded to
    `storage` (uint8 needs bounds (0, 1)) before the fooling rate and norms are measured.
    """
    if scenario not in SCENARIOS:
        raise DataError(f"unknown scenario {scenario!r}; use {', '.join(SCENARIOS)}")
    if storage not in STORAGE:
        raise DataError(f"unknown storage {storage!r}; use {', '.join(STORAGE)}")
    if num_classes < 2:
        raise InputError(f"num_classes must be >= 2, got {num_classes}")
    if storage == "uint8" and tuple(bounds) != (0.0, 1.0):
        raise DataError("uint8 storage needs inputs in [0, 1]; use float16 or float32")
    device = next((p.device for p in source.parameters()), torch.device("cpu"))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    t0 = time.perf_counter()
    if scenario == "uniform":
        if n_noise is None or image_shape is None or n_noise < 1:
            raise InputError("the uniform scenario needs n_noise >= 1 and image_shape")
        lo, hi = bounds
        x = (torch.rand(n_noise, *image_shape, generator=gen) * (hi - lo) + lo).to(device)
        y = torch.full((n_noise,), -1, dtype=torch.long, device=device)
        index = torch.full((n_noise,), -1, dtype=torch.long)
    else:
        if x is None or y is None:
            raise InputError(f"the {scenario} scenario needs the source images x and labels y")
        ThreatModel("linf", 0.0, bounds).check_inputs(x)
        if y.shape != (x.shape[0],) or y.dtype not in (torch.int64, torch.int32, torch.uint8):
            raise InputError(f"y must be integer labels of shape ({x.shape[0]},), got {tuple(y.shape)} {y.dtype}")
        y = y.long()
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise InputError(f"labels must lie in [0, {num_classes - 1}]")
        x, y = x.to(device), y.to(device)
        index = torch.arange(x.shape[0])
    mapper = label_map or SCENARIO_LABELS[scenario]
    targets = mapper(y.cpu() if scenario != "uniform" else torch.zeros(x.shape[0], dtype=torch.long),
                     num_classes, gen).long().to(device)
    if targets.shape != (x.shape[0],) or int(targets.min()) < 0 or int(targets.max()) >= num_classes:
        raise InputError("the label map must return one label in [0, num_classes) per sample")
    if scenario != "uniform" and bool((targets == y).any()):
        raise InputError("the label map returned the true label for some samples; targets must be wrong labels")

    attack = budget.attack(bounds, seed)
    out = torch.empty_like(x)
    n = x.shape[0]
    from ..progress import progress_bar
    bar = progress_bar(n, f"building {scenario}/{budget.norm}", unit="img")
    for i in range(0, n, batch_size):
        xb, tb = x[i:i + batch_size], targets[i:i + batch_size]
        # the targeted loss ignores y; for noise a placeholder that differs from the target is passed
        yb = y[i:i + batch_size] if scenario != "uniform" else (tb + 1) % num_classes
        out[i:i + batch_size] = attack(source, xb, yb, targets=tb).x_adv
        bar.update(min(batch_size, n - i))
        if progress is not None:
            progress(min(i + batch_size, n), n)
    bar.close()
    clean, out = store_perturbed(x, out, storage, bounds)
    pred = predict(source, out, batch_size).argmax(1)
    fooled = (pred == targets).float()
    per_class = torch.bincount(targets, weights=fooled, minlength=num_classes) / \
        torch.bincount(targets, minlength=num_classes).clamp_min(1)
    delta = out - clean
    norms = {k: flat_norm(delta, k) for k in ("l0", "l2", "linf")}
    provenance = {
        "scenario": scenario, "label_map": getattr(mapper, "__name__", repr(mapper)),
        "budget": asdict(budget), "attack": repr(attack), "bounds": list(bounds), "seed": seed,
        "n": n, "num_classes": num_classes, "storage": storage,
        "source_sha256": source_id or state_sha256(source),
        "fooling_rate": float(fooled.mean()), "fooling_rate_per_target_class": per_class.tolist(),
        "norms": {k: {"mean": float(v.float().mean()), "max": float(v.float().max())} for k, v in norms.items()},
        "seconds": time.perf_counter() - t0,
    }
    return PerturbationDataset(out, targets, y, index.to(device), pred, provenance)

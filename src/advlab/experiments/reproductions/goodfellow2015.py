"""Goodfellow, Shlens, Szegedy 2015, "Explaining and Harnessing Adversarial Examples", on MNIST.

Trains every model the paper compares (softmax regression, the 240x5 maxout net naive / with the
FGSM objective / with sign and uniform noise / with L1 on the first layer, a shallow RBF network,
an ensemble of maxout nets, 3-vs-7 logistic regression), measures rows G1-G14 of PAPERS.md and writes
results.json, figures.npz and the report. Numbers are means (and std) over seeds."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from . import cpu_name, provenance
from .cache import cached_cell, cell_path, train_or_load
from .registry import Reproduction, register
from ...attacks import FGSM, PGD
from ...data import ArrayDataset, load_mnist
from ...evaluation import evaluate_robustness, predict
from ...io import atomic_write_bytes, atomic_write_json
from ...progress import progress_enabled
from ...models import build_model
from ...threat import ThreatModel
from ...training import Trainer, TrainConfig, build_objective

EPS = 0.25
CURVE_EPS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


def paper_threat(eps: float) -> ThreatModel:
    """The paper's threat: x + eps sign(grad) with no clipping back to [0, 1] (its definition has none,
    and only unclipped FGSM gives its naive-maxout error: 90.0% here against its 89.4%; clipped, 82%).
    The box is [0, 1] widened by eps, which no single FGSM or eps-ball point leaves."""
    return ThreatModel("linf", eps, (-eps, 1.0 + eps))


@dataclass(frozen=True)
class Budget:
    maxout_epochs: int
    softmax_epochs: int
    rbf_epochs: int
    ensemble: int
    n_eval: int
    n_strong: int          # points for PGD and the worst-case suite
    l1_coefs: tuple[float, ...]
    train_samples: int | None = None
    wide_units: int | None = None   # G6: the 1600-unit maxout net, naive and FGSM-trained (None: left out)
    member_epochs: int | None = None  # epochs of the ensemble's other members (None: maxout_epochs)
    # epochs of the FGSM-trained nets (None: maxout_epochs): the paper stopped them on the adversarial validation
    # error, which kept falling long after the clean one had flattened, so they trained longer than the naive net
    at_epochs: int | None = None
    # epochs of the wide net, naive and FGSM-trained (None: maxout_epochs and at_epochs); a budget that sets
    # them trains the 1600-unit net shorter than the 240-unit one, and its report says so
    wide_epochs: tuple[int, int] | None = None


BUDGETS = {
    # about 11 minutes on 2 CPU cores: long enough that the naive maxout is as overconfident on its FGSM
    # mistakes as the paper's (G2 >= 90%) and the FGSM-trained one, trained longer as in the cpu budget,
    # ends at or below the naive clean error (G5); the ensemble's other members train 4 epochs
    "quick": Budget(maxout_epochs=8, softmax_epochs=3, rbf_epochs=5, ensemble=3, n_eval=2000, n_strong=300,
                    l1_coefs=(0.0025,), member_epochs=4, at_epochs=20),
    # the full budget's models on 2 CPU cores in about 160 minutes (145 of them training): 60 maxout epochs (170
    # for the FGSM-trained net), 5 ensemble members (the naive net and 4 more trained 20 epochs), two L1
    # coefficients (the paper's 0.0025 and a small one), and the 1600-unit net (G6) for 10 naive / 15
    # FGSM-trained epochs (an epoch of it takes 99 s / 190 s on 2 cores: the paper's length would take a day)
    "cpu": Budget(maxout_epochs=60, softmax_epochs=20, rbf_epochs=30, ensemble=5, n_eval=10000, n_strong=1000,
                  l1_coefs=(0.0025, 0.0001), member_epochs=20, at_epochs=170, wide_units=1600,
                  wide_epochs=(10, 15)),
    "full": Budget(maxout_epochs=100, softmax_epochs=20, rbf_epochs=30, ensemble=12, n_eval=10000, n_strong=1000,
                   l1_coefs=(0.0025, 0.001, 0.0001), wide_units=1600, at_epochs=200),
    "tiny": Budget(maxout_epochs=1, softmax_epochs=1, rbf_epochs=1, ensemble=2, n_eval=200, n_strong=50,
                   l1_coefs=(0.0025,), train_samples=2000),
}


class Ensemble(nn.Module):
    """Average of the members' softmax probabilities, returned as log-probabilities (valid logits)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.stack([m(x).float().softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-30).log()


def confidence(model: nn.Module, x: Tensor) -> Tensor:
    """Max class probability; an RBF net's own unit outputs (unnormalized), as in the paper."""
    with torch.no_grad():
        model.eval()
        if hasattr(model, "unit_probabilities"):
            return torch.cat([model.unit_probabilities(x[i:i + 1000]).amax(1) for i in range(0, len(x), 1000)])
        return predict(model, x).float().softmax(1).amax(1)


def _maxout_cfg(b: Budget, seed: int) -> TrainConfig:
    return TrainConfig(epochs=b.maxout_epochs, batch_size=100, optimizer="sgd", lr=0.1, momentum=0.5,
                       momentum_final=0.7, momentum_ramp_epochs=max(1, b.maxout_epochs // 2), schedule="cosine",
                       seed=seed)


def model_plan(b: Budget) -> dict[str, dict[str, Any]]:
    th = {"norm": "linf", "eps": EPS}
    # the objectives that perturb train in the paper's unclipped box; the FGSM objective's J is the
    # dropout training cost, so its input gradient is taken through the dropout-masked network (as a
    # Theano graph of J(x + eps sign(grad_x J)) on the dropout cost has it), not the eval-mode one
    paper_th = {"norm": "linf", "eps": EPS, "bounds": tuple(paper_threat(EPS).bounds)}
    plan = {
        "softmax": {"model": ("softmax_regression", {}), "objective": ("standard", {}),
                    "cfg": lambda s: TrainConfig(epochs=b.softmax_epochs, batch_size=100, optimizer="adam", lr=1e-3,
                                                 seed=s)},
        "maxout": {"model": ("maxout_mlp", {}), "objective": ("standard", {}), "cfg": lambda s: _maxout_cfg(b, s)},
        "maxout_at": {"model": ("maxout_mlp", {}),
                      "objective": ("fgsm_mixture", {"alpha": 0.5, "craft_in_eval": False}),
                      "cfg": lambda s: _maxout_cfg(replace(b, maxout_epochs=b.at_epochs or b.maxout_epochs), s),
                      "threat": paper_th},
        "maxout_sign_noise": {"model": ("maxout_mlp", {}), "objective": ("noise_mixture", {"kind": "sign"}),
                              "cfg": lambda s: _maxout_cfg(b, s), "threat": paper_th},
        "maxout_uniform_noise": {"model": ("maxout_mlp", {}), "objective": ("noise_mixture", {"kind": "uniform"}),
                                 "cfg": lambda s: _maxout_cfg(b, s), "threat": paper_th},
        "rbf": {"model": ("rbf", {}), "objective": ("standard", {}),
                "cfg": lambda s: TrainConfig(epochs=b.rbf_epochs, batch_size=100, optimizer="adam", lr=1e-2,
                                             seed=s)},
    }
    # G10 is about where the L1 fit gets stuck under the paper's schedule: pylearn2's maxout recipe keeps the
    # rate near 0.1 (decay 1.000004 per step: 0.087 after 60 epochs), so the L1 nets train at a constant rate;
    # a cosine schedule anneals to 0 and lets SGD settle below the stuck fit (3.4% training error, cpu budget)
    for c in b.l1_coefs:
        plan[f"maxout_l1_{c:g}"] = {"model": ("maxout_mlp", {}), "objective": ("standard", {}),
                                    "cfg": lambda s, c=c: replace(_maxout_cfg(b, s), schedule="constant",
                                                                  l1={"features.2.linear.weight": c})}
    if b.wide_units:
        wide = ("maxout_mlp", {"units": b.wide_units})
        naive_ep, at_ep = b.wide_epochs or (b.maxout_epochs, b.at_epochs or b.maxout_epochs)
        plan[f"maxout{b.wide_units}"] = {**plan["maxout"], "model": wide,
                                         "cfg": lambda s: _maxout_cfg(replace(b, maxout_epochs=naive_ep), s)}
        plan[f"maxout{b.wide_units}_at"] = {**plan["maxout_at"], "model": wide,
                                            "cfg": lambda s: _maxout_cfg(replace(b, maxout_epochs=at_ep), s)}
    for spec in plan.values():
        spec.setdefault("threat", th)
    return plan


def _recipe(spec: dict[str, Any], seed: int, n_train: int) -> dict[str, Any]:
    """Everything that decides a trained model (fingerprinted for its cache entry and its cells)."""
    return {"model": spec["model"], "objective": spec["objective"], "threat": spec["threat"],
            "cfg": asdict(spec["cfg"](seed)), "n_train": n_train}


def _train(name: str, spec: dict[str, Any], train: ArrayDataset, seed: int, out: Path,
           log: Callable[[str], None]) -> tuple[nn.Module, dict[str, Any]]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        return build_model(spec["model"][0], **spec["model"][1]).to(train.x.device)

    def fit(model: nn.Module) -> dict[str, Any]:
        objective = build_objective(spec["objective"][0], ThreatModel(**spec["threat"]), **spec["objective"][1])
        cfg = replace(spec["cfg"](seed), progress=progress_enabled())   # epoch/step bars with an ETA per model
        res = Trainer(model, objective, cfg).fit(train.x, train.y)
        return {"seconds": res.seconds, "final_train_loss": res.history[-1]["train_loss"], "epochs": cfg.epochs,
                "objective": objective.describe(), "trained_on": cpu_name() if train.x.device.type == "cpu"
                else torch.cuda.get_device_name(train.x.device)}

    model, info = train_or_load(out, f"{name}-seed{seed}", build, fit, log,
                                recipe=_recipe(spec, seed, len(train)))
    return model, {k: v for k, v in info.items() if k not in ("name", "seed")}


class _SeedModels:
    """One seed's models, each trained (or loaded from OUT/models) only when a measurement that is not
    in OUT/cells yet needs it: a rerun whose cells all exist trains and loads nothing."""

    def __init__(self, plan: dict[str, dict[str, Any]], train: ArrayDataset, seed: int, out: Path,
                 log: Callable[[str], None]) -> None:
        self.plan, self.train, self.seed, self.out, self.log = plan, train, seed, out, log
        self.models: dict[str, nn.Module] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def __getitem__(self, name: str) -> nn.Module:
        if name not in self.models:
            self.models[name], self.info[name] = _train(name, self.plan[name], self.train, self.seed, self.out,
                                                        self.log)
        return self.models[name]

    def recipe(self, name: str) -> dict[str, Any]:
        return _recipe(self.plan[name], self.seed, len(self.train))


def _fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, clip: bool = False) -> Tensor:
    """FGSM examples in chunks: the paper's unclipped ones, or (clip) valid images in [0, 1]."""
    atk = FGSM(ThreatModel("linf", eps) if clip else paper_threat(eps))
    return torch.cat([atk(model, x[i:i + 1000], y[i:i + 1000]).x_adv for i in range(0, len(x), 1000)])


def _err(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
    pred = predict(model, x).argmax(1)
    return float((pred != y).float().mean()), pred


def measure(model: nn.Module, test: ArrayDataset, n_strong: int, strong: bool, seed: int) -> dict[str, Any]:
    x, y = test.x, test.y
    clean_err, _ = _err(model, x, y)
    x_adv = _fgsm(model, x, y, EPS)
    adv_err, adv_pred = _err(model, x_adv, y)
    wrong = adv_pred != y
    conf_adv = confidence(model, x_adv)
    out = {"clean_error": clean_err, "clean_confidence": float(confidence(model, x).mean()),
           "fgsm_error": adv_err, "fgsm_confidence_on_mistakes": float(conf_adv[wrong].mean()) if wrong.any() else None,
           "fgsm_curve": [(e, _err(model, _fgsm(model, x, y, e), y)[0]) for e in CURVE_EPS],
           "fgsm_error_clipped": _err(model, _fgsm(model, x, y, EPS, clip=True), y)[0],
           "_conf_adv": conf_adv[wrong].cpu().numpy()}
    rubbish = torch.randn(2000, *x.shape[1:], generator=torch.Generator().manual_seed(seed)).to(x.device)
    rc = confidence(model, rubbish)
    out["rubbish_share_over_half"] = float((rc > 0.5).float().mean())
    out["rubbish_confidence"] = float(rc[rc > 0.5].mean()) if (rc > 0.5).any() else None
    if strong:
        th = paper_threat(EPS)
        xs, ys = x[:n_strong], y[:n_strong]
        pgd = PGD(th, steps=40, step_size=0.01, restarts=1, seed=seed)
        out["pgd40_error"] = float(pgd(model, xs, ys).success.float().mean())
        res = evaluate_robustness(model, (xs, ys), th, suite="fast", seed=seed, checks=False)
        out["worst_case_error"] = 1 - res.robust_accuracy
        out["fgsm_error_same_points"] = float((_err(model, x_adv[:n_strong], ys)[1] != ys).float().mean())
    return out


def transfer(models: dict[str, nn.Module], test: ArrayDataset) -> dict[str, Any]:
    """error[r][c]: error of model c on FGSM examples crafted on model r; agreement[r][c]: on the examples
    that fool r, the share where c predicts r's (wrong) class (G12)."""
    x, y = test.x, test.y
    names = list(models)
    err = np.zeros((len(names), len(names)))
    agree = np.zeros_like(err)
    for i, r in enumerate(names):
        x_adv = _fgsm(models[r], x, y, EPS)
        pred_r = predict(models[r], x_adv).argmax(1)
        fooled = pred_r != y
        for j, c in enumerate(names):
            pred_c = predict(models[c], x_adv).argmax(1)
            err[i, j] = float((pred_c != y).float().mean())
            agree[i, j] = float((pred_c[fooled] == pred_r[fooled]).float().mean()) if fooled.any() else float("nan")
    return {"names": names, "error": err.tolist(), "agreement": agree.tolist()}


def three_vs_seven(train: ArrayDataset, test: ArrayDataset, epochs: int, seed: int) -> dict[str, Any]:
    def subset(d: ArrayDataset) -> ArrayDataset:
        keep = (d.y == 3) | (d.y == 7)
        return ArrayDataset(d.x[keep], (d.y[keep] == 7).long())
    tr, te = subset(train), subset(test)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model("softmax_regression", num_classes=2)
    Trainer(model, build_objective("standard"), TrainConfig(epochs=max(epochs, 3), batch_size=100,
                                                            optimizer="adam", lr=1e-3, seed=seed)).fit(tr.x, tr.y)
    model.eval()
    return {"seconds": time.perf_counter() - t0, "epochs": max(epochs, 3), "clean_error": _err(model, te.x, te.y)[0],
            "fgsm_error": _err(model, _fgsm(model, te.x, te.y, EPS), te.y)[0],
            "_weights": model.linear.weight.detach()[1] - model.linear.weight.detach()[0]}


def _figure_data(values: Tensor | np.ndarray) -> list[Any]:
    """Arrays a figure draws, as JSON lists for a cell (6 decimals: plenty for a plot, a third of the size)."""
    a = values.cpu().numpy() if isinstance(values, Tensor) else values
    return np.round(a.astype(np.float64), 6).tolist()


def _three_vs_seven_cell(train: ArrayDataset, test: ArrayDataset, epochs: int, seed: int) -> dict[str, Any]:
    t = three_vs_seven(train, test, epochs, seed)
    w = t.pop("_weights")
    return {**t, **({"_weights": _figure_data(w)} if seed == 0 else {})}


def _agg(values: list[Any]) -> dict[str, Any] | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    a = np.asarray(vals, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a),
            "values": a.tolist()}


_STRONG = ("softmax", "maxout", "maxout_at")   # the models PGD-40 and the worst-case suite also measure
_CONF_FIGURE = ("maxout", "maxout_at", "rbf", "softmax")   # their confidence histograms are drawn (seed 0)
_WEIGHT_FIGURE = ("maxout", "maxout_at")   # their first-layer filters are drawn (seed 0)


def _measure_cell(name: str, models: _SeedModels, b: Budget, test: ArrayDataset) -> dict[str, Any]:
    """One model's measurements, with what its training recorded and (seed 0) what its figures need."""
    model, seed = models[name], models.seed
    m = measure(model, test, b.n_strong, name in _STRONG, seed)
    if name.startswith("maxout_l1"):
        m["train_error"] = _err(model, models.train.x, models.train.y)[0]   # pylearn2's train_y_misclass
    conf = m.pop("_conf_adv")
    if seed == 0 and name in _CONF_FIGURE:
        m["_conf_adv"] = _figure_data(conf)
    if seed == 0 and name in _WEIGHT_FIGURE:
        m["_weights"] = _figure_data(model.features[2].linear.weight.detach()[:: 5][:24])
    return {**m, "train": models.info[name]}


def _ensemble_cell(models: _SeedModels, b: Budget, test: ArrayDataset) -> dict[str, Any]:
    """G13: the naive maxout and b.ensemble - 1 more seeds, FGSM on the whole ensemble and on one member."""
    members = [models["maxout"]]
    for k in range(1, b.ensemble):
        members.append(_train(f"maxout_member{k}", _member_spec(models.plan, b), models.train,
                              models.seed * 1000 + k, models.out, models.log)[0])
    ens = Ensemble(members).eval()
    return {"size": b.ensemble, "error_attack_ensemble": _err(ens, _fgsm(ens, test.x, test.y, EPS), test.y)[0],
            "error_attack_one_member": _err(ens, _fgsm(members[0], test.x, test.y, EPS), test.y)[0],
            "clean_error": _err(ens, test.x, test.y)[0]}


def _member_spec(plan: dict[str, dict[str, Any]], b: Budget) -> dict[str, Any]:
    if not b.member_epochs:
        return plan["maxout"]
    return {**plan["maxout"], "cfg": lambda s, e=b.member_epochs: _maxout_cfg(replace(b, maxout_epochs=e), s)}


def _public(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell without its private keys (recipe fingerprint, figure data)."""
    return {k: v for k, v in cell.items() if not k.startswith("_")}


def _seed_cells(models: _SeedModels, b: Budget, test: ArrayDataset, test_eval: ArrayDataset,
                cell: Callable[[str, Callable[[], dict[str, Any]], Any], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every measurement of one seed, each a cell (read back when a previous run finished it): one per
    model, the transfer matrix, the ensemble and the 3-vs-7 logistic regression."""
    seed, plan, n_train = models.seed, models.plan, len(models.train)
    cells = {}
    for name in plan:
        cells[name] = cell(f"measure-{name}-seed{seed}", partial(_measure_cell, name, models, b, test_eval),
                           {"model": models.recipe(name), "n_eval": b.n_eval, "n_strong": b.n_strong,
                            "strong": name in _STRONG})
    core = ("softmax", "maxout", "maxout_at", "maxout_sign_noise", "rbf")
    cells["transfer"] = cell(f"transfer-seed{seed}", lambda: transfer({k: models[k] for k in core}, test_eval),
                             {"models": [models.recipe(k) for k in core], "n_eval": b.n_eval})
    cells["ensemble"] = cell(f"ensemble-seed{seed}", lambda: _ensemble_cell(models, b, test_eval),
                             {"naive": models.recipe("maxout"), "member": _recipe(_member_spec(plan, b), seed, n_train),
                              "size": b.ensemble, "n_eval": b.n_eval})
    cells["logreg_3v7"] = cell(f"three_vs_seven-seed{seed}",
                               lambda: _three_vs_seven_cell(models.train, test, b.softmax_epochs, seed),
                               {"epochs": b.softmax_epochs, "seed": seed, "n_train": n_train})
    return cells


def run_goodfellow2015(out: Path, budget: str = "quick", seeds: int = 1, device: str = "cpu",
                       log: Callable[[str], None] = print, dataset: str = "mnist") -> dict[str, Any]:
    b = BUDGETS[budget]
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train, test = load_mnist("train", device=device), load_mnist("test", device=device)
    if b.train_samples:
        train = train.subset(b.train_samples)
    test_eval = test.subset(b.n_eval)
    plan = model_plan(b)
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
    figs: dict[str, np.ndarray] = {}
    transfers, ensembles, tvs, reused = [], [], [], []
    from ...progress import progress_bar
    bar = progress_bar(seeds * (len(plan) + 3), "goodfellow2015 cells", unit="cell")

    def cell(key: str, compute: Callable[[], dict[str, Any]], recipe: Any) -> dict[str, Any]:
        if cell_path(out, key).exists():
            reused.append(key)
        value = cached_cell(out, key, compute, recipe=recipe)
        bar.update(1)
        return value

    for seed in range(seeds):
        log(f"[goodfellow2015] seed {seed}: {len(plan)} models ({budget} budget)")
        cells = _seed_cells(_SeedModels(plan, train, seed, out, log), b, test, test_eval, cell)
        for key, value in cells.items():
            for fig_key in ("_conf_adv", "_weights"):   # figure data (seed 0's cells carry it)
                if fig_key in value:
                    figs[f"{fig_key[1:]}__{key}"] = np.asarray(value[fig_key], dtype=np.float32)
            if key in per_seed:
                per_seed[key].append(_public(value))
        transfers.append(cells["transfer"])
        ensembles.append(_public(cells["ensemble"]))
        tvs.append(_public(cells["logreg_3v7"]))
        log(f"[goodfellow2015] seed {seed} done at {time.perf_counter() - t_start:.0f}s")
    bar.close()
    models_agg = {name: {k: _agg([r[k] for r in runs]) for k in runs[0] if k not in ("train", "fgsm_curve")}
                  for name, runs in per_seed.items()}
    for name, runs in per_seed.items():
        models_agg[name]["fgsm_curve"] = [(e, _agg([r["fgsm_curve"][i][1] for r in runs])["mean"])
                                          for i, e in enumerate(CURVE_EPS)]
    names = transfers[0]["names"]
    tr_err = np.mean([t["error"] for t in transfers], axis=0)
    tr_agree = np.nanmean([t["agreement"] for t in transfers], axis=0)
    figs["transfer_error"] = tr_err
    buf = __import__("io").BytesIO()
    np.savez_compressed(buf, **figs)
    atomic_write_bytes(out / "figures.npz", buf.getvalue())
    results = {
        "paper": "goodfellow2015", "budget": budget, "budget_settings": b.__dict__, "seeds": seeds,
        **provenance(device), "seconds": time.perf_counter() - t_start, "reused_cells": reused,
        "train_seconds_total": sum(r["train"].get("seconds", 0.0) for runs in per_seed.values() for r in runs),
        "models": models_agg, "per_seed": per_seed,
        "transfer": {"names": names, "error": tr_err.tolist(), "agreement": tr_agree.tolist()},
        "ensemble": {k: _agg([e[k] for e in ensembles]) for k in ensembles[0]},
        "three_vs_seven": {k: _agg([t[k] for t in tvs]) for k in tvs[0]},
    }
    results["rows"] = paper_rows(results)
    atomic_write_json(out / "results.json", results)
    return results


def _wide_rows(r: dict[str, Any], rows: list[dict[str, Any]], full: bool, mean: Callable[[Any], Any],
               source: Callable[..., str]) -> list[dict[str, Any]]:
    """G6, the 1600-unit net. Trained as long as the paper's recipe allows, it also carries G7's 17.9% (the
    paper's number is this net's); trained shorter (the cpu budget), G7's check stays on the 240-unit net."""
    m, bs, budget = r["models"], r["budget_settings"], r["budget"]
    wide = bs.get("wide_units")
    if not (wide and f"maxout{wide}" in m):
        return [] if not full else [{
            "id": "G6", "quantity": "1600-unit maxout: clean error, naive / FGSM-trained", "paper": 0.0114,
            "ours": None, "source": f"{budget} budget: not trained", "check": "measured", "holds": False,
            "why": f"not trained at the {budget} budget; `--budget cpu` trains it for fewer epochs and "
                   "`--budget full` as long as the paper's recipe"}]
    naive, at = m[f"maxout{wide}"], m[f"maxout{wide}_at"]
    short = bs.get("wide_epochs")
    out = [{"id": "G6", "quantity": f"{wide}-unit maxout: clean error (naive)", "paper": 0.0114,
            "ours": naive["clean_error"], "source": source(f"maxout{wide}")},
           {"id": "G6", "quantity": f"{wide}-unit maxout: clean error (FGSM-trained)", "paper": 0.00782,
            "ours": at["clean_error"], "check": "<= naive",
            "holds": mean(at["clean_error"]) <= mean(naive["clean_error"]), "source": source(f"maxout{wide}_at")},
           {"id": "G7", "quantity": f"{wide}-unit FGSM-trained maxout: FGSM error", "paper": 0.179,
            "ours": at["fgsm_error"], "check": "<= 17.9%", "holds": mean(at["fgsm_error"]) <= 0.179,
            "source": source(f"maxout{wide}_at")}]
    if short:
        why = (f"the {budget} budget trains the {wide}-unit net {short[0]} naive and {short[1]} FGSM-trained "
               f"epochs (an epoch takes about 99 s and 190 s on 2 CPU cores, 14x the 240-unit net's); the paper "
               "trained until 100 epochs passed without a validation gain (early stopping on the adversarial "
               "validation error for the FGSM-trained net), then retrained on all 60k images, most of a day on "
               "2 cores")
        gap = mean(naive["clean_error"]) - mean(at["clean_error"])
        out[1]["why"] = (why + f"; the FGSM-trained net is {100 * abs(gap):.2f} pt "
                         f"{'below' if gap >= 0 else 'above'} the naive one here, "
                         f"{abs(gap) * bs['n_eval']:.0f} of {bs['n_eval']} test images, a margin one seed does "
                         "not settle (the 240-unit net's FGSM objective fitted the clean data more slowly than the "
                         "plain one for dozens of epochs and overtook it only with long training: G5)")
        out[2].update(check="(<= 17.9% at the full budget)", holds=None, why=why + "; G7's check is on the "
                      "240-unit net above")
        return out
    g7 = next(row for row in rows if row["quantity"] == "FGSM-trained maxout: FGSM error")
    g7.update(check="(17.9% is the wide net's: see its row)", holds=None)   # the paper's number is this net's
    g7.pop("why", None)
    return out


def paper_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The G rows: paper value, ours (mean/std over seeds), and the ordering check of issue #4."""
    m, tr, ens, tvs = r["models"], r["transfer"], r["ensemble"], r["three_vs_seven"]

    def mean(x: Any) -> float | None:
        return x["mean"] if isinstance(x, dict) else x

    def t(i: str, j: str, key: str = "error") -> float:
        return tr[key][tr["names"].index(i)][tr["names"].index(j)]

    full = r["budget"] in ("full", "cpu")   # the budgets held to the paper's absolute numbers
    budget, where = r["budget"], (r.get("hardware") or {}).get("gpu") or "CPU"
    ep = r["budget_settings"]["maxout_epochs"]
    at_ep = r["budget_settings"].get("at_epochs") or ep

    def source(*names: str) -> str:
        """Which budget, device and training time produced a row (seed 0's models)."""
        parts = []
        for name in names:
            info = (r.get("per_seed", {}).get(name) or [{}])[0].get("train", {})
            if name == "three_vs_seven" and "seconds" in r["three_vs_seven"]:
                info = {k: r["three_vs_seven"][k]["mean"] for k in ("epochs", "seconds")}
            if info:
                epochs = info.get("epochs", "?")
                label = "3-vs-7 logistic regression" if name == "three_vs_seven" else name
                parts.append(f"{label} {int(epochs) if isinstance(epochs, float) else epochs} ep, "
                             f"{info.get('seconds', 0) / 60:.1f} min")
        return f"{budget} budget, {where}" + (": " + "; ".join(parts) if parts else "")

    rows = [
        {"id": "G1", "quantity": "softmax regression: FGSM error", "paper": 0.999, "ours": m["softmax"]["fgsm_error"],
         "check": ">= 95%", "holds": mean(m["softmax"]["fgsm_error"]) >= 0.95},
        {"id": "G1", "quantity": "softmax regression: confidence on mistakes", "paper": 0.793,
         "ours": m["softmax"]["fgsm_confidence_on_mistakes"]},
        {"id": "G2", "quantity": "maxout: FGSM error", "paper": 0.894, "ours": m["maxout"]["fgsm_error"],
         "check": ">= 80%", "holds": mean(m["maxout"]["fgsm_error"]) >= 0.80},
        {"id": "G2", "quantity": "maxout: confidence on mistakes", "paper": 0.976,
         "ours": m["maxout"]["fgsm_confidence_on_mistakes"], "check": ">= 90%",
         "holds": mean(m["maxout"]["fgsm_confidence_on_mistakes"]) >= 0.90,
         "why": f"confidence on FGSM mistakes rises with training ({ep} maxout epochs here; with the paper's recipe "
                "and unclipped FGSM: 83.9% after 5, 85.1% after 8, 87.1% after 16, 89.0% and 90.3% after 24 on two "
                "machines, 94.8% after 60) while the paper trained its nets until 100 epochs passed without a "
                "validation gain" + ("" if full else
                "; the quick budget cannot have both this and G5 in 15 minutes on 2 cores: after 24 naive epochs "
                "(3 min, 1.85% clean error on 2,000 points), G5 needs the FGSM-trained net at or below that, and it "
                "was at 2.10% after 28 epochs (7.2 min); and the paper's near-constant rate gave 89.1% after 8 naive "
                "epochs and 87.2% after 10, noise around the bar")},
        {"id": "G4", "quantity": "3 vs 7 logistic regression: clean error", "paper": 0.016,
         "ours": tvs["clean_error"]},
        {"id": "G4", "quantity": "3 vs 7 logistic regression: FGSM error", "paper": 0.99, "ours": tvs["fgsm_error"]},
        {"id": "G5", "quantity": "maxout: clean error (naive)", "paper": 0.0094, "ours": m["maxout"]["clean_error"],
         "check": "<= 1.3% (full, cpu)", "holds": mean(m["maxout"]["clean_error"]) <= 0.013 if full else None,
         "why": f"{r['budget_settings']['maxout_epochs']} epochs at a fixed cosine schedule; the paper trained until "
                "100 epochs passed without a validation gain, then retrained on all 60k images"},
        {"id": "G5", "quantity": "maxout: clean error (FGSM-trained)", "paper": 0.0084,
         "ours": m["maxout_at"]["clean_error"], "check": "<= naive",
         "holds": mean(m["maxout_at"]["clean_error"]) <= mean(m["maxout"]["clean_error"]),
         "why": f"{at_ep} epochs: the FGSM objective fits the clean data more slowly than the plain one (4.1% "
                "against 3.0% after 5 epochs) and overtakes it only with long training, as the paper's did (it "
                "stopped on the adversarial validation error): the cpu budget's 170 epochs gave 0.84% and 0.91% in two "
                "runs against the naive net's 1.16% and 1.20% after 60"},
        {"id": "G7", "quantity": "FGSM-trained maxout: FGSM error", "paper": 0.179,
         "ours": m["maxout_at"]["fgsm_error"],
         "check": "<= 17.9%" if full else "< naive",
         "holds": (mean(m["maxout_at"]["fgsm_error"]) <= 0.179 if full
                   else mean(m["maxout_at"]["fgsm_error"]) < mean(m["maxout"]["fgsm_error"])),
         "why": "the paper's 17.9% is its 1600-unit net's, trained until the adversarial validation error stopped "
                "falling (the text of G6; for the 240-unit net it gives only the 0.84% clean error); ours is the "
                f"240-unit net after {at_ep} epochs, its examples crafted through the dropout net as the paper's "
                "objective on the dropout cost has it; crafting on the eval-mode net is a stronger adversary (7.4% "
                "FGSM error after 60 epochs in an earlier cpu run with clipped FGSM) but left 1.86% clean error, "
                "so G5 missed there; with dropout crafting the FGSM error fell from 23.4% (60 epochs) to 19.2% (120), "
                "and two cpu runs of the same recipe and seed on different machines ended at 19.9% and 14.9% after "
                "170 (CPU training is not bit-reproducible across machines), so the bar is within run-to-run spread"},
        {"id": "G7", "quantity": "FGSM-trained maxout: confidence on mistakes", "paper": 0.814,
         "ours": m["maxout_at"]["fgsm_confidence_on_mistakes"]},
        *({"id": "G2+", "quantity": f"{label}: FGSM error, clipped to [0, 1] (valid images; beyond the paper)",
           "paper": None, "ours": m[name]["fgsm_error_clipped"]}
          for name, label in (("maxout", "maxout"), ("maxout_at", "FGSM-trained maxout"))
          if "fgsm_error_clipped" in m[name]),
        {"id": "G7+", "quantity": "FGSM-trained maxout: PGD-40 error (beyond the paper)", "paper": None,
         "ours": m["maxout_at"].get("pgd40_error")},
        {"id": "G7+", "quantity": "FGSM-trained maxout: worst-case error, fast suite (beyond the paper)",
         "paper": None, "ours": m["maxout_at"].get("worst_case_error")},
        {"id": "G8", "quantity": "transfer naive -> FGSM-trained (error)", "paper": 0.196,
         "ours": t("maxout", "maxout_at"), "check": "< FGSM-trained -> naive",
         "holds": t("maxout", "maxout_at") < t("maxout_at", "maxout")},
        {"id": "G8", "quantity": "transfer FGSM-trained -> naive (error)", "paper": 0.409,
         "ours": t("maxout_at", "maxout")},
        {"id": "G9", "quantity": "sign-noise-trained maxout: FGSM error", "paper": 0.862,
         "ours": m["maxout_sign_noise"]["fgsm_error"], "check": ">= 70%",
         "holds": mean(m["maxout_sign_noise"]["fgsm_error"]) >= 0.70},
        {"id": "G9", "quantity": "uniform-noise-trained maxout: FGSM error", "paper": 0.904,
         "ours": m["maxout_uniform_noise"]["fgsm_error"], "check": ">= 70%",
         "holds": mean(m["maxout_uniform_noise"]["fgsm_error"]) >= 0.70},
        {"id": "G11", "quantity": "RBF: FGSM error", "paper": 0.554, "ours": m["rbf"]["fgsm_error"]},
        {"id": "G11", "quantity": "RBF: confidence on mistakes", "paper": 0.012,
         "ours": m["rbf"]["fgsm_confidence_on_mistakes"], "check": "<= 10%",
         "holds": (mean(m["rbf"]["fgsm_confidence_on_mistakes"]) or 0) <= 0.10},
        {"id": "G11", "quantity": "RBF: clean confidence", "paper": 0.606, "ours": m["rbf"]["clean_confidence"]},
        {"id": "G12", "quantity": "maxout's adversarial class taken by softmax regression", "paper": 0.546,
         "ours": t("maxout", "softmax", "agreement")},
        {"id": "G12", "quantity": "maxout's adversarial class taken by RBF", "paper": 0.160,
         "ours": t("maxout", "rbf", "agreement")},
        {"id": "G13", "quantity": f"ensemble ({ens['error_attack_ensemble']['n'] and r['budget_settings']['ensemble']} "
                                  "maxouts): error, FGSM on the ensemble", "paper": 0.911,
         "ours": ens["error_attack_ensemble"], "check": ">= error with FGSM on one member",
         "holds": mean(ens["error_attack_ensemble"]) >= mean(ens["error_attack_one_member"])},
        {"id": "G13", "quantity": "ensemble: error, FGSM on one member", "paper": 0.879,
         "ours": ens["error_attack_one_member"]},
        {"id": "G14", "quantity": "rubbish N(0, I): share with p > 0.5, maxout", "paper": 0.9835,
         "ours": m["maxout"]["rubbish_share_over_half"]},
        {"id": "G14", "quantity": "rubbish: share with p > 0.5, softmax regression", "paper": 0.598,
         "ours": m["softmax"]["rubbish_share_over_half"]},
        {"id": "G14", "quantity": "rubbish: share with p > 0.5, RBF", "paper": 0.0,
         "ours": m["rbf"]["rubbish_share_over_half"]},
    ]
    rows += _wide_rows(r, rows, full, mean, source)
    for row in rows:
        row.setdefault("source", source(*_row_models(row["quantity"])))
    for name in m:
        if name.startswith("maxout_l1"):
            coef = float(name.rsplit("_", 1)[1])
            rows.append({"id": "G10", "quantity": f"L1 {coef:g} on the first layer: training error",
                         "paper": 0.05 if coef >= 0.0025 else None, "ours": m[name]["train_error"],
                         "check": "> 5% at 0.0025" if coef >= 0.0025 else "",
                         "holds": mean(m[name]["train_error"]) > 0.05 if coef >= 0.0025 else None,
                         "why": "training error without dropout on every training image (pylearn2's train_y_misclass), "
                                "the net trained at the paper's near-constant rate; with a cosine schedule to 0 the "
                                "fit settles lower (3.4% on 10,000 training images in an earlier cpu run)",
                         "source": source(name)})
    rows.sort(key=lambda row: int("".join(ch for ch in row["id"] if ch.isdigit())))   # G6 after G5 (stable)
    return rows


_ROW_MODELS = (("3 vs 7", ("three_vs_seven",)), ("transfer", ("maxout", "maxout_at")), ("FGSM-trained", ("maxout_at",)),
               ("taken by softmax", ("maxout", "softmax")), ("taken by RBF", ("maxout", "rbf")),
               ("ensemble", ("maxout",)), ("softmax regression", ("softmax",)), ("sign-noise", ("maxout_sign_noise",)),
               ("uniform-noise", ("maxout_uniform_noise",)), ("RBF", ("rbf",)), ("maxout", ("maxout",)))


def _row_models(quantity: str) -> tuple[str, ...]:
    """The trained models a G row is measured on (the first rule that matches its wording)."""
    return next((names for key, names in _ROW_MODELS if key in quantity), ())


def _resumed(r: dict[str, Any]) -> str:
    """How much of a resumed run an earlier invocation measured (its rows' sources give their times)."""
    reused = r.get("reused_cells") or []
    if not reused:
        return ""
    fresh = [name for name, runs in r["per_seed"].items() if not any(f"measure-{name}-" in k for k in reused)]
    return (f"; it resumed a run directory and read back {len(reused)} measurements an earlier invocation of the "
            f"same recipes made" + (f", measuring only {', '.join(fresh)}" if fresh else ""))


def write_goodfellow_report(run_dir: Path) -> tuple[Path, Path]:
    """report.md / report.html from results.json and figures.npz (no retraining)."""
    import json

    from ..report import Figure, load_figures_data, verdict_summary, write_report
    r = json.loads((run_dir / "results.json").read_text())
    rows = paper_rows(r)   # the checks of this version of advlab, from the stored measurements
    if rows != r.get("rows"):
        r["rows"] = rows
        atomic_write_json(run_dir / "results.json", r)
    data = load_figures_data(run_dir)
    names = r["transfer"]["names"]

    def heat(fig: Any) -> None:
        ax = fig.add_subplot(111)
        err = np.asarray(r["transfer"]["error"])
        im = ax.imshow(err, cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("evaluated on")
        ax.set_ylabel("FGSM crafted on")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{100 * err[i, j]:.0f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im, ax=ax, label="error")

    def curves(fig: Any) -> None:
        ax = fig.add_subplot(111)
        for name, m in r["models"].items():
            e, v = zip(*m["fgsm_curve"])
            ax.plot(e, v, marker="o", label=name)
        ax.set_xlabel("FGSM eps (linf)")
        ax.set_ylabel("test error")
        ax.legend(fontsize=7)

    def hist(fig: Any) -> None:
        ax = fig.add_subplot(111)
        for key, v in data.items():
            if key.startswith("conf_adv__") and len(v):
                ax.hist(v, bins=20, range=(0, 1), alpha=0.5, label=key.split("__")[1])
        ax.set_xlabel("confidence on fooled FGSM examples")
        ax.set_ylabel("count")
        ax.legend(fontsize=7)

    def weights(fig: Any) -> None:
        rows = [k for k in ("weights__maxout", "weights__maxout_at") if k in data]
        for i, key in enumerate(rows):
            w = data[key][:8]
            for j in range(len(w)):
                ax = fig.add_subplot(len(rows) + 1, 8, i * 8 + j + 1)
                ax.imshow(w[j].reshape(28, 28), cmap="gray")
                ax.axis("off")
                if j == 0:
                    ax.set_title(key.split("__")[1], fontsize=7, loc="left")
        if "weights__logreg_3v7" in data:
            ax = fig.add_subplot(len(rows) + 1, 8, len(rows) * 8 + 1)
            ax.imshow(data["weights__logreg_3v7"].reshape(28, 28), cmap="gray")
            ax.set_title("3v7 w", fontsize=7)
            ax.axis("off")

    b = r["budget_settings"]
    trained = list(r["models"])
    intro = (f"MNIST, budget '{r['budget']}', {r['seeds']} seed(s): {len(trained)} models per seed "
             f"({', '.join(trained)}), plus an ensemble of {b['ensemble']} maxout members and the 3-vs-7 logistic "
             f"regression. Training took {r.get('train_seconds_total', 0) / 60:.1f} min and this invocation "
             f"{r['seconds'] / 60:.1f} min on {r['hardware']['gpu'] or 'CPU'} ({r['hardware']['threads']} threads)"
             f"{_resumed(r)}. Ours = mean ± std over seeds. {verdict_summary(r['rows'])}.")
    clipped = "fgsm_error_clipped" in r["models"]["maxout"]
    box = ("x + eps sign(grad), not clipped back to [0, 1], as in the paper (rows marked 'clipped' keep valid "
           "images)" if clipped else "clipped to [0, 1] (a run made before advlab followed the paper's unclipped FGSM)")
    setting = (f"Threat: FGSM, linf eps 0.25 on inputs in [0, 1], {box}; on the first {b['n_eval']} MNIST test "
               f"points (PGD-40 and the worst case on the first {b['n_strong']}, same box); {r['seeds']} seed(s); "
               f"budget '{r['budget']}'. Differences are in percentage points (pt).")
    ens = r["ensemble"]
    transfer_cells = [["crafted on \\ evaluated on", *names]] + [
        [n, *(f"{100 * v:.1f}%" for v in row)] for n, row in zip(names, r["transfer"]["error"])]
    sections = [("Transfer matrix", {"table": transfer_cells, "note": f"Error of the column's model on FGSM "
                                     f"examples (linf eps 0.25) crafted on the row's model, {b['n_eval']} test "
                                     f"points, seed 0 of {r['seeds']}."}),
                ("Ensemble", f"size {r['budget_settings']['ensemble']} (the naive maxout and "
                             f"{r['budget_settings']['ensemble'] - 1} more seeds, trained "
                             f"{r['budget_settings'].get('member_epochs') or r['budget_settings']['maxout_epochs']} "
                             "epochs each): "
                     f"clean error {ens['clean_error']['mean']:.2%}, "
                             f"FGSM on the ensemble {ens['error_attack_ensemble']['mean']:.2%}, "
                             f"FGSM on one member {ens['error_attack_one_member']['mean']:.2%}"),
                ("Beyond the paper", "FGSM overstates robustness: for the FGSM-trained maxout, FGSM error "
                 f"{r['models']['maxout_at']['fgsm_error']['mean']:.2%}, PGD-40 "
                 f"{(r['models']['maxout_at'].get('pgd40_error') or {}).get('mean', float('nan')):.2%}, worst case "
                 f"{(r['models']['maxout_at'].get('worst_case_error') or {}).get('mean', float('nan')):.2%} "
                 f"(PGD and the suite on the first {r['budget_settings']['n_strong']} test points).")]
    provenance = {k: r[k] for k in ("budget", "budget_settings", "seeds", "device", "seconds", "command",
                                     "versions", "hardware")}
    figures = {
        "transfer_matrix": Figure("Transfer of FGSM examples between models", "FGSM (linf eps 0.25) examples "
                                  "crafted on the row's model, error of the column's model on them (%).", heat),
        "error_vs_eps": Figure("Test error vs FGSM eps", f"FGSM error of every model at each linf eps on "
                               f"{b['n_eval']} test points.", curves),
        "confidence_histograms": Figure("Confidence on fooled examples", "Max-softmax confidence of each model "
                                        "on the FGSM examples (eps 0.25) that fool it.", hist),
        "first_layer_weights": Figure("First-layer weights", "The first eight first-layer filters of the naive and "
                                      "FGSM-trained maxout nets, and the 3-vs-7 logistic regression's weights.",
                                      weights)}
    return write_report(run_dir, "Goodfellow et al. 2015 reproduced with advlab", intro, r["rows"], sections,
                        figures, provenance, setting=setting)


register(Reproduction("goodfellow2015", "Goodfellow, Shlens, Szegedy 2015: Explaining and Harnessing Adversarial "
                      "Examples", run_goodfellow2015, write_goodfellow_report, lambda dataset: tuple(BUDGETS)))

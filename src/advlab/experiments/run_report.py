"""The report of an ordinary run (`advlab run`): its settings, training curves, robustness per attack,
the worst case and the accuracy-versus-eps curve, from the run directory's files alone."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .report import Figure, write_report
from .spec import load_spec
from .store import RunDir


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _threat(t: dict[str, Any] | None) -> str:
    return "-" if not t else f"{t['norm']} eps {t['eps']:g}"


def _attack_rows(results: dict[str, Any]) -> list[list[str]]:
    n = results.get("n_eval")
    rows = [["attack", "threat", "points", "robust accuracy", "error", "confidence on mistakes"]]
    for label, a in results.get("attacks", {}).items():
        rows.append([label, _threat(a.get("threat")), str(n), _pct(a["robust_accuracy"]), _pct(a["error"]),
                     _pct(a.get("confidence_on_mistakes"))])
    wc = results.get("worst_case")
    if wc:
        rows.append([f"worst case ({wc.get('suite', 'suite')}: {', '.join(s['name'] for s in wc['attacks'])})",
                     _threat(wc["threat_model"]), str(wc["n_samples"]), _pct(wc["robust_accuracy"]),
                     _pct(1 - wc["robust_accuracy"]), "-"])
    return rows


def write_run_report(run_path: str | Path) -> tuple[Path, Path]:
    """report.md / report.html of an ordinary run directory."""
    run = RunDir(run_path)
    spec = load_spec(run.path / "config.toml")
    results = json.loads((run.path / "results.json").read_text())
    history = [m for m in run.metrics() if m.get("phase") != "retrain_on_all"]
    t = spec.train
    train_threat = _threat(t.threat.model_dump()) if t.threat else "none"
    settings = [["setting", "value"], ["model", f"{spec.model.name} {spec.model.args or ''}".strip()],
                ["data", f"{spec.data.name} ({spec.data.train_samples or 'all'} training images)"],
                ["objective", f"{t.objective} {t.objective_args or ''}".strip() + f" (threat {train_threat})"],
                ["training", f"{t.epochs} epoch(s), batch {t.batch_size}, {t.optimizer} lr {t.lr:g}, {t.schedule}"],
                ["seed", str(spec.seed)], ["device", spec.device],
                ["model sha256", str(results.get("model_sha256"))[:16]]]
    wc = results.get("worst_case")
    eval_note = (f"Evaluated on {results['n_eval']} test points, seed {spec.seed}; clean accuracy "
                 f"{_pct(results['clean_accuracy'])}.")
    if wc:
        eval_note += (f" Worst case over the {wc.get('suite')} suite under {_threat(wc['threat_model'])}: "
                      f"{_pct(wc['robust_accuracy'])}"
                      + (" (the fast suite is a screen, not a worst case: report `standard`)."
                         if wc.get("suite") == "fast" else "."))
    figures: dict[str, Figure] = {}
    if history:
        figures["training_curves"] = Figure(
            "Training curves", f"Per-epoch metrics of the {t.objective} objective (metrics.jsonl).",
            lambda fig: _draw_history(fig, history))
    curve = results.get("curve")
    if curve:
        figures["accuracy_vs_eps"] = Figure(
            f"Accuracy vs {curve['norm']} eps", f"Accuracy of the first {curve['n']} test points against "
            f"{curve['attack']} at each eps; an upper bound on robust accuracy (the worst case above is the "
            "reported number).", lambda fig: _draw_curve(fig, curve))
    sections = [("Robustness per attack", {"table": _attack_rows(results), "note": eval_note})]
    if wc and wc.get("flags"):
        sections.append(("Sanity-check flags", "\n".join(wc["flags"])))
    intro = (f"Experiment '{spec.name}': {spec.model.name} trained with {t.objective} on {spec.data.name}, "
             f"{results.get('train_seconds', 0) / 60:.1f} min of training. {spec.description}").strip()
    return write_report(run.path, f"advlab run: {spec.name}", intro, None, sections, figures,
                        {"config": spec.model_dump(), "train": results.get("train")}, settings_table=settings)


def _draw_history(fig: Any, history: list[dict[str, Any]]) -> None:
    ax = fig.add_subplot(111)
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    for key in ("train_loss", "train_error", "val_error", "val_adv_error", "lr"):
        vals = [h.get(key) for h in history]
        if any(isinstance(v, (int, float)) for v in vals):
            ax.plot(epochs, [v if isinstance(v, (int, float)) else float("nan") for v in vals], marker="o",
                    label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)


def _draw_curve(fig: Any, curve: dict[str, Any]) -> None:
    ax = fig.add_subplot(111)
    ax.plot(curve["eps"], [100 * a for a in curve["accuracy"]], marker="o")
    ax.set_xlabel(f"{curve['norm']} eps")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)

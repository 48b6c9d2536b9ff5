"""Reports from run directories: report.md and a self-contained report.html (plots embedded as PNG),
with the "paper vs advlab" table. Everything is read from results.json and figures.npz, so
`advlab report RUN_DIR` regenerates a report without rerunning anything."""
from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_bytes


def _fmt(v: Any, pct: bool) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict) and "mean" in v:
        s = f"{_fmt(v['mean'], pct)}"
        return s + (f" ± {_fmt(v['std'], pct)}" if v.get("n", 1) > 1 else "")
    if isinstance(v, (int, float)):
        return f"{100 * v:.2f}%" if pct else f"{v:.4g}"
    return str(v)


def comparison_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of {id, quantity, paper, ours, pct, check, holds} -> table cells."""
    out = [["#", "quantity", "paper", "advlab", "difference", "check", "verdict"]]
    for r in rows:
        ours = r.get("ours")
        mean = ours["mean"] if isinstance(ours, dict) else ours
        diff = "-" if r.get("paper") is None or mean is None else _fmt(mean - r["paper"], r.get("pct", True))
        verdict = {True: "holds", False: "MISSES", None: "-"}[r.get("holds")]
        out.append([r["id"], r["quantity"], _fmt(r.get("paper"), r.get("pct", True)),
                    _fmt(ours, r.get("pct", True)), diff, r.get("check", ""), verdict])
    return out


def _md_table(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _html_table(cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td class='{'bad' if c == 'MISSES' else ''}'>{html.escape(c)}</td>"
                                   for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_figures(figures: dict[str, Callable[[Any], None]], out_dir: Path) -> dict[str, bytes]:
    """Draw each figure with matplotlib (Agg) and save it as PNG; {} when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    pngs = {}
    for name, draw in figures.items():
        fig = plt.figure(figsize=(6.4, 4.2))
        draw(fig)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        pngs[name] = buf.getvalue()
        atomic_write_bytes(out_dir / f"{name}.png", pngs[name])
    return pngs


def write_report(run_dir: Path, title: str, intro: str, rows: list[dict[str, Any]],
                 sections: list[tuple[str, str]], figures: dict[str, Callable[[Any], None]],
                 provenance: dict[str, Any]) -> tuple[Path, Path]:
    """report.md + report.html in run_dir. sections: (heading, markdown-ish text) pairs."""
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    pngs = render_figures(figures, fig_dir)
    cells = comparison_table(rows)
    md = [f"# {title}", "", intro, "", "## Paper vs advlab", "", _md_table(cells), ""]
    for heading, text in sections:
        md += [f"## {heading}", "", text, ""]
    if pngs:
        md += ["## Figures", ""] + [f"![{n}](figures/{n}.png)" for n in pngs] + [""]
    else:
        md += ["(figures skipped: install matplotlib, `pip install 'advlab[plots]'`)", ""]
    md += ["## Provenance", "", "```json", json.dumps(provenance, indent=2, default=str), "```", ""]
    md_path = atomic_write_bytes(run_dir / "report.md", "\n".join(md).encode())
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "font-size:14px}th{background:#f3f3f3}td.bad{background:#fdd;font-weight:bold}"
             "pre{background:#f7f7f7;padding:1em;overflow:auto}img{max-width:100%}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
             "<h2>Paper vs advlab</h2>", _html_table(cells)]
    for heading, text in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><pre>{html.escape(text)}</pre>")
    for name, png in pngs.items():
        parts.append(f"<h3>{html.escape(name)}</h3><img alt='{name}' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append(f"<h2>Provenance</h2><pre>{html.escape(json.dumps(provenance, indent=2, default=str))}</pre>")
    parts.append("</body></html>")
    html_path = atomic_write_bytes(run_dir / "report.html", "".join(parts).encode())
    return md_path, html_path


def load_figures_data(run_dir: Path) -> dict[str, np.ndarray]:
    f = run_dir / "figures.npz"
    if not f.exists():
        return {}
    with np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}

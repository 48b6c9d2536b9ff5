"""Reports from run directories: report.md and a self-contained report.html (plots embedded as PNG),
with the "paper vs advlab" table. Everything is read from results.json and figures.npz, so
`advlab report RUN_DIR` regenerates a report without rerunning anything."""
from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_bytes


@dataclass(frozen=True)
class Figure:
    """A report figure: its title (drawn on it and above it), a caption saying what it shows, and
    the function that draws it on a matplotlib figure."""

    title: str
    caption: str
    draw: Callable[[Any], None]


def _fmt(v: Any, pct: bool) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict) and "mean" in v:
        s = f"{_fmt(v['mean'], pct)}"
        return s + (f" ± {_fmt(v['std'], pct)}" if v.get("n", 1) > 1 else "")
    if isinstance(v, (int, float)):
        return f"{100 * v:.2f}%" if pct else f"{v:.4g}"
    return str(v)


def _difference(d: float, pct: bool) -> str:
    """A difference of two percentages is in percentage points, not percent."""
    return f"{100 * d:+.2f} pt" if pct else f"{d:+.4g}"


def comparison_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of {id, quantity, paper, ours, pct, check, holds[, source]} -> table cells; `source` (which
    budget, device and time produced the row) becomes a last column when any row has one."""
    sourced = any(r.get("source") for r in rows)
    header = ["#", "quantity", "paper", "advlab", "difference", "check", "verdict"]
    out = [header + (["produced by"] if sourced else [])]
    for r in rows:
        ours = r.get("ours")
        mean = ours["mean"] if isinstance(ours, dict) else ours
        numeric = isinstance(mean, (int, float)) and isinstance(r.get("paper"), (int, float))
        diff = _difference(mean - r["paper"], r.get("pct", True)) if numeric else "-"
        verdict = {True: "holds", False: "MISSES", None: "-"}[r.get("holds")]
        out.append([r["id"], r["quantity"], _fmt(r.get("paper"), r.get("pct", True)),
                    _fmt(ours, r.get("pct", True)), diff, r.get("check", ""), verdict]
                   + ([r.get("source", "")] if sourced else []))
    return out


def miss_explanations(rows: list[dict[str, Any]]) -> list[str]:
    """One line per missed check: the row and why it misses (its `why`, or a plain 'not explained')."""
    return [f"{r['id']} {r['quantity']}: {r.get('why') or 'no explanation recorded'}"
            for r in rows if r.get("holds") is False]


def row_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per row that holds (or has no check) but carries a `why`: a caveat the reader needs as much
    as a miss's reason (a narrow margin, run-to-run spread, a shortened recipe)."""
    return [f"{r['id']} {r['quantity']}: {r['why']}" for r in rows if r.get("holds") is not False and r.get("why")]


def verdict_summary(rows: list[dict[str, Any]]) -> str:
    """One line: how many checked rows hold, and which miss."""
    checked = [r for r in rows if r.get("holds") is not None]
    missed = [str(r["id"]) for r in checked if not r["holds"]]
    return (f"{len(checked) - len(missed)} of {len(checked)} checks hold"
            + (f"; misses: {', '.join(missed)}" if missed else "; none misses"))


def _md_table(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _html_table(cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td class='{'bad' if c == 'MISSES' else ''}'>{html.escape(c)}</td>"
                                   for c in row) + "</tr>" for row in cells[1:])
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _as_figure(name: str, fig: Figure | Callable[[Any], None]) -> Figure:
    if isinstance(fig, Figure):
        return fig
    title = name.replace("_", " ").capitalize()
    return Figure(title, title + ".", fig)


def render_figures(figures: dict[str, Figure], out_dir: Path) -> dict[str, bytes]:
    """Draw each figure with matplotlib (Agg), its title on top, and save it as PNG; {} when
    matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    pngs = {}
    for name, spec in figures.items():
        fig = plt.figure(figsize=(6.4, 4.4))
        spec.draw(fig)
        fig.suptitle(spec.title, fontsize=11)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        pngs[name] = buf.getvalue()
        atomic_write_bytes(out_dir / f"{name}.png", pngs[name])
    return pngs


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
          "font-size:14px;vertical-align:top}th{background:#f3f3f3}td.bad{background:#fdd;font-weight:bold}"
          ".scroll{overflow-x:auto;max-width:100%}p.note{color:#444;font-size:14px;margin:.2em 0 1em}"
          "pre{background:#f7f7f7;padding:1em;white-space:pre;overflow-x:auto;font-size:13px}"
          "figure{margin:1.5em 0}figure img{max-width:100%;height:auto}figcaption{font-size:14px;color:#444}")


def write_report(run_dir: Path, title: str, intro: str, rows: list[dict[str, Any]] | None,
                 sections: list[tuple[str, Any]], figures: dict[str, Figure | Callable[[Any], None]],
                 provenance: dict[str, Any], *, setting: str = "",
                 settings_table: list[list[str]] | None = None) -> tuple[Path, Path]:
    """report.md + report.html in run_dir.

    rows: the "paper vs advlab" rows (None for a run without a paper); setting: the threat, points
    and seeds behind that table, printed beside it. sections: (heading, text) or (heading,
    {"table": cells, "note": setting of that table}). figures: name -> Figure (title and caption)."""
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    specs = {n: _as_figure(n, f) for n, f in figures.items()}
    pngs = render_figures(specs, fig_dir)
    md = [f"# {title}", "", intro, ""]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
             f"content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]
    if settings_table:
        md += ["## Settings", "", _md_table(settings_table), ""]
        parts += ["<h2>Settings</h2>", _html_table(settings_table)]
    if rows is not None:
        cells = comparison_table(rows)
        summary = verdict_summary(rows)
        md += ["## Paper vs advlab", "", setting, "", _md_table(cells), "", f"**{summary}.**", ""]
        parts += ["<h2>Paper vs advlab</h2>", f"<p class='note'>{html.escape(setting)}</p>", _html_table(cells),
                  f"<p><b>{html.escape(summary)}.</b></p>"]
        for heading, items in (("Why the misses miss", miss_explanations(rows)),
                               ("Notes on the other rows", row_notes(rows))):
            if items:
                md += [f"### {heading}", ""] + [f"- {item}" for item in items] + [""]
                parts += [f"<h3>{heading}</h3><ul>"] + [f"<li>{html.escape(item)}</li>" for item in items] + ["</ul>"]
    for heading, body in sections:
        md += [f"## {heading}", ""]
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, dict):
            md += [body.get("note", ""), "", _md_table(body["table"]), ""]
            parts += [f"<p class='note'>{html.escape(body.get('note', ''))}</p>", _html_table(body["table"])]
        else:
            md += [body, ""]
            # prose wraps; multi-line text is a fixed-width table and keeps its columns
            parts.append(f"<pre>{html.escape(body)}</pre>" if "\n" in body else f"<p>{html.escape(body)}</p>")
    if pngs:
        md += ["## Figures", ""]
        for k, name in enumerate(pngs, 1):
            md += [f"![{specs[name].title}](figures/{name}.png)", "", f"*Figure {k}. {specs[name].caption}*", ""]
            parts.append(f"<figure><img alt='{html.escape(specs[name].title)}' src='data:image/png;base64,"
                         f"{base64.b64encode(pngs[name]).decode()}'><figcaption>Figure {k}. "
                         f"{html.escape(specs[name].caption)}</figcaption></figure>")
    elif specs:
        md += ["(figures skipped: install matplotlib, `pip install 'advlab[plots]'`)", ""]
    md += ["## Provenance", "", "```json", json.dumps(provenance, indent=2, default=str), "```", ""]
    parts.append(f"<h2>Provenance</h2><pre>{html.escape(json.dumps(provenance, indent=2, default=str))}</pre>")
    parts.append("</body></html>")
    md_path = atomic_write_bytes(run_dir / "report.md", "\n".join(md).encode())
    html_path = atomic_write_bytes(run_dir / "report.html", "".join(parts).encode())
    return md_path, html_path


def load_figures_data(run_dir: Path) -> dict[str, np.ndarray]:
    f = run_dir / "figures.npz"
    if not f.exists():
        return {}
    with np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}

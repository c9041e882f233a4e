"""Render a `ReportTable` as Markdown, LaTeX (booktabs), CSV (long format) and a self-contained HTML page.

Layout: per dataset, one column pair per metric — `ours` (mean over samples with its 95% bootstrap
interval, best per column in bold) and `paper` (the published value, † when third-party or unverified).
An empty cell is "—": not run, not implemented yet, or not published / not found. Numbers are never
invented to fill a cell.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness.report import html as H
from harness.report.spec import MetricColumn, Published
from harness.report.table import Cell, ReportTable
from harness.stats import CellStats

DAGGER_NOTE = "† third-party or unverified value; see the notes."
LEGEND = ("`ours`: mean over samples [95% percentile-bootstrap interval]; **bold**: best `ours` in the column; "
          "`paper`: published value; —: not run / not published / not found. " + DAGGER_NOTE)


def _num(value: float, decimals: int) -> str:
    return format(value, f".{decimals}f")


def _ours_text(s: CellStats | None, decimals: int, with_ci: bool = True) -> str:
    if s is None or not math.isfinite(s.mean):
        return "—"
    text = _num(s.mean, decimals)
    if with_ci and math.isfinite(s.ci_low):
        text += f" [{_num(s.ci_low, decimals)}, {_num(s.ci_high, decimals)}]"
    return text


def _paper_text(p: Published | None, dagger: str = "†") -> str:
    """A published value as the source printed it (`:g`, so 6.4 stays 6.4 rather than 6.40)."""
    if p is None or p.value is None:
        return "—"
    return format(p.value, "g") + (dagger if p.unverified else "")


def _notes(table: ReportTable) -> list[str]:
    spec = table.spec
    notes = list(table.notes) + list(spec.notes)
    for row in spec.rows:
        parts = [p for p in (row.source and f"source: {row.source}", row.notes) if p]
        if parts:
            notes.append(f"{row.label}: " + "; ".join(parts))
        for dataset, values in row.published.items():
            for metric_id, p in values.items():
                if p.note:
                    notes.append(f"{row.label}, {dataset}, {metric_id}: {p.note}")
    return notes


def _counts_text(table: ReportTable, row: str, dataset: str) -> tuple[str, str]:
    if table.variants[(row, dataset)] is None:
        return "—", "—"
    n, failed = table.counts[(row, dataset)]
    return str(n), str(failed)


# ------------------------------------------------------------------------------------------ Markdown


def to_markdown(table: ReportTable) -> str:
    spec = table.spec
    lines = [f"# {spec.title}", ""]
    if spec.description:
        lines += [spec.description, ""]
    for note in table.notes:
        if note.startswith("SMOKE RUN"):
            lines += [f"> **{note}**", ""]
    for dataset in spec.datasets:
        header = ["Method"] + [f"{m.display_label} {kind}" for m in spec.metrics for kind in ("ours", "paper")] + ["n", "failed"]
        lines += [f"## {dataset}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for row in spec.rows:
            cells = [row.label]
            for m in spec.metrics:
                c = table.cell(row.label, dataset, m.id)
                ours = _ours_text(c.ours, m.decimals)
                cells += [f"**{ours}**" if (row.label, dataset, m.id) in table.best else ours,
                          _paper_text(c.published)]
            cells += list(_counts_text(table, row.label, dataset))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [LEGEND, ""]
    if table.comparisons:
        lines += ["## Paired comparisons", "", "Mean difference a − b over the samples both scored, "
                  "with its paired 95% bootstrap interval (display scale).", "",
                  "| a − b | dataset | metric | difference | n |", "|---|---|---|---|---|"]
        for c in table.comparisons:
            lines.append(f"| {c['a']} − {c['b']} | {c['dataset']} | {c['label']} | {_diff_text(c)} | {c['n']} |")
        lines.append("")
    notes = _notes(table)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _diff_text(c: dict[str, Any], decimals: int = 3) -> str:
    if not math.isfinite(c["diff"]):
        return "—"
    text = _num(c["diff"], decimals)
    if math.isfinite(c["ci_low"]):
        text += f" [{_num(c['ci_low'], decimals)}, {_num(c['ci_high'], decimals)}]"
    return text


# --------------------------------------------------------------------------------------------- LaTeX

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "−": "--", "—": "--", "×": r"$\times$", "†": r"$^\dagger$", "≈": r"$\approx$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _tex_metric(m: MetricColumn) -> str:
    scale = "" if m.scale == 1 else rf"$\times${m.scale:g}"
    arrow = r"$\downarrow$" if m.better == "lower" else r"$\uparrow$"
    return f"{tex_escape(m.label)}{scale}{arrow}"


def to_latex(table: ReportTable) -> str:
    spec = table.spec
    k = 2 * len(spec.metrics)
    cols = "l" + " ".join("c" * k for _ in spec.datasets)
    out = [f"% Generated by `python -m harness.report {spec.path.name}`; needs \\usepackage{{booktabs}}.",
           r"% ours = mean over samples (95% bootstrap intervals are in the CSV); bold = best ours per column;",
           r"% paper = published value, $^\dagger$ = third-party or unverified, -- = not run / not found.",
           r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{tex_escape(spec.title)}}}",
           rf"\begin{{tabular}}{{{cols}}}", r"\toprule"]
    out.append(" & " + " & ".join(rf"\multicolumn{{{k}}}{{c}}{{{tex_escape(d)}}}" for d in spec.datasets) + r" \\")
    out.append("".join(rf"\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}" for i in range(len(spec.datasets))))
    out.append(" & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{_tex_metric(m)}}}" for _ in spec.datasets for m in spec.metrics) + r" \\")
    out.append("Method & " + " & ".join("ours & paper" for _ in spec.datasets for _ in spec.metrics) + r" \\")
    out.append(r"\midrule")
    for row in spec.rows:
        cells = [tex_escape(row.label)]
        for dataset in spec.datasets:
            for m in spec.metrics:
                c = table.cell(row.label, dataset, m.id)
                ours = tex_escape(_ours_text(c.ours, m.decimals, with_ci=False))
                cells += [rf"\textbf{{{ours}}}" if (row.label, dataset, m.id) in table.best else ours,
                          tex_escape(_paper_text(c.published))]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- CSV


def to_frame(table: ReportTable) -> pd.DataFrame:
    """Long format: one line per row × dataset × metric, raw numbers on the display scale."""
    records = []
    nan = float("nan")
    for row in table.spec.rows:
        for dataset in table.spec.datasets:
            variant = table.variants[(row.label, dataset)]
            for m in table.spec.metrics:
                c: Cell = table.cell(row.label, dataset, m.id)
                s, p = c.ours, c.published
                records.append({
                    "row": row.label, "method": row.method, "method_key": variant.key if variant else None,
                    "model": variant.model if variant else None, "dataset": dataset, "metric": m.id, "label": m.label,
                    "scale": m.scale, "better": m.better,
                    "ours_mean": s.mean if s else nan, "ours_ci_low": s.ci_low if s else nan,
                    "ours_ci_high": s.ci_high if s else nan, "n": s.n if s else 0,
                    "failed": table.counts[(row.label, dataset)][1],
                    "best": (row.label, dataset, m.id) in table.best,
                    "published": p.value if p and p.value is not None else nan,
                    "published_unverified": bool(p and p.unverified), "published_note": p.note if p else None,
                    "source": row.source})
    return pd.DataFrame.from_records(records)


def to_csv(table: ReportTable) -> str:
    buffer = io.StringIO()
    to_frame(table).to_csv(buffer, index=False)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- HTML


def html_section(table: ReportTable) -> str:
    """The table as HTML (for the standalone page and for embedding in a run page)."""
    spec = table.spec
    parts = [f"<h2>{H.esc(spec.title)}</h2>"]
    if spec.description:
        parts.append(f'<p class="meta">{H.esc(spec.description)}</p>')
    for note in table.notes:
        if note.startswith("SMOKE RUN"):
            parts.append(f'<p class="smoke">{H.esc(note)}</p>')
    for dataset in spec.datasets:
        header = ["Method"] + [f"{H.esc(m.display_label)}<br>{kind}" for m in spec.metrics for kind in ("ours", "paper")] + ["n", "failed"]
        rows = []
        for row in spec.rows:
            cells = [H.esc(row.label)]
            for m in spec.metrics:
                c = table.cell(row.label, dataset, m.id)
                best = ' class="best"' if (row.label, dataset, m.id) in table.best else ""
                if c.ours is None or not math.isfinite(c.ours.mean):
                    cells.append(f"<td>{H.MISSING}</td>")
                else:
                    ci = (f'<span class="ci">[{_num(c.ours.ci_low, m.decimals)}, {_num(c.ours.ci_high, m.decimals)}]</span>'
                          if math.isfinite(c.ours.ci_low) else "")
                    cells.append(f"<td{best}>{_num(c.ours.mean, m.decimals)}{ci}</td>")
                paper = _paper_text(c.published)
                cells.append(f'<td class="paper">{H.esc(paper) if paper != "—" else H.MISSING}</td>')
            cells += [H.MISSING if v == "—" else H.esc(v) for v in _counts_text(table, row.label, dataset)]
            rows.append(cells)
        parts += [f"<h3>{H.esc(dataset)}</h3>", H.table(header, rows)]
    parts.append(f'<p class="meta">{H.esc(LEGEND.replace("`", "").replace("**", ""))}</p>')
    if table.comparisons:
        rows = [[H.esc(f"{c['a']} − {c['b']}"), H.esc(c["dataset"]), H.esc(c["label"]), H.esc(_diff_text(c)), str(c["n"])]
                for c in table.comparisons]
        parts += ["<h3>Paired comparisons (a − b, paired bootstrap 95% interval)</h3>",
                  H.table(["a − b", "dataset", "metric", "difference", "n"], rows, label_columns=3)]
    notes = _notes(table)
    if notes:
        parts.append('<h3>Notes</h3><ul class="notes">' + "".join(f"<li>{H.esc(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


def to_html(table: ReportTable) -> str:
    return H.page(table.spec.title, html_section(table))


FORMATS: dict[str, tuple[str, Callable[[ReportTable], str]]] = {
    "md": (".md", to_markdown), "tex": (".tex", to_latex), "csv": (".csv", to_csv), "html": (".html", to_html)}


def write_all(table: ReportTable, out_dir: Path, formats: tuple[str, ...] = tuple(FORMATS)) -> dict[str, Path]:
    from harness.store import atomic_write_bytes

    written = {}
    for fmt in formats:
        suffix, render = FORMATS[fmt]
        path = Path(out_dir) / f"{table.spec.stem}{suffix}"
        atomic_write_bytes(path, render(table).encode())
        written[fmt] = path
    return written

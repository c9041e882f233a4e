"""Matplotlib figures for reports: ablation curves and time-versus-quality scatters.

Figures are built on `matplotlib.figure.Figure` directly (Agg for PNG, the SVG backend for SVG), never
through pyplot, so plotting sets no global backend and works headless in any process.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.store import atomic_write_bytes

COST_METRICS = ("time", "time_total_s", "time_edit_s", "time_lora_s", "peak_mem")  # not quality axes


def metric_display(metric_id: str) -> tuple[str, float]:
    """(axis label, scale) of a metric id: its table scale (×100 for the @regiondrag metrics) and direction."""
    from harness.registry import METRICS

    if metric_id not in METRICS:
        return metric_id, 1.0
    cls = METRICS.get(metric_id)
    scale = float(getattr(cls, "table_scale", 1.0))
    arrow = "↑" if cls.higher_is_better else "↓"
    return f"{metric_id}{'' if scale == 1 else f' ×{scale:g}'} {arrow}", scale


def save_figure(fig: Figure, stem: Path) -> bytes:
    """Write `<stem>.png` and `<stem>.svg`; return the PNG bytes (for embedding)."""
    outputs = {}
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=110, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        outputs[fmt] = buffer.getvalue()
        atomic_write_bytes(stem.with_suffix(f".{fmt}"), outputs[fmt])
    return outputs["png"]


def ablation_figure(table: pd.DataFrame, metric_ids: Sequence[str], x_label: str, title: str,
                    x_log: bool = False) -> Figure:
    """One panel per metric: mean ± 95% interval against the swept value, one line per method.

    `table` is long: method, label, x (NaN for reference points that are not on the swept axis, e.g.
    "copy-paste at the first step only"), metric, mean, ci_low, ci_high (raw values). Reference points are
    drawn as dashed horizontal lines, so they compare against the whole curve.
    """
    fig = Figure(figsize=(5.2 * max(1, len(metric_ids)), 3.9), layout="constrained")
    axes = fig.subplots(1, max(1, len(metric_ids)), squeeze=False)[0]
    methods = list(dict.fromkeys(table["method"]))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, metric_id in zip(axes, metric_ids):
        label, scale = metric_display(metric_id)
        rows = table[table["metric"] == metric_id]
        for method in methods:
            mine = rows[rows["method"] == method]
            curve = mine[mine["x"].notna()].sort_values("x")
            if len(curve):
                y = curve["mean"].to_numpy() * scale
                low = np.nan_to_num(y - curve["ci_low"].to_numpy() * scale)
                high = np.nan_to_num(curve["ci_high"].to_numpy() * scale - y)
                ax.errorbar(curve["x"], y, yerr=[np.maximum(low, 0), np.maximum(high, 0)], marker="o", capsize=3,
                            color=colours[method], label=method if len(methods) > 1 else None)
            for i, ref in enumerate(mine[mine["x"].isna()].itertuples()):
                if math.isfinite(ref.mean):
                    ax.axhline(ref.mean * scale, linestyle="--", color=colours[method], alpha=0.7 - 0.15 * i,
                               label=f"{ref.label}" + (f" ({method})" if len(methods) > 1 else ""))
        if x_log:
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def time_quality_figure(stats: pd.DataFrame, time_metric: str, quality_metrics: Sequence[str]) -> Figure:
    """One panel per quality metric: each dataset × method at (mean time, mean quality) with 95% intervals.

    `stats` is `harness.stats.score_stats` output with a display `method` column.
    """
    fig = Figure(figsize=(5.2 * max(1, len(quality_metrics)), 4.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(quality_metrics)), squeeze=False)[0]
    time_rows = stats[stats["metric"] == time_metric].set_index(["dataset", "method"])
    markers = {d: m for d, m in zip(dict.fromkeys(stats["dataset"]), "osD^vP*X")}
    for ax, metric_id in zip(axes, quality_metrics):
        label, scale = metric_display(metric_id)
        rows = stats[stats["metric"] == metric_id]
        for i, row in enumerate(rows.itertuples()):
            if (row.dataset, row.method) not in time_rows.index or not math.isfinite(row.mean):
                continue
            t = time_rows.loc[(row.dataset, row.method)]
            y = row.mean * scale
            yerr = [[max(0.0, y - row.ci_low * scale)], [max(0.0, row.ci_high * scale - y)]] if math.isfinite(row.ci_low) else None
            xerr = ([[max(0.0, t["mean"] - t["ci_low"])], [max(0.0, t["ci_high"] - t["mean"])]]
                    if math.isfinite(t["ci_low"]) else None)
            name = row.method if len(markers) == 1 else f"{row.method} ({row.dataset})"
            ax.errorbar([t["mean"]], [y], xerr=xerr, yerr=yerr, marker=markers.get(row.dataset, "o"), color=f"C{i % 10}",
                        capsize=3, linestyle="none", label=name)
        if (time_rows["mean"] > 0).all() and len(time_rows) and time_rows["mean"].max() / max(time_rows["mean"].min(), 1e-12) > 100:
            ax.set_xscale("log")
        ax.set_xlabel(f"{time_metric} (s per edit)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a legend, not annotations: sweeps put many points close together
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("Time versus quality (mean with 95% bootstrap intervals)")
    return fig

"""The run's leaderboard files: `scores.csv`, `leaderboard.csv`/`.md` (one row per dataset × method variant)
and `leaderboard_ci.csv` (bootstrap intervals), and the table helpers other pages reuse."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.metrics.base import reducer
from harness.registry import METRICS
from harness.store import atomic_write_bytes


def leaderboard(scores: pd.DataFrame, metric_ids: list[str]) -> pd.DataFrame:
    """One row per dataset × method variant: the mean of each metric (weighted where the metric pools),
    `n` samples scored, `failed` samples and `nan` samples with a metric value undefined by its protocol."""
    groups = []
    keys = ["dataset", "method", "method_key"]
    for (dataset, method, key), df in scores.groupby(keys, sort=True):
        row: dict[str, Any] = {"dataset": dataset, "method": method, "method_key": key}
        ok = df[df["status"] != "failed"]
        for metric_id in metric_ids:
            values = ok[(ok["metric"] == metric_id) & ok["value"].notna()]
            if values.empty:
                row[metric_id] = np.nan
            else:
                row[metric_id] = float(reducer(metric_id)(values["value"].to_numpy(float), values["weight"].to_numpy(float)))
        row["n"] = int(ok["sample_id"].nunique())
        row["failed"] = int(df.loc[df["status"] == "failed", "sample_id"].nunique())
        row["nan"] = int(df.loc[df["status"] == "undefined", "sample_id"].nunique())
        groups.append(row)
    board = pd.DataFrame(groups, columns=keys + list(metric_ids) + ["n", "failed", "nan"])
    board["method"] = variant_labels(board)
    return board.drop(columns=["method_key"])


def variant_labels(df: pd.DataFrame) -> pd.Series:
    """The `method` column, with the method key appended only where one dataset holds several variants
    of the same method (so a plain run keeps plain names and a sweep stays unambiguous)."""
    if df.empty:
        return df["method"]
    variants = df.groupby(["dataset", "method"])["method_key"].transform("nunique")
    return df["method"].where(variants == 1, df["method"] + " [" + df["method_key"] + "]")


def interval_table(stats: pd.DataFrame, metric_ids: list[str], floatfmt: str = ".4f") -> pd.DataFrame:
    """Wide view of `harness.stats.score_stats`: one row per dataset × method, `mean [low, high]` per metric."""
    def cell(row: Any) -> str:
        if np.isnan(row["mean"]):
            return "nan"
        if np.isnan(row["ci_low"]):
            return format(row["mean"], floatfmt)
        return f"{row['mean']:{floatfmt}} [{row['ci_low']:{floatfmt}}, {row['ci_high']:{floatfmt}}]"

    labelled = stats.assign(method=variant_labels(stats), cell=stats.apply(cell, axis=1) if len(stats) else [])
    wide = labelled.pivot_table(index=["dataset", "method"], columns="metric", values="cell", aggfunc="first")
    return wide.reindex(columns=[m for m in metric_ids if m in wide.columns]).reset_index().rename_axis(columns=None)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "nan" if np.isnan(v) else format(float(v), floatfmt)
        return str(v)

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def metric_header(metric_id: str) -> tuple[str, float]:
    """A metric's column header in a displayed table (`id ×scale ↓`, from its declared `table_scale` and
    `higher_is_better`) and the scale its raw values are multiplied by; unknown ids are shown raw."""
    if metric_id not in METRICS:
        return metric_id, 1.0
    cls = METRICS.get(metric_id)
    scale = float(cls.table_scale)
    return f"{metric_id}{'' if scale == 1 else f' ×{scale:g}'} {'↑' if cls.higher_is_better else '↓'}", scale


def display_board(board: pd.DataFrame, metric_ids: list[str]) -> pd.DataFrame:
    """The leaderboard as displayed: each metric on its table scale, its header saying the scale and which
    direction is better. `leaderboard.csv` keeps the raw values."""
    shown = board.copy()
    names = {}
    for metric_id in metric_ids:
        names[metric_id], scale = metric_header(metric_id)
        if scale != 1:
            shown[metric_id] = shown[metric_id] * scale
    return shown.rename(columns=names)


@dataclass
class Leaderboard:
    """What the report stage wrote: the leaderboard (raw values), the bootstrap statistics behind its
    intervals (computed once per run, reused by the HTML page), the smoke-run reasons and `leaderboard.md`."""

    board: pd.DataFrame
    stats: pd.DataFrame
    metric_ids: list[str]
    reasons: list[str]
    path: Path


def report_stage(out_dir: Path, scores: pd.DataFrame, metric_ids: list[str], reasons: list[str], *,
                 resamples: int = 2000, ci_seed: int = 0) -> Leaderboard:
    """Write scores.csv, leaderboard.csv (raw means, n, failed), leaderboard.md (display scale, ↑/↓) and
    leaderboard_ci.csv (bootstrap intervals, also appended to leaderboard.md) and results.json
    (harness/report/results.py)."""
    from harness.report.results import write_results
    from harness.stats import score_stats

    atomic_write_bytes(out_dir / "scores.csv", scores.drop(columns=["method_key"]).to_csv(index=False).encode())
    board = leaderboard(scores, metric_ids)
    atomic_write_bytes(out_dir / "leaderboard.csv", board.to_csv(index=False).encode())
    stats = score_stats(scores, metric_ids, resamples=resamples, seed=ci_seed)
    ci_csv = stats.assign(method=variant_labels(stats)).drop(columns=["method_key"])
    atomic_write_bytes(out_dir / "leaderboard_ci.csv", ci_csv.to_csv(index=False).encode())
    lines = ["# Leaderboard", ""]
    if reasons:
        lines += ["> **SMOKE RUN — these numbers mean nothing.** Random-weight networks were used:", ">"]
        lines += [f"> - {r}" for r in reasons] + [""]
    lines += ["Each metric on its table scale (×s in its header; `leaderboard.csv` holds the raw values), ↑/↓ = "
              "higher/lower is better; `n` = samples scored, `failed` = samples whose edit failed, "
              "`nan` = samples with a metric undefined for them (excluded from that metric's mean).", "",
              markdown_table(display_board(board, metric_ids)), ""]
    if len(stats):
        lines += ["## 95% bootstrap intervals", "",
                  f"`mean [low, high]`: raw values, percentile bootstrap over samples ({resamples} resamples, seeded "
                  "per cell; harness/stats.py). Also in `leaderboard_ci.csv`.", "",
                  markdown_table(interval_table(stats, metric_ids)), ""]
    path = out_dir / "leaderboard.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    write_results(out_dir, resamples=resamples, seed=ci_seed)  # results.json, for leaderboards across runs
    return Leaderboard(board, stats, list(metric_ids), list(reasons), path)

"""Ablation sweeps inside one run: one process, one store, one table and one plot.

An experiment config (`conf/experiment/*.yaml`) adds an `ablation` node:

```yaml
ablation:
  name: point_percentage
  param: dataset.point_fraction          # a dotted config key
  values: [1.0, 0.5, 0.25, 0.1, 0.05, 0.01]
  references: {first step only: {method.regiondrag.copy_paste_gate: first_step}}  # optional, off-axis points
  x_label: kept fraction of dense point pairs
  x_log: true
  plot_metrics: [md_dift@regiondrag, lpips_alex@regiondrag]
```

Each value (and each reference) is the run's config with that override applied. The override lands
either in a method's config, which changes the method key, or in a sample-changing dataset option
(`point_fraction`), which changes the dataset key (`Dataset.key`); so every point gets its own store
folder, outputs are reused across reruns and overlapping sweeps, and points never overwrite each other.
Everything is planned before any work, so a typo in one point fails the whole sweep up front.

Why not Hydra multirun plus a merge step: every multirun job would write the run-level files (run.json,
scores.csv, leaderboard) into the same out_dir, and the plot needs all points anyway; in one process the
models also load once. Multirun stays the tool for sharding a large sweep over GPUs (README).

Outputs under `<out_dir>/ablation/<name>/`: `table.csv` (long, raw values with intervals), `table.md`
(display scale), `plot.png` and `plot.svg`; plus the usual scores.csv / leaderboard / report.html.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from harness import determinism
from harness.planning import ConfigError, MethodPlan, plan_methods, plan_metrics
from harness.report.leaderboard import markdown_table
from harness.run import Run
from harness.run_record import collect_timesteps, score_settings, smoke_reasons
from harness.stages import edit_and_score
from harness.metrics.base import reducer
from harness.stats import RESAMPLES, mean_ci
from harness.store import atomic_write_bytes


@dataclass(frozen=True)
class AblationPoint:
    label: str
    x: float | None  # None: a reference point off the swept axis
    overrides: dict[str, Any]


@dataclass
class PointRun:
    point: AblationPoint
    cfg: dict[str, Any]
    dataset: Any
    plans: list[MethodPlan]


def ablation_points(spec: Mapping[str, Any]) -> list[AblationPoint]:
    for field in ("name", "param", "values"):
        if not spec.get(field) and spec.get(field) != 0:
            raise ConfigError(f"ablation: missing field {field!r} (see harness/ablation.py)")
    param = str(spec["param"])
    short = param.rsplit(".", 1)[-1]
    points = []
    for value in spec["values"]:
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"ablation.values: {value!r} is not a number (param {param})") from None
        points.append(AblationPoint(f"{short}={value:g}", x, {param: value}))
    for label, overrides in (spec.get("references") or {}).items():
        if not isinstance(overrides, Mapping) or not overrides:
            raise ConfigError(f"ablation.references.{label}: expected a mapping of dotted keys to values")
        points.append(AblationPoint(str(label), None, dict(overrides)))
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"ablation: duplicate point labels {labels}")
    return points


def apply_overrides(container: Mapping[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A deep copy of `container` with each dotted key set; the parent of every key must exist."""
    cfg = copy.deepcopy(dict(container))
    for dotted, value in overrides.items():
        *parents, leaf = str(dotted).split(".")
        node: Any = cfg
        for i, part in enumerate(parents):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{where}: override {dotted!r}: {'.'.join(parents[: i + 1])!r} is not in the config "
                                  "(is the method selected, e.g. method=[regiondrag]?)")
            node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: override {dotted!r}: {'.'.join(parents)!r} is not a mapping")
        node[leaf] = copy.deepcopy(value)
    return cfg


def plan_points(container: Mapping[str, Any]) -> list[PointRun]:
    from harness.data.base import open_dataset

    runs = []
    spec = container["ablation"]
    kernels = determinism.kernel_choices(container)  # process-wide, applied once (cli.run)
    for point in ablation_points(spec):
        cfg = apply_overrides(container, point.overrides, f"ablation point {point.label!r}")
        if determinism.kernel_choices(cfg) != kernels:
            raise ConfigError(f"ablation point {point.label!r}: {sorted(determinism.KERNEL_DEFAULTS)} are process-wide "
                              "kernel settings; compare them in separate runs, not as ablation points")
        dataset = open_dataset(cfg["dataset"], cfg.get("shard"))
        plans = plan_methods(cfg.get("method") or {}, cfg["model"], dataset, kernels)
        plan_metrics(list(cfg.get("metrics") or []), dataset)
        runs.append(PointRun(point, cfg, dataset, plans))
    keys = [(r.dataset.key, p.key) for r in runs for p in r.plans]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"ablation {spec['name']!r}: two points map to the same store folder; does "
                          f"{spec['param']!r} change the method config or a sample-changing dataset option?")
    return runs


def ablation_table(scores: pd.DataFrame, metric_ids: Sequence[str], *, resamples: int = RESAMPLES,
                   seed: int = 0) -> pd.DataFrame:
    """Long table: one row per point × method × metric with mean, interval, n, failed (raw values)."""
    from harness.stats import cell_seed

    rows = []
    for (label, method), df in scores.groupby(["ablation", "method"], sort=False):
        x = df["x"].iloc[0]
        failed = int(df.loc[df["status"] == "failed", "sample_id"].nunique())
        for metric_id in metric_ids:
            cell = df[(df["metric"] == metric_id) & (df["status"] == "ok")]
            s = mean_ci(cell["value"], cell["weight"], failed=failed, resamples=resamples,
                        seed=cell_seed(seed, label, method, metric_id), reduce=reducer(metric_id))
            rows.append({"label": label, "x": x, "method": method, "metric": metric_id, "mean": s.mean,
                         "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n, "failed": s.failed})
    return pd.DataFrame(rows, columns=["label", "x", "method", "metric", "mean", "ci_low", "ci_high", "n", "failed"])


def display_table(table: pd.DataFrame, metric_ids: Sequence[str]) -> pd.DataFrame:
    """Wide view on the display scale: point, method, n, failed, then `mean [low, high]` per metric."""
    from harness.report.plots import metric_display

    out = []
    for (label, method), df in table.groupby(["label", "method"], sort=False):
        row: dict[str, Any] = {"point": label, "method": method, "n": int(df["n"].max()), "failed": int(df["failed"].max())}
        for metric_id in metric_ids:
            name, scale = metric_display(metric_id)
            cell = df[df["metric"] == metric_id].iloc[0]
            if not math.isfinite(cell["mean"]):
                row[name] = "—"
            elif math.isfinite(cell["ci_low"]):
                row[name] = f"{cell['mean'] * scale:.3f} [{cell['ci_low'] * scale:.3f}, {cell['ci_high'] * scale:.3f}]"
            else:
                row[name] = f"{cell['mean'] * scale:.3f}"
        out.append(row)
    return pd.DataFrame(out)


def run_ablation(run: Run) -> dict[str, Any]:
    """Edit and score every point, then write the ablation table and plot and the run's report."""
    container, out_dir = run.config, run.out_dir
    spec = dict(container["ablation"])
    runs = plan_points(container)
    first = runs[0]
    points_json = [{"label": r.point.label, "x": r.point.x, "overrides": r.point.overrides, "dataset_key": r.dataset.key,
                    "method_keys": [p.key for p in r.plans]} for r in runs]
    ablation = {"name": spec["name"], "points": points_json}
    run.start(first.dataset, {"ablation": ablation}, plans=[plan for r in runs for plan in r.plans])
    summary: dict[str, Any] = {"out_dir": str(out_dir), "ablation": spec["name"], "edit": {}}
    frames = []
    for r in runs:
        results = edit_and_score(r.cfg, r.dataset, out_dir, r.plans, plan_metrics(run.metric_ids, r.dataset), run.stages,
                                 on_edited=run.announcer(summary["edit"], r.point.label, f"{r.dataset.key}/"))
        run.add_stage_seconds(results.seconds)
        if results.scores is not None:
            frames.append(results.scores.assign(ablation=r.point.label, x=r.point.x))
    if "report" in run.stages:
        with run.timed("report"):
            summary.update(_report(run, spec, runs, pd.concat(frames, ignore_index=True)))
    timesteps = {r.point.label: collect_timesteps(out_dir, r.dataset, r.plans) for r in runs}
    run.finish(first.dataset, {"ablation": ablation, "timesteps_used": timesteps})
    return summary


def _report(run: Run, spec: Mapping[str, Any], runs: list[PointRun], scores: pd.DataFrame) -> dict[str, Any]:
    from harness.report.plots import ablation_figure, save_figure
    from harness.report.run_page import AblationSection, gallery_columns, write_run_page

    out_dir, metric_ids, resamples, seed = run.out_dir, run.metric_ids, run.resamples, run.ci_seed
    settings: dict[str, Any] = {}
    for r in runs:
        settings.update(score_settings(r.plans, r.dataset, out_dir))
    reasons = smoke_reasons(settings, [p for r in runs for p in r.plans])
    # Leaderboard rows name their point ("regiondrag [end_t=0.3]") rather than an opaque method key.
    by_point = scores.assign(method=scores["method"] + " [" + scores["ablation"] + "]").drop(columns=["ablation", "x"])
    board = run.report(by_point, reasons)

    folder = out_dir / "ablation" / str(spec["name"])
    table = ablation_table(scores, metric_ids, resamples=resamples, seed=seed)
    atomic_write_bytes(folder / "table.csv", table.to_csv(index=False).encode())
    wide = display_table(table, metric_ids)
    title = f"Ablation: {spec['name']}"
    description = str(spec.get("description") or f"{spec['param']} swept over {list(spec['values'])}").strip()
    md = [f"# {title}", "", description, ""]
    if reasons:
        md += ["> **SMOKE RUN — these numbers mean nothing.** " + "; ".join(reasons), ""]
    md += ["Mean over samples [95% percentile-bootstrap interval], on the display scale.", "", markdown_table(wide), ""]
    atomic_write_bytes(folder / "table.md", "\n".join(md).encode())
    plot_metrics = [m for m in (spec.get("plot_metrics") or metric_ids) if m in metric_ids]
    if not plot_metrics:
        raise ConfigError(f"ablation {spec['name']!r}: none of plot_metrics {list(spec.get('plot_metrics') or [])} "
                          f"is computed (metrics={metric_ids})")
    fig = ablation_figure(table, plot_metrics, str(spec.get("x_label") or spec["param"]), title, bool(spec.get("x_log", False)))
    png = save_figure(fig, folder / "plot")
    print(f"ablation: {folder / 'table.md'}, {folder / 'plot.png'}")

    summary: dict[str, Any] = {"leaderboard": board.board, "report": str(board.path), "ablation_table": table,
                               "ablation_dir": str(folder)}
    if run.html:
        columns = [(r.point.label if len(r.plans) == 1 else f"{p.name} {r.point.label}", r.dataset.key, p.key)
                   for r in runs for p in r.plans]
        gallery = gallery_columns(runs[0].dataset, out_dir, columns, run.gallery)
        section = AblationSection(title, description, png, wide)
        summary["html"] = str(write_run_page(out_dir, board, title=f"editlab ablation: {spec['name']}", gallery=gallery,
                                             ablations=[section]))
    return summary

"""The three stages: edit → score → report, over one store.

- **edit** runs each configured method on each sample and writes PNG + record; samples whose record is
  trusted are reused, a sample that raises is recorded as failed and the run goes on (`strict` stops).
- **score** computes each configured metric per sample from the store, caching values by
  (metric id, metric version, feature settings, output hash); it never re-runs a method.
- **report** aggregates the score rows into `scores.csv`, `leaderboard.csv` and `leaderboard.md`.
"""
from __future__ import annotations

import contextlib
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.data.base import Dataset
from harness.environment import device_info, git_commit, versions
from harness.metrics.base import Metric, MetricContext
from harness.models.provider import ModelSpec
from harness.registry import METHODS, METRICS
from harness.store import MethodStore, atomic_write_bytes, atomic_write_json, stable_hash

log = logging.getLogger("harness")


class ConfigError(ValueError):
    """A configuration that cannot run (unknown names, incompatible pairings); raised before any work."""


@dataclass
class MethodPlan:
    """One method variant of a run: what to build, and where its outputs live."""

    name: str
    params: dict[str, Any]
    cls: Any
    key: str
    description: dict[str, Any]

    @property
    def label(self) -> str:
        return self.name


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def plan_methods(method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], dataset: Dataset) -> list[MethodPlan]:
    """Resolve every configured method (and check it fits the dataset) without loading any model."""
    plans = []
    spec = ModelSpec.from_config(model_cfg)
    for name, params in (method_cfg or {}).items():
        cls = METHODS.get(name)
        if dataset.family not in cls.families:
            raise ConfigError(f"method {name!r} edits {'/'.join(cls.families)} samples; dataset "
                              f"{dataset.name!r} holds {dataset.family} samples")
        method = cls.build(dict(params or {}))
        description = method.describe()
        if cls.needs_model:
            description["model"] = {"identity": spec.identity, "dtype": str(spec.resolved_dtype()).replace("torch.", "")}
        plans.append(MethodPlan(name, dict(params or {}), cls, f"{name}-{stable_hash(description, 8)}", description))
    if not plans:
        raise ConfigError("no method configured (set method=<name> or method=[a,b])")
    return plans


def plan_metrics(metric_ids: Iterable[str], dataset: Dataset) -> list[type[Metric]]:
    classes = []
    for metric_id in metric_ids:
        cls = METRICS.get(metric_id)
        if dataset.family not in cls.families:
            raise ConfigError(f"metric {metric_id!r} applies to {'/'.join(cls.families)} samples; dataset "
                              f"{dataset.name!r} holds {dataset.family} samples")
        classes.append(cls)
    return classes


# ----------------------------------------------------------------------------------------------- edit


@contextlib.contextmanager
def _device_timer(device: Any):
    """Wall clock synchronised with the device, and peak memory of the block (MiB, 0 on the CPU)."""
    import torch

    cuda = device is not None and getattr(device, "type", str(device)) == "cuda"
    out = {"seconds": 0.0, "peak_mib": 0.0}
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        yield out
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["seconds"] = time.perf_counter() - start


def _check_output(image: Any, sample: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TypeError(f"method output must be a uint8 H×W×3 array, got {type(image).__name__} "
                        f"{getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}")
    if image.shape != sample.image.shape:
        raise ValueError(f"method output is {image.shape[1]}×{image.shape[0]}, the source is "
                         f"{sample.image.shape[1]}×{sample.image.shape[0]} (methods resize back to the source size)")
    return image


def edit_stage(cfg: Mapping[str, Any], dataset: Dataset, out_dir: Path, plans: list[MethodPlan]) -> dict[str, Any]:
    """Run every method variant on every pending sample. Returns a summary per method key."""
    from harness.models import load_models

    seed, strict, force = int(cfg.get("seed", 42)), bool(cfg.get("strict", False)), bool(cfg.get("force", False))
    sample_ids = dataset.sample_ids()
    summary: dict[str, Any] = {}
    for plan in plans:
        store = MethodStore(out_dir, dataset.key, plan.key)
        store.write_description(plan.description)
        pending = sample_ids if force else [s for s in sample_ids if store.trusted_record(s) is None]
        info: dict[str, Any] = {"method": plan.name, "samples": len(sample_ids), "reused": len(sample_ids) - len(pending),
                                "edited": 0, "failed": 0}
        summary[plan.key] = info
        if not pending:
            continue
        method = plan.cls.build(plan.params)
        t0 = time.perf_counter()
        models = load_models(cfg["model"]) if plan.cls.needs_model else None
        method.setup(models)
        info["setup_s"] = time.perf_counter() - t0
        device = models.device if models is not None else None
        base_record = {"dataset": dataset.key, "method": plan.name, "method_key": plan.key, "seed": seed,
                       "method_config": plan.description.get("config"), "model": models.describe() if models else None,
                       "versions": versions()}
        for sample_id in tqdm(pending, desc=f"edit {plan.name}", unit="sample", dynamic_ncols=True):
            record = dict(base_record, sample_id=sample_id, started_at=now())
            try:
                sample = dataset.load(sample_id)
                with _device_timer(device) as timer:
                    result = method.edit(sample, seed)
                image = _check_output(result.image, sample)
                lora_s = float(result.timings.get("lora", 0.0))
                record.update(timing={"total_s": timer["seconds"], "lora_s": lora_s, "edit_s": timer["seconds"] - lora_s,
                                      **{f"method_{k}_s": float(v) for k, v in result.timings.items()}},
                              memory={"peak_mib": timer["peak_mib"]}, info=result.info, finished_at=now())
                store.save_ok(sample_id, image, record)
                info["edited"] += 1
            except Exception as exc:  # a failing sample is recorded and the sweep goes on
                record.update(error={"type": type(exc).__name__, "message": str(exc),
                                     "traceback": traceback.format_exc(limit=20)}, finished_at=now())
                store.save_failed(sample_id, record)
                info["failed"] += 1
                log.warning("%s failed on %s: %s: %s", plan.name, sample_id, type(exc).__name__, exc)
                if strict:
                    raise
    return summary


# ---------------------------------------------------------------------------------------------- score


def score_stage(cfg: Mapping[str, Any], dataset: Dataset, out_dir: Path, plans: list[MethodPlan],
                metric_classes: list[type[Metric]]) -> pd.DataFrame:
    """Per-sample metric rows for every configured method variant and every sample with an output."""
    features = dict(cfg.get("features") or {})
    context = MetricContext(features, device=cfg.get("metric_device", "auto"))
    metrics = [cls(context) for cls in metric_classes]
    feature_key = stable_hash(features)
    sample_ids = dataset.sample_ids()
    rows: list[dict[str, Any]] = []
    for plan in plans:
        store = MethodStore(out_dir, dataset.key, plan.key)
        missing = 0
        for sample_id in tqdm(sample_ids, desc=f"score {plan.name}", unit="sample", dynamic_ncols=True):
            record = store.load_record(sample_id)
            if record is None:
                missing += 1
                continue
            if record.get("status") != "ok":
                rows.append({"dataset": dataset.key, "method": plan.label, "method_key": plan.key,
                             "sample_id": sample_id, "metric": None, "value": np.nan, "weight": 0.0, "status": "failed"})
                continue
            cache = store.load_scores(sample_id)
            out_hash = record["output"]["sha256"]
            sample = edited = None
            changed = False
            for metric in metrics:
                entry = cache.get(metric.id)
                valid = (entry and entry.get("version") == metric.version and entry.get("features") == feature_key
                         and entry.get("output_sha256") == out_hash)
                if not valid:
                    if sample is None:
                        sample = dataset.load(sample_id)
                        edited = store.load_image(sample_id)
                    try:
                        mv = metric.compute(sample, edited if metric.uses_output else None, record)
                        entry = {"value": mv.value, "weight": mv.weight, "version": metric.version, "features": feature_key,
                                 "output_sha256": out_hash, "settings": metric.settings(), "info": mv.info}
                    except Exception as exc:
                        if cfg.get("strict"):
                            raise
                        log.warning("metric %s failed on %s/%s: %s", metric.id, plan.name, sample_id, exc)
                        entry = {"value": None, "error": f"{type(exc).__name__}: {exc}", "version": metric.version,
                                 "features": feature_key, "output_sha256": out_hash}
                    cache[metric.id] = entry
                    changed = True
                value = entry.get("value")
                rows.append({"dataset": dataset.key, "method": plan.label, "method_key": plan.key,
                             "sample_id": sample_id, "metric": metric.id,
                             "value": np.nan if value is None else float(value), "weight": float(entry.get("weight", 1.0)),
                             "status": "ok" if value is not None else "metric_failed"})
            if changed:
                store.save_scores(sample_id, cache)
        if missing:
            # Scoring covers every sample of the (unsharded) dataset: a gap means an edit or a shard is unfinished.
            log.warning("%s: %d of %d samples have no record yet (not edited, or a shard has not finished); "
                        "they are left out of the scores", plan.key, missing, len(sample_ids))
    columns = ["dataset", "method", "method_key", "sample_id", "metric", "value", "weight", "status"]
    return pd.DataFrame(rows, columns=columns)


def score_settings(plans: list[MethodPlan], dataset: Dataset, out_dir: Path) -> dict[str, Any]:
    """The settings stored with the scores (network identities, dtypes), one entry per metric id."""
    settings: dict[str, Any] = {}
    for plan in plans:
        store = MethodStore(out_dir, dataset.key, plan.key)
        for sample_id in dataset.sample_ids():
            for metric_id, entry in store.load_scores(sample_id).items():
                if "settings" in entry:
                    settings.setdefault(metric_id, entry["settings"])
    return settings


# --------------------------------------------------------------------------------------------- report


def leaderboard(scores: pd.DataFrame, metric_ids: list[str]) -> pd.DataFrame:
    """One row per dataset × method variant: the mean of each metric (weighted where the metric pools),
    `n` samples scored and `failed` samples."""
    groups = []
    keys = ["dataset", "method", "method_key"]
    for (dataset, method, key), df in scores.groupby(keys, sort=True):
        row: dict[str, Any] = {"dataset": dataset, "method": method, "method_key": key}
        ok = df[df["status"] != "failed"]
        for metric_id in metric_ids:
            values = ok[(ok["metric"] == metric_id) & ok["value"].notna()]
            if values.empty:
                row[metric_id] = np.nan
            elif METRICS.get(metric_id).aggregation == "weighted_mean":
                row[metric_id] = float(np.average(values["value"], weights=values["weight"]))
            else:
                row[metric_id] = float(values["value"].mean())
        row["n"] = int(ok["sample_id"].nunique())
        row["failed"] = int(df.loc[df["status"] == "failed", "sample_id"].nunique())
        groups.append(row)
    board = pd.DataFrame(groups, columns=keys + list(metric_ids) + ["n", "failed"])
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


def smoke_reasons(settings: Mapping[str, Any], plans: list[MethodPlan]) -> list[str]:
    reasons = []
    for plan in plans:
        identity = (plan.description.get("model") or {}).get("identity", "")
        if identity.startswith("random:"):
            reasons.append(f"method {plan.name} ran on a random-weight model ({identity})")
    for metric_id, s in sorted(settings.items()):
        for key in ("network", "model"):
            if "random" in str(s.get(key, "")):
                reasons.append(f"metric {metric_id} used a random-weight network ({s[key]})")
    return sorted(set(reasons))


def report_stage(out_dir: Path, scores: pd.DataFrame, metric_ids: list[str], reasons: list[str], *,
                 resamples: int = 2000, ci_seed: int = 0) -> tuple[pd.DataFrame, Path]:
    """Write scores.csv, leaderboard.csv/.md (means, n, failed) and leaderboard_ci.csv (bootstrap intervals,
    also appended to leaderboard.md)."""
    from harness.stats import score_stats

    scores.drop(columns=["method_key"]).to_csv(out_dir / "scores.csv.tmp", index=False)
    (out_dir / "scores.csv.tmp").replace(out_dir / "scores.csv")
    board = leaderboard(scores, metric_ids)
    atomic_write_bytes(out_dir / "leaderboard.csv", board.to_csv(index=False).encode())
    stats = score_stats(scores, metric_ids, resamples=resamples, seed=ci_seed)
    ci_csv = stats.assign(method=variant_labels(stats)).drop(columns=["method_key"])
    atomic_write_bytes(out_dir / "leaderboard_ci.csv", ci_csv.to_csv(index=False).encode())
    lines = ["# Leaderboard", ""]
    if reasons:
        lines += ["> **SMOKE RUN — these numbers mean nothing.** Random-weight networks were used:", ">"]
        lines += [f"> - {r}" for r in reasons] + [""]
    lines += ["Raw metric values (no table scaling); `n` = samples scored, `failed` = samples whose edit failed.", "",
              markdown_table(board), ""]
    if len(stats):
        lines += ["## 95% bootstrap intervals", "",
                  f"`mean [low, high]`: percentile bootstrap over samples ({resamples} resamples, seeded per cell; "
                  "harness/stats.py). Also in `leaderboard_ci.csv`.", "",
                  markdown_table(interval_table(stats, metric_ids)), ""]
    path = out_dir / "leaderboard.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return board, path


# ------------------------------------------------------------------------------------------------ run


def write_run_json(out_dir: Path, cfg: Mapping[str, Any], dataset: Dataset, extra: Mapping[str, Any],
                   name: str = "run.json") -> None:
    payload = {"config": cfg, "git": git_commit(), "versions": versions(), "device": device_info(),
               "seed": cfg.get("seed"), "dataset": {"name": dataset.name, "key": dataset.key, "root": dataset.loader.root,
                                                    "samples": {i: dataset.loader.fingerprint(i) for i in dataset.sample_ids()}},
               **extra}
    atomic_write_json(out_dir / name, payload)


def collect_timesteps(out_dir: Path, dataset: Dataset, plans: list[MethodPlan]) -> dict[str, Any]:
    """Scheduler timesteps the methods actually used (from the records), one entry per method variant."""
    used: dict[str, Any] = {}
    for plan in plans:
        store = MethodStore(out_dir, dataset.key, plan.key)
        for sample_id in dataset.sample_ids():
            record = store.load_record(sample_id) or {}
            steps = {k: v for k, v in (record.get("info") or {}).items() if k.endswith("timesteps")}
            if steps:
                used[plan.key] = steps
                break
    return used

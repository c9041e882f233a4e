"""Read an existing run store back into score rows and method variants, without running anything.

A report is rendered from what the store holds: each method variant folder's `method.json` (what the
variant is), each sample's record (ok or failed), its `.scores.json` cache and the variant's set-level
values (`_sets/scores.json`, e.g. FID). Which cached values are used, and how a row's status is set, follow
the score stage's own rules (harness/results.py); anything else is counted as stale and left out, never
silently mixed in. A store written without per-sample files (only `scores.csv`) can still be reported,
matched by method name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.results import (SCORE_COLUMNS, failed_row, is_fresh, majority_feature_keys, read_set_rows,
                             score_row)
from harness.store import MethodStore, iter_method_stores


@dataclass
class Variant:
    """One method variant folder of one dataset in the store."""

    dataset: str
    key: str
    method: str
    config: dict[str, Any]
    model: str | None
    description: dict[str, Any]


@dataclass
class StoreScores:
    scores: pd.DataFrame
    variants: list[Variant]
    settings: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (dataset, key) -> metric -> settings
    stale: int = 0  # cached values left out (output changed or metric version bumped)


def _records(method_dir: Path):
    for path in sorted(method_dir.rglob("*.json")):
        if path.name == "method.json" or path.name.endswith(".scores.json"):
            continue
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "sample_id" in record:
            yield path, record


def _current_version(metric_id: str) -> int | None:
    from harness.registry import METRICS

    return METRICS.get(metric_id).version if metric_id in METRICS else None


def load_store(root: str | Path) -> StoreScores:
    """Every variant and every fresh score row (per sample and per set) under `root` (an `out_dir`), all
    datasets and shards."""
    rows: list[dict[str, Any]] = []
    variants: list[Variant] = []
    settings: dict[tuple[str, str], dict[str, Any]] = {}
    stale = 0
    for store in iter_method_stores(Path(root)):
        description = store.description()
        model = (description.get("model") or {}).get("identity")
        variants.append(Variant(store.dataset, store.method_key, description.get("method", store.method_key.rsplit("-", 1)[0]),
                                dict(description.get("config") or {}), model, description))
        base = {"dataset": store.dataset, "method": variants[-1].method, "method_key": store.method_key}
        variant_rows, variant_settings, variant_stale = _variant_rows(store, base)
        rows += variant_rows
        stale += variant_stale
        if variant_settings:
            settings[(store.dataset, store.method_key)] = variant_settings
    return StoreScores(pd.DataFrame(rows, columns=SCORE_COLUMNS), variants, settings, stale)


def _variant_rows(store: MethodStore, base: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """One variant's rows, the metric settings recorded with them, and the count of stale values. The run's
    feature settings are not known here: per metric, the feature key most of the variant's entries share is
    taken as the run's (`harness.results.majority_feature_keys`) and entries computed with another are stale."""
    records = [record for _, record in _records(store.dir)]
    caches = {r["sample_id"]: store.load_scores(r["sample_id"]) for r in records if r.get("status") == "ok"}
    feature_keys = majority_feature_keys((m, e) for cache in caches.values() for m, e in cache.items())
    rows, settings, stale = [], {}, 0
    for record in records:
        sample_id = record["sample_id"]
        if record.get("status") != "ok":
            rows.append(failed_row(dict(base, sample_id=sample_id)))
            continue
        out_hash = (record.get("output") or {}).get("sha256")
        for metric_id, entry in sorted(caches[sample_id].items()):
            if not is_fresh(entry, _current_version(metric_id), feature_keys[metric_id], out_hash):
                stale += 1
                continue
            if "settings" in entry:
                settings.setdefault(metric_id, entry["settings"])
            rows.append(score_row(dict(base, sample_id=sample_id), metric_id, entry))
    sample_ids = sorted(r["sample_id"] for r in records)
    set_scores = store.load_set_scores()
    set_rows, set_stale = read_set_rows(store, base, sample_ids, {m: _current_version(m) for m in set_scores})
    for row in set_rows:
        settings.setdefault(row["metric"], set_scores[row["metric"]].get("settings", {}))
    return rows + set_rows, settings, stale + set_stale


def load_scores_csv(path: str | Path) -> StoreScores:
    """Score rows from a run's `scores.csv` (no method configs there: one variant per method name)."""
    df = pd.read_csv(path)
    missing = {"dataset", "method", "sample_id", "metric", "value", "status"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    if "weight" not in df.columns:
        df["weight"] = 1.0
    df["method_key"] = df["method"]
    variants = [Variant(d, m, m, {}, None, {}) for d, m in df[["dataset", "method"]].drop_duplicates().itertuples(index=False)]
    return StoreScores(df[SCORE_COLUMNS], variants)


def load_any(root: str | Path) -> StoreScores:
    """The store under `root` if it has one, else `root/scores.csv` (or `root` itself if it is a CSV file)."""
    root = Path(root)
    if root.is_file():
        return load_scores_csv(root)
    if (root / "store").is_dir():
        return load_store(root)
    if (root / "scores.csv").is_file():
        return load_scores_csv(root / "scores.csv")
    raise FileNotFoundError(f"{root}: neither a run store (store/) nor a scores.csv")

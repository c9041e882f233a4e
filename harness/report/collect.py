"""Read an existing run store back into score rows and method variants, without running anything.

A report is rendered from what the store holds: each method variant folder's `method.json` (what the
variant is), each sample's record (ok or failed) and its `.scores.json` cache. A cached value is used only
if it was computed on the output the record names (same SHA-256) and, for metric ids this checkout knows,
with the current metric version; anything else is counted as stale and left out, never silently mixed in.
A store written without per-sample files (only `scores.csv`) can still be reported, matched by method name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.store import iter_method_stores

SCORE_COLUMNS = ["dataset", "method", "method_key", "sample_id", "metric", "value", "weight", "status"]


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
    """Every variant and per-sample score row under `root` (an `out_dir`), all datasets and shards."""
    root = Path(root)
    rows: list[dict[str, Any]] = []
    variants: list[Variant] = []
    settings: dict[tuple[str, str], dict[str, Any]] = {}
    stale = 0
    for store in iter_method_stores(root):
        description = store.description()
        model = (description.get("model") or {}).get("identity")
        variants.append(Variant(store.dataset, store.method_key, description.get("method", store.method_key.rsplit("-", 1)[0]),
                                dict(description.get("config") or {}), model, description))
        base = {"dataset": store.dataset, "method": variants[-1].method, "method_key": store.method_key}
        for path, record in _records(store.dir):
            sample_id = record["sample_id"]
            if record.get("status") != "ok":
                rows.append(dict(base, sample_id=sample_id, metric=None, value=np.nan, weight=0.0, status="failed"))
                continue
            out_hash = (record.get("output") or {}).get("sha256")
            cache = store.load_scores(sample_id)
            for metric_id, entry in sorted(cache.items()):
                version = _current_version(metric_id)
                if entry.get("output_sha256") != out_hash or (version is not None and entry.get("version") != version):
                    stale += 1
                    continue
                if "settings" in entry:
                    settings.setdefault((store.dataset, store.method_key), {}).setdefault(metric_id, entry["settings"])
                value = entry.get("value")
                rows.append(dict(base, sample_id=sample_id, metric=metric_id,
                                 value=np.nan if value is None else float(value), weight=float(entry.get("weight", 1.0)),
                                 status="ok" if value is not None else "metric_failed"))
    return StoreScores(pd.DataFrame(rows, columns=SCORE_COLUMNS), variants, settings, stale)


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

"""Reading score values back from a run store: the one set of rules for the score stage, the concurrent
scorer (harness/concurrent_scoring.py) and the report collector (harness/report/collect.py).

Why one module: the same cached value must mean the same thing to every reader. Before, the collector
trusted a value the score stage would have recomputed (it ignored the feature settings), labelled a value
that is NaN by its protocol `ok` instead of `undefined`, and never read the set-level values, so a
standalone report had no FID column.

- **Freshness** (`is_fresh`): a cached per-sample entry is used only if it was computed by the current
  metric version, with the same feature settings (`MetricContext.key`) and on the output the record names
  (SHA-256). A reader that does not know the run's feature settings (a report over any store) passes
  `feature_key=None` and gets, per variant and metric, the entries of the most common feature key; the rest
  count as stale (`fresh_rows`).
- **Row status** (`row_status`): `metric_failed` (the metric raised), `undefined` (NaN by its protocol), `ok`.
- **Set-level rows** (`set_row`, `read_set_rows`): one row per dataset × method variant × set metric,
  `sample_id` empty, `weight` = the number of samples; fresh when its key, the hash of (metric version,
  feature key, members), matches the members the store's records name now.
- **Labels**: every row's `dataset` column is the dataset *key* (`Dataset.key`, the store folder's name),
  which equals the dataset name unless a sample-changing option (`point_fraction`) is set; set rows and
  per-sample rows of one variant therefore always group together.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Mapping

import numpy as np

from harness.store import MethodStore, stable_hash

SCORE_COLUMNS = ["dataset", "method", "method_key", "sample_id", "metric", "value", "weight", "status"]


def row_status(value: Any) -> str:
    """`metric_failed` (the metric raised), `undefined` (NaN by the protocol, e.g. PIE-Bench's "nan" for empty
    or full masks: excluded from means, counted in the leaderboard's `nan` column) or `ok`. Not "nan" itself:
    pandas would read that status back as a missing value."""
    if value is None:
        return "metric_failed"
    return "undefined" if math.isnan(float(value)) else "ok"


def is_fresh(entry: Mapping[str, Any] | None, version: int | None, feature_key: str | None, out_hash: str) -> bool:
    """Whether a cached per-sample entry holds the value the current metric would compute on this output.
    `version` None: a metric id this checkout does not know (not checked); `feature_key` None: not checked."""
    if not entry or entry.get("output_sha256") != out_hash:
        return False
    if version is not None and entry.get("version") != version:
        return False
    return feature_key is None or entry.get("features") == feature_key


def score_row(base: Mapping[str, Any], metric_id: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The score row of one cached entry; `base` holds dataset, method, method_key and sample_id."""
    value = entry.get("value")
    return dict(base, metric=metric_id, value=np.nan if value is None else float(value),
                weight=float(entry.get("weight", 1.0)), status=row_status(value))


def failed_row(base: Mapping[str, Any]) -> dict[str, Any]:
    """The row of a sample whose edit failed (no metric values)."""
    return dict(base, metric=None, value=np.nan, weight=0.0, status="failed")


def set_members(store: MethodStore, sample_ids: Iterable[str]) -> list[str]:
    """The member keys of a set value: (sample id, output hash) of every ok sample, in `sample_ids` order."""
    members = []
    for sample_id in sample_ids:
        record = store.load_record(sample_id)
        if record and record.get("status") == "ok":
            members.append(stable_hash([sample_id, record["output"]["sha256"]], 16))
    return members


def set_key(version: int, feature_key: str, members: list[str]) -> str:
    """The cache key of a set value: it changes with the metric version, the feature settings or any member."""
    return stable_hash([version, feature_key, members])


def set_row(base: Mapping[str, Any], metric_id: str, entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """One set-level row (`entry` None: the set metric failed)."""
    row = dict(base, sample_id=None, metric=metric_id)
    if entry is None:
        return dict(row, value=np.nan, weight=0.0, status="metric_failed")
    return dict(row, value=float(entry["value"]), weight=float(entry["n"]), status=row_status(entry["value"]))


def read_set_rows(store: MethodStore, base: Mapping[str, Any], sample_ids: list[str],
                  versions: Mapping[str, int | None]) -> tuple[list[dict[str, Any]], int]:
    """The fresh set-level rows of one method variant from `_sets/scores.json`, and how many were stale.
    An entry written before set entries recorded their version and feature key cannot be checked and is
    counted as stale."""
    rows, stale = [], 0
    members = None
    for metric_id, entry in sorted(store.load_set_scores().items()):
        if "features" not in entry or "version" not in entry:
            stale += 1
            continue
        version = versions.get(metric_id)
        members = set_members(store, sample_ids) if members is None else members
        if entry.get("key") != set_key(entry["version"], entry["features"], members) or (
                version is not None and entry["version"] != version):
            stale += 1
            continue
        rows.append(set_row(base, metric_id, entry))
    return rows, stale


def majority_feature_keys(entries: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, str | None]:
    """Per metric id, the feature key most entries were computed with (ties: the first seen)."""
    counts: dict[str, Counter] = {}
    for metric_id, entry in entries:
        counts.setdefault(metric_id, Counter())[entry.get("features")] += 1
    return {metric_id: c.most_common(1)[0][0] for metric_id, c in counts.items()}


def random_model_reasons(model_identities: Iterable[tuple[str, str | None]],
                         settings: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why a run is a smoke run whose numbers mean nothing: (method, model identity) pairs that ran on
    random weights, and metric settings that name a random-weight network. Empty for a real run."""
    reasons = {f"method {method} ran on a random-weight model ({identity})"
               for method, identity in model_identities if identity and identity.startswith("random:")}
    for metric_id, s in settings.items():
        for key in ("network", "model"):
            if "random" in str(s.get(key, "")):
                reasons.add(f"metric {metric_id} used a random-weight network ({s[key]})")
    return sorted(reasons)

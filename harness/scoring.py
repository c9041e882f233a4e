"""The score stage: each configured metric per sample from the store, never re-running a method.

Values are cached per sample by (metric id, metric version, feature settings, output hash), so a sample is
scored once whichever process or thread got to it first: the score stage itself, or the concurrent scorer
that scores finished samples while the edit stage is still running (harness/concurrent_scoring.py). A
set-level metric (FID) caches per-sample features the same way and adds one row per dataset × method set.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness import determinism
from harness.background import BackgroundWriter, iter_prefetched
from harness.data.base import Dataset
from harness.diffusion.numerics import NonFiniteError
from harness.metrics.base import Metric, MetricContext, SetMetric
from harness.results import SCORE_COLUMNS, failed_row, is_fresh, score_row, set_key, set_row
from harness.store import MethodStore, decode_png, stable_hash

if TYPE_CHECKING:
    from harness.planning import MethodPlan

log = logging.getLogger("harness")


def build_metrics(cfg: Mapping[str, Any], metric_classes: list[type[Metric]],
                  context: MetricContext | None = None) -> tuple[MetricContext, list[Metric]]:
    """The shared feature context of the config's `features` section (or `context`, whose networks are
    already built) and the per-sample metrics on it."""
    if context is None:
        features = dict(cfg.get("features") or {})
        if cfg.get("judge"):  # a VLM judge (harness/judges) is part of the feature key: a new judge is a new score
            features["judge"] = dict(cfg["judge"])
        context = MetricContext(features, device=cfg.get("metric_device", "auto"),
                                kernels=determinism.kernel_choices(cfg))
    return context, [cls(context) for cls in metric_classes if not issubclass(cls, SetMetric)]


def score_stage(cfg: Mapping[str, Any], dataset: Dataset, out_dir: Path, plans: list[MethodPlan],
                metric_classes: list[type[Metric]], context: MetricContext | None = None) -> pd.DataFrame:
    """Per-sample metric rows for every configured method variant and every sample with an output.
    `context` reuses feature networks already built (by the concurrent scorer) instead of building them again."""
    context, metrics = build_metrics(cfg, metric_classes, context)
    set_metrics = [cls(context) for cls in metric_classes if issubclass(cls, SetMetric)]
    if set_metrics and dataset.shard.count > 1:  # a value over one shard would be a different number
        log.info("set-level metrics %s: this shard stores its samples' features; the merge run (stages=[score,"
                 "report], shard.count=1) combines every shard's into one value", [m.id for m in set_metrics])
    feature_key = context.key
    strict = bool(cfg.get("strict"))
    sample_ids = dataset.sample_ids()
    rows: list[dict[str, Any]] = []
    for plan in plans:
        store = MethodStore(out_dir, dataset.key, plan.key)
        missing = 0
        read = functools.partial(read_score_inputs, store, dataset, metrics, feature_key)
        with BackgroundWriter() as writer:
            for sample_id, inputs in tqdm(iter_prefetched(read, sample_ids), total=len(sample_ids),
                                          desc=f"score {plan.name}", unit="sample", dynamic_ncols=True):
                if inputs.record is None:
                    missing += 1
                    continue
                sample_rows, new_entries = score_sample(plan, dataset.key, sample_id, inputs, metrics, feature_key,
                                                        strict)
                rows += sample_rows
                if new_entries:
                    writer.submit(functools.partial(store.update_scores, sample_id, new_entries))
        for metric in set_metrics:
            row = score_set(metric, dataset, store, plan, feature_key, strict)
            if row is not None:
                rows.append(row)
        if missing:
            # Scoring covers every sample of the (unsharded) dataset: a gap means an edit or a shard is unfinished.
            log.warning("%s: %d of %d samples have no record yet (not edited, or a shard has not finished); "
                        "they are left out of the scores", plan.key, missing, len(sample_ids))
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def score_sample(plan: MethodPlan, dataset_key: str, sample_id: str, inputs: ScoreInputs, metrics: list[Metric],
                 feature_key: str, strict: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One sample's score rows, and the cache entries it computed (metrics whose cached value was stale).
    A metric that raises gives a `metric_failed` row and a cached error entry (`strict` re-raises)."""
    base = {"dataset": dataset_key, "method": plan.label, "method_key": plan.key, "sample_id": sample_id}
    record = inputs.record
    if record is None or record.get("status") != "ok":
        return [failed_row(base)], {}
    if not inputs.trusted:  # output missing or not the one recorded: edit again
        log.warning("%s/%s: stored output does not match its record; not scored", plan.name, sample_id)
        return [], {}
    out_hash = record["output"]["sha256"]
    rows, new_entries = [], {}
    for metric in metrics:
        entry = inputs.cache.get(metric.id)
        if metric.id in inputs.stale:
            try:
                if inputs.error is not None:
                    raise inputs.error
                mv = metric.compute(inputs.sample, inputs.edited if metric.uses_output else None, record)
                undefined = bool((mv.info or {}).get("nan"))  # NaN by the protocol, with its reason
                if mv.value is not None and not math.isfinite(float(mv.value)) and not undefined:
                    raise NonFiniteError(f"metric {metric.id}", detail=f"value {mv.value}")
                entry = {"value": mv.value, "weight": mv.weight, "version": metric.version,
                         "features": feature_key, "output_sha256": out_hash,
                         "settings": metric.context.recorded_settings(metric.id, metric.settings()),
                         "info": mv.info}
            except Exception as exc:
                if strict:
                    raise
                log.warning("metric %s failed on %s/%s: %s", metric.id, plan.name, sample_id, exc)
                entry = {"value": None, "error": f"{type(exc).__name__}: {exc}", "version": metric.version,
                         "features": feature_key, "output_sha256": out_hash}
            new_entries[metric.id] = entry
        rows.append(score_row(base, metric.id, entry))
    return rows, new_entries


@dataclass
class ScoreInputs:
    """What scoring one sample reads from disk, gathered on the prefetch thread."""

    record: dict[str, Any] | None
    trusted: bool = False
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)
    stale: frozenset[str] = frozenset()  # metric ids whose cached value is missing or out of date
    sample: Any = None
    edited: np.ndarray | None = None
    error: Exception | None = None  # reading the sample or its output failed: every stale metric fails with it


def read_score_inputs(store: MethodStore, dataset: Dataset, metrics: list[Metric], feature_key: str,
                      sample_id: str) -> ScoreInputs:
    """What scoring `sample_id` needs, read once: its record, the verified output, the cached entries and
    which of them are stale (`harness.results.is_fresh`); the sample and output are decoded only if needed."""
    record = store.load_record(sample_id)
    if record is None or record.get("status") != "ok":
        return ScoreInputs(record)
    png = store.verified_png(sample_id, record)  # one read of the record and of the PNG per sample
    if png is None:
        return ScoreInputs(record)
    cache = store.load_scores(sample_id)
    out_hash = record["output"]["sha256"]
    stale = frozenset(m.id for m in metrics if not is_fresh(cache.get(m.id), m.version, feature_key, out_hash))
    inputs = ScoreInputs(record, trusted=True, cache=cache, stale=stale)
    if stale:
        try:
            inputs.sample = dataset.load(sample_id)
            inputs.edited = decode_png(png)
        except Exception as exc:
            inputs.error = exc
    return inputs


def score_set(metric: SetMetric, dataset: Dataset, store: MethodStore, plan: MethodPlan, feature_key: str,
              strict: bool) -> dict[str, Any] | None:
    """One set-level row: features of every ok sample (the set metric's mergeable state, cached by sample id
    and output hash), then the aggregate (cached by the exact list of members, `harness.results.set_key`).

    A shard stores its samples' features in a part of its own and gives no row (a value over one shard
    would be a different number); the merge run over all samples merges the parts, so it embeds no sample
    again and its value is the unsharded one. A failure fails the whole set: a value over a subset would
    be a different number."""
    base = {"dataset": dataset.key, "method": plan.label, "method_key": plan.key}
    cache_name = f"{metric.id}-v{metric.version}-{feature_key}"
    shard = dataset.shard
    try:
        if shard.count > 1:
            part = f"{cache_name}.shard-{shard.index}-of-{shard.count}"
            cached = store.load_set_features(part)
            _, changed = _set_features(metric, dataset, store, cached)
            if changed:
                store.save_set_features(part, cached)
            return None
        cached = store.load_set_features(cache_name)
        merged = metric.merge_states([*_shard_parts(store, cache_name), cached])
        members, changed = _set_features(metric, dataset, store, merged)
        if changed or len(merged) != len(cached):
            store.save_set_features(cache_name, merged)
        key = set_key(metric.version, feature_key, members)
        scores = store.load_set_scores()
        entry = scores.get(metric.id)
        if not entry or entry.get("key") != key or "features" not in entry:  # older entries lack what readers check
            value = metric.aggregate([merged[m] for m in members])
            entry = {"key": key, "version": metric.version, "features": feature_key, "value": value.value,
                     "n": len(members), "settings": metric.context.recorded_settings(metric.id, metric.settings()),
                     "info": value.info}
            scores[metric.id] = entry
            store.save_set_scores(scores)
    except Exception as exc:
        if strict:
            raise
        log.warning("set metric %s failed on %s: %s", metric.id, plan.name, exc)
        return set_row(base, metric.id, None)
    return set_row(base, metric.id, entry)


def _set_features(metric: SetMetric, dataset: Dataset, store: MethodStore,
                  cached: dict[str, np.ndarray]) -> tuple[list[str], bool]:
    """The member keys of the dataset's ok samples (in sample-id order), adding the features of those not in
    `cached` to it; and whether any was added."""
    members, changed = [], False
    for sample_id in dataset.sample_ids():
        record = store.load_record(sample_id)
        if not record or record.get("status") != "ok":
            continue
        key = stable_hash([sample_id, record["output"]["sha256"]], 16)
        if key not in cached:
            cached[key] = np.asarray(metric.features(dataset.load(sample_id), store.load_image(sample_id)))
            changed = True
        members.append(key)
    return members, changed


def _shard_parts(store: MethodStore, cache_name: str) -> list[dict[str, np.ndarray]]:
    """The feature parts sharded score stages stored for this set metric, version and feature settings."""
    folder = store.dir / "_sets"
    return [store.load_set_features(path.name[: -len(".npz")])
            for path in sorted(folder.glob(f"{glob.escape(cache_name)}.shard-*.npz"))]

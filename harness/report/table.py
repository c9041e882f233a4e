"""Paper-vs-ours tables: match each spec row to a method variant of the store and compute its cells.

Matching a row to the variant folders of one dataset:
1. same method name (and the row's `method_key` if it pins one);
2. the variant's stored config agrees with the row's config — the method's defaults plus the row's
   `params` when the method is registered in this checkout, else just the row's `params` — on every field
   both have (fields added or removed since the store was written do not break the match);
3. the row's or the spec's `model` filter is a substring of the variant's model identity (variants of
   model-free methods such as `identity` pass any filter).
No match leaves the row's cells empty (the method has not run, or is not implemented yet) and says why
(`explain_no_match`: the variants of that method the store holds, the fields whose values differ, the model
filter, and which spec or command-line change would select one); several matches are an error that lists
them, since picking one silently could put the wrong variant in a paper table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from harness.metrics.base import reducer
from harness.report.collect import StoreScores, Variant
from harness.report.spec import MetricColumn, Published, ReportSpec, Row
from harness.results import random_model_reasons
from harness.stats import RESAMPLES, CellStats, PairedStats, cell_seed, mean_ci, paired_difference


class AmbiguousRowError(ValueError):
    """A spec row matches several method variants of the store."""


@dataclass
class Cell:
    ours: CellStats | None  # on the display scale; None when the row has no variant or no value
    published: Published | None


@dataclass
class ReportTable:
    spec: ReportSpec
    cells: dict[tuple[str, str, str], Cell]  # (row label, dataset, metric id)
    variants: dict[tuple[str, str], Variant | None]  # (row label, dataset)
    counts: dict[tuple[str, str], tuple[int, int]]  # (row label, dataset) -> (samples scored, failed)
    best: set[tuple[str, str, str]] = field(default_factory=set)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # generated: smoke run, stale values, missing rows
    unmatched: list[str] = field(default_factory=list)  # per row and dataset: why no variant matched

    def cell(self, row: str, dataset: str, metric: str) -> Cell:
        return self.cells[(row, dataset, metric)]


def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _agrees(wanted: Mapping[str, Any], config: Mapping[str, Any], required: Mapping[str, Any]) -> bool:
    wanted, config = _normalised(dict(wanted)), _normalised(dict(config))
    if any(k not in config for k in _normalised(dict(required))):
        return False
    return all(config[k] == v for k, v in wanted.items() if k in config)


def _expected_config(row: Row) -> dict[str, Any]:
    """The row's full config (defaults + params) if the method is registered here, else just its params."""
    from harness.registry import METHODS

    if row.method in METHODS:
        return dict(METHODS.get(row.method).build(row.params).describe()["config"])
    return dict(row.params)


def match_variant(row: Row, dataset: str, variants: list[Variant], model: str | None = None) -> Variant | None:
    if row.method is None:
        return None
    candidates = [v for v in variants if v.dataset == dataset and v.method == row.method
                  and (row.method_key is None or v.key == row.method_key)]
    expected = _expected_config(row)
    candidates = [v for v in candidates if _agrees(expected, v.config, row.params)]
    wanted_model = row.model or model
    if wanted_model:
        candidates = [v for v in candidates if v.model is None or wanted_model in v.model]
    if len(candidates) > 1:
        listed = ", ".join(f"{v.key} (model {v.model})" for v in candidates)
        raise AmbiguousRowError(f"row {row.label!r} matches {len(candidates)} variants on {dataset}: {listed}; "
                                "narrow it with 'params', 'model' or 'method_key' in the spec (or --model)")
    return candidates[0] if candidates else None


def _inline(values: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in values.items()) + "}"


def explain_no_match(row: Row, dataset: str, variants: list[Variant], model: str | None = None,
                     spec_model: str | None = None) -> str:
    """Why `row` matched no variant on `dataset`, and how to widen the match; `model` is the filter in effect
    (`--model`, else the spec's `model`), `spec_model` the spec's own, to name where a filter came from."""
    where = f"row {row.label!r} on {dataset}"
    same = [v for v in variants if v.dataset == dataset and v.method == row.method]
    if not same:
        present = sorted({v.method for v in variants if v.dataset == dataset})
        elsewhere = sorted({v.dataset for v in variants if v.method == row.method})
        return (f"{where}: the store holds no variant of method {row.method!r}"
                + (f" (it has one on {', '.join(elsewhere)})" if elsewhere else "")
                + f"; methods run on {dataset}: {', '.join(present) or 'none'}")
    expected, params = _normalised(_expected_config(row)), _normalised(dict(row.params))
    wanted_model = row.model or model
    model_origin = "the row's 'model'" if row.model else ("--model" if model and model != spec_model else "the spec's 'model'")
    reasons, hints = [], []
    for v in same:
        config, why = _normalised(dict(v.config)), []
        if row.method_key is not None and v.key != row.method_key:
            why.append(f"the row pins method_key {row.method_key!r}")
        missing = sorted(k for k in params if k not in config)
        if missing:
            why.append(f"its config has no field(s) {missing}")
        differ = {k: config[k] for k in sorted(expected) if k in config and config[k] != expected[k]}
        if differ:
            why.append("params differ: " + "; ".join(
                f"{k} = {json.dumps(expected[k])} in the row{'' if k in params else ' (the default)'}, "
                f"{json.dumps(config[k])} in the store" for k in differ))
            hints.append(f"params: {_inline({**params, **differ})} in the row selects {v.key}")
        if wanted_model and v.model is not None and wanted_model not in v.model:
            why.append(f"model {v.model!r} does not contain {wanted_model!r} ({model_origin})")
            hints.append(f"the row's model: {json.dumps(v.model)} selects {v.key}" if row.model else
                         f"--model {json.dumps(v.model)} (or any part of it) selects {v.key}")
        reasons.append(f"{v.key} ({'; '.join(why) or 'no difference found'})")
    text = (f"{where}: no variant matched; the store has {len(same)} variant(s) of {row.method!r}: "
            + ", ".join(reasons))
    return text + (". To widen the match: " + "; ".join(dict.fromkeys(hints)) if hints else "")


def _values(scores: pd.DataFrame, variant: Variant, metric: MetricColumn) -> pd.DataFrame:
    sel = scores[(scores["dataset"] == variant.dataset) & (scores["method_key"] == variant.key)
                 & (scores["metric"] == metric.id) & (scores["status"] == "ok")]
    return sel.drop_duplicates("sample_id").set_index("sample_id")


def _scaled(s: CellStats, scale: float) -> CellStats:
    return CellStats(s.mean * scale, s.ci_low * scale, s.ci_high * scale, s.n, s.failed)


def _smoke_notes(store: StoreScores, used: list[Variant]) -> list[str]:
    reasons = sorted({reason for v in used for reason in random_model_reasons(
        [(v.method, v.model)], store.settings.get((v.dataset, v.key), {}))})
    if not reasons:
        return []
    return ["SMOKE RUN: random-weight networks were used, so the 'ours' numbers mean nothing: " + "; ".join(reasons) + "."]


def build_table(spec: ReportSpec, store: StoreScores, *, model: str | None = None, resamples: int = RESAMPLES,
                seed: int = 0) -> ReportTable:
    """Match rows, compute every cell's mean and interval (display scale), mark the best ours per column."""
    spec_model, model = spec.model, model or spec.model
    scores = store.scores
    cells: dict[tuple[str, str, str], Cell] = {}
    variants: dict[tuple[str, str], Variant | None] = {}
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for row in spec.rows:
        for dataset in spec.datasets:
            variant = match_variant(row, dataset, store.variants, model)
            variants[(row.label, dataset)] = variant
            failed = scored = 0
            if variant is not None:
                mine = scores[(scores["dataset"] == dataset) & (scores["method_key"] == variant.key)]
                failed = int(mine.loc[mine["status"] == "failed", "sample_id"].nunique())
                scored = int(mine.loc[mine["status"] == "ok", "sample_id"].nunique())
            counts[(row.label, dataset)] = (scored, failed)
            for metric in spec.metrics:
                ours = None
                if variant is not None:
                    values = _values(scores, variant, metric)
                    if len(values):
                        s = mean_ci(values["value"], values["weight"], failed=failed, resamples=resamples,
                                    seed=cell_seed(seed, dataset, variant.key, metric.id), reduce=reducer(metric.id))
                        ours = _scaled(s, metric.scale)
                cells[(row.label, dataset, metric.id)] = Cell(ours, row.published.get(dataset, {}).get(metric.id))

    best = set()
    for dataset in spec.datasets:
        for metric in spec.metrics:
            ranked = [(c.ours.mean, label) for (label, d, m), c in cells.items()
                      if d == dataset and m == metric.id and c.ours is not None and np.isfinite(c.ours.mean)]
            if len(ranked) > 1:
                target = min(v for v, _ in ranked) if metric.better == "lower" else max(v for v, _ in ranked)
                best |= {(label, dataset, metric.id) for v, label in ranked if v == target}

    comparisons = []
    for comp in spec.comparisons:
        for dataset in spec.datasets:
            va, vb = variants[(comp.a, dataset)], variants[(comp.b, dataset)]
            for metric in spec.metrics:
                result = PairedStats(float("nan"), float("nan"), float("nan"), 0)
                if va is not None and vb is not None:
                    a, b = _values(scores, va, metric), _values(scores, vb, metric)
                    result = paired_difference(a["value"] * metric.scale, b["value"] * metric.scale, a["weight"], b["weight"],
                                               resamples=resamples, seed=cell_seed(seed, dataset, comp.a, comp.b, metric.id),
                                               reduce=reducer(metric.id))
                comparisons.append({"a": comp.a, "b": comp.b, "dataset": dataset, "metric": metric.id,
                                    "label": metric.display_label, "diff": result.diff, "ci_low": result.ci_low,
                                    "ci_high": result.ci_high, "n": result.n})

    used = [v for v in variants.values() if v is not None]
    notes = _smoke_notes(store, used)
    if store.stale:
        notes.append(f"{store.stale} cached metric value(s) were left out as stale (output changed or metric version "
                     "bumped since scoring); rerun the score stage to refresh them.")
    missing = sorted({row.label for row in spec.rows if row.method is not None
                      and all(variants[(row.label, d)] is None for d in spec.datasets)})
    if missing:
        notes.append("No run in the store for: " + ", ".join(missing) + " (their 'ours' cells are empty).")
    unmatched = [explain_no_match(row, d, store.variants, model, spec_model) for row in spec.rows for d in spec.datasets
                 if row.method is not None and variants[(row.label, d)] is None]
    notes += unmatched
    return ReportTable(spec, cells, variants, counts, best, comparisons, notes, unmatched)

"""Report specs (`reports/*.yaml`): which datasets, method variants and metric ids make a table, the
published numbers to show beside ours, and how to display each metric.

```yaml
title: ...
description: ...
dataset: dragbench_dr            # or datasets: [dragbench_sr, dragbench_dr]
model: stable-diffusion-v1-5     # optional: keep only variants whose model identity contains this
metrics:
  - {id: md_dift@regiondrag, label: MD, decimals: 2}   # scale, better: the metric's own unless given
rows:
  - label: RegionDrag
    method: regiondrag           # null: a published-only row (a method the harness does not run)
    params: {copy_paste_gate: as_released}   # method config overrides; omitted = the defaults
    published:                   # as printed in the source, already on the display scale
      dragbench_dr: {md_dift@regiondrag: {value: 6.6, unverified: true, note: third-party notes}}
    source: where the published numbers come from
    notes: free text
comparisons: [{a: RegionDrag, b: DragDiffusion}]   # optional paired differences (row labels)
notes: [...]
```

`published` is either `{metric_id: value}` (the same for every dataset of the spec) or
`{dataset: {metric_id: value}}`; a value is a number, `null` (not published / not found), or a mapping
`{value, unverified, note}`. Errors name the spec file and the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml


class SpecError(ValueError):
    """An invalid report spec; the message names the file and the field."""


@dataclass(frozen=True)
class MetricColumn:
    id: str
    label: str
    scale: float = 1.0
    better: str = "lower"
    decimals: int = 2

    @property
    def display_label(self) -> str:
        arrow = "↓" if self.better == "lower" else "↑"
        scale = "" if self.scale == 1 else f" ×{self.scale:g}"
        return f"{self.label}{scale} {arrow}"


@dataclass(frozen=True)
class Published:
    value: float | None
    unverified: bool = False
    note: str | None = None


@dataclass
class Row:
    label: str
    method: str | None
    params: dict[str, Any] = field(default_factory=dict)
    published: dict[str, dict[str, Published]] = field(default_factory=dict)  # dataset -> metric -> value
    source: str | None = None
    notes: str | None = None
    model: str | None = None
    method_key: str | None = None


@dataclass
class Comparison:
    a: str
    b: str


@dataclass
class ReportSpec:
    path: Path
    title: str
    description: str
    datasets: list[str]
    metrics: list[MetricColumn]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    model: str | None = None
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.path.stem


def _published_value(raw: Any, where: str) -> Published:
    if raw is None or isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return Published(None if raw is None else float(raw))
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"value", "unverified", "note"}
        if unknown:
            raise SpecError(f"{where}: unknown key(s) {sorted(unknown)} (valid: value, unverified, note)")
        value = raw.get("value")
        if value is not None and not isinstance(value, (int, float)):
            raise SpecError(f"{where}.value: expected a number or null, got {value!r}")
        return Published(None if value is None else float(value), bool(raw.get("unverified", False)), raw.get("note"))
    raise SpecError(f"{where}: expected a number, null or {{value, unverified, note}}, got {raw!r}")


def _published(raw: Any, datasets: list[str], metric_ids: set[str], where: str) -> dict[str, dict[str, Published]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: expected a mapping")
    nested = bool(raw) and all(k in datasets for k in raw)
    per_dataset = raw if nested else {d: raw for d in datasets}
    out: dict[str, dict[str, Published]] = {}
    for dataset, values in per_dataset.items():
        if not isinstance(values, Mapping):
            raise SpecError(f"{where}.{dataset}: expected a mapping of metric id to value")
        for metric_id, value in values.items():
            if metric_id not in metric_ids:
                hint = "a dataset of the spec or " if not nested else ""
                raise SpecError(f"{where}: {metric_id!r} is not {hint}a metric id of the spec ({sorted(metric_ids)})")
            out.setdefault(dataset, {})[metric_id] = _published_value(value, f"{where}.{dataset}.{metric_id}")
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return " ".join(value) if isinstance(value, list) else str(value)


def _declared(metric_id: str) -> tuple[str, float]:
    """A metric's declared direction and table scale (`Metric.higher_is_better`, `table_scale`): a spec
    states `better` or `scale` only to override them. Ids this checkout does not know: lower, 1."""
    from harness.registry import METRICS

    if metric_id not in METRICS:
        return "lower", 1.0
    cls = METRICS.get(metric_id)
    return ("higher" if cls.higher_is_better else "lower"), float(cls.table_scale)


def parse_spec(data: Mapping[str, Any], path: Path) -> ReportSpec:
    where = str(path)
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a YAML mapping at the top level")
    for required in ("title", "metrics", "rows"):
        if required not in data:
            raise SpecError(f"{where}: missing field {required!r}")
    if ("dataset" in data) == ("datasets" in data):
        raise SpecError(f"{where}: give exactly one of 'dataset' or 'datasets'")
    datasets = [data["dataset"]] if "dataset" in data else list(data["datasets"] or [])
    if not datasets or not all(isinstance(d, str) for d in datasets):
        raise SpecError(f"{where}: 'datasets' must be a non-empty list of dataset names")

    metrics = []
    for i, m in enumerate(data["metrics"] or []):
        if not isinstance(m, Mapping) or "id" not in m:
            raise SpecError(f"{where}: metrics[{i}] needs an 'id'")
        unknown = set(m) - {"id", "label", "scale", "better", "decimals"}
        if unknown:
            raise SpecError(f"{where}: metrics[{i}] has unknown key(s) {sorted(unknown)}")
        declared_better, declared_scale = _declared(str(m["id"]))
        better = m.get("better", declared_better)
        if better not in ("lower", "higher"):
            raise SpecError(f"{where}: metrics[{i}].better must be 'lower' or 'higher', got {better!r}")
        metrics.append(MetricColumn(str(m["id"]), str(m.get("label", m["id"])), float(m.get("scale", declared_scale)),
                                    better, int(m.get("decimals", 2))))
    if not metrics:
        raise SpecError(f"{where}: 'metrics' is empty")
    metric_ids = {m.id for m in metrics}

    rows = []
    for i, r in enumerate(data["rows"] or []):
        at = f"{where}: rows[{i}]"
        if not isinstance(r, Mapping) or "label" not in r or "method" not in r:
            raise SpecError(f"{at} needs 'label' and 'method' (method: null for a published-only row)")
        unknown = set(r) - {"label", "method", "params", "published", "source", "notes", "model", "method_key"}
        if unknown:
            raise SpecError(f"{at} has unknown key(s) {sorted(unknown)}")
        params = r.get("params") or {}
        if not isinstance(params, Mapping):
            raise SpecError(f"{at}.params: expected a mapping of method config overrides")
        rows.append(Row(str(r["label"]), r["method"], dict(params), _published(r.get("published"), datasets, metric_ids,
                                                                               f"{at}.published"),
                        _text(r.get("source")), _text(r.get("notes")), r.get("model"), r.get("method_key")))
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise SpecError(f"{where}: row labels must be unique, got {labels}")

    comparisons = []
    for i, c in enumerate(data.get("comparisons") or []):
        if not isinstance(c, Mapping) or c.get("a") not in labels or c.get("b") not in labels:
            raise SpecError(f"{where}: comparisons[{i}] needs 'a' and 'b' naming row labels ({labels})")
        comparisons.append(Comparison(c["a"], c["b"]))
    notes = data.get("notes") or []
    return ReportSpec(path, str(data["title"]), _text(data.get("description")) or "", datasets, metrics, rows,
                      [notes] if isinstance(notes, str) else [str(n) for n in notes], data.get("model"), comparisons)


def load_spec(path: str | Path) -> ReportSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, path)

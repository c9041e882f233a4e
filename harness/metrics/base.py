"""The metric contract.

A metric has a versioned id naming its protocol (`<quantity>@<protocol>`), the sample families it
applies to, and `compute(sample, edited, record) -> MetricValue` per sample. The metric owns how its
per-sample values combine into a table cell: `reduce(values, weights, axis)` (the plain mean over samples by
default; `md_dift@dragdiffusion` pools over all points of all images with `weighted_mean`). Leaderboards,
bootstrap intervals and report tables all call it, vectorised over resamples. `higher_is_better` and
`table_scale` say how tables display it (↑/↓, ×scale). `settings()` lists
what changes the number (network identity, dtype, resize rules, seed policy) and is stored with every row.
`version` is bumped whenever the computation changes, which invalidates cached scores.

A set-level metric (FID) is a `SetMetric`: `features(sample, edited)` per sample (cached per output like a
per-sample value), `state(features)` a mergeable summary of any subset (shards merge theirs with
`merge_states`), and `aggregate_state(state)` once per dataset × method set; its value is one row per set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from harness.types import Family, Sample


@dataclass
class MetricValue:
    value: float
    weight: float = 1.0
    info: dict[str, Any] | None = None


def weighted_mean(values: np.ndarray, weights: np.ndarray, axis: int = -1) -> np.ndarray:
    """Σ w·x / Σ w along `axis` (NaN where the weights sum to 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (values * weights).sum(axis=axis) / weights.sum(axis=axis)


class Metric:
    id: ClassVar[str] = ""
    version: ClassVar[int] = 1
    families: ClassVar[tuple[Family, ...]] = ("drag",)
    higher_is_better: ClassVar[bool] = False
    table_scale: ClassVar[float] = 1.0
    uses_output: ClassVar[bool] = True  # False for metrics read from the run record (time, memory)
    # True for metrics of the edit's own wall clock or memory: the run then never scores concurrently with
    # editing (harness/concurrent_scoring.py), which would change what those measurements mean
    measures_edit: ClassVar[bool] = False
    # sample fields `compute` reads besides the image (`mask`, `prompt`, `target_prompt`): the metrics CLI
    # asks for the matching flag before loading any network
    inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: "MetricContext") -> None:
        self.context = context

    def compute(self, sample: Sample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:  # pragma: no cover
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {}

    @classmethod
    def reduce(cls, values: np.ndarray, weights: np.ndarray, axis: int = -1) -> np.ndarray:
        """One table cell from per-sample values (and their weights) along `axis`: the plain mean over
        samples. Override for a metric that pools (`weighted_mean`) or reduces otherwise."""
        return np.mean(values, axis=axis)


def reducer(metric_id: str) -> Callable[..., np.ndarray]:
    """The metric's own `reduce(values, weights, axis)`; the plain mean for an id this checkout does not know
    (a store written by a newer checkout)."""
    from harness.registry import METRICS

    return METRICS.get(metric_id).reduce if metric_id in METRICS else Metric.reduce


def reduction_name(cls: type[Metric]) -> str:
    """How `cls`'s cells combine samples, for records: `set` (a set-level metric), `mean` (the default
    `reduce`), or the overriding `reduce` by name (`md_dift@dragdiffusion` pools its points)."""
    if issubclass(cls, SetMetric):
        return "set"
    if cls.reduce.__func__ is Metric.reduce.__func__:
        return "mean"
    return f"{cls.__module__}.{cls.__qualname__}.reduce"


class SetMetric(Metric):
    """A metric of a whole set of outputs. The score stage calls `features` for every scored sample, then
    `aggregate` on the list (in sample-id order) and stores one row per dataset × method set with an empty
    `sample_id` and `weight` = the number of samples aggregated.

    Its state is the per-member features, keyed by (sample id, output hash) digests: any subset's state
    (one shard's) merges with the others' by `merge_states`, and the merged state gives exactly the value
    of the unsharded run. Why not torchmetrics' (n, Σx, Σxxᵀ) for the Fréchet metrics: the released
    protocols (pytorch-fid, Paint-by-Example's fid_score.py) take the covariance with `np.cov` over the
    feature matrix, and the sums formula changes that number by rounding (and with the shard count); the
    per-member state costs n × dims floats (14 MB for COCOEE's 3,500 CLIP embeddings), already cached."""

    def features(self, sample: Sample, edited: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def aggregate(self, features: list[np.ndarray]) -> MetricValue:  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def merge_states(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One state from several (shards' parts, the cache): the union of their members. A member present
        in several has the same features in each (same output, same feature settings)."""
        merged: dict[str, np.ndarray] = {}
        for state in states:
            merged.update(state)
        return merged

    def compute(self, sample: Sample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        raise TypeError(f"{self.id} is a set-level metric: it has no per-sample value (use features/aggregate)")


from harness.metrics.features import MetricContext  # noqa: E402  (re-export; avoids a cycle)

__all__ = ["Metric", "MetricContext", "MetricValue", "SetMetric"]

"""The metric contract.

A metric has a versioned id naming its protocol (`<quantity>@<protocol>`), the sample families it
applies to, and `compute(sample, edited, record) -> MetricValue` per sample. `aggregation` says how the
leaderboard combines per-sample values: `mean` (plain mean over samples) or `weighted_mean` (weights
carried per sample, e.g. `md_dift@dragdiffusion` pools over all points of all images). `settings()` lists
what changes the number (network identity, dtype, resize rules, seed policy) and is stored with every row.
`version` is bumped whenever the computation changes, which invalidates cached scores.

A set-level metric (FID) is a `SetMetric`: `features(sample, edited)` per sample (cached per output like a
per-sample value) and `aggregate(features)` once per dataset × method set; its value is one row per set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from harness.types import Family, Sample


@dataclass
class MetricValue:
    value: float
    weight: float = 1.0
    info: dict[str, Any] | None = None


class Metric:
    id: ClassVar[str] = ""
    version: ClassVar[int] = 1
    families: ClassVar[tuple[Family, ...]] = ("drag",)
    higher_is_better: ClassVar[bool] = False
    aggregation: ClassVar[str] = "mean"
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


class SetMetric(Metric):
    """A metric of a whole set of outputs (`aggregation = "set"`). The score stage calls `features` for
    every scored sample, then `aggregate` on the list (in sample-id order) and stores one row per dataset ×
    method set with an empty `sample_id` and `weight` = the number of samples aggregated."""

    aggregation: ClassVar[str] = "set"

    def features(self, sample: Sample, edited: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def aggregate(self, features: list[np.ndarray]) -> MetricValue:  # pragma: no cover - interface
        raise NotImplementedError

    def compute(self, sample: Sample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        raise TypeError(f"{self.id} is a set-level metric: it has no per-sample value (use features/aggregate)")


from harness.metrics.features import MetricContext  # noqa: E402  (re-export; avoids a cycle)

__all__ = ["Metric", "MetricContext", "MetricValue", "SetMetric"]

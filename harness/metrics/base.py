"""The metric contract.

A metric has a versioned id naming its protocol (`<quantity>@<protocol>`), the sample families it
applies to, and `compute(sample, edited, record) -> MetricValue` per sample. `aggregation` says how the
leaderboard combines per-sample values: `mean` (plain mean over samples) or `weighted_mean` (weights
carried per sample, e.g. `md_dift@dragdiffusion` pools over all points of all images). `settings()` lists
what changes the number (network identity, dtype, resize rules, seed policy) and is stored with every row.
`version` is bumped whenever the computation changes, which invalidates cached scores.
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

    def __init__(self, context: "MetricContext") -> None:
        self.context = context

    def compute(self, sample: Sample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:  # pragma: no cover
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {}


from harness.metrics.features import MetricContext  # noqa: E402  (re-export; avoids a cycle)

__all__ = ["Metric", "MetricContext", "MetricValue"]

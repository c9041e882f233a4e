"""`gscore@gooddrag`: GoodDrag's listwise naturalness rating by a pinned VLM judge (harness/judges/gscore.py).

It compares methods, so it is computed by `python -m harness.judges gscore <out_dir>` over a finished run,
which stores each sample's value in every method's score cache under the run's feature key. Listing it in
`metrics=[…]` (with the same `judge=`) then reads those values; a sample the command has not rated (or
whose output changed since) fails with the command to run, rather than being rated alone.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from harness.judges import gscore
from harness.metrics.base import Metric, MetricValue
from harness.registry import METRICS
from harness.types import Sample


@METRICS.register(gscore.METRIC_ID)
class GScore(Metric):
    id = gscore.METRIC_ID
    version = gscore.VERSION
    families = ("drag", "prompt", "exemplar")
    higher_is_better = True

    def compute(self, sample: Sample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        raise ValueError(f"{self.id} compares methods: rate them with `python -m harness.judges gscore <out_dir> "
                         "judge=<the run's judge>`, then score again")

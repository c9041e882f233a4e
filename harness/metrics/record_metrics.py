"""Metrics read from the run record rather than the image: edit time and peak memory.

`time` is the edit's wall clock (device-synchronised, model loading and warm-up excluded); the
`time_*_s` ids split it as RegionDrag's running-time chart does (LoRA fitting vs drag).

An edit timed while the score stage shared the GPU (`timing.concurrent_scoring` in its record, see
harness/concurrent_scoring.py) has no comparable time or peak memory: these metrics are NaN for it, with
that reason, rather than a number that would sit in a leaderboard next to uncontended ones. The same holds
for an edit made in a batch of several samples (`timing.batch_size` > 1, e.g. `method.regiondrag.batch_size`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from harness.metrics.base import Metric, MetricValue
from harness.registry import METRICS
from harness.types import Sample


class RecordField(Metric):
    families = ("drag", "prompt", "exemplar")
    uses_output = False
    measures_edit = True
    path: tuple[str, ...] = ()

    def compute(self, sample: Sample, edited: np.ndarray | None, record: Mapping[str, Any]) -> MetricValue:
        timing = record.get("timing") or {}
        if timing.get("concurrent_scoring"):
            return MetricValue(float("nan"), info={"nan": "edited while scoring shared the GPU "
                                                          "(score_during_edit); edit again with score_during_edit=false"})
        if timing.get("batch_size", 1) > 1:
            return MetricValue(float("nan"), info={"nan": f"edited in a batch of {timing['batch_size']}: its time "
                                                          "and memory are the batch's, not one edit's"})
        value: Any = record
        for key in self.path:
            value = value.get(key, 0.0) if isinstance(value, Mapping) else 0.0
        return MetricValue(float(value or 0.0))


def _record_metric(metric_id: str, path: tuple[str, ...], doc: str) -> None:
    cls = type(metric_id, (RecordField,), {"id": metric_id, "path": path, "__doc__": doc})
    METRICS.register(metric_id)(cls)


_record_metric("time", ("timing", "total_s"), "Edit wall clock in seconds (LoRA included), device-synchronised.")
_record_metric("time_total_s", ("timing", "total_s"), "Same as `time`: LoRA + drag seconds.")
_record_metric("time_edit_s", ("timing", "edit_s"), "Drag seconds (total minus LoRA fitting).")
_record_metric("time_lora_s", ("timing", "lora_s"), "LoRA fitting seconds (0 for cached or LoRA-free methods).")
_record_metric("peak_mem", ("memory", "peak_mib"), "Peak GPU memory allocated during the edit, MiB (0 on CPU).")

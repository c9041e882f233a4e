"""Scoring finished samples on a second CUDA stream while the edit stage edits the next ones.

Why: a RegionDrag edit is a chain of batch-1 UNet calls that leaves most of an H100 idle (about 8 ms per
call for well under a TFLOP), while DIFT's batch-16 passes fill it. One after the other, a run costs the
sum of the two stages; side by side, little more than the longer one.

What it changes: no output and no score. The scorer runs the score stage's own per-sample code
(`scoring.score_sample`) on the PNG and record the edit stage has just stored, and only fills the score
cache, so the score stage afterwards finds those values fresh and reads them. What it does change is what an
edit's wall clock and peak memory mean: both are then measured while scoring shares the GPU. Hence:

- `score_during_edit: auto` (the default) turns it on only on a GPU with room for both working sets
  (`MIN_DEVICE_GIB`), with both stages in the run, and no metric that reads those measurements
  (`Metric.measures_edit`: `time`, `peak_mem`, ...);
- every edit record says whether it was timed so (`timing.concurrent_scoring`), and the timing metrics give
  NaN with that reason for such records rather than a number that would not compare with others;
- the edits run on a high-priority stream and the scorer on a normal one, so the edit chain is delayed as
  little as possible and the scorer fills what it leaves idle;
- streams: each role has its own stream for the process (harness/streams.py); PyTorch's stream pool would
  otherwise, after a few dozen graph captures, hand the scorer's stream to a capture;
- memory: the allocator caches freed blocks per stream and cannot give them back to the driver while a graph
  is being captured, so graph captures start by emptying the cache, and after each sample the scorer returns
  its idle cache once more than `IDLE_CACHE_FRACTION` of the device is cached but unused (holding the capture
  lock of harness/diffusion/graphs.py, so that no capture is under way meanwhile).

Failures cost only the overlap: the scorer caches no failed value (it may have failed for want of memory
the edits held), so the score stage computes that metric again on its own and records what happens then.
With `strict`, a failure stops the run at the next submitted sample or when editing ends.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch

from harness.data.base import Dataset
from harness.metrics.base import Metric, SetMetric
from harness.scoring import build_metrics, read_score_inputs, score_sample
from harness.store import MethodStore
from harness.streams import highest_priority, role_stream

if TYPE_CHECKING:
    from harness.planning import MethodPlan

log = logging.getLogger("harness")

SETTINGS = ("auto", True, False)
IDLE_CACHE_FRACTION = 0.25
# DIFT in fp32 at DragBench's largest native size (913×512) allocates ~20 GB at its peak next to the editing
# model's few GB; with less room, an edit short of memory may fall back to other cuDNN algorithms
MIN_DEVICE_GIB = 40


def wanted(cfg: Mapping[str, Any], stages: Sequence[str], metric_classes: Sequence[type[Metric]]) -> bool:
    """Whether this run scores during its edit stage (`score_during_edit`: auto, true or false)."""
    setting = cfg.get("score_during_edit", "auto")
    if setting not in SETTINGS:
        raise ValueError(f"config field 'score_during_edit': expected auto, true or false, got {setting!r}")
    per_sample = [cls for cls in metric_classes if not issubclass(cls, SetMetric)]
    measured = sorted(cls.id for cls in per_sample if cls.measures_edit)
    possible = "edit" in stages and ("score" in stages or "report" in stages) and bool(per_sample)
    if setting is True:
        if measured:
            log.warning("score_during_edit=true: edits are timed while scoring shares the GPU, so %s will be "
                        "NaN for the samples edited in this run", measured)
        return possible
    if setting is False:
        return False
    device = str(cfg.get("metric_device", "auto"))
    on_gpu = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    return possible and on_gpu and not measured and device_memory_gib(device) >= MIN_DEVICE_GIB


def device_memory_gib(device: str) -> float:
    index = torch.device("cuda" if device == "auto" else device).index
    return torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index).total_memory / 2 ** 30


class ConcurrentScorer:
    """A thread that scores (store, sample id) pairs as the edit stage submits them, on its own stream.

    Use as a context manager around the edit stage; `context` then holds the networks it built, for the
    score stage to reuse. Leaving the block normally scores everything submitted; leaving it on an error
    drops what is still queued (the score stage would score it later)."""

    def __init__(self, cfg: Mapping[str, Any], dataset: Dataset, metric_classes: Sequence[type[Metric]]) -> None:
        self.context, self.metrics = build_metrics(cfg, list(metric_classes))
        self.dataset = dataset
        self.strict = bool(cfg.get("strict", False))
        self.feature_key = self.context.key
        self.scored = self.failed = 0
        self._queue: queue.Queue[tuple[MethodPlan, MethodStore, str] | None] = queue.Queue()
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="harness-scorer", daemon=True)

    def __enter__(self) -> "ConcurrentScorer":
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._abort.set()
        self._queue.put(None)
        self._thread.join()
        if self.context.device.type == "cuda":
            torch.cuda.synchronize(self.context.device)  # its networks and caches are used on other streams next
        if exc_type is None and self._error is not None:
            raise self._error

    def submit(self, plan: MethodPlan, store: MethodStore, sample_id: str) -> None:
        """Queue a stored sample; re-raises a scorer error when `strict`."""
        if self._error is not None:
            raise self._error
        self._queue.put((plan, store, sample_id))

    def _run(self) -> None:
        with self._own_stream():
            while (item := self._queue.get()) is not None and not self._abort.is_set():
                plan, store, sample_id = item
                try:
                    inputs = read_score_inputs(store, self.dataset, self.metrics, self.feature_key, sample_id)
                    _, entries = score_sample(plan, self.dataset.key, sample_id, inputs, self.metrics,
                                              self.feature_key, self.strict)
                    entries = {k: v for k, v in entries.items() if "error" not in v}  # left to the score stage
                    if entries:
                        store.update_scores(sample_id, entries)
                    self.scored += 1
                    self._trim_cache()
                except BaseException as exc:  # noqa: BLE001 - reported to the edit thread or left to the score stage
                    self.failed += 1
                    if self.strict:
                        self._error = exc
                        return
                    log.warning("concurrent scoring of %s/%s failed (the score stage will retry): %s",
                                plan.name, sample_id, exc)

    def _trim_cache(self) -> None:
        device = self.context.device
        if device.type != "cuda":
            return
        idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        if idle > IDLE_CACHE_FRACTION * torch.cuda.get_device_properties(device).total_memory:
            from harness.diffusion.graphs import CAPTURE_LOCK

            with CAPTURE_LOCK:
                torch.cuda.empty_cache()

    @contextlib.contextmanager
    def _own_stream(self) -> Iterator[None]:
        if self.context.device.type != "cuda":
            yield
            return
        with torch.cuda.device(self.context.device), torch.cuda.stream(role_stream("scorer", self.context.device)):
            yield


@contextlib.contextmanager
def priority_stream(device: torch.device | None) -> Iterator[None]:
    """Run the block on the process's highest-priority edit stream of `device` (a no-op off the GPU). It
    starts after the work already queued on the current stream (model loading) and the current stream waits
    for it at the end, so code before and after sees the usual ordering."""
    if device is None or device.type != "cuda":
        yield
        return
    outer = torch.cuda.current_stream(device)
    stream = role_stream("edit", device, priority=highest_priority())
    stream.wait_stream(outer)
    with torch.cuda.stream(stream):
        yield
    outer.wait_stream(stream)

"""The edit stage: each planned method variant on each pending sample, stored as PNG + record.

Samples whose record is trusted are reused; a sample that raises is recorded as failed and the run goes on
(`strict` stops). Each sample is edited while holding its store lock, so shards and duplicate processes can
share a store (harness/store.py); an out-of-memory sample releases its memory before the next one starts.
What editing one sample or one equal-size batch needs is one `EditJob` per method variant.
"""
from __future__ import annotations

import functools
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from tqdm import tqdm

from harness import determinism
from harness.background import BackgroundWriter, Prefetcher
from harness.concurrent_scoring import ConcurrentScorer, priority_stream
from harness.data.base import Dataset
from harness.diffusion.numerics import NonFiniteError
from harness.diffusion.timing import device_timer
from harness.edit_order import edit_order, sample_sizes, size_batches
from harness.environment import versions
from harness.faults import describe_error, is_fatal, is_out_of_memory, release_memory
from harness.planning import MethodPlan
from harness.run_record import now
from harness.store import MethodStore, SampleLock

log = logging.getLogger("harness")

Outcome = tuple[str, Callable[[], object] | None]  # ("edited" | "failed" | "reused", the job that stores it)


def check_output(image: Any, sample: Any) -> np.ndarray:
    """The method's output if it is a finite uint8 H×W×3 array of the source's size; else a clear error."""
    if isinstance(image, np.ndarray) and image.dtype.kind == "f" and not np.isfinite(image).all():
        raise NonFiniteError("method output", detail=f"{int(np.isnan(image).sum())} NaN, {int(np.isinf(image).sum())} Inf")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TypeError(f"method output must be a uint8 H×W×3 array, got {type(image).__name__} "
                        f"{getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}")
    if image.shape != sample.image.shape:
        raise ValueError(f"method output is {image.shape[1]}×{image.shape[0]}, the source is "
                         f"{sample.image.shape[1]}×{sample.image.shape[0]} (methods resize back to the source size)")
    return image


def record_timing(seconds: float, method_timings: Mapping[str, float], concurrent_scoring: bool,
                  batch_size: int = 1) -> dict[str, Any]:
    """A record's `timing`: the edit's wall clock, split into LoRA fitting and the rest, and the method's own
    stage times; for a batch, each sample's share of the batch's (with the batch's size and total)."""
    total_s = seconds / batch_size
    lora_s = float(method_timings.get("lora", 0.0)) / batch_size
    timing = {"total_s": total_s, "lora_s": lora_s, "edit_s": total_s - lora_s,
              **{f"method_{k}_s": float(v) / batch_size for k, v in method_timings.items()},
              "concurrent_scoring": concurrent_scoring}
    if batch_size > 1:
        timing.update(batch_size=batch_size, batch_total_s=seconds)
    return timing


@dataclass
class EditJob:
    """Editing with one built method variant into its store: what every sample's edit shares."""

    store: MethodStore
    method: Any
    seed: int
    base_record: Mapping[str, Any]
    device: Any = None
    force: bool = False
    strict: bool = False
    concurrent_scoring: bool = False

    def one(self, load: Callable[[str], Any], sample_id: str) -> Outcome:
        """Edit one sample (its lock held). Returns the outcome and the job that stores it (PNG and record),
        which the caller runs on the writer thread before releasing the lock."""
        store = self.store
        if not self.force and store.trusted_record(sample_id) is not None:
            return "reused", None  # another process finished it while this one waited for the lock
        record = dict(self.base_record, sample_id=sample_id, started_at=now())
        try:
            sample = load(sample_id)
            with determinism.GLOBAL_RNG_LOCK, device_timer(self.device) as timer:
                result = self.method.edit(sample, self.seed)
            image = check_output(result.image, sample)
            record.update(timing=record_timing(timer["seconds"], result.timings, self.concurrent_scoring),
                          memory={"peak_mib": timer["peak_mib"]}, info=result.info, finished_at=now())
            return "edited", lambda: store.save_ok(sample_id, image, record)
        except Exception as exc:  # a failing sample is recorded and the sweep goes on
            record.update(error=describe_error(exc), finished_at=now())
            log.warning("%s failed on %s: %s", record["method"], sample_id, record["error"]["message"])
            out_of_memory = is_out_of_memory(exc)
            if self.strict or is_fatal(exc):
                store.save_failed(sample_id, record)
                raise
        if out_of_memory:  # outside the except block, whose traceback pins the failed sample's tensors
            record["error"]["released"] = release_memory()
        return "failed", lambda: store.save_failed(sample_id, record)

    def group(self, load: Callable[[str], Any], sample_ids: list[str]) -> list[Outcome]:
        """Edit equal-size samples (their locks held) in one `edit_batch` call; an outcome per sample.

        Each record gets the batch's wall clock divided by its size (`timing.batch_size`, `timing.batch_total_s`
        say so) and the batch's peak memory. If the batch raises, its samples are edited one by one, so a
        failing sample is recorded alone and the others are not lost; a fatal error stops the stage as usual."""
        if len(sample_ids) == 1:
            return [self.one(load, sample_ids[0])]
        outcomes: dict[str, Outcome] = {}
        todo: list[str] = []
        samples: list[Any] = []
        for sample_id in sample_ids:
            if not self.force and self.store.trusted_record(sample_id) is not None:
                outcomes[sample_id] = ("reused", None)
                continue
            try:
                samples.append(load(sample_id))
                todo.append(sample_id)
            except Exception as exc:  # recorded through the one-sample path, which owns error records
                outcomes[sample_id] = self.one(_raising(exc), sample_id)
        if len(todo) == 1:
            outcomes[todo[0]] = self.one(lambda _: samples[0], todo[0])
        elif todo:
            outcomes.update(self.batch(todo, samples))
        return [outcomes[sample_id] for sample_id in sample_ids]

    def batch(self, sample_ids: list[str], samples: list[Any]) -> dict[str, Outcome]:
        store, base_record = self.store, self.base_record
        started = now()
        try:
            with determinism.GLOBAL_RNG_LOCK, device_timer(self.device) as timer:
                results = self.method.edit_batch(samples, self.seed)
            images = [check_output(result.image, sample) for result, sample in zip(results, samples)]
        except Exception as exc:
            if is_fatal(exc):
                error = describe_error(exc)
                for sample_id in sample_ids:
                    store.save_failed(sample_id, dict(base_record, sample_id=sample_id, started_at=started,
                                                      error=error, finished_at=now()))
                raise
            log.warning("%s: a batch of %d failed (%s: %s); editing its samples one by one", base_record["method"],
                        len(samples), type(exc).__name__, exc)
            out_of_memory = is_out_of_memory(exc)
        else:
            n = len(samples)
            outcomes = {}
            for sample_id, result, image in zip(sample_ids, results, images):
                record = dict(base_record, sample_id=sample_id, started_at=started)
                record.update(timing=record_timing(timer["seconds"], result.timings, self.concurrent_scoring,
                                                   batch_size=n),
                              memory={"peak_mib": timer["peak_mib"]}, info=result.info, finished_at=now())
                outcomes[sample_id] = ("edited", functools.partial(store.save_ok, sample_id, image, record))
            return outcomes
        if out_of_memory:  # outside the except block, whose traceback pins the batch's tensors
            release_memory()
        return {sample_id: self.one(lambda _, s=sample: s, sample_id) for sample_id, sample in zip(sample_ids, samples)}


def _raising(exc: Exception) -> Callable[[str], Any]:
    def load(sample_id: str) -> Any:
        raise exc
    return load


def _then_release(write: Callable[[], object] | None, lock: SampleLock,
                  then: Callable[[], object] | None = None) -> Callable[[], None]:
    """The writer-thread job: store the sample, release its lock, then `then` (hand it to the scorer)."""
    def job() -> None:
        try:
            if write is not None:
                write()
        finally:
            lock.release()
        if then is not None:
            then()
    return job


def edit_stage(cfg: Mapping[str, Any], dataset: Dataset, out_dir: Path, plans: list[MethodPlan],
               scorer: ConcurrentScorer | None = None) -> dict[str, Any]:
    """Run every method variant on every pending sample. Returns a summary per method key. With a `scorer`,
    each stored sample is handed to it, and the edits run on a high-priority stream beside its work."""
    from harness.models import load_models

    seed, strict, force = int(cfg.get("seed", 42)), bool(cfg.get("strict", False)), bool(cfg.get("force", False))
    sample_ids = dataset.sample_ids()
    summary: dict[str, Any] = {}
    for plan in plans:
        store = MethodStore(out_dir, dataset.key, plan.key)
        store.write_description(plan.description)
        pending = sample_ids if force else [s for s in sample_ids if store.trusted_record(s) is None]
        info: dict[str, Any] = {"method": plan.name, "samples": len(sample_ids), "reused": len(sample_ids) - len(pending),
                                "edited": 0, "failed": 0}
        summary[plan.key] = info
        if not pending:
            continue
        method = plan.cls.build(plan.params)
        t0 = time.perf_counter()
        with determinism.GLOBAL_RNG_LOCK:  # builds and edits draw from no generator a concurrent scorer seeds
            models = load_models(plan.model) if plan.model is not None else None
            method.setup(models)
        info["setup_s"] = time.perf_counter() - t0
        device = models.device if models is not None else None
        base_record = {"dataset": dataset.key, "method": plan.name, "method_key": plan.key, "seed": seed,
                       "method_config": plan.description.get("config"), "model": models.describe() if models else None,
                       "versions": versions(), "determinism": determinism.state()}
        job = EditJob(store, method, seed, base_record, device, force, strict, scorer is not None)
        _edit_pending(job, dataset, plan, pending, info, scorer)
    return summary


def _edit_pending(job: EditJob, dataset: Dataset, plan: MethodPlan, pending: list[str], info: dict[str, Any],
                  scorer: ConcurrentScorer | None) -> None:
    """Edit `pending` in size order and equal-size batches, counting outcomes into `info`."""
    store = job.store
    sizes = sample_sizes(dataset, pending)
    order = edit_order(dataset, pending, sizes)
    deferred: list[str] = []
    with (BackgroundWriter() as writer, Prefetcher(dataset.load, order) as samples,
          priority_stream(job.device if scorer is not None else None),
          tqdm(total=len(pending), desc=f"edit {plan.name}", unit="sample", dynamic_ncols=True) as progress):
        # The first pass skips samples another process is editing; the second waits for them and then
        # usually finds them done. Two processes on one shard thus share its samples, never redo one.
        first = [(False, group) for group in size_batches(order, sizes, job.method.max_batch())]
        for blocking, group in itertools.chain(first, ((True, [s]) for s in deferred)):
            locked: list[tuple[str, SampleLock]] = []
            try:
                for sample_id in group:
                    lock = store.acquire_lock(sample_id, blocking=blocking)
                    if lock is None:
                        deferred.append(sample_id)
                    else:
                        locked.append((sample_id, lock))
                if not locked:
                    continue
                load = dataset.load if blocking else samples.get  # prefetch along the first pass only
                outcomes = job.group(load, [sid for sid, _ in locked])
                for (sample_id, lock), (outcome, write) in zip(locked, outcomes):
                    stored = (functools.partial(scorer.submit, plan, store, sample_id)
                              if scorer is not None and outcome == "edited" else None)
                    writer.submit(_then_release(write, lock, stored))  # raises if an earlier write failed
                    info[outcome] += 1
                    progress.update()
            except BaseException:
                for _, lock in locked:
                    lock.release()  # idempotent: harmless if the writer already released it
                raise

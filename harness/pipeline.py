"""The three stages: edit → score → report, over one store.

- **edit** runs each configured method on each sample and writes PNG + record; samples whose record is
  trusted are reused, a sample that raises is recorded as failed and the run goes on (`strict` stops).
  Each sample is edited while holding its store lock, so shards and duplicate processes can share a store
  (harness/store.py); an out-of-memory sample releases its memory before the next one starts.
- **score** (harness/scoring.py) computes each configured metric per sample from the store, caching values
  by (metric id, metric version, feature settings, output hash); it never re-runs a method.
- **report** aggregates the score rows into `scores.csv`, `leaderboard.csv` and `leaderboard.md`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness import determinism
from harness.background import BackgroundWriter, Prefetcher
from harness.concurrent_scoring import ConcurrentScorer, priority_stream, wanted as scoring_during_edit_wanted
from harness.data.base import Dataset
from harness.diffusion.numerics import NonFiniteError
from harness.environment import device_info, git_commit, versions
from harness.faults import describe_error, is_fatal, is_out_of_memory, release_memory
from harness.metrics.base import Metric
from harness.models.provider import ModelSpec
from harness.registry import METHODS, METRICS
from harness.results import random_model_reasons
from harness.scoring import score_stage
from harness.store import MethodStore, SampleLock, atomic_write_bytes, atomic_write_json, stable_hash

log = logging.getLogger("harness")


class ConfigError(ValueError):
    """A configuration that cannot run (unknown names, incompatible pairings); raised before any work."""


@dataclass
class MethodPlan:
    """One method variant of a run: what to build, and where its outputs live. `model` is the model
    config it runs on: the run's `model`, or the method's own `model` entry (exemplar methods need
    their own pipelines: `method.paint_by_example.model`)."""

    name: str
    params: dict[str, Any]
    cls: Any
    key: str
    description: dict[str, Any]
    model: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.name


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def plan_methods(method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], dataset: Dataset,
                 kernels: Mapping[str, bool] | None = None) -> list[MethodPlan]:
    """Resolve every configured method (and check it fits the dataset) without loading any model.
    `kernels`: the run's non-default kernel choices (`determinism.kernel_choices`), part of each store key
    because they change rounding."""
    plans = []
    run_spec = plan_model(model_cfg)
    for name, params in (method_cfg or {}).items():
        cls = METHODS.get(name)
        if dataset.family not in cls.families:
            raise ConfigError(f"method {name!r} edits {'/'.join(cls.families)} samples; dataset "
                              f"{dataset.name!r} holds {dataset.family} samples")
        params = dict(params or {})
        own_model = params.pop("model", None)
        try:
            method = cls.build(params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"method {name!r}: invalid config: {exc}") from exc
        description = method.describe()
        model = dict(own_model or model_cfg) if cls.needs_model else None
        if model is not None:
            spec = plan_model(own_model) if own_model else run_spec
            description["model"] = {"identity": spec.identity, "dtype": str(spec.resolved_dtype()).replace("torch.", "")}
            if spec.memory_format:
                description["model"]["memory_format"] = spec.memory_format
        if kernels:
            description["kernels"] = dict(kernels)
        plans.append(MethodPlan(name, params, cls, f"{name}-{stable_hash(description, 8)}", description, model))
    if not plans:
        raise ConfigError("no method configured (set method=<name> or method=[a,b])")
    return plans


def plan_model(model_cfg: Mapping[str, Any]) -> ModelSpec:
    """The model spec, checked without loading anything (a typo in `model.arch` fails before any work)."""
    from harness.models.architectures import ARCHITECTURES

    try:
        spec = ModelSpec.from_config(model_cfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    if spec.source == "random" and spec.arch not in ARCHITECTURES:
        raise ConfigError(f"model config {spec.name!r}: unknown random architecture arch={spec.arch!r}; "
                          f"valid: {', '.join(sorted(ARCHITECTURES))}")
    return spec


def plan_metrics(metric_ids: Iterable[str], dataset: Dataset) -> list[type[Metric]]:
    classes = []
    for metric_id in metric_ids:
        cls = METRICS.get(metric_id)
        if dataset.family not in cls.families:
            raise ConfigError(f"metric {metric_id!r} applies to {'/'.join(cls.families)} samples; dataset "
                              f"{dataset.name!r} holds {dataset.family} samples")
        classes.append(cls)
    return classes


# ----------------------------------------------------------------------------------------------- edit


@contextlib.contextmanager
def _device_timer(device: Any):
    """Wall clock of the block with its queued GPU work finished (harness/diffusion/timing.py), and the
    peak memory allocated on the device meanwhile (MiB, 0 on the CPU)."""
    import torch

    from harness.diffusion.timing import synchronize

    cuda = device is not None and getattr(device, "type", str(device)) == "cuda"
    out = {"seconds": 0.0, "peak_mib": 0.0}
    if cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        yield out
    finally:
        if cuda:
            synchronize(device)
            out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["seconds"] = time.perf_counter() - start


def _check_output(image: Any, sample: Any) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype.kind == "f" and not np.isfinite(image).all():
        raise NonFiniteError("method output", detail=f"{int(np.isnan(image).sum())} NaN, {int(np.isinf(image).sum())} Inf")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TypeError(f"method output must be a uint8 H×W×3 array, got {type(image).__name__} "
                        f"{getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}")
    if image.shape != sample.image.shape:
        raise ValueError(f"method output is {image.shape[1]}×{image.shape[0]}, the source is "
                         f"{sample.image.shape[1]}×{sample.image.shape[0]} (methods resize back to the source size)")
    return image


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
        sizes = sample_sizes(dataset, pending)
        order = edit_order(dataset, pending, sizes)
        deferred: list[str] = []
        concurrent = scorer is not None
        with (BackgroundWriter() as writer, Prefetcher(dataset.load, order) as samples,
              priority_stream(device if concurrent else None),
              tqdm(total=len(pending), desc=f"edit {plan.name}", unit="sample", dynamic_ncols=True) as progress):
            # The first pass skips samples another process is editing; the second waits for them and then
            # usually finds them done. Two processes on one shard thus share its samples, never redo one.
            first = [(False, group) for group in size_batches(order, sizes, method.max_batch())]
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
                    outcomes = _edit_group(store, method, load, [sid for sid, _ in locked], seed, base_record,
                                           device, force, strict, concurrent)
                    for (sample_id, lock), (outcome, write) in zip(locked, outcomes):
                        stored = (functools.partial(scorer.submit, plan, store, sample_id)
                                  if concurrent and outcome == "edited" else None)
                        writer.submit(_then_release(write, lock, stored))  # raises if an earlier write failed
                        info[outcome] += 1
                        progress.update()
                except BaseException:
                    for _, lock in locked:
                        lock.release()  # idempotent: harmless if the writer already released it
                    raise
    return summary


@dataclass
class StageResults:
    """What `edit_and_score` ran: the edit summary per method key, the score rows, wall-clock seconds per
    stage (model loading included) and, when scoring ran during editing, how many samples it scored then."""

    edit: dict[str, Any] | None = None
    scores: pd.DataFrame | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    scored_during_edit: dict[str, int] | None = None


def edit_and_score(cfg: Mapping[str, Any], dataset: Dataset, out_dir: Path, plans: list[MethodPlan],
                   metric_classes: list[type[Metric]], stages: Iterable[str],
                   on_edited: Callable[[dict[str, Any]], None] | None = None) -> StageResults:
    """The edit stage and then the score stage, as far as `stages` asks (the report needs the scores).
    With `score_during_edit` in effect (harness/concurrent_scoring.py) the samples are scored as they are
    stored; the score stage then reads their cached values, and its seconds include waiting for the scorer
    to finish. `on_edited(summary)` is called as soon as editing ends."""
    stages = list(stages)
    results = StageResults()
    clock = time.perf_counter()
    with contextlib.ExitStack() as scoring_during_edit:
        scorer = None
        if "edit" in stages and scoring_during_edit_wanted(cfg, stages, metric_classes):
            scorer = scoring_during_edit.enter_context(ConcurrentScorer(cfg, dataset, metric_classes))
        if "edit" in stages:
            results.edit = edit_stage(cfg, dataset, out_dir, plans, scorer)
            results.seconds["edit"], clock = time.perf_counter() - clock, time.perf_counter()
            if on_edited is not None:
                on_edited(results.edit)
    if scorer is not None:
        results.scored_during_edit = {"scored": scorer.scored, "failed": scorer.failed}
    if "score" in stages or "report" in stages:
        results.scores = score_stage(cfg, dataset, out_dir, plans, metric_classes,
                                     scorer.context if scorer is not None else None)
        results.seconds["score"] = time.perf_counter() - clock
    return results


def sample_sizes(dataset: Dataset, sample_ids: list[str]) -> dict[str, tuple[int, int] | None]:
    """(height, width) of each sample from `inspect` (headers, no decoding); None where the header cannot
    be read (loading it then records the error)."""
    sizes: dict[str, tuple[int, int] | None] = {}
    for sample_id in sample_ids:
        try:
            width, height = dataset.loader.inspect(sample_id).size
            sizes[sample_id] = (height, width)
        except Exception:
            sizes[sample_id] = None
    return sizes


def edit_order(dataset: Dataset, sample_ids: list[str],
               sizes: Mapping[str, tuple[int, int] | None] | None = None) -> list[str]:
    """The samples grouped by image size, then by id. Methods that build work per input shape (RegionDrag's
    CUDA graphs, cuDNN plans) then build it once per size rather than at every size change: DragBench-D
    has 53 heights in sorted-id order. A sample of unknown size goes last."""
    sizes = sample_sizes(dataset, sample_ids) if sizes is None else sizes

    def key(sample_id: str) -> tuple:
        size = sizes[sample_id]
        return (1, 0, 0, sample_id) if size is None else (0, *size, sample_id)

    return sorted(sample_ids, key=key)


def size_batches(order: list[str], sizes: Mapping[str, tuple[int, int] | None], limit: int) -> list[list[str]]:
    """`order` cut into runs of equal (known) size of at most `limit` samples; unknown sizes go alone."""
    batches: list[list[str]] = []
    for sample_id in order:
        last = batches[-1] if batches else None
        if (last is not None and len(last) < limit and sizes[sample_id] is not None
                and sizes[last[0]] == sizes[sample_id]):
            last.append(sample_id)
        else:
            batches.append([sample_id])
    return batches


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


def _edit_group(store: MethodStore, method: Any, load: Callable[[str], Any], sample_ids: list[str], seed: int,
                base_record: Mapping[str, Any], device: Any, force: bool, strict: bool,
                concurrent_scoring: bool) -> list[tuple[str, Callable[[], object] | None]]:
    """Edit equal-size samples (their locks held) in one `edit_batch` call; (outcome, store job) per sample.

    Each record gets the batch's wall clock divided by its size (`timing.batch_size`, `timing.batch_total_s`
    say so) and the batch's peak memory. If the batch raises, its samples are edited one by one, so a
    failing sample is recorded alone and the others are not lost; a fatal error stops the stage as usual."""
    if len(sample_ids) == 1:
        return [_edit_one(store, method, load, sample_ids[0], seed, base_record, device, force, strict,
                          concurrent_scoring)]
    outcomes: dict[str, tuple[str, Callable[[], object] | None]] = {}
    todo: list[str] = []
    samples: list[Any] = []
    for sample_id in sample_ids:
        if not force and store.trusted_record(sample_id) is not None:
            outcomes[sample_id] = ("reused", None)
            continue
        try:
            samples.append(load(sample_id))
            todo.append(sample_id)
        except Exception as exc:  # recorded through the one-sample path, which owns error records
            outcomes[sample_id] = _edit_one(store, method, _raising(exc), sample_id, seed, base_record, device,
                                            force, strict, concurrent_scoring)
    if len(todo) == 1:
        outcomes[todo[0]] = _edit_one(store, method, lambda _: samples[0], todo[0], seed, base_record, device,
                                      force, strict, concurrent_scoring)
    elif todo:
        outcomes.update(_edit_batch(store, method, todo, samples, seed, base_record, device, force, strict,
                                    concurrent_scoring))
    return [outcomes[sample_id] for sample_id in sample_ids]


def _edit_batch(store: MethodStore, method: Any, sample_ids: list[str], samples: list[Any], seed: int,
                base_record: Mapping[str, Any], device: Any, force: bool, strict: bool,
                concurrent_scoring: bool) -> dict[str, tuple[str, Callable[[], object] | None]]:
    started = now()
    try:
        with determinism.GLOBAL_RNG_LOCK, _device_timer(device) as timer:
            results = method.edit_batch(samples, seed)
        images = [_check_output(result.image, sample) for result, sample in zip(results, samples)]
    except Exception as exc:
        if is_fatal(exc):
            error = describe_error(exc)
            for sample_id in sample_ids:
                store.save_failed(sample_id, dict(base_record, sample_id=sample_id, started_at=started, error=error,
                                                  finished_at=now()))
            raise
        log.warning("%s: a batch of %d failed (%s: %s); editing its samples one by one", base_record["method"],
                    len(samples), type(exc).__name__, exc)
        out_of_memory = is_out_of_memory(exc)
    else:
        n = len(samples)
        outcomes = {}
        for sample_id, result, image in zip(sample_ids, results, images):
            record = dict(base_record, sample_id=sample_id, started_at=started)
            record.update(timing=_timing(timer["seconds"], result.timings, concurrent_scoring, batch_size=n),
                          memory={"peak_mib": timer["peak_mib"]}, info=result.info, finished_at=now())
            outcomes[sample_id] = ("edited", functools.partial(store.save_ok, sample_id, image, record))
        return outcomes
    if out_of_memory:  # outside the except block, whose traceback pins the batch's tensors
        release_memory()
    return {sample_id: _edit_one(store, method, lambda _, s=sample: s, sample_id, seed, base_record, device,
                                 force, strict, concurrent_scoring)
            for sample_id, sample in zip(sample_ids, samples)}


def _timing(seconds: float, method_timings: Mapping[str, float], concurrent_scoring: bool,
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


def _raising(exc: Exception) -> Callable[[str], Any]:
    def load(sample_id: str) -> Any:
        raise exc
    return load


def _edit_one(store: MethodStore, method: Any, load: Callable[[str], Any], sample_id: str, seed: int,
              base_record: Mapping[str, Any], device: Any, force: bool, strict: bool,
              concurrent_scoring: bool = False) -> tuple[str, Callable[[], object] | None]:
    """Edit one sample (its lock held). Returns the outcome ("edited", "failed" or "reused") and the job
    that stores it (PNG and record), which the caller runs on the writer thread before releasing the lock."""
    if not force and store.trusted_record(sample_id) is not None:
        return "reused", None  # another process finished it while this one waited for the lock
    record = dict(base_record, sample_id=sample_id, started_at=now())
    try:
        sample = load(sample_id)
        with determinism.GLOBAL_RNG_LOCK, _device_timer(device) as timer:
            result = method.edit(sample, seed)
        image = _check_output(result.image, sample)
        record.update(timing=_timing(timer["seconds"], result.timings, concurrent_scoring),
                      memory={"peak_mib": timer["peak_mib"]}, info=result.info, finished_at=now())
        return "edited", lambda: store.save_ok(sample_id, image, record)
    except Exception as exc:  # a failing sample is recorded and the sweep goes on
        record.update(error=describe_error(exc), finished_at=now())
        log.warning("%s failed on %s: %s", record["method"], sample_id, record["error"]["message"])
        out_of_memory = is_out_of_memory(exc)
        if strict or is_fatal(exc):
            store.save_failed(sample_id, record)
            raise
    if out_of_memory:  # outside the except block, whose traceback pins the failed sample's tensors
        record["error"]["released"] = release_memory()
    return "failed", lambda: store.save_failed(sample_id, record)


def score_settings(plans: list[MethodPlan], dataset: Dataset, out_dir: Path) -> dict[str, Any]:
    """The settings stored with the scores (network identities, dtypes), one entry per metric id."""
    settings: dict[str, Any] = {}
    for plan in plans:
        store = MethodStore(out_dir, dataset.key, plan.key)
        for sample_id in dataset.sample_ids():
            for metric_id, entry in store.load_scores(sample_id).items():
                if "settings" in entry:
                    settings.setdefault(metric_id, entry["settings"])
        for metric_id, entry in store.load_set_scores().items():
            settings.setdefault(metric_id, entry["settings"])
    return settings


# --------------------------------------------------------------------------------------------- report


def leaderboard(scores: pd.DataFrame, metric_ids: list[str]) -> pd.DataFrame:
    """One row per dataset × method variant: the mean of each metric (weighted where the metric pools),
    `n` samples scored, `failed` samples and `nan` samples with a metric value undefined by its protocol."""
    groups = []
    keys = ["dataset", "method", "method_key"]
    for (dataset, method, key), df in scores.groupby(keys, sort=True):
        row: dict[str, Any] = {"dataset": dataset, "method": method, "method_key": key}
        ok = df[df["status"] != "failed"]
        for metric_id in metric_ids:
            values = ok[(ok["metric"] == metric_id) & ok["value"].notna()]
            if values.empty:
                row[metric_id] = np.nan
            elif METRICS.get(metric_id).aggregation == "weighted_mean":
                row[metric_id] = float(np.average(values["value"], weights=values["weight"]))
            else:
                row[metric_id] = float(values["value"].mean())
        row["n"] = int(ok["sample_id"].nunique())
        row["failed"] = int(df.loc[df["status"] == "failed", "sample_id"].nunique())
        row["nan"] = int(df.loc[df["status"] == "undefined", "sample_id"].nunique())
        groups.append(row)
    board = pd.DataFrame(groups, columns=keys + list(metric_ids) + ["n", "failed", "nan"])
    board["method"] = variant_labels(board)
    return board.drop(columns=["method_key"])


def variant_labels(df: pd.DataFrame) -> pd.Series:
    """The `method` column, with the method key appended only where one dataset holds several variants
    of the same method (so a plain run keeps plain names and a sweep stays unambiguous)."""
    if df.empty:
        return df["method"]
    variants = df.groupby(["dataset", "method"])["method_key"].transform("nunique")
    return df["method"].where(variants == 1, df["method"] + " [" + df["method_key"] + "]")


def interval_table(stats: pd.DataFrame, metric_ids: list[str], floatfmt: str = ".4f") -> pd.DataFrame:
    """Wide view of `harness.stats.score_stats`: one row per dataset × method, `mean [low, high]` per metric."""
    def cell(row: Any) -> str:
        if np.isnan(row["mean"]):
            return "nan"
        if np.isnan(row["ci_low"]):
            return format(row["mean"], floatfmt)
        return f"{row['mean']:{floatfmt}} [{row['ci_low']:{floatfmt}}, {row['ci_high']:{floatfmt}}]"

    labelled = stats.assign(method=variant_labels(stats), cell=stats.apply(cell, axis=1) if len(stats) else [])
    wide = labelled.pivot_table(index=["dataset", "method"], columns="metric", values="cell", aggfunc="first")
    return wide.reindex(columns=[m for m in metric_ids if m in wide.columns]).reset_index().rename_axis(columns=None)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "nan" if np.isnan(v) else format(float(v), floatfmt)
        return str(v)

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def smoke_reasons(settings: Mapping[str, Any], plans: list[MethodPlan]) -> list[str]:
    """Why this run's numbers mean nothing (random-weight models or networks); empty for a real run."""
    return random_model_reasons(((p.name, (p.description.get("model") or {}).get("identity")) for p in plans), settings)


def report_stage(out_dir: Path, scores: pd.DataFrame, metric_ids: list[str], reasons: list[str], *,
                 resamples: int = 2000, ci_seed: int = 0) -> tuple[pd.DataFrame, Path]:
    """Write scores.csv, leaderboard.csv/.md (means, n, failed) and leaderboard_ci.csv (bootstrap intervals,
    also appended to leaderboard.md)."""
    from harness.stats import score_stats

    atomic_write_bytes(out_dir / "scores.csv", scores.drop(columns=["method_key"]).to_csv(index=False).encode())
    board = leaderboard(scores, metric_ids)
    atomic_write_bytes(out_dir / "leaderboard.csv", board.to_csv(index=False).encode())
    stats = score_stats(scores, metric_ids, resamples=resamples, seed=ci_seed)
    ci_csv = stats.assign(method=variant_labels(stats)).drop(columns=["method_key"])
    atomic_write_bytes(out_dir / "leaderboard_ci.csv", ci_csv.to_csv(index=False).encode())
    lines = ["# Leaderboard", ""]
    if reasons:
        lines += ["> **SMOKE RUN — these numbers mean nothing.** Random-weight networks were used:", ">"]
        lines += [f"> - {r}" for r in reasons] + [""]
    lines += ["Raw metric values (no table scaling); `n` = samples scored, `failed` = samples whose edit failed, "
              "`nan` = samples with a metric undefined for them (excluded from that metric's mean).", "",
              markdown_table(board), ""]
    if len(stats):
        lines += ["## 95% bootstrap intervals", "",
                  f"`mean [low, high]`: percentile bootstrap over samples ({resamples} resamples, seeded per cell; "
                  "harness/stats.py). Also in `leaderboard_ci.csv`.", "",
                  markdown_table(interval_table(stats, metric_ids)), ""]
    path = out_dir / "leaderboard.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return board, path


# ------------------------------------------------------------------------------------------------ run


def write_run_json(out_dir: Path, cfg: Mapping[str, Any], dataset: Dataset, extra: Mapping[str, Any],
                   name: str = "run.json") -> None:
    """The run record; sharded jobs pass `scaleout.run_file_name` so shards never overwrite each other."""
    payload = {"config": cfg, "git": git_commit(), "versions": versions(), "device": device_info(),
               "seed": cfg.get("seed"), "dataset": {"name": dataset.name, "key": dataset.key, "root": dataset.loader.root,
                                                    "samples": {i: _fingerprint(dataset, i) for i in dataset.sample_ids()},
                                                    "refused_ids": dataset.refused_ids},
               **extra}
    atomic_write_json(out_dir / name, payload)


def _fingerprint(dataset: Dataset, sample_id: str) -> str:
    # A sample whose files are broken is recorded as failed by the edit stage; here it only must not stop the run.
    try:
        return dataset.loader.fingerprint(sample_id)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


def collect_timesteps(out_dir: Path, dataset: Dataset, plans: list[MethodPlan]) -> dict[str, Any]:
    """Scheduler timesteps the methods actually used (from the records), one entry per method variant."""
    used: dict[str, Any] = {}
    for plan in plans:
        store = MethodStore(out_dir, dataset.key, plan.key)
        for sample_id in dataset.sample_ids():
            record = store.load_record(sample_id) or {}
            steps = {k: v for k, v in (record.get("info") or {}).items() if k.endswith("timesteps")}
            if steps:
                used[plan.key] = steps
                break
    return used

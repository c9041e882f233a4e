"""The run record (`run.json`) and what it gathers from the store: scheduler timesteps the methods used, the
settings stored with the scores, and why a run is a smoke run."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness.data.base import Dataset
from harness.environment import device_info, git_commit, versions
from harness.results import random_model_reasons
from harness.store import MethodStore, atomic_write_json

if TYPE_CHECKING:
    from harness.planning import MethodPlan


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_run_json(out_dir: Path, cfg: Mapping[str, Any], dataset: Dataset, extra: Mapping[str, Any],
                   name: str = "run.json") -> None:
    """The run record; sharded jobs pass `scaleout.run_file_name` so shards never overwrite each other."""
    payload = {"config": cfg, "git": git_commit(), "versions": versions(), "device": device_info(),
               "seed": cfg.get("seed"), "dataset": {"name": dataset.name, "key": dataset.key, "root": dataset.loader.root,
                                                    "root_path": _root_path(dataset),
                                                    "samples": {i: _fingerprint(dataset, i) for i in dataset.sample_ids()},
                                                    "refused_ids": dataset.refused_ids},
               **extra}
    atomic_write_json(out_dir / name, payload)


def _root_path(dataset: Dataset) -> str | None:
    """The root as resolved when the run started: a relative `dataset.root` alone does not say which files ran."""
    path = dataset.loader.root_path
    return None if path is None else str(path)


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


def smoke_reasons(settings: Mapping[str, Any], plans: list[MethodPlan]) -> list[str]:
    """Why this run's numbers mean nothing (random-weight models or networks); empty for a real run."""
    return random_model_reasons(((p.name, (p.description.get("model") or {}).get("identity")) for p in plans), settings)

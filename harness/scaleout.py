"""Running one sweep as many jobs: shard-aware run files and one GPU per job.

Sharded runs (`shard.count > 1`) only do per-sample work (edit, and score, which caches values per
sample), because every shard writes into the same store: the run-level files (scores.csv, leaderboard,
report.html) would describe one shard and race with the others. So a sharded job skips the report
stage and writes `run.shard-<i>-of-<n>.json`; one merge run with the default `shard.count=1`
(`stages=[score,report]`) then sees every sample of every shard, reuses all cached scores, and reports.

One GPU per job: when several GPUs are visible, a job restricts itself to one of them, chosen by its slot
(the shard index in a sharded run, else Hydra's multirun job number) modulo the number of visible GPUs,
by setting `CUDA_VISIBLE_DEVICES` before anything touches CUDA. A SLURM job launched with one GPU (or a
shell that already set a single device) sees one GPU, and nothing changes. With Hydra's joblib launcher
a worker process runs several jobs in turn: it keeps the GPU its first job chose, so run as many workers
(`hydra.launcher.n_jobs`) as GPUs and as many shards as workers.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any, Mapping

log = logging.getLogger("harness")


def shard_of(container: Mapping[str, Any]) -> tuple[int, int]:
    shard = dict(container.get("shard") or {})
    return int(shard.get("index", 0)), int(shard.get("count", 1))


def run_file_name(container: Mapping[str, Any]) -> str:
    """`run.json`, or `run.shard-<i>-of-<n>.json` for a sharded job (shards never overwrite each other)."""
    index, count = shard_of(container)
    return "run.json" if count == 1 else f"run.shard-{index}-of-{count}.json"


def job_slot(container: Mapping[str, Any]) -> int | None:
    """The shard index in a sharded run, else Hydra's multirun job number, else None (a single run)."""
    index, count = shard_of(container)
    if count > 1:
        return index
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return int(HydraConfig.get().job.num)
    except (ImportError, ValueError, AttributeError):
        pass
    return None


def visible_gpus() -> list[str]:
    """GPU ids this process may use: `CUDA_VISIBLE_DEVICES` if set, else what nvidia-smi lists (asking the
    CUDA runtime instead would initialise it and freeze the device list before we could narrow it)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def pin_gpu(slot: int | None) -> str | None:
    """Restrict this process to GPU `visible[slot % n]`; returns the chosen id, or None if nothing changed."""
    if slot is None:
        return None
    visible = visible_gpus()
    if len(visible) <= 1:
        return None
    choice = slot % len(visible)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        # Too late to hide devices in this process: make the chosen one the current device instead.
        torch.cuda.set_device(choice)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[choice]
    log.info("job slot %d: using GPU %s of %s", slot, visible[choice], ",".join(visible))
    return visible[choice]

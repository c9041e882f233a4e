"""Shared helpers for GPU benchmark scripts: device-synchronised timing, result files, environment."""
from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def harness_runtime(cudnn_attention: bool = False, tf32_matmul: bool = False) -> None:
    """The process-wide kernel settings `python -m harness` applies (harness/determinism.py; defaults unless
    asked), so a benchmark measures what a run does."""
    from harness.determinism import configure_kernels

    configure_kernels({"cudnn_attention": cudnn_attention, "tf32_matmul": tf32_matmul})


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], warmup: int, repeat: int) -> dict[str, float]:
    """Median/min/max seconds of `fn` after `warmup` calls, each timed between device synchronisations."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeat": repeat}


def matmul_tflops(dtype: torch.dtype = torch.float16, n: int = 8192, repeat: int = 10) -> float:
    """Measured dense matmul rate on random data (the ceiling used for FLOP floors)."""
    if not torch.cuda.is_available():
        return float("nan")
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    timing = time_fn(lambda: a @ b, warmup=3, repeat=repeat)
    return 2 * n ** 3 / timing["median_s"] / 1e12


def environment() -> dict[str, Any]:
    from harness.environment import device_info, git_commit, versions

    return {"device": device_info(), "versions": versions(), "git": git_commit(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_result(name: str, payload: dict[str, Any], smoke: bool, out: str | Path | None = None) -> Path:
    tag = "smoke" if smoke else (torch.cuda.get_device_name(0).replace(" ", "_") if torch.cuda.is_available() else "cpu")
    path = Path(out) if out else RESULTS / f"{name}-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**environment(), **payload}, indent=1, default=str) + "\n")
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = [max(len(str(c)), *(len(_fmt(r.get(c))) for r in rows)) for c in cols]
    print("  ".join(str(c).ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(cols, widths)))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

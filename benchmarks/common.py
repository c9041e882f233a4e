"""Shared helpers for GPU benchmark scripts: device-synchronised timing, result files, environment."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
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


def random_sd15_config(smoke: bool) -> dict[str, Any]:
    """The model config of the drag-method GPU benchmarks: full-size random SD 1.5 in fp16 on the GPU (NCHW,
    the `ModelSpec` default, as every table in NOTES.md), or the tiny random model on the CPU for `--smoke`."""
    if smoke:
        return {"name": "tiny", "source": "random", "arch": "tiny", "device": "cpu"}
    return {"name": "random_sd15", "source": "random", "arch": "sd15", "dtype": "float16", "device": "cuda"}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    """`fn()` and the seconds it took, device-synchronised (harness.diffusion.timing.device_timer, the
    harness's own timer, so that a benchmark measures what a run records)."""
    from harness.diffusion.timing import device_timer

    with device_timer("cuda" if torch.cuda.is_available() else None, peak_memory=False) as timer:
        result = fn()
    return result, timer["seconds"]


def timed(fn: Callable[[], Any]) -> float:
    """Device-synchronised seconds of one call of `fn`."""
    return timed_call(fn)[1]


def time_fn(fn: Callable[[], Any], warmup: int, repeat: int) -> dict[str, float]:
    """Median/min/max seconds of `fn` after `warmup` calls, each timed between device synchronisations."""
    for _ in range(warmup):
        fn()
    times = [timed(fn) for _ in range(repeat)]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeat": repeat}


def matmul_tflops(dtype: torch.dtype = torch.float16, n: int = 8192, repeat: int = 10) -> float:
    """Measured dense matmul rate on random data (the ceiling used for FLOP floors)."""
    if not torch.cuda.is_available():
        return float("nan")
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    timing = time_fn(lambda: a @ b, warmup=3, repeat=repeat)
    return 2 * n ** 3 / timing["median_s"] / 1e12


def benchmark_parser(doc: str | None, smoke_help: str = "tiny model on the CPU (a check that the script runs)",
                     out_help: str = "result JSON (default: benchmarks/results/<name>-<device>.json)") -> argparse.ArgumentParser:
    """The arguments every benchmark script shares: `--smoke` (a CPU check, results tagged `smoke`) and
    `--out` (where `write_result` writes); a script adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--out", default=None, help=out_help)
    return parser


def environment() -> dict[str, Any]:
    """The environment record of every result file: device, library versions, git commit, command, date."""
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

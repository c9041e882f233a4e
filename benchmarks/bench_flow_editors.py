"""Time per edit and peak memory of the FLUX PIE-Bench editors with full-size random FLUX.1-dev weights (bf16).

    python benchmarks/bench_flow_editors.py                  # random_flux_dev on the GPU, 512² and 1024², released defaults
    python benchmarks/bench_flow_editors.py --smoke          # tiny_flux on the CPU, 64², 2 steps: checks the script
    python benchmarks/bench_flow_editors.py --budget-s 150   # stop starting new items after 150 s
    python benchmarks/bench_flow_editors.py --editors rf_solver_edit flux_kontext --sizes 1024   # a subset

Each editor runs its released defaults (conf/method/<name>.yaml) on a synthetic PIE-Bench-like image (a disc and
a box mask, tests/pie_fixtures.py) after one warm-up edit of the same editor with 2 steps at that size; the time
is the harness's own device-synchronised wall clock of `edit` (VAE, T5/CLIP prompt encoding, inversion and
sampling), with torch.cuda.max_memory_allocated over that edit. KV-Edit keeps its K/V bank in host memory at
1024² (the release's `.cpu()`; 57 blocks × 24 steps × K/V × 4096 tokens is 68 GB in bf16). FLUX.1-Kontext runs
last, on random_flux_kontext, if the budget allows (its pipeline resizes to 1024² by default). The result JSON
is written after every item.
"""
from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import benchmark_parser, harness_runtime, print_table, timed_call, write_result  # noqa: E402
from harness.config import compose  # noqa: E402
from harness.registry import METHODS  # noqa: E402
from tests.pie_fixtures import pie_sample  # noqa: E402

EDITORS = ("fireflow", "kv_edit", "flowedit", "rf_solver_edit")
WARMUP = {"rf_solver_edit": dict(steps=2, inject=2), "fireflow": dict(steps=2, inject=1), "flowedit": dict(steps=2, n_max=2),
          "kv_edit": dict(steps=2, skip_step=0), "flux_kontext": dict(steps=2)}


def build(name: str, size: int, smoke: bool, warmup: bool):
    params = dict(compose([f"method={name}"])["method"][name] or {})
    if warmup or smoke:
        params.update(WARMUP[name])
    if name == "kv_edit" and size >= 1024:
        params["offload_bank"] = True
    if name == "flux_kontext" and smoke:
        params["auto_resize"] = False
    return METHODS.get(name).build(params)


def measure(name: str, models, size: int, smoke: bool) -> dict:
    sample = pie_sample(size=size)
    warm = build(name, size, smoke, warmup=True)
    warm.setup(models)
    warm.edit(sample, 1234)
    method = build(name, size, smoke, warmup=False)
    method.setup(models)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result, seconds = timed_call(lambda: method.edit(sample, 1234))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return {"editor": name, "size": size, "edit_s": round(seconds, 3), "peak_gib": round(peak, 2),
            **{f"{k}_s": round(v, 3) for k, v in result.timings.items()}, "config": method.describe()["config"]}


def load(model: str, smoke: bool):
    from harness.models import load_models

    spec = dict(compose([f"model={model}"])["model"])
    return load_models({**spec, "device": "cpu"} if smoke else spec)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--budget-s", type=float, default=170.0, help="start no new item after this many seconds")
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--editors", nargs="+", default=[*EDITORS, "flux_kontext"], choices=[*EDITORS, "flux_kontext"])
    args = parser.parse_args()
    harness_runtime()
    start = time.perf_counter()
    sizes = [64] if args.smoke else [int(s) for s in args.sizes.split(",")]
    rows, payload = [], {"model": None, "rows": []}
    models, load_s = timed_call(lambda: load("tiny_flux" if args.smoke else "random_flux_dev", args.smoke))
    payload.update(model=models.describe(), load_s=round(load_s, 2))
    print(f"loaded {models.spec.name} in {load_s:.1f} s", flush=True)
    plan = [(name, size) for size in sizes for name in EDITORS if name in args.editors]
    for name, size in plan:
        if time.perf_counter() - start > args.budget_s:
            payload.setdefault("skipped", []).append(f"{name}@{size}")
            continue
        try:
            row = measure(name, models, size, args.smoke)
        except Exception as exc:  # one failure must not lose the other measurements
            row = {"editor": name, "size": size, "error": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)
        print(row, flush=True)
        payload["rows"] = rows
        write_result("flow_editors", payload, args.smoke, args.out)
    wants_kontext = "flux_kontext" in args.editors
    if wants_kontext and time.perf_counter() - start < args.budget_s:
        del models
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            kontext = load("tiny_flux_kontext" if args.smoke else "random_flux_kontext", args.smoke)
            rows.append(measure("flux_kontext", kontext, sizes[0], args.smoke))
        except Exception as exc:
            rows.append({"editor": "flux_kontext", "size": sizes[0], "error": f"{type(exc).__name__}: {exc}"[:300]})
        print(rows[-1], flush=True)
    elif wants_kontext:
        payload.setdefault("skipped", []).append(f"flux_kontext@{sizes[0]}")
    payload["rows"], payload["total_s"] = rows, round(time.perf_counter() - start, 1)
    path = write_result("flow_editors", payload, args.smoke, args.out)
    print_table([{k: v for k, v in r.items() if k != "config"} for r in rows])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

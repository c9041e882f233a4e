"""Per-edit time of the drag methods at 512×512 with full-size random SD 1.5 weights (fp16), LoRA fitting
and drag reported apart (as the papers report them), next to RegionDrag's time from the same process.

    python benchmarks/bench_drag_methods.py                        # GPU: random_sd15, fp16, 512×512
    python benchmarks/bench_drag_methods.py --methods dragdiffusion regiondrag
    python benchmarks/bench_drag_methods.py --smoke --out /tmp/x.json   # CPU: tiny model, 64×64

Every method runs with its documented defaults, except that the LoRA cache is off so each edit fits its
LoRA. Before timing, each method runs once with a handful of steps to warm up kernels. With random weights
the drag loops rarely meet their early-stopping tests, so drag times are close to the full step budgets;
the JSON records the updates each run actually made (`drag_updates`) next to the times.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_regiondrag import synthetic_sample  # noqa: E402
from benchmarks.common import (benchmark_parser, harness_runtime, print_table, random_sd15_config,  # noqa: E402
                               write_result)
from harness.models import load_models  # noqa: E402
from harness.registry import METHODS  # noqa: E402

METHODS_TIMED = ("regiondrag", "dragdiffusion", "dragnoise", "freedrag", "gooddrag", "sdedrag")
# on their own models/components, split into load / warm-up / per-image, beside their releases (bench_fast_drag.py)
STAGED = ("inpaint4drag", "fastdrag", "lightningdrag")
# timed only when named (--methods): the 2024–25 methods of issue #16
EXTRA_TIMED = ("draglora", "diffeditor", "dragondiffusion")
# fields the timed (non-smoke) run sets: DiffEditor/DragonDiffusion at 512² (their UI default is 768)
TIMED_PARAMS = {"diffeditor": dict(resolution=512), "dragondiffusion": dict(resolution=512)}
_FEW = dict(lora_steps=2, lora_resolution=64, lora_batch_size=1, steps=5)
FEW_STEPS = {  # warm-up runs, and the whole run under --smoke
    "regiondrag": {},
    "dragdiffusion": dict(_FEW, n_pix_step=3),
    "dragnoise": dict(_FEW, n_pix_step=3, point_tracking_border="intended"),
    "freedrag": dict(_FEW, max_step=4),
    "gooddrag": dict(_FEW, drag_end_step=2, track_per_step=2, max_drag_per_track=2, point_tracking_border="intended"),
    "sdedrag": dict(lora_steps=2, steps=20, t0=0.3),
    "draglora": dict(_FEW, n_pix_step=3),
    "diffeditor": dict(steps=4, resolution=64),
    "dragondiffusion": dict(steps=4, resolution=64),
}
# timed variants of a registered method: name → (method, config overrides); run with --methods NAME
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "regiondrag_ip_off": ("regiondrag", {"ip_adapter": "off"}),  # RegionDrag without its IP-Adapter Plus
}
INFO_KEYS = ("drag_updates", "drag_stopped", "tracks", "rounds", "sub_drags", "lora_cache")


def build(name: str, models, params: dict[str, Any]):
    name, overrides = VARIANTS.get(name, (name, {}))
    params = {**overrides, **params}
    cls = METHODS.get(name)
    if "lora_cache" in {f for f in cls.Config.__dataclass_fields__}:
        params = {**params, "lora_cache": False}
    method = cls.build(params)
    method.setup(models)
    return method


def timed_edit(method, sample, device: torch.device) -> dict[str, Any]:
    """One edit timed as the edit stage times it (harness.diffusion.timing.device_timer)."""
    from harness.diffusion.timing import device_timer

    with device_timer(device) as timer:
        result = method.edit(sample, 42)
    total = timer["seconds"]
    lora = float(result.timings.get("lora", 0.0))
    return {"total_s": total, "lora_s": lora, "edit_s": total - lora,
            "stages_s": {k: float(v) for k, v in result.timings.items()},
            "peak_mib": timer["peak_mib"],
            "info": {k: result.info[k] for k in INFO_KEYS if k in result.info}}


def main(argv: list[str] | None = None) -> Path:
    parser = benchmark_parser(__doc__, "tiny model on the CPU at 64×64, few steps", "JSON path (default benchmarks/results/)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--methods", nargs="+", default=list(METHODS_TIMED),
                        choices=[*METHODS_TIMED, *EXTRA_TIMED, *VARIANTS, *STAGED])
    parser.add_argument("--releases", type=Path, default=None, help="fetched releases to time beside ours (STAGED methods)")
    args = parser.parse_args(argv)
    harness_runtime()
    size = 64 if args.smoke else args.size
    model_cfg = random_sd15_config(args.smoke)
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke on a CPU")

    started = time.perf_counter()
    models = load_models(model_cfg)
    load_s = time.perf_counter() - started
    sample = synthetic_sample(size)
    names = ["regiondrag", *[n for n in args.methods if n != "regiondrag"]]  # RegionDrag is the yardstick
    payload: dict[str, Any] = {"size": size, "model": models.describe(), "seed": 42, "load_s": load_s, "methods": {}}
    for name in names:
        if name in STAGED:
            from benchmarks.bench_fast_drag import staged

            try:
                payload["methods"][name] = staged(name, args.smoke, size, args.releases)
                print(name, {k: payload["methods"][name][k] for k in ("load_s", "warmup_s", "per_image_s")}, flush=True)
            except Exception as exc:
                payload.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
                print(f"{name} failed: {payload['failed'][name]}", flush=True)
            write_result("drag_methods", payload, args.smoke, args.out)  # keep what is measured so far
            continue
        try:
            few = FEW_STEPS[VARIANTS.get(name, (name,))[0]]
            timed = {} if args.smoke else TIMED_PARAMS.get(name, {})
            t0 = time.perf_counter()
            warm = build(name, models, {**few, **timed})  # loads the method's components (IP-Adapter, ...) once per process
            method_load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm.edit(sample, 42)  # warm-up
            warmup_s = time.perf_counter() - t0
            params = few if args.smoke else timed
            method = build(name, models, params)
            run = timed_edit(method, sample, models.device)
            run.update(load_s=method_load_s, warmup_s=warmup_s)
        except Exception as exc:  # record the failure and time the other methods
            payload.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name} failed: {payload['failed'][name]}", flush=True)
            continue
        run["config"] = {k: v for k, v in method.describe()["config"].items()}
        payload["methods"][name] = run
        print(name, {k: run[k] for k in ("total_s", "lora_s", "edit_s", "warmup_s")}, run["stages_s"], flush=True)
        write_result("drag_methods", payload, args.smoke, args.out)  # so far: a later failure or timeout keeps it
    base = payload["methods"]["regiondrag"]["total_s"]
    rows = []
    for name, run in payload["methods"].items():
        run["ratio_total_to_regiondrag"] = run["total_s"] / base
        run["ratio_edit_to_regiondrag"] = run["edit_s"] / base
        rows.append({"method": name, "total_s": run["total_s"], "lora_s": run["lora_s"], "drag_s": run["edit_s"],
                     "x_regiondrag": run["ratio_total_to_regiondrag"],
                     "drag_x_regiondrag": run["ratio_edit_to_regiondrag"], "peak_mib": run["peak_mib"],
                     "updates": run["info"].get("drag_updates", run["info"].get("sub_drags", ""))})
    print_table(rows)
    path = write_result("drag_methods", payload, args.smoke, args.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()

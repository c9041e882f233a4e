"""The optimisation-based drag methods with and without CUDA graphs for their gradient passes, side by side in
one process on one GPU (issue #20, target 1), plus the `deterministic=true` check (target 5).

    python benchmarks/bench_graphed_drag.py --out /tmp/x.json            # GPU: random_sd15 fp16, 512²
    python benchmarks/bench_graphed_drag.py --smoke --out /tmp/x.json    # CPU: tiny model (tests the script)

Per method (documented defaults, LoRA cache off, DragNoise's LoRA at its 200 published steps as
bench_drag_methods.py runs it):
1. parity: a few-step edit eagerly (`cuda_graphs=false`) and with graphs, max and mean |Δ| of the PNGs, beside
   two yardsticks: the eager edit twice (the GPU's own run-to-run spread) and with other seeds (the protocol's
   freedom); the same for the LoRA weights of a short fit;
2. one full edit with graphs, stages apart (`lora`, `inversion`, `drag`, `denoise`, `decode`), then the same
   edit eagerly while the time budget (`--budget-s`) allows, and the two outputs compared.
Determinism: `benchmarks/check_determinism.py` twice with `deterministic=true` and once without, each a
fresh process (cuBLAS's workspace setting must precede CUDA's initialisation). The JSON is rewritten after
every item, so a failure or the device's time limit loses nothing measured before it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_drag_methods import FEW_STEPS, build  # noqa: E402
from benchmarks.bench_regiondrag import synthetic_sample  # noqa: E402
from benchmarks.common import benchmark_parser, harness_runtime, random_sd15_config, write_result  # noqa: E402

METHODS = ("dragdiffusion", "gooddrag", "freedrag", "dragnoise", "sdedrag")
BENCH = {"dragnoise": {"lora_steps": 200}}  # as bench_drag_methods' table (NOTES.md)
T0 = time.perf_counter()


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.mean()),
            "identical_fraction": float((diff == 0).mean())}


def lora_parity(models, size: int) -> dict[str, Any]:
    """A short LoRA fit eagerly and with graphs, for each data mode (per_step, once, none), max |Δ| of the
    weights; beside it the yardsticks: the same eager fit twice (the GPU's own run-to-run freedom) and an
    eager fit with another LoRA seed (the protocol's freedom)."""
    from harness.diffusion.graphed_grad import training_graphs
    from harness.diffusion.lora import LoraSpec, fit_lora

    image = synthetic_sample(size).image

    def fit(spec: LoraSpec, graphs: bool) -> dict[str, torch.Tensor]:
        with training_graphs(graphs):
            return fit_lora(models, models.vae, image, "a photo", spec)

    def gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return max(float((a[k] - b[k]).abs().max()) for k in a)

    out = {}
    for augment, batch in (("per_step", 4), ("once", 4), ("none", 1)):
        spec = LoraSpec(rank=16, steps=5, batch_size=batch, augment=augment, resolution=size)
        eager = fit(spec, False)
        out[augment] = {"graphs_vs_eager": gap(eager, fit(spec, True)), "eager_vs_eager": gap(eager, fit(spec, False)),
                        "seed_change": gap(eager, fit(LoraSpec(**{**vars(spec), "seed": 1}), False))}
    return out


def parity_few_steps(name: str, models, sample) -> dict[str, Any]:
    """A few-step edit with graphs against the same edit eagerly; beside it the yardsticks: the eager edit
    twice (run-to-run freedom of today's path) and with other seeds (the protocol's freedom: edit seed 43 and
    `lora_seed` 1, since the DDIM-inversion methods draw no noise from the edit seed)."""
    def edit(graphs: bool, seed: int = 42, lora_seed: int = 0) -> np.ndarray:
        params = {**FEW_STEPS[name], "cuda_graphs": graphs, "lora_seed": lora_seed}
        return build(name, models, params).edit(sample, seed).image

    eager = edit(False)
    return {"graphs_vs_eager": compare(eager, edit(True)), "eager_vs_eager": compare(eager, edit(False)),
            "seed_change": compare(eager, edit(False, 43, 1))}


def full_run(name: str, models, sample, smoke: bool, graphs: bool, runs: dict[str, Any]) -> dict[str, Any]:
    """One documented-defaults edit (graphs or eager), stages apart; the output kept for the comparison."""
    params = FEW_STEPS[name] if smoke else BENCH.get(name, {})
    out, runs[(name, graphs)] = timed(build(name, models, {**params, "cuda_graphs": graphs}), sample, models.device)
    print(name, "graphs" if graphs else "eager", {k: round(v, 3) for k, v in out["stages_s"].items()},
          round(out["total_s"], 2), flush=True)
    if (name, not graphs) in runs:
        out["parity_full_vs_other_path"] = compare(runs[(name, True)], runs[(name, False)])
    return out


def timed(method, sample, device: torch.device) -> tuple[dict[str, Any], np.ndarray]:
    """One edit timed as the edit stage times it, stages apart, and its output."""
    from harness.diffusion.timing import device_timer

    with device_timer(device) as timer:
        result = method.edit(sample, 42)
    return ({"total_s": timer["seconds"], "peak_mib": timer["peak_mib"],
             "stages_s": {k: float(v) for k, v in result.timings.items()},
             "drag_updates": result.info.get("drag_updates", result.info.get("sub_drags"))}, result.image)


def determinism(models, sample, smoke: bool) -> dict[str, Any]:
    """Two fresh processes with `deterministic=true` (check_determinism.py); the default settings' times of
    the same edits from this process, for the cost."""
    from benchmarks.check_determinism import SHORT, SMOKE
    from harness.registry import METHODS as REGISTRY

    runs: dict[str, Any] = {"default": {}}
    for name, params in SHORT.items():
        method = REGISTRY.get(name).build({**params, **(SMOKE.get(name, {}) if smoke else {})})
        method.setup(models)
        method.edit(sample, 42)
        runs["default"][name] = {"seconds": timed(method, sample, models.device)[0]["total_s"]}
    script = str(Path(__file__).resolve().parent / "check_determinism.py")
    for label in ("deterministic_1", "deterministic_2"):
        cmd = [sys.executable, script, "--deterministic", *(["--smoke"] if smoke else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=360)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        runs[label] = json.loads(lines[-1]) if lines else {"error": done.stderr[-2000:]}
        print(label, runs[label], flush=True)
    a, b = runs["deterministic_1"], runs["deterministic_2"]
    runs["identical_pngs"] = {m: a.get(m, {}).get("png_sha256") is not None
                              and a.get(m, {}).get("png_sha256") == b.get(m, {}).get("png_sha256") for m in SHORT}
    return runs


def main(argv: list[str] | None = None) -> Path:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--budget-s", type=float, default=250.0, help="no eager baseline started after this")
    parser.add_argument("--skip", nargs="*", default=[], choices=("parity", "methods", "determinism"))
    args = parser.parse_args(argv)
    from harness.models import load_models

    harness_runtime()
    model_cfg = random_sd15_config(args.smoke)
    models = load_models(model_cfg)
    size = 64 if args.smoke else 512
    sample = synthetic_sample(size)
    payload: dict[str, Any] = {"size": size, "model": models.describe(), "methods": {}, "failed": {}}

    def save() -> None:
        write_result("graphed_drag", payload, args.smoke, args.out)

    def item(name: str, fn, into: dict[str, Any], label: str = "") -> None:
        try:
            into[name] = fn()
        except Exception as exc:  # one failure must not lose the other measurements
            payload["failed"][label or name] = f"{type(exc).__name__}: {exc}"
            print(name, "failed:", traceback.format_exc(), flush=True)
        save()

    images: dict[Any, np.ndarray] = {}
    if "parity" not in args.skip:
        item("lora_parity_max_abs_diff", lambda: lora_parity(models, size), payload)
        for name in args.methods:
            item(f"{name}_parity_few_steps", lambda: parity_few_steps(name, models, sample), payload)
    def eager(names: list[str]) -> None:
        for name in names:
            if time.perf_counter() - T0 > args.budget_s:
                payload["methods"][name]["eager"] = "skipped: time budget"
                continue
            item("eager", lambda: full_run(name, models, sample, args.smoke, False, images), payload["methods"][name],
                 f"{name} eager")
            run = payload["methods"][name]
            if isinstance(run.get("eager"), dict) and isinstance(run.get("graphs"), dict):
                run["speedup_total"] = run["eager"]["total_s"] / run["graphs"]["total_s"]
            save()

    methods = "methods" not in args.skip
    if methods:
        for name in args.methods:
            payload["methods"].setdefault(name, {})
            item("graphs", lambda: full_run(name, models, sample, args.smoke, True, images), payload["methods"][name],
                 f"{name} graphs")
        eager(args.methods[:2])  # today's path side by side, the most used methods first
    if "determinism" not in args.skip:
        item("determinism", lambda: determinism(models, sample, args.smoke), payload)
    if methods:
        eager(args.methods[2:])
    payload["wall_s"] = time.perf_counter() - T0
    save()
    print(json.dumps(payload, default=str)[:6000])
    return Path(args.out) if args.out else Path("benchmarks/results")


if __name__ == "__main__":
    main()

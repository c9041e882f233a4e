"""One process's drag edits, with or without `deterministic=true`: PNG digests and times.

    python benchmarks/check_determinism.py --deterministic        # GPU: random_sd15 fp16, 512²
    python benchmarks/check_determinism.py --smoke                # CPU: tiny model

Run it twice with `--deterministic` (bench_graphed_drag.py does, each a fresh process, as two `python -m
harness` runs are): equal digests are the check; a run without the flag gives the cost. The settings are
switched on first, as `python -m harness` does (`harness.determinism.configure`): cuBLAS reads its workspace
setting when CUDA starts. RegionDrag and DragDiffusion are issue #20's check; GoodDrag, FreeDrag, DragNoise
and SDE-Drag ride along because they share DragDiffusion's gradient passes (LoRA fit, motion supervision).
The gradient methods run with a short LoRA and drag (10 steps each) to keep the check cheap; the operations
are those of a full edit. Each method edits twice in the process (warm-up, then timed): `repeat_identical`
compares those two too. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHORT = {
    "regiondrag": {},
    "dragdiffusion": {"lora_steps": 10, "n_pix_step": 10, "lora_cache": False},
    "gooddrag": {"lora_steps": 10, "drag_end_step": 2, "track_per_step": 3, "max_drag_per_track": 2,
                 "point_tracking_border": "intended", "lora_cache": False},
    "freedrag": {"lora_steps": 10, "max_step": 10, "lora_cache": False},
    "dragnoise": {"lora_steps": 10, "n_pix_step": 10, "point_tracking_border": "intended", "lora_cache": False},
    "sdedrag": {"lora_steps": 10, "steps": 50, "lora_cache": False},
}
SMOKE = {name: {"lora_resolution": 64, "lora_batch_size": 1, "steps": 5} for name in SHORT if name != "regiondrag"}
SMOKE["sdedrag"] = {"lora_resolution": 64, "steps": 10, "t0": 0.3}  # CPU: small LoRA crops, few steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--methods", nargs="+", default=list(SHORT), choices=list(SHORT))
    args = parser.parse_args(argv)
    from harness.determinism import configure

    state = configure(args.deterministic)
    from benchmarks.common import harness_runtime, random_sd15_config

    harness_runtime()  # the kernel choices `python -m harness` makes by default (no cuDNN attention, no TF32)
    from benchmarks.bench_regiondrag import synthetic_sample
    from harness.diffusion.timing import device_timer
    from harness.models import load_models
    from harness.registry import METHODS
    from harness.store import png_bytes

    cfg = random_sd15_config(args.smoke)
    models = load_models(cfg)
    sample = synthetic_sample(64 if args.smoke else 512)
    out: dict = {"deterministic": state}
    for name in args.methods:
        try:
            method = METHODS.get(name).build({**SHORT[name], **(SMOKE.get(name, {}) if args.smoke else {})})
            method.setup(models)
            first = hashlib.sha256(png_bytes(method.edit(sample, 42).image)).hexdigest()  # also the warm-up
            with device_timer(models.device) as timer:
                image = method.edit(sample, 42).image
            digest = hashlib.sha256(png_bytes(image)).hexdigest()
            out[name] = {"png_sha256": digest, "repeat_identical": digest == first, "seconds": timer["seconds"]}
        except Exception as exc:  # e.g. an operation without a deterministic kernel: the finding itself
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
    print(json.dumps(out, default=str), flush=True)
    return out


if __name__ == "__main__":
    main()

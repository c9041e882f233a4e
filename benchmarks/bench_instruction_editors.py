"""Time the instruction editors per edit with full-size random weights: InstructPix2Pix / MagicBrush
(`random_instruct_pix2pix`, fp16, 512², the released 100 Euler-ancestral steps with text + image guidance:
three UNet passes per step) and Qwen-Image-Edit (`random_qwen_image_edit`, bf16, the released 1024² canvas and
true CFG: two 20B MM-DiT passes per step), each through the harness's method on a 512² PIE-Bench-sized sample.

Qwen-Image-Edit's 50 released steps do not fit a short device allowance: it is timed at `--qwen-steps` and
`2·--qwen-steps` steps, and the per-step time (the difference) and fixed part (text encoding with the image,
VAE encode/decode) give the 50-step estimate, labelled as such. Peak memory per editor (`max_memory_allocated`
after a reset). Each item is written to the JSON as soon as it is measured; `--smoke` runs the tiny models on
the CPU at small sizes.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import torch  # noqa: E402

from benchmarks.common import benchmark_parser, harness_runtime, timed_call, write_result  # noqa: E402
from harness.config import compose  # noqa: E402
from harness.models import load_models  # noqa: E402
from harness.models.provider import no_model_cache  # noqa: E402
from harness.registry import METHODS  # noqa: E402
from tests.pie_fixtures import pie_sample  # noqa: E402


def _peak_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _edit(method, sample, seed: int = 0) -> float:
    return timed_call(lambda: method.edit(sample, seed))[1]


def bench_ip2p(smoke: bool) -> dict:
    model = "tiny_instruct_pix2pix" if smoke else "random_instruct_pix2pix"
    t0 = time.perf_counter()
    models = load_models(compose([f"model={model}"])["model"])
    build_s = time.perf_counter() - t0
    steps, resolution = (2, 64) if smoke else (100, 512)
    method = METHODS.get("instruct_pix2pix").build({"steps": steps, "resolution": resolution})
    method.setup(models)
    sample = pie_sample(size=resolution)
    _peak_reset()
    warm = _edit(method, sample, 1)
    times = [_edit(method, sample, 0)]
    return {"model": models.describe(), "build_s": build_s, "steps": steps, "size": resolution, "first_edit_s": warm,
            "edit_s": min(times), "edit_s_all": times, "unet_passes": 3 * steps, "peak_mib": _peak_mib()}


def bench_qwen(smoke: bool, steps: int) -> dict:
    model = "tiny_qwen_image_edit" if smoke else "random_qwen_image_edit"
    t0 = time.perf_counter()
    models = load_models(compose([f"model={model}"])["model"])
    build_s = time.perf_counter() - t0
    area = 128 * 128 if smoke else 1024 * 1024
    sample = pie_sample(size=64 if smoke else 512)
    _peak_reset()
    out = {"model": models.describe(), "build_s": build_s, "canvas_area": area}
    for n in (steps, 2 * steps):
        method = METHODS.get("qwen_image_edit").build({"steps": n, "area": area})
        method.setup(models)
        if n == steps:
            out["first_edit_s"] = _edit(method, sample)
        out[f"edit_s_{n}_steps"] = _edit(method, sample)
    per_step = (out[f"edit_s_{2 * steps}_steps"] - out[f"edit_s_{steps}_steps"]) / steps
    fixed = out[f"edit_s_{steps}_steps"] - steps * per_step
    out.update(per_step_s=per_step, fixed_s=fixed, estimated_50_step_edit_s=fixed + 50 * per_step,
               estimate="fixed + 50 × per-step, from the two measured step counts", peak_mib=_peak_mib())
    return out


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--qwen-steps", type=int, default=2)
    parser.add_argument("--skip-qwen-after", type=float, default=60.0,
                        help="skip Qwen-Image-Edit when InstructPix2Pix took longer than this (s)")
    args = parser.parse_args()
    harness_runtime()
    payload: dict = {"results": {}}
    start = time.perf_counter()
    for name, fn in (("instruct_pix2pix", lambda: bench_ip2p(args.smoke)),
                     ("qwen_image_edit", lambda: bench_qwen(args.smoke, args.qwen_steps))):
        if name == "qwen_image_edit" and time.perf_counter() - start > args.skip_qwen_after:
            payload["results"][name] = {"skipped": f"InstructPix2Pix took > {args.skip_qwen_after} s"}
            continue
        try:
            with no_model_cache():  # the first editor's GPU memory is freed before the 20B model is built
                payload["results"][name] = fn()
        except Exception as exc:  # one failure must not lose the other measurement
            payload["results"][name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        print(name, payload["results"][name], flush=True)
        path = write_result("instruction_editors", payload, args.smoke, args.out)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print("wrote", path)


if __name__ == "__main__":
    main()

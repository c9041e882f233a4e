"""Where a LoRA-fit step's time goes, eager and with CUDA graphs (issue #20, target 1).

    python benchmarks/profile_lora_step.py --out /tmp/x.json            # GPU: random_sd15 fp16, 512²
    python benchmarks/profile_lora_step.py --smoke --out /tmp/x.json    # CPU: tiny model (tests the script)

The graphed batch-4 LoRA fits of DragDiffusion, FreeDrag and GoodDrag stay at 92–107 ms per step on an H100
(benchmarks/NOTES.md, session 8). If that is kernel time, graphs cannot take more off and the step needs
cheaper kernels; if the GPU idles, the host still limits it. Per data mode (per_step / once at batch 4, none
at batch 1): wall time per step, from two fits of different lengths (their difference, so set-up and graph
capture cancel), eager and graphed; and the kernel time per step from the profiler (sum of CUDA kernel
durations of a fit, over its steps), with the kernels grouped by kind and the largest listed.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_regiondrag import synthetic_sample  # noqa: E402
from benchmarks.common import benchmark_parser, harness_runtime, random_sd15_config, write_result  # noqa: E402

MODES = (("per_step", 4), ("once", 4), ("none", 1))
KINDS = (("attention", r"fmha|flash|attention|sdpa"), ("matmul", r"gemm|cutlass|xmma|cublas|sm\d+_"),
         ("convolution", r"conv|cudnn|implicit"), ("optimizer", r"adam|foreach|multi_tensor|amp_"),
         ("normalisation", r"norm"), ("elementwise / copy", r"elementwise|vectorized|unrolled|copy|cast|fill|reduce"))


def kind(name: str) -> str:
    low = name.lower()
    return next((label for label, pattern in KINDS if re.search(pattern, low)), "other")


def kernel_times(prof) -> dict[str, float]:
    """Seconds of CUDA kernel time by kernel name in a profile."""
    from torch.autograd import DeviceType

    out: dict[str, float] = {}
    for avg in prof.key_averages():
        if avg.device_type == DeviceType.CUDA:
            us = getattr(avg, "self_device_time_total", None) or getattr(avg, "self_cuda_time_total", 0)
            out[avg.key] = out.get(avg.key, 0.0) + us / 1e6
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--steps", type=int, nargs=2, default=[2, 12], help="the two fit lengths timed")
    args = parser.parse_args(argv)
    from harness.diffusion.graphed_grad import training_graphs
    from harness.diffusion.lora import LoraSpec, fit_lora
    from harness.models import load_models

    harness_runtime()
    cfg = random_sd15_config(args.smoke)
    models = load_models(cfg)
    size = 64 if args.smoke else 512
    image = synthetic_sample(size).image
    cuda = models.device.type == "cuda"

    def fit(augment: str, batch: int, steps: int, graphs: bool) -> float:
        spec = LoraSpec(rank=16, steps=steps, batch_size=batch, augment=augment, resolution=size)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with training_graphs(graphs):
            fit_lora(models, models.vae, image, "a photo", spec)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    short, long = args.steps
    payload: dict[str, Any] = {"size": size, "model": models.describe(), "steps": [short, long], "modes": {}}
    for augment, batch in MODES:
        row: dict[str, Any] = {"batch": batch}
        for graphs in (False, True):
            label = "graphs" if graphs else "eager"
            fit(augment, batch, short, graphs)  # warm-up: cuDNN/cuBLAS choices, allocator
            row[f"wall_ms_per_step_{label}"] = 1e3 * (fit(augment, batch, long, graphs)
                                                     - fit(augment, batch, short, graphs)) / (long - short)
            if cuda:
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                        torch.profiler.ProfilerActivity.CUDA]) as prof:
                    fit(augment, batch, long, graphs)
                times = kernel_times(prof)
                row[f"kernel_ms_per_step_{label}"] = 1e3 * sum(times.values()) / long
                by_kind: dict[str, float] = {}
                for name, seconds in times.items():
                    by_kind[kind(name)] = by_kind.get(kind(name), 0.0) + 1e3 * seconds / long
                row[f"kernel_ms_per_step_by_kind_{label}"] = dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))
                row[f"top_kernels_ms_per_step_{label}"] = {name[:120]: 1e3 * s / long for name, s in
                                                           sorted(times.items(), key=lambda kv: -kv[1])[:12]}
        payload["modes"][augment] = row
        print(augment, {k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()
                        if not isinstance(v, dict)}, flush=True)
        write_result("profile_lora_step", payload, args.smoke, args.out)
    return write_result("profile_lora_step", payload, args.smoke, args.out)


if __name__ == "__main__":
    main()

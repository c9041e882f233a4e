"""Where the GPU time of one `md_dift@regiondrag` featurisation goes: kernel time by kind (convolution,
matmul, attention, normalisation, elementwise, layout), from torch.profiler, next to the pass's FLOP floor.

    python benchmarks/profile_dift.py              # GPU: random SD 2.1 fp16, source + edited at 768², ensemble 8
    python benchmarks/profile_dift.py --compiled   # the same with features.dift_compile (after compiling)
    python benchmarks/profile_dift.py --smoke      # CPU: tiny model at 64² (tests the script)

Why: the pass runs at ~3× its FLOP floor with the GPU busy throughout, so the gap is in the kernels
themselves; this says which ones.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.common import harness_runtime, matmul_tflops, print_table, sync, write_result  # noqa: E402

# first matching substring (lower case) decides a kernel's kind
KINDS = (("fused (inductor's Triton kernels)", ("triton_",)),
         ("attention", ("flash", "fmha", "attention", "sdpa")),
         ("convolution", ("conv", "fprop", "dgrad", "wgrad", "implicit")),
         ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "sm90", "sm80")),
         ("normalisation", ("norm", "welford")),
         ("layout", ("nchw", "nhwc", "transpose", "copy")),
         ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce")))


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, keys in KINDS if any(k in name for k in keys)), "other")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compiled", action="store_true", help="torch.compile the UNet trunk and VAE encoder")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    harness_runtime()
    from harness.metrics.dift import DiftFeaturizer
    from harness.models import load_models

    cuda = torch.cuda.is_available() and not args.smoke
    device, size = ("cuda", 768) if cuda else ("cpu", 64)
    spec = {"name": "random_sd21", "source": "random", "arch": "sd21", "seed": 0, "channels_last": False} if cuda else \
        {"name": "tiny_sd21", "source": "random", "arch": "tiny_sd21", "seed": 0}
    models = load_models({**spec, "device": device, "dtype": "float16" if cuda else "float32"})
    dift = DiftFeaturizer(models, compiled=args.compiled)
    images = torch.rand(2, 3, size, size, device=device) * 2 - 1

    def featurise() -> None:
        dift(images, "a photo", "mode", torch.Generator(device=device).manual_seed(0))

    for _ in range(2):
        featurise()
    sync()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.repeat):
            featurise()
        sync()
    by_kind: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if cuda and event.device_type == torch.autograd.DeviceType.CUDA:
            by_kind[kind_of(event.name)] += event.device_time / 1e3 / args.repeat  # ms per featurisation
            by_kernel[event.name] += event.device_time / 1e3 / args.repeat
    total = sum(by_kind.values())
    rows = [{"kind": k, "ms": v, "share": v / total} for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    print_table(rows)
    top = [{"kernel": k[:90], "ms": v} for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:25]]
    print_table(top)

    from torch.utils.flop_counter import FlopCounterMode

    eager = DiftFeaturizer(models)  # the same work; the counter sees the eager ops, not a compiled graph
    with FlopCounterMode(display=False) as counter:
        eager(images, "a photo", "mode", torch.Generator(device=device).manual_seed(0))
    flops = counter.get_total_flops()
    rate = matmul_tflops() if cuda else float("nan")
    payload = {"size": size, "ensemble": dift.ensemble, "model": models.describe(), "compiled": args.compiled,
               "kernel_ms": total,
               "flops": flops, "matmul_tflops": rate, "floor_ms": flops / (rate * 1e12) * 1e3 if cuda else None,
               "by_kind": rows, "top_kernels": top}
    print({k: payload[k] for k in ("kernel_ms", "flops", "matmul_tflops", "floor_ms")})
    print(f"wrote {write_result('profile_dift' + ('-compiled' if args.compiled else ''), payload, args.smoke, args.out)}")
    return payload


if __name__ == "__main__":
    main()

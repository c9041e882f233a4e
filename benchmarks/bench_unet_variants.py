"""One SD 1.5 UNet call (batch 1, 64×64 latent, fp16) under execution variants: eager, CUDA graph,
cudnn.benchmark, channels_last, torch.compile. Prints median ms and the max |Δ| to the eager output.

    python benchmarks/bench_unet_variants.py [--compile]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import harness_runtime, print_table, time_fn, write_result  # noqa: E402
from harness.diffusion.graphs import GraphedCall  # noqa: E402
from harness.models import load_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    harness_runtime()
    m = load_models({"name": "random_sd15", "source": "random", "arch": "sd15", "dtype": "float16", "device": "cuda"})
    x = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16)
    t = torch.tensor(500, device="cuda")
    text = torch.randn(1, 77, 768, device="cuda", dtype=torch.float16)
    unet = m.unet
    call = lambda a, b, c: unet(a, b, encoder_hidden_states=c).sample  # noqa: E731
    with torch.no_grad():
        reference = call(x, t, text).float()
        rows = []

        def measure(name, fn):
            out = fn(x, t, text).float()
            timing = time_fn(lambda: fn(x, t, text), warmup=3, repeat=30)
            rows.append({"variant": name, "ms": timing["median_s"] * 1e3, "max_abs_diff": (out - reference).abs().max().item()})
            print(rows[-1], flush=True)

        measure("eager", call)
        measure("graph", GraphedCall(call, (x, t, text)))
        torch.backends.cudnn.benchmark = True
        measure("graph+cudnn.benchmark", GraphedCall(call, (x, t, text)))
        torch.backends.cudnn.benchmark = False
        unet.to(memory_format=torch.channels_last)
        measure("channels_last eager", call)
        measure("graph+channels_last", GraphedCall(call, (x, t, text)))
        torch.backends.cudnn.benchmark = True
        measure("graph+channels_last+cudnn.benchmark", GraphedCall(call, (x, t, text)))
        if args.compile:
            compiled = torch.compile(unet, fullgraph=False)  # default mode: max-autotune takes minutes
            ccall = lambda a, b, c: compiled(a, b, encoder_hidden_states=c).sample  # noqa: E731
            t0 = time.perf_counter()
            ccall(x, t, text)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            measure(f"compile+graph [compile {compile_s:.0f}s]", GraphedCall(ccall, (x, t, text)))
    print_table(rows)
    print(f"wrote {write_result('unet_variants', {'rows': rows}, smoke=False)}")


if __name__ == "__main__":
    main()

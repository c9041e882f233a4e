"""What a new image size costs: DragBench-D has 53 heights, so a full run meets a new shape 53 times.

    python benchmarks/bench_new_shapes.py            # GPU: random_sd15 (RegionDrag) and random_sd21 (DIFT)
    python benchmarks/bench_new_shapes.py --smoke    # CPU: tiny models, 64-pixel widths (tests the script)

For each of a few unseen sizes: the first and the second RegionDrag edit (CUDA graphs, then eager), the
first and second `md_dift@dragdiffusion` (native resolution) and `lpips_alex@dragdiffusion` calls, and,
once per process, the cold start: importing diffusers, initialising CUDA and building the random
pipeline. The difference first − second is the one-off cost of a size (cuDNN plans, graph capture).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(fn) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--cudnn-attention", action="store_true", help="allow cuDNN SDPA (the harness's cudnn_attention=true)")
    args = parser.parse_args(argv)
    cold: dict[str, float] = {}
    t0 = time.perf_counter()
    import torch

    import diffusers
    del diffusers  # imported only to time the import, part of every cold start
    cold["import_torch_diffusers_s"] = time.perf_counter() - t0
    from benchmarks.common import harness_runtime, print_table, write_result

    harness_runtime(args.cudnn_attention)
    cold["cuda_init_s"] = timed(lambda: torch.zeros(1, device="cuda") if torch.cuda.is_available() else None)

    from benchmarks.bench_regiondrag import synthetic_sample
    from harness.metrics.base import MetricContext
    from harness.models import load_models
    from harness.registry import METRICS
    from harness.types import DragSample
    from methods.regiondrag import RegionDrag

    if args.smoke:
        model_cfg = {"name": "tiny", "source": "random", "arch": "tiny", "device": "cpu"}
        dift_model = {"name": "tiny_sd21", "source": "random", "arch": "tiny_sd21"}
        width, heights = 64, [40, 48, 56, 72]
    else:
        model_cfg = {"name": "random_sd15", "source": "random", "arch": "sd15", "dtype": "float16", "channels_last": True}
        dift_model = {"name": "random_sd21", "source": "random", "arch": "sd21", "dtype": "float16"}
        width, heights = 512, [296, 304, 312, 320, 336, 344, 352, 360]
    models = None

    def load():
        nonlocal models
        models = load_models(model_cfg)

    cold["build_random_sd15_s"] = timed(load)
    base = synthetic_sample(width)

    def sample_of(h: int) -> DragSample:
        image = np.ascontiguousarray(np.resize(base.image, (h, width, 3)))
        return DragSample(f"bench/shape/{h}", image, base.prompt, base.handles, base.targets, np.ones((h, width), bool))

    rows = []
    half = len(heights) // 2
    for label, graphs, hs in (("regiondrag graphs", True, heights[:half]), ("regiondrag eager", False, heights[half:])):
        method = RegionDrag.build({"cuda_graphs": graphs})
        method.setup(models)
        method.edit(sample_of(width), 42)  # this size is warm; the others are new
        for h in hs:
            s = sample_of(h)
            rows.append({"what": label, "height": h, "first_s": timed(lambda: method.edit(s, 42)),
                         "second_s": timed(lambda: method.edit(s, 42))})
    context = MetricContext({"lpips_backbone": "random", "seed": 42, "dift_model": dift_model})
    for metric_id in ("md_dift@dragdiffusion", "lpips_alex@dragdiffusion"):
        metric = METRICS.get(metric_id)(context)
        s = sample_of(width)
        metric.compute(s, s.image, {})
        for h in heights[:half]:
            s = sample_of(h)
            rows.append({"what": metric_id, "height": h, "first_s": timed(lambda: metric.compute(s, s.image, {})),
                         "second_s": timed(lambda: metric.compute(s, s.image, {}))})
    for row in rows:
        row["new_size_cost_s"] = row["first_s"] - row["second_s"]
    print_table([{"what": k, "first_s": v} for k, v in cold.items()])
    print_table(rows)
    payload = {"cudnn_attention": torch.backends.cuda.cudnn_sdp_enabled(), "cold_start": cold, "new_sizes": rows, "model": models.describe(), "dift_model": dift_model}
    print(f"wrote {write_result('new_shapes' + ('-cudnn_attention' if args.cudnn_attention else ''), payload, args.smoke, args.out)}")
    return payload


if __name__ == "__main__":
    main()

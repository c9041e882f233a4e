"""Scoring throughput of each drag metric, the DIFT FLOP floor, and the harness's own overhead.

    python benchmarks/bench_metrics.py            # GPU: random_sd21 DIFT (768² ensemble 8), 512×512 samples
    python benchmarks/bench_metrics.py --smoke    # CPU: tiny_sd21, 64×64 (tests the script)

Harness overhead = (harness edit stage per sample) − (bare `method.edit` loop per sample) on the same
samples, with RegionDrag on random_sd15 (fp16, CUDA graphs); the harness adds loading, PNG encoding,
hashing, atomic writes and records.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_regiondrag import count_flops, synthetic_sample  # noqa: E402
from benchmarks.common import matmul_tflops, print_table, sync, time_fn, write_result  # noqa: E402
from harness.data.base import Dataset, DatasetLoader  # noqa: E402
from harness.metrics.base import MetricContext  # noqa: E402
from harness.registry import DATASETS, METRICS  # noqa: E402

METRIC_IDS = ["lpips_alex@dragdiffusion", "lpips_alex@regiondrag", "md_dift@dragdiffusion", "md_dift@regiondrag"]


def make_samples(n: int, size: int):
    base = synthetic_sample(size)
    samples = []
    for i in range(n):
        image = np.roll(base.image, 7 * i, axis=1)
        samples.append(base.replace(sample_id=f"bench/synthetic/{i:03d}", image=image))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    size, n = (64, 2) if args.smoke else (512, args.samples)
    dift_model = ({"name": "tiny_sd21", "source": "random", "arch": "tiny_sd21", "dtype": "float16"} if args.smoke else
                  {"name": "random_sd21", "source": "random", "arch": "sd21", "dtype": "float16"})
    context = MetricContext({"lpips_backbone": "random", "seed": 42, "dift_model": dift_model})
    samples = make_samples(n, size)
    edited = [np.roll(s.image, 5, axis=1) for s in samples]
    rows, payload = [], {"size": size, "samples": n, "dift_model": dift_model}
    for metric_id in METRIC_IDS:
        metric = METRICS.get(metric_id)(context)
        metric.compute(samples[0], edited[0], {})  # load networks, warm up
        timing = time_fn(lambda: [metric.compute(s, e, {}) for s, e in zip(samples, edited)], warmup=0, repeat=1 if args.smoke else 3)
        per_sample = timing["median_s"] / n
        row = {"metric": metric_id, "s_per_sample": per_sample, "samples_per_s": 1 / per_sample}
        if metric_id.startswith("md_dift"):
            flops = count_flops(lambda: metric.compute(samples[0], edited[0], {}))
            rate = matmul_tflops()
            floor = flops / (rate * 1e12) if rate == rate else float("nan")
            row.update(flops=flops, floor_s=floor, over_floor=per_sample / floor if floor == floor else float("nan"))
        rows.append(row)
        print(row, flush=True)
    payload["metrics"] = rows

    # Harness overhead on RegionDrag edits
    from harness.models import load_models
    from harness.pipeline import edit_stage, plan_methods

    model_cfg = ({"name": "tiny", "source": "random", "arch": "tiny", "device": "cpu"} if args.smoke else
                 {"name": "random_sd15", "source": "random", "arch": "sd15", "dtype": "float16"})

    class BenchLoader(DatasetLoader):
        name = "bench_synthetic"

        def list_ids(self):
            return [s.sample_id for s in samples]

        def load_sample(self, sample_id):
            return samples[int(sample_id.rsplit("/", 1)[1])]

    DATASETS.register("bench_synthetic")(BenchLoader)
    dataset = Dataset(loader=BenchLoader())
    plans = plan_methods({"regiondrag": {}}, model_cfg, dataset)
    method = plans[0].cls.build({})
    method.setup(load_models(model_cfg))
    method.edit(samples[0], 42)
    sync()
    t0 = time.perf_counter()
    for s in samples:
        method.edit(s, 42)
    sync()
    bare = (time.perf_counter() - t0) / n
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"model": model_cfg, "seed": 42}
        edit_stage(cfg, dataset, Path(tmp) / "warm", plans)  # setup and warm-up outside the timed run
        sync()
        t0 = time.perf_counter()
        edit_stage(cfg, dataset, Path(tmp) / "timed", plans)
        sync()
        harness = (time.perf_counter() - t0) / n
    payload["harness_overhead"] = {"bare_s_per_sample": bare, "harness_s_per_sample": harness,
                                   "overhead_s": harness - bare, "overhead_fraction": (harness - bare) / bare}
    print_table(rows)
    print("harness overhead:", payload["harness_overhead"])
    print(f"wrote {write_result('metrics', payload, args.smoke)}")


if __name__ == "__main__":
    main()

"""Scoring throughput of each drag metric, the DIFT FLOP floor, and the harness's own overhead.

    python benchmarks/bench_metrics.py            # GPU: random_sd21 DIFT (768² ensemble 8), 512×512 samples
    python benchmarks/bench_metrics.py --smoke    # CPU: tiny_sd21, 64×64 (tests the script)

Also the harness overhead: (edit / score stage per sample) − (bare `method.edit` / `metric.compute` loop
per sample) on the same samples, RegionDrag on random_sd15 (fp16, CUDA graphs). What each way of running
DIFT buys and changes is `bench_dift.py`'s job.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.bench_regiondrag import count_flops, synthetic_sample  # noqa: E402
from benchmarks.common import harness_runtime, matmul_tflops, print_table, sync, time_fn, write_result  # noqa: E402
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
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args()
    harness_runtime()
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
        row = {"metric": metric_id, "s_per_sample": per_sample, "samples_per_s": 1 / per_sample,
               "gpu_busy_s_per_sample": gpu_busy_seconds(lambda: [metric.compute(s, e, {}) for s, e in zip(samples, edited)]) / n}
        if metric_id.startswith("md_dift"):
            flops = count_flops(lambda: metric.compute(samples[0], edited[0], {}))
            rate = matmul_tflops()
            floor = flops / (rate * 1e12) if rate == rate else float("nan")
            row.update(flops=flops, floor_s=floor, over_floor=per_sample / floor if floor == floor else float("nan"))
        rows.append(row)
        print(row, flush=True)
    payload["metrics"] = rows
    payload["harness_overhead"] = harness_overhead(samples, edited, context, smoke=args.smoke)
    print_table(rows)
    print("harness overhead:", payload["harness_overhead"])
    print(f"wrote {write_result('metrics', payload, args.smoke)}")


def gpu_busy_seconds(fn) -> float:
    """Seconds the GPU spends in kernels during `fn` (torch.profiler): next to the wall clock, it tells
    whether a metric is bound by the GPU or by the host launching its work (NaN on a CPU)."""
    if not torch.cuda.is_available():
        return float("nan")
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
    return sum(e.self_device_time_total for e in kernels) / 1e6


def harness_overhead(samples, edited, context: MetricContext, smoke: bool) -> dict:
    """Per-sample time of the edit and score stages minus the bare loops over the same samples.

    Edit: a fresh RegionDrag on the already loaded random_sd15 (CUDA graphs captured on its first sample)
    both times; the harness adds loading samples, PNG encoding, hashing, atomic writes and records, which
    run on worker threads while the GPU edits. Score: the four drag metrics on in-memory images versus the
    score stage reading the store and writing each sample's score cache, both on the same already built
    feature networks (building them is model loading, which neither side of the comparison includes)."""
    from harness.models import load_models
    from harness.edit import edit_stage
    from harness.planning import plan_methods, plan_metrics
    from harness.scoring import score_stage

    model_cfg = ({"name": "tiny", "source": "random", "arch": "tiny", "device": "cpu"} if smoke else
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
    n = len(samples)
    warm = plans[0].cls.build({})
    warm.setup(load_models(model_cfg))
    warm.edit(samples[0], 42)  # loads kernels once for the process
    method = plans[0].cls.build({})
    sync()
    t0 = time.perf_counter()
    method.setup(load_models(model_cfg))
    for s in samples:
        method.edit(s, 42)
    sync()
    bare_edit = (time.perf_counter() - t0) / n
    metric_classes = plan_metrics(METRIC_IDS, dataset)
    metrics = [cls(context) for cls in metric_classes]
    outputs = [method.edit(s, 42).image for s in samples]
    sync()
    t0 = time.perf_counter()
    for s, e in zip(samples, outputs):
        for m in metrics:
            m.compute(s, e, {})
    sync()
    bare_score = (time.perf_counter() - t0) / n
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"model": model_cfg, "seed": 42, "features": context.features}
        sync()
        t0 = time.perf_counter()
        edit_stage(cfg, dataset, Path(tmp), plans)
        sync()
        harness_edit = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        score_stage(cfg, dataset, Path(tmp), plans, metric_classes, context=context)  # networks built, as for the bare loop
        sync()
        harness_score = (time.perf_counter() - t0) / n
    return {"samples": n,
            "edit": {"bare_s_per_sample": bare_edit, "harness_s_per_sample": harness_edit,
                     "overhead_s": harness_edit - bare_edit, "overhead_fraction": (harness_edit - bare_edit) / bare_edit},
            "score": {"bare_s_per_sample": bare_score, "harness_s_per_sample": harness_score,
                      "overhead_s": harness_score - bare_score,
                      "overhead_fraction": (harness_score - bare_score) / bare_score}}


if __name__ == "__main__":
    main()

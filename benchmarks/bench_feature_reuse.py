"""Scoring time of a k-method leaderboard with and without source-feature reuse (`features.source_cache`).

    python benchmarks/bench_feature_reuse.py --out /tmp/x.json               # GPU: random SD 2.1 DIFT, 512²
    python benchmarks/bench_feature_reuse.py --smoke --out /tmp/x.json       # CPU: tiny DIFT model, 64²

`--samples` sources, each with `--methods` edits (the source shifted by a few pixels, as stand-ins for the
methods' outputs), scored with both mean-distance protocols as the score stage does, one sample's methods
after another. Off: each score featurises source and edit together (today's default); on: the source once
per protocol (the first method's score), reused for the others. Reported: seconds per protocol and in all,
and how far the per-sample scores of the two settings differ (batch composition changes rounding), next to
the seed yardstick of NOTES.md.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import benchmark_parser, harness_runtime, write_result  # noqa: E402

METRICS = ("md_dift@dragdiffusion", "md_dift@regiondrag")


def samples(n: int, k: int, size: int):
    from harness.types import DragSample

    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        handles = rng.uniform(size * 0.2, size * 0.8, (3, 2)).round()
        sample = DragSample(sample_id=f"s{i}", image=image, prompt="a photo", handles=handles,
                            targets=(handles + 8).clip(0, size - 1), mask=np.ones((size, size), bool))
        yield sample, [np.roll(image, shift, axis=1) for shift in range(1, k + 1)]


def score_all(features: dict[str, Any], device: str, n: int, k: int, size: int) -> tuple[dict[str, float], dict]:
    from harness.diffusion.timing import device_timer
    from harness.metrics.base import MetricContext
    from harness.registry import METRICS as REGISTRY

    context = MetricContext(features, device=device)
    metrics = {m: REGISTRY.get(m)(context) for m in METRICS}
    first = next(samples(1, 1, size))
    for metric in metrics.values():  # network builds and first-call costs are not scoring time
        metric.compute(first[0], first[1][0], {})
    seconds, values = {m: 0.0 for m in METRICS}, {m: [] for m in METRICS}
    for sample, edits in samples(n, k, size):
        for edited in edits:
            for name, metric in metrics.items():
                with device_timer(device, peak_memory=False) as timer:
                    values[name].append(metric.compute(sample, edited, {}).value)
                seconds[name] += timer["seconds"]
    return seconds, values


def main(argv: list[str] | None = None) -> Path:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--methods", type=int, default=6)
    args = parser.parse_args(argv)
    import os

    import torch

    harness_runtime()
    os.environ["EDITLAB_CACHE"] = tempfile.mkdtemp(prefix="editlab-reuse-")  # a cold disk cache
    smoke = args.smoke or not torch.cuda.is_available()
    model = ({"name": "tiny_sd21", "source": "random", "arch": "tiny_sd21", "seed": 0} if smoke else
             {"name": "random_sd21", "source": "random", "arch": "sd21", "seed": 0})
    features = {"lpips_backbone": "random", "seed": 42, "dift_model": model}
    device, size = ("cpu", 64) if smoke else ("cuda", 512)
    payload: dict[str, Any] = {"samples": args.samples, "methods": args.methods, "size": size, "metrics": METRICS}
    t0 = time.perf_counter()
    results = {}
    for label, cache in (("off", False), ("on", True)):
        seconds, values = score_all({**features, "source_cache": cache}, device, args.samples, args.methods, size)
        results[label] = values
        payload[f"seconds_{label}"] = {**seconds, "total": sum(seconds.values())}
        print(label, payload[f"seconds_{label}"], flush=True)
    payload["speedup"] = payload["seconds_off"]["total"] / payload["seconds_on"]["total"]
    payload["score_difference"] = {
        m: {"mean_abs": float(np.mean(np.abs(np.subtract(results["on"][m], results["off"][m])))),
            "unchanged_fraction": float(np.mean(np.equal(results["on"][m], results["off"][m])))} for m in METRICS}
    payload["wall_s"] = time.perf_counter() - t0
    path = write_result("feature_reuse", payload, args.smoke, args.out)
    print(payload["speedup"], payload["score_difference"], f"wrote {path}")
    return path


if __name__ == "__main__":
    main()

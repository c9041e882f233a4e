"""What each way of running DIFT costs and how much it moves the mean-distance metrics.

    python benchmarks/bench_dift.py                      # GPU: random SD 2.1, 32 DragBench-D-like samples
    python benchmarks/bench_dift.py --data DIR           # the same on a DragBench-D folder (real images, points)
    python benchmarks/bench_dift.py --smoke              # CPU: tiny_sd21 at 64² (tests the script)

For each MD protocol, every variant scores the same (source, edited) pairs through the metric's own
`compute`; the table gives seconds per sample (median of repeats after a first call, whose time is shown
apart: it holds any compilation), the FLOP floor ratio, the largest feature difference from the protocol's
eager run, the fraction of matched points that moved, and the mean |Δ| of the per-sample MD. The row
`seed 43` is the same eager code with another seed: the spread the protocol itself leaves open, against which
a rounding-level change is judged (a variant that moves MD by far less than a seed change is within the
protocol's tolerance; one that moves it as much is not).
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.bench_end_to_end import write_dataset  # noqa: E402
from benchmarks.bench_regiondrag import count_flops  # noqa: E402
from benchmarks.common import benchmark_parser, harness_runtime, matmul_tflops, print_table, timed, timed_call, write_result  # noqa: E402
from harness.metrics.base import MetricContext  # noqa: E402
from harness.registry import METRICS  # noqa: E402

SHIFT_PX = 6  # the "edit": the source shifted right, so every handle has a true match 6 px away


@contextlib.contextmanager
def process_settings(cudnn_attention: bool = False, tf32_matmul: bool = False, sdpa_math: bool = False,
                     attention: str = "sdpa", unet=None) -> Iterator[None]:
    """Process-wide kernel choices of one variant (through the harness's own `configure_kernels`), restored
    afterwards."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from harness.determinism import KERNEL_DEFAULTS, configure_kernels, state

    previous = {name: state()[name] for name in KERNEL_DEFAULTS}
    configure_kernels({"cudnn_attention": cudnn_attention, "tf32_matmul": tf32_matmul})
    if attention == "classic":
        unet.set_attn_processor(AttnProcessor())
    try:
        with sdpa_kernel([SDPBackend.MATH]) if sdpa_math else contextlib.nullcontext():
            yield
    finally:
        configure_kernels(previous)
        if attention == "classic":
            unet.set_attn_processor(AttnProcessor2_0())


VARIANTS: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {
    # label, features overrides, process settings
    "md_dift@regiondrag": [
        ("eager (default)", {}, {}),
        ("eager, cuDNN attention", {}, {"cudnn_attention": True}),
        ("eager, channels_last", {"channels_last": True}, {}),
        ("compiled", {"dift_compile": True}, {}),
        ("compiled, cuDNN attention", {"dift_compile": True}, {"cudnn_attention": True}),
        ("compiled, channels_last", {"dift_compile": True, "channels_last": True}, {}),
        ("seed 43", {"seed": 43}, {}),
    ],
    "md_dift@dragdiffusion": [
        ("eager (default)", {}, {}),
        ("SDPA math backend", {}, {"sdpa_math": True}),
        ("classic attention (reference's baddbmm)", {}, {"attention": "classic"}),
        ("TF32 matmuls", {}, {"tf32_matmul": True}),
        ("seed 43", {"seed": 43}, {}),
    ],
}


def study_samples(data: Path | None, n: int, width: int, heights: list[int]):
    """(sample, edited image) pairs: DragBench-D samples (the folder given, or written like bench_end_to_end's
    stand-in), each edited by a shift of SHIFT_PX pixels."""
    from harness.data.base import Dataset
    from harness.data.dragbench import DragBenchD

    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            data = Path(tmp) / "DragBench"
            write_dataset(data, n, width, heights)
        dataset = Dataset(loader=DragBenchD(root=str(data)))
        samples = [dataset.load(i) for i in dataset.sample_ids()[:n]]
    return [(s, np.ascontiguousarray(np.roll(s.image, SHIFT_PX, axis=1))) for s in samples]


def run_variant(metric_id: str, features: dict[str, Any], settings: dict[str, Any], pairs, repeat: int,
                count: bool) -> dict:
    """Score every pair `repeat` times under one variant; `count`: also count the FLOPs of one pair."""
    context = MetricContext(features)
    metric = METRICS.get(metric_id)(context)
    dift = metric.featurizer()
    with process_settings(**settings, unet=dift.models.unet):
        first_s = timed(lambda: metric.compute(*pairs[0], {}))
        times, values = [], []
        for _ in range(repeat):
            values, seconds = timed_call(lambda: [metric.compute(s, e, {}) for s, e in pairs])
            times.append(seconds)
        s, e = pairs[0]
        feats = probe_features(metric, s, e)
        flops = count_flops(lambda: metric.compute(s, e, {})) if count else None
    return {"s_per_sample": float(np.median(times)) / len(pairs), "first_call_s": first_s, "values": values,
            "features": feats, "flops": flops}


def probe_features(metric, sample, edited) -> torch.Tensor:
    """The DIFT features `compute` builds for the first pair (for the feature-level difference)."""
    import torch.nn.functional as F

    from harness.metrics.lpips_alex import to_unit_range

    dift = metric.featurizer()
    m = dift.models
    pair = torch.cat([to_unit_range(im, m.device, m.dtype) for im in (sample.image, edited)])
    if metric.id == "md_dift@regiondrag":
        return dift(F.interpolate(pair, size=(metric.resolution, metric.resolution)), sample.prompt, "mode",
                    metric.generator()).float()
    return dift(pair, sample.prompt, "sample", metric.generator()).float()


def compare(result: dict, baseline: dict) -> dict:
    points_moved, md_delta = [], []
    for a, b in zip(result["values"], baseline["values"]):
        da, db = np.asarray(a.info["distances"]), np.asarray(b.info["distances"])
        points_moved += list(da != db)
        md_delta.append(abs(float(a.value) - float(b.value)))
    return {"max_abs_feature_diff": float((result["features"] - baseline["features"]).abs().max()),
            "points_moved": float(np.mean(points_moved)), "md_mean_abs_delta": float(np.mean(md_delta)),
            "md_max_abs_delta": float(np.max(md_delta))}


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--data", type=Path, default=None, help="a DragBench-D folder (default: a written stand-in)")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--metrics", default=None, help="comma-separated MD metric ids (default: both; "
                        "--smoke: md_dift@dragdiffusion, as the other runs at 768² even there)")
    parser.add_argument("--variants", default=None, help="comma-separated labels to run (default: all)")
    args = parser.parse_args(argv)
    harness_runtime()
    if args.smoke:
        n, width, heights, repeat = 2, 64, [48, 64], 1
        model = {"name": "tiny_sd21", "source": "random", "arch": "tiny_sd21", "seed": 0, "device": "cpu"}
    else:
        n, width, heights, repeat = args.samples, 512, [512, 384, 640, 448], args.repeat
        model = {"name": "random_sd21", "source": "random", "arch": "sd21", "seed": 0, "channels_last": False}
    pairs = study_samples(args.data, n, width, heights)
    wanted = None if args.variants is None else set(args.variants.split(","))
    rate = matmul_tflops()
    rows, raw = [], []
    metric_ids = args.metrics.split(",") if args.metrics else (["md_dift@dragdiffusion"] if args.smoke else list(VARIANTS))
    for metric_id in metric_ids:
        baseline = None
        for label, overrides, settings in VARIANTS[metric_id]:
            if wanted is not None and label not in wanted and baseline is not None:
                continue
            if args.smoke and overrides.get("dift_compile"):
                continue  # inductor on a 2-core CPU takes minutes; the GPU run measures it
            model_cfg = {**model, "channels_last": bool(overrides.get("channels_last", model.get("channels_last")))}
            features = {"lpips_backbone": "random", "seed": overrides.get("seed", 42), "dift_model": model_cfg,
                        "dift_compile": bool(overrides.get("dift_compile", False))}
            result = run_variant(metric_id, features, settings, pairs, repeat, count=baseline is None)
            if baseline is None:
                baseline = result
            row = {"metric": metric_id, "variant": label, "s_per_sample": result["s_per_sample"],
                   "first_call_s": result["first_call_s"],
                   "x_floor": result["s_per_sample"] / (baseline["flops"] / (rate * 1e12)) if rate == rate else float("nan"),
                   "md_mean": float(np.mean([v.value for v in result["values"]])), **compare(result, baseline)}
            rows.append(row)
            raw.append({"metric": metric_id, "variant": label, "md": [float(v.value) for v in result["values"]]})
            print(row, flush=True)
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
    print_table(rows)
    payload = {"samples": len(pairs), "data": str(args.data) if args.data else "bench_end_to_end stand-in",
               "shift_px": SHIFT_PX, "matmul_tflops_fp16": rate, "variants": rows, "per_sample_md": raw}
    print(f"wrote {write_result('dift', payload, args.smoke, args.out)}")
    return payload


if __name__ == "__main__":
    main()

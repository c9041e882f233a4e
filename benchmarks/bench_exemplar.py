"""Exemplar editing on the GPU: Paint-by-Example (and the SD inpainting baseline) time per image at 512×512
with full-size random weights and the published sampling (PLMS 50 steps, guidance 5), and the feature
throughput of the two Fréchet-distance networks on 512×512 PNG files (images/s, decoding included and
model only), plus the cost of one Fréchet distance (scipy sqrtm) at 512 and 2048 dimensions.

    python benchmarks/bench_exemplar.py            # GPU: random_pbe / random_sd15_inpaint fp16, 512×512
    python benchmarks/bench_exemplar.py --smoke    # CPU: tiny models, 64×64, a few images (tests the script)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import harness_runtime, print_table, time_fn, timed_call, write_result  # noqa: E402
from harness.metrics.clip_vit import ClipImageEmbedding  # noqa: E402
from harness.metrics.frechet import embed_files, embed_tensors, frechet_distance, statistics  # noqa: E402
from harness.metrics.inception import InceptionPool3  # noqa: E402
from harness.models import load_models  # noqa: E402
from harness.registry import METHODS  # noqa: E402
from harness.types import ExemplarSample  # noqa: E402


def synthetic_image(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    image = np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs * ys + seed)], -1) + rng.normal(0, 0.05, (size, size, 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def synthetic_sample(size: int) -> ExemplarSample:
    mask = np.zeros((size, size), bool)
    mask[size // 4 : size * 3 // 4, size // 5 : size * 3 // 5] = True
    return ExemplarSample("bench/synthetic/0", synthetic_image(size, 0), mask, synthetic_image(size // 2, 1))


def time_method(name: str, model_cfg: dict, params: dict, sample: ExemplarSample, warmup: int, repeat: int) -> dict:
    models = load_models(model_cfg)
    method = METHODS.get(name).build(params)
    method.setup(models)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    timing = time_fn(lambda: method.edit(sample, 42), warmup=warmup, repeat=repeat)
    unet_calls = len(method.edit(sample, 42).info["denoising_timesteps"])
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else 0.0
    return {"what": f"{name} ({models.spec.identity}, {models.dtype})", **timing, "unet_calls": unet_calls,
            "peak_mib": peak}


def throughput(extractor, files: list[Path], batch_size: int, num_workers: int) -> dict:
    """Images/s through `embed_files` (decode + preprocess in workers + network) and of the network alone."""
    embed_files(extractor, files[:batch_size], batch_size, num_workers)  # warm-up (cuDNN autotuning, workers)
    features, seconds = timed_call(lambda: embed_files(extractor, files, batch_size, num_workers))
    end_to_end = len(files) / seconds
    tensors = []
    for path in files[:batch_size]:
        with Image.open(path) as image:
            tensors.append(extractor.transform(image))
    model = time_fn(lambda: embed_tensors(extractor, tensors, batch_size), warmup=2, repeat=5)
    return {"what": f"{extractor.identity} ({extractor.dim}-d)", "images": len(files),
            "images_per_s": end_to_end, "model_only_images_per_s": len(tensors) / model["median_s"],
            "features_finite": bool(np.isfinite(features).all())}


def frechet_cost(dims: int, images: int) -> dict:
    rng = np.random.default_rng(0)
    a, b = statistics(rng.normal(size=(images, dims))), statistics(rng.normal(0.1, 1.1, size=(images, dims)))
    t0 = time.perf_counter()
    value = frechet_distance(a, b)
    return {"what": f"Fréchet distance, {dims}-d, {images} images per set", "seconds": time.perf_counter() - t0,
            "value": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU at 64×64")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fid-images", type=int, default=1000, help="512² PNG files embedded per network")
    parser.add_argument("--num-workers", type=int, default=8)
    args = parser.parse_args()
    harness_runtime()
    size = 64 if args.smoke else args.size
    repeat, warmup = (2, 1) if args.smoke else (args.repeat, 2)
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        torch.set_num_threads(1)
    steps = {"steps": 2, "resolution": size} if args.smoke else {"resolution": size}  # published: 50 steps

    sample = synthetic_sample(size)
    edits = []
    for name, pipeline in (("paint_by_example", "paint_by_example"), ("sd_inpaint", "sd_inpaint")):
        model_cfg = {"name": f"bench_{name}", "source": "random", "pipeline": pipeline, "device": device,
                     "arch": "tiny" if args.smoke else "sd15", "dtype": "float32" if args.smoke else "float16"}
        edits.append(time_method(name, model_cfg, steps, sample, warmup, repeat))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print_table(edits)

    n_images = 8 if args.smoke else args.fid_images
    workers = 0 if args.smoke else args.num_workers
    extractors = [ClipImageEmbedding("random_tiny" if args.smoke else "random", device,
                                     torch.float32 if args.smoke else torch.float16),
                  InceptionPool3("random", device)]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(n_images):
            files.append(Path(tmp) / f"{i:05d}.png")
            Image.fromarray(synthetic_image(size, i)).save(files[-1])
        features = [throughput(e, files, batch_size=50 if not args.smoke else 4, num_workers=workers) for e in extractors]
    print_table(features)

    frechet = [frechet_cost(d, n) for d, n in (((16, 8), (64, 8)) if args.smoke else ((512, 3500), (2048, 3500)))]
    print_table(frechet)
    payload = {"size": size, "smoke": args.smoke, "edit": edits, "fid_features": features, "frechet": frechet,
               "sampling": "PLMS (PNDMScheduler skip_prk_steps), guidance 5 (PbE) / 7.5 (SD inpaint), "
                           f"{'2' if args.smoke else '50'} steps, batch 1, CFG batch 2"}
    print(f"wrote {write_result('exemplar', payload, args.smoke)}")


if __name__ == "__main__":
    main()

"""Per-image time of each PIE-Bench inversion (DirectInversion compares inversion cost; protocols.md §4.4),
and of whole Pix2Pix-Zero edits.

    python benchmarks/bench_inversions.py                      # random_sd15 (fp16) at 512×512, 50 steps, on the GPU
    python benchmarks/bench_inversions.py --smoke              # tiny model, 64×64, 3 steps: checks the script on a CPU
    python benchmarks/bench_inversions.py --kinds style_diffusion --edits '' --images 1   # StyleDiffusion alone
    python benchmarks/bench_inversions.py --eager              # plain UNet calls not replayed as CUDA graphs

Times `harness.prompt.inversion.invert` on a fixed VAE latent (encoding is timed separately), device-
synchronised, after one warm-up image, for:
- `ddim`: DDIM inversion with the source prompt, guidance 1 (50 UNet calls);
- `negative_prompt`: the same work (the source embedding becomes the unconditional one);
- `null_text`: DDIM inversion + per-step Adam on the null embedding (≤ 10 iterations, each a UNet forward and
  backward, plus one guided step). Random weights never reach the early-stop loss, so this is the
  10-iteration worst case; real weights stop earlier on some steps (the iterations used are recorded);
- `direct`: as implemented here, the same work as `ddim` (the offsets come from the editing pass);
- `direct_reference`: DDIM inversion + the reference's separate offset pass (50 guided UNet calls), which is
  what PnPInversion's released code spends;
- `style_diffusion`: CLIP ViT-B/16 tokens (a random full-size encoder next to random SD weights) + DDIM
  inversion recording the 16×16 cross-attention maps + the per-step mapping-network optimisation
  (⌈100·e^(−0.1·i)⌉ Adam iterations at step i, 1071 forward/backward UNet calls in all against null-text's
  500: random weights never reach the early stop, so this is the worst case). The longest kind: run it on
  its own with `--images 1` if a command has a time limit;
- `pix2pix_zero`: Pix2Pix-Zero's inversion (50 UNet calls, each noise prediction regularised by 5 × (5
  auto-correlation + 1 KL) gradient steps).
`--edits` times whole P2P and PnP edits (DDIM inversion) and whole Pix2Pix-Zero edits per image (`pix2pix_zero:ddim`, `pix2pix_zero:direct`: BLIP
caption with a random full-size BLIP, posterior-sample encoding, inversion, then per step a reference UNet
call, a UNet forward and backward for the cross-attention guidance and a UNet call at the moved latent),
with the method's own stage timings.
Writes a JSON file (device, versions, the exact command, per-image times) and prints a table.
"""
from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import benchmark_parser, harness_runtime  # noqa: E402
from harness.config import compose  # noqa: E402
from harness.diffusion.ddim_inversion import DDIMSchedule  # noqa: E402
from harness.diffusion.graphs import GraphedUNet  # noqa: E402
from harness.diffusion.latents import encode  # noqa: E402
from harness.environment import device_info, git_commit, versions  # noqa: E402
from harness.models import load_models  # noqa: E402
from harness.prompt import image_tokens  # noqa: E402
from harness.prompt.inversion import Conditioning, NullTextSettings, direct_offsets, invert  # noqa: E402
from harness.prompt.style_diffusion import StyleInputs, StyleSettings  # noqa: E402
from harness.registry import METHODS  # noqa: E402
from harness.types import PromptEditSample  # noqa: E402
from methods import pix2pix_zero  # noqa: E402

KINDS = ("ddim", "negative_prompt", "null_text", "direct", "direct_reference", "style_diffusion", "pix2pix_zero")
EDITS = ("pix2pix_zero:ddim", "pix2pix_zero:direct", "p2p:ddim", "pnp:ddim")
SOURCE = "a slanted mountain bicycle on the road in front of a building"
TARGET = "a slanted rusty mountain bicycle on the road in front of a building"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_inversion(kind: str, eps, schedule: DDIMSchedule, latent, image, cond: Conditioning, guidance: float,
                  null_text: NullTextSettings, style: dict) -> dict:
    if kind == "direct_reference":
        inverted = invert("ddim", eps, schedule, latent, cond, guidance)
        direct_offsets(eps, schedule, inverted.latents, cond, guidance)
        return {}
    if kind == "pix2pix_zero":
        pix2pix_zero.invert(lambda x, t: eps(x, t, cond.source), schedule, latent, random.Random(1234),
                            pix2pix_zero.NoiseRegularisation())
        return {}
    inputs: NullTextSettings | StyleInputs = null_text
    if kind == "style_diffusion":
        tokens = image_tokens.image_tokens(style["encoder"], image).to(latent.device)
        inputs = StyleInputs(style["unet"], tokens, style["settings"], style["identity"])
    inverted = invert(kind, eps, schedule, latent, cond, guidance, inputs)
    keys = ("null_text_iterations", "style_diffusion_iterations", "style_diffusion_encoder")
    return {k: inverted.info[k] for k in keys if k in inverted.info}


def run_edit(method, image, index: int) -> dict:
    """One whole edit through the method; returns its stage timings."""
    sample = PromptEditSample(f"bench/0/{index}", image, SOURCE, TARGET)
    result = method.edit(sample, 1234)
    extra = {"base_prompt": result.info["base_prompt"]} if "base_prompt" in result.info else {}
    return {f"{stage}_s": seconds for stage, seconds in result.timings.items()} | extra


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__, "tiny model, 64×64, 3 steps, 1 image (CPU check)", "JSON path (default benchmarks/results/inversions_<model>.json)")
    parser.add_argument("--model", default="random_sd15", help="model config name in conf/model (default random_sd15)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--images", type=int, default=3, help="timed images per inversion (after one warm-up)")
    parser.add_argument("--null-text-inner-steps", type=int, default=10)
    parser.add_argument("--style-inner-steps", type=int, default=100)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--edits", default=",".join(EDITS), help="whole edits to time ('' for none)")
    parser.add_argument("--eager", action="store_true", help="no CUDA-graph replay of plain UNet calls (cuda_graphs=false)")
    args = parser.parse_args(argv)
    harness_runtime()
    if args.smoke:
        args.model, args.size, args.steps, args.images, args.null_text_inner_steps = "tiny", 64, 3, 1, 2
        args.style_inner_steps = 2
        torch.set_num_threads(1)  # a tiny model gains nothing from threads on a shared CPU
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown inversion(s) {unknown}; valid: {', '.join(KINDS)}")
    edits = [e for e in args.edits.split(",") if e]
    unknown = sorted(set(edits) - set(EDITS))
    if unknown:
        parser.error(f"unknown edit(s) {unknown}; valid: {', '.join(EDITS)}")

    models = load_models(compose([f"model={args.model}"])["model"])
    device = models.device
    schedule = DDIMSchedule.p2p(args.steps)
    null_text = NullTextSettings(inner_steps=args.null_text_inner_steps)
    cond = Conditioning(models.encode_prompt(SOURCE), models.encode_prompt(TARGET), models.encode_prompt(""))
    style = {}
    if "style_diffusion" in kinds:
        encoder, identity = image_tokens.build_encoder(image_tokens.resolve_spec("openai/clip-vit-base-patch16", models),
                                                       str(device))
        style = {"unet": models.unet, "encoder": encoder, "identity": identity,
                 "settings": StyleSettings(inner_steps=args.style_inner_steps)}

    eps = GraphedUNet(models.unet, enabled=not args.eager)  # what the prompt editors' `eps` runs

    rng = np.random.default_rng(0)
    images = [(rng.random((args.size, args.size, 3)) * 255).astype(np.uint8) for _ in range(args.images + 1)]
    sync(device)
    start = time.perf_counter()
    latents = [encode(models.vae, image, None, models.dtype, mode="mode") for image in images]
    sync(device)
    encode_s = (time.perf_counter() - start) / len(images)

    def timed_per_image(run) -> dict:
        times, extra = [], {}
        for index in range(len(images)):  # image 0 is the warm-up
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = time.perf_counter()
            extra = run(index)
            sync(device)
            if index:
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else 0.0
        return {"per_image_s": times, "mean_s": statistics.fmean(times), "median_s": statistics.median(times),
                "peak_mib": peak, **extra}

    results = {}
    for kind in kinds:
        results[kind] = timed_per_image(lambda i: run_inversion(kind, eps, schedule, latents[i], images[i], cond, 7.5,
                                                                null_text, style))
    if "ddim" in kinds and not args.eager:  # replaying graphs must not change a bit
        graphed = invert("ddim", eps, schedule, latents[0], cond, 7.5).latents[-1]
        eager = invert("ddim", GraphedUNet(models.unet, enabled=False), schedule, latents[0], cond, 7.5).latents[-1]
        results["ddim"]["graphs_vs_eager_max_abs_diff"] = float((graphed.float() - eager.float()).abs().max())
    for edit in edits:
        name, inversion = edit.split(":")
        method = METHODS.get(name).build({"inversion": inversion, "steps": args.steps, "cuda_graphs": not args.eager})
        method.setup(models)
        results[edit] = timed_per_image(lambda i: run_edit(method, images[i], i))

    command = " ".join(["python benchmarks/bench_inversions.py", *(sys.argv[1:] if argv is None else argv)])
    payload = {"benchmark": "pie_inversions", "command": command,
               "model": models.describe(), "size": args.size, "steps": args.steps, "images": args.images,
               "guidance": 7.5, "null_text_inner_steps": args.null_text_inner_steps,
               "style_inner_steps": args.style_inner_steps, "encode_s": encode_s, "cuda_graphs": not args.eager,
               "device": device_info(), "versions": versions(), "git": git_commit(), "results": results}
    out = Path(args.out) if args.out else PROJECT_ROOT / "benchmarks" / "results" / f"inversions_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1) + "\n")

    print(f"{models.describe()['model']} {models.describe()['dtype']} {args.size}×{args.size}, {args.steps} steps, "
          f"{args.images} image(s) after a warm-up on {device_info().get('gpu', device_info()['cpu'])}")
    print("| inversion / edit | mean s/image | median s/image | peak MiB |")
    print("|---|---|---|---|")
    for kind, r in results.items():
        print(f"| {kind} | {r['mean_s']:.3f} | {r['median_s']:.3f} | {r['peak_mib']:.0f} |")
    print(f"VAE encode: {encode_s:.3f} s/image; written to {out}")
    return payload


if __name__ == "__main__":
    main()
